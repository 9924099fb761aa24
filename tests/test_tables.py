"""Declared tables: layout, statistics against scipy, markers, errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from workflow.config import ConfigError
from workflow.tables import build_table, mean_ci, paired_p_value, render

SEEDS = [0, 1, 2, 3]
# Known numbers: per (regime, loss) a list of per-seed map values.
MAP = {
    ("full", "ce"): [0.50, 0.52, 0.49, 0.51],
    ("full", "cam"): [0.60, 0.63, 0.58, 0.61],  # clearly better than ce
    ("full", "lm"): [0.51, 0.50, 0.50, 0.52],  # not significantly different
    ("fewshot", "ce"): [0.30, 0.31, 0.29, 0.30],
    ("fewshot", "cam"): [0.28, 0.32, 0.30, 0.29],
    ("fewshot", "lm"): [0.20, 0.21, 0.19, 0.20],
}


def metrics_frame() -> pd.DataFrame:
    rows = []
    for (regime, loss), values in MAP.items():
        for seed, v in zip(SEEDS, values):
            base = dict(dataset="digits", regime=regime, backbone="cnn", loss=loss, seed=seed, retrieval="exact")
            rows.append({**base, "metric": "map", "value": v})
            rows.append({**base, "metric": "top1_error", "value": 1 - v})
    return pd.DataFrame(rows)


DECL = {"caption": "Test", "rows": ["loss"], "columns": ["regime"], "metrics": ["map", "top1_error"], "baseline": "ce"}


def test_confidence_interval_and_std_match_scipy():
    values = np.array(MAP[("full", "cam")])
    mean, std, low, high = mean_ci(values)
    expected = stats.t.interval(0.95, len(values) - 1, loc=values.mean(), scale=stats.sem(values))
    assert mean == pytest.approx(values.mean())
    assert std == pytest.approx(values.std(ddof=1))
    assert (low, high) == pytest.approx(expected)


def test_paired_test_matches_scipy_and_pairs_by_seed():
    a = pd.Series(MAP[("full", "lm")], index=SEEDS)
    b = pd.Series(MAP[("full", "ce")], index=SEEDS)
    assert paired_p_value(a, b) == pytest.approx(stats.ttest_rel(a, b).pvalue)
    # Pairing is by seed, not by position.
    assert paired_p_value(a, b.iloc[::-1]) == pytest.approx(stats.ttest_rel(a, b).pvalue)


def test_layout_best_and_significance():
    frame = build_table("t", DECL, metrics_frame())
    assert list(dict.fromkeys(frame["row"])) == ["ce", "cam", "lm"]
    assert len(frame) == 3 * 2 * 2  # rows x regimes x metrics
    get = lambda row, regime, metric: frame[(frame["row"] == row) & (frame["regime"] == regime) & (frame["metric"] == metric)].iloc[0]
    assert get("cam", "full", "map")["significant"]
    assert not get("lm", "full", "map")["significant"]
    assert not get("ce", "full", "map")["significant"]  # the baseline is never marked
    assert np.isnan(get("ce", "full", "map")["p_value"])
    # Best: highest map, lowest error, per column.
    assert get("cam", "full", "map")["best"] and get("cam", "full", "top1_error")["best"]
    assert get("ce", "fewshot", "map")["best"] and not get("cam", "fewshot", "map")["best"]
    assert get("ce", "fewshot", "top1_error")["best"]
    assert get("lm", "fewshot", "map")["significant"]


def test_render_outputs():
    frame = build_table("t_x", DECL, metrics_frame())
    csv, markdown, latex = render("t_x", DECL, frame)
    assert "ci_low" in csv.splitlines()[0]
    assert "**0.605 ± 0.021***" in markdown  # cam full: best and significant
    assert "| full map" in markdown or "full map" in markdown
    assert r"\toprule" in latex and r"\textbf{0.605 $\pm$ 0.021*}" in latex
    assert r"\label{tab:t_x}" in latex and r"top1\_error" in latex


def test_explicit_rows_with_labels():
    decl = {
        "rows": [{"label": "CE baseline", "loss": "ce", "regime": "full"}, {"label": "CAM few-shot", "loss": "cam", "regime": "fewshot"}],
        "metrics": ["map"],
    }
    frame = build_table("t", decl, metrics_frame())
    assert list(frame["row"]) == ["CE baseline", "CAM few-shot"]
    assert frame["mean"].tolist() == pytest.approx([np.mean(MAP[("full", "ce")]), np.mean(MAP[("fewshot", "cam")])])


def test_blocks_split_rows():
    decl = {"blocks": ["regime"], "rows": ["loss"], "metrics": ["map"], "baseline": "ce"}
    frame = build_table("t", decl, metrics_frame())
    assert frame.groupby("regime")["best"].sum().tolist() == [1, 1]


@pytest.mark.parametrize(
    "decl, message",
    [
        ({"metrics": ["map@1000"]}, r"tables\.bad\.metrics: no values for map@1000; available: map, top1_error"),
        ({"metrics": ["map"], "rows": ["colour"]}, r"tables\.bad\.rows: 'colour' is not a cell attribute"),
        ({"metrics": ["map"], "select": {"dataset": "cifar"}}, r"tables\.bad\.select: no results match"),
    ],
)
def test_bad_declarations_name_the_key(decl, message):
    with pytest.raises(ConfigError, match=message):
        build_table("bad", decl, metrics_frame())


def test_baseline_may_name_an_explicit_row_and_an_ambiguous_loss_stops():
    frame = metrics_frame()
    other = frame[frame["loss"] == "ce"].assign(backbone="r18")  # ce on a second backbone
    frame = pd.concat([frame, other], ignore_index=True)
    decl = {
        "rows": [
            {"label": "CE pre-trained", "backbone": "r18", "loss": "ce"},
            {"label": "CAM", "backbone": "cnn", "loss": "cam"},
        ],
        "columns": ["regime"], "metrics": ["map"], "baseline": "CE pre-trained",
    }
    table = build_table("t", decl, frame).set_index(["row", "regime"])
    expected = stats.ttest_rel(MAP[("full", "cam")], MAP[("full", "ce")]).pvalue
    assert table.loc[("CAM", "full"), "p_value"] == pytest.approx(expected)
    assert np.isnan(table.loc[("CE pre-trained", "full"), "p_value"])
    with pytest.raises(ConfigError, match="tables.t.baseline: 'ce' matches several cells per seed"):
        build_table("t", {**decl, "baseline": "ce"}, frame)

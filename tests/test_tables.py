"""Declared tables: layout, statistics against scipy and by hand (sign-flip
test, Holm, intervals), markers and captions, errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests

from workflow import significance, tables
from workflow.config import ConfigError
from workflow.significance import holm, mean_ci, paired_p_value, sign_flip_p_value
from workflow.table_text import render
from workflow.tables import build_table

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
            base = dict(
                dataset="digits",
                regime=regime,
                backbone="cnn",
                loss=loss,
                seed=seed,
                retrieval="exact",
            )
            rows.append({**base, "metric": "map", "value": v})
            rows.append({**base, "metric": "top1_error", "value": 1 - v})
    return pd.DataFrame(rows)


DECL = {
    "caption": "Test",
    "rows": ["loss"],
    "columns": ["regime"],
    "metrics": ["map", "top1_error"],
    "baseline": "ce",
}


def test_confidence_interval_and_std_match_scipy():
    values = np.array(MAP[("full", "cam")])
    mean, std, low, high = mean_ci(values)
    expected = stats.t.interval(
        0.95, len(values) - 1, loc=values.mean(), scale=stats.sem(values)
    )
    assert mean == pytest.approx(values.mean())
    assert std == pytest.approx(values.std(ddof=1))
    assert (low, high) == pytest.approx(expected)


def scipy_sign_flip(a, b) -> float:
    """scipy's paired permutation test: permutation_type="samples" swaps the
    two values within each pair, i.e. flips the sign of each difference."""
    return stats.permutation_test(
        (np.asarray(a, float), np.asarray(b, float)),
        lambda x, y, axis: np.mean(x - y, axis=axis),
        permutation_type="samples",
        vectorized=True,
        n_resamples=np.inf,
        alternative="two-sided",
    ).pvalue


def test_paired_test_matches_scipy_and_pairs_by_seed():
    a = pd.Series(MAP[("full", "lm")], index=SEEDS)
    b = pd.Series(MAP[("full", "ce")], index=SEEDS)
    assert paired_p_value(a, b) == pytest.approx(scipy_sign_flip(a, b))
    # Pairing is by seed, not by position.
    assert paired_p_value(a, b.iloc[::-1]) == pytest.approx(scipy_sign_flip(a, b))


@pytest.mark.parametrize("n", [3, 4, 5, 7, 10])
def test_sign_flip_matches_scipy_permutation_test(n):
    rng = np.random.default_rng(n)
    for shift in [0.0, 0.3, 1.0]:
        a, b = rng.normal(shift, 1, n), rng.normal(0, 1, n)
        assert sign_flip_p_value(a - b) == pytest.approx(
            scipy_sign_flip(a, b), abs=1e-12
        )


def test_sign_flip_hand_computed():
    series = lambda d: pd.Series(np.asarray(d, float), index=range(len(d)))
    zero = lambda d: pd.Series(0.0, index=range(len(d)))
    # [1, 2, 3, 4]: only all-plus and all-minus reach |sum| = 10: 2 of 16.
    assert paired_p_value(series([1, 2, 3, 4]), zero([1, 2, 3, 4])) == 2 / 16
    # [1, -1, 2, 3]: |values| 1, 1, 2, 3 (total 7), observed sum 5. With N the
    # sum of the |values| given a minus, sum = 7 - 2N, and |sum| >= 5 iff
    # N <= 1 ({}, {1}, {1'}) or N >= 6 (their complements): 6 of 16.
    assert paired_p_value(series([1, -1, 2, 3]), zero([1, -1, 2, 3])) == 6 / 16
    # [2, 2, -1]: total 5, observed 3; |5 - 2N| >= 3 iff N <= 1 ({}, {1}) or
    # N >= 4 ({2, 2}, {2, 2, 1}): 4 of 8.
    assert sign_flip_p_value([2, 2, -1]) == 4 / 8


def test_sign_flip_degenerate_cases():
    # The old p = 0 case: a constant non-zero difference. With 3 seeds only
    # all-plus and all-minus reach it: 2/8, whatever the float noise in d.
    a = pd.Series([0.50, 0.60, 0.70], index=[0, 1, 2])
    b = pd.Series([0.49, 0.59, 0.69], index=[0, 1, 2])
    assert paired_p_value(a, b) == 0.25
    assert paired_p_value(a.iloc[:2], b.iloc[:2]) != paired_p_value(
        a.iloc[:2], b.iloc[:2]
    )  # NaN
    # All-zero differences: every assignment ties: p = 1.
    assert paired_p_value(a, a) == 1.0
    assert sign_flip_p_value(np.zeros(5)) == 1.0
    # Fewer than 3 paired seeds: no test.
    for d in [[], [0.1], [0.1, 0.2]]:
        assert np.isnan(sign_flip_p_value(d))
    assert np.isnan(
        paired_p_value(a, pd.Series([0.4, 0.5, 0.6], index=[2, 3, 4]))
    )  # one common seed
    # NaN values: the seed leaves the pairing (4 seeds -> 3), and a metric
    # that is NaN for every seed gives no test.
    c = pd.Series([0.50, 0.60, 0.70, np.nan], index=[0, 1, 2, 3])
    d = pd.Series([0.49, 0.59, 0.69, 0.10], index=[0, 1, 2, 3])
    assert paired_p_value(c, d) == 0.25
    assert np.isnan(paired_p_value(pd.Series(np.nan, index=[0, 1, 2, 3]), d))
    # The smallest p is 2/2^n, never 0.
    for n in [3, 4, 5, 8, 16]:
        assert (
            sign_flip_p_value(np.arange(1, n + 1))
            == 2 / 2**n
            == significance.smallest_p(n)
        )


def test_sign_flip_monte_carlo_above_the_exact_limit(monkeypatch):
    d = np.random.default_rng(1).normal(0.3, 1, 10)
    exact = sign_flip_p_value(d)
    monkeypatch.setattr(significance, "EXACT_MAX_SEEDS", 6)
    sampled = sign_flip_p_value(d)
    assert sampled != exact and abs(sampled - exact) < 4 * np.sqrt(
        exact * (1 - exact) / significance.MONTE_CARLO_RESAMPLES
    )
    assert sign_flip_p_value(d) == sampled  # seeded
    # +1 correction: never 0, even when no sampled assignment reaches the observed one.
    assert (
        sign_flip_p_value(np.arange(1, 31))
        == 1 / (significance.MONTE_CARLO_RESAMPLES + 1)
        == significance.smallest_p(30)
    )


def test_holm_hand_computed():
    # Sorted: 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 -> 0.02, 0.03, 0.06, 0.04;
    # running maximum -> 0.02, 0.03, 0.06, 0.06.
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # No test (NaN) is no member of the family.
    adjusted = holm([0.01, np.nan, 0.04, 0.03, 0.005])
    assert np.isnan(adjusted[1]) and adjusted[[0, 2, 3, 4]] == pytest.approx(
        [0.03, 0.06, 0.06, 0.02]
    )
    assert holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert holm([0.04]) == pytest.approx([0.04]) and np.isnan(holm([np.nan])).all()


def test_layout_best_and_no_marker_with_four_seeds():
    frame = build_table("t", DECL, metrics_frame())
    assert list(dict.fromkeys(frame["row"])) == ["ce", "cam", "lm"]
    assert len(frame) == 3 * 2 * 2  # rows x regimes x metrics
    get = lambda row, regime, metric: frame[
        (frame["row"] == row)
        & (frame["regime"] == regime)
        & (frame["metric"] == metric)
    ].iloc[0]
    # cam beats ce on every one of the 4 seeds: p = 2/16, Holm over the
    # table's 8 comparisons (cam and lm x 2 regimes x 2 metrics) gives at
    # least 8 x 2/16 = 1; the old t-test starred it (p = 3e-4). No marker
    # can appear.
    assert (
        get("cam", "full", "map")["p"] == 2 / 16
        and get("cam", "full", "map")["p_holm"] == 1.0
    )
    tested = frame["p"].notna()
    assert tested.sum() == 8
    assert frame.loc[tested, "p_holm"].tolist() == pytest.approx(
        multipletests(frame.loc[tested, "p"], method="holm")[1]
    )
    assert not frame["significant"].any()
    assert np.isnan(get("ce", "full", "map")["p"])  # the baseline is not tested
    assert (
        pd.isna(get("ce", "full", "map")["n_paired"])
        and get("cam", "full", "map")["n_paired"] == 4
    )
    # Best: highest map, lowest error, per column.
    assert (
        get("cam", "full", "map")["best"] and get("cam", "full", "top1_error")["best"]
    )
    assert (
        get("ce", "fewshot", "map")["best"] and not get("cam", "fewshot", "map")["best"]
    )
    assert get("ce", "fewshot", "top1_error")["best"]


def test_render_outputs():
    frame = build_table("t_x", DECL, metrics_frame())
    csv, markdown, latex = render("t_x", DECL, frame)
    assert "ci_low" in csv.splitlines()[0]
    assert (
        "**0.605 ± 0.021**" in markdown and "*: differs from ce" in markdown
    )  # cam full: best
    assert "| full map" in markdown or "full map" in markdown
    assert r"\toprule" in latex and r"\textbf{0.605 $\pm$ 0.021}" in latex
    assert r"\label{tab:t_x}" in latex and r"top1\_error" in latex
    assert (
        "smallest possible p is 0.125, so no marker can appear" in latex
        and "p $<$ 0.05" in latex
    )


def test_explicit_rows_with_labels():
    decl = {
        "rows": [
            {"label": "CE baseline", "loss": "ce", "regime": "full"},
            {"label": "CAM few-shot", "loss": "cam", "regime": "fewshot"},
        ],
        "metrics": ["map"],
    }
    frame = build_table("t", decl, metrics_frame())
    assert list(frame["row"]) == ["CE baseline", "CAM few-shot"]
    assert frame["mean"].tolist() == pytest.approx(
        [np.mean(MAP[("full", "ce")]), np.mean(MAP[("fewshot", "cam")])]
    )


def test_blocks_split_rows():
    decl = {
        "blocks": ["regime"],
        "rows": ["loss"],
        "metrics": ["map"],
        "baseline": "ce",
    }
    frame = build_table("t", decl, metrics_frame())
    assert frame.groupby("regime")["best"].sum().tolist() == [1, 1]


@pytest.mark.parametrize(
    "decl, message",
    [
        (
            {"metrics": ["map@1000"]},
            r"tables\.bad\.metrics: no values for map@1000; available: map, top1_error",
        ),
        (
            {"metrics": ["map"], "rows": ["colour"]},
            r"tables\.bad\.rows: 'colour' is not a cell attribute",
        ),
        (
            {"metrics": ["map"], "select": {"dataset": "cifar"}},
            r"tables\.bad\.select: no results match",
        ),
    ],
)
def test_bad_declarations_name_the_key(decl, message):
    with pytest.raises(ConfigError, match=message):
        build_table("bad", decl, metrics_frame())


def test_baseline_may_name_an_explicit_row_and_an_ambiguous_loss_stops():
    frame = metrics_frame()
    other = frame[frame["loss"] == "ce"].assign(
        backbone="r18"
    )  # ce on a second backbone
    frame = pd.concat([frame, other], ignore_index=True)
    decl = {
        "rows": [
            {"label": "CE pre-trained", "backbone": "r18", "loss": "ce"},
            {"label": "CAM", "backbone": "cnn", "loss": "cam"},
        ],
        "columns": ["regime"],
        "metrics": ["map"],
        "baseline": "CE pre-trained",
    }
    table = build_table("t", decl, frame).set_index(["row", "regime"])
    expected = scipy_sign_flip(MAP[("full", "cam")], MAP[("full", "ce")])
    assert table.loc[("CAM", "full"), "p"] == pytest.approx(expected) == 2 / 16
    assert np.isnan(table.loc[("CE pre-trained", "full"), "p"])
    with pytest.raises(
        ConfigError, match="tables.t.baseline: 'ce' matches several cells per seed"
    ):
        build_table("t", {**decl, "baseline": "ce"}, frame)


# Eight seeds (smallest p 2/256): cam beats ce on every seed; lm on 7 of 8
# with differences 5, 4, 3, 1, 1, 1, 1, -1 (x 0.01): |values| total 17,
# observed sum 15, so |17 - 2N| >= 15 iff N <= 1 ({} or one of the five 1s)
# or N >= 16 (their complements): p = 12/256 = 0.047, below 0.05 raw;
# triplet is noise and cannot classify (accuracy NaN: no test).
CE8 = np.array([0.50, 0.52, 0.49, 0.51, 0.50, 0.53, 0.48, 0.51])
DIFF8 = {
    "ce": np.zeros(8),
    "cam": np.array([0.10, 0.08, 0.12, 0.09, 0.11, 0.10, 0.07, 0.10]),
    "lm": 0.01 * np.array([5, 4, 3, 1, 1, 1, 1, -1]),
    "triplet": 0.01 * np.array([1, -1, 2, -2, 1, -1, 0.5, -0.5]),
}


def eight_seed_frame() -> pd.DataFrame:
    rows = []
    for loss, diff in DIFF8.items():
        for seed, (c, dv) in enumerate(zip(CE8, diff)):
            base = dict(
                dataset="digits",
                regime="full",
                backbone="cnn",
                loss=loss,
                seed=seed,
                retrieval="exact",
            )
            rows.append({**base, "metric": "map", "value": c + dv})
            rows.append(
                {
                    **base,
                    "metric": "accuracy",
                    "value": np.nan if loss == "triplet" else c + dv + 0.3,
                }
            )
    return pd.DataFrame(rows)


def test_table_end_to_end_raw_and_holm_p_and_difference_interval():
    decl = {
        "caption": "Eight",
        "rows": ["loss"],
        "metrics": ["map", "accuracy"],
        "baseline": "ce",
    }
    frame = build_table("e", decl, eight_seed_frame())
    csv, markdown, latex = render("e", decl, frame)
    header = csv.splitlines()[0].split(",")
    for column in [
        "n_paired",
        "diff",
        "diff_ci_low",
        "diff_ci_high",
        "p",
        "p_holm",
        "significant",
    ]:
        assert column in header
    table = pd.read_csv(__import__("io").StringIO(csv)).set_index(["row", "metric"])
    raw = {
        loss: scipy_sign_flip(CE8 + DIFF8[loss], CE8)
        for loss in ["cam", "lm", "triplet"]
    }
    assert raw["cam"] == pytest.approx(2 / 256) and raw["lm"] == pytest.approx(12 / 256)
    for loss in raw:
        assert table.loc[(loss, "map"), "p"] == pytest.approx(raw[loss])
    # One family for the whole table: cam, lm, triplet on map and cam, lm on
    # accuracy (triplet cannot classify: no test), k = 5. Sorted p: the two
    # cam p-values (2/256) x 5 and x 4, the lm ones (12/256) x 3 and x 2,
    # triplet x 1 (running maximum), as statsmodels computes them.
    assert table.loc[("triplet", "accuracy"), "n_paired"] == 0
    assert np.isnan(table.loc[("triplet", "accuracy"), "p"]) and np.isnan(
        table.loc[("triplet", "accuracy"), "p_holm"]
    )
    tested = table[table["p"].notna()]
    assert len(tested) == 5
    assert tested["p_holm"].tolist() == pytest.approx(
        multipletests(tested["p"], method="holm")[1]
    )
    assert table.loc[("cam", "map"), "p_holm"] == pytest.approx(5 * 2 / 256)
    assert table.loc[("lm", "map"), "p_holm"] == pytest.approx(3 * 12 / 256)
    assert (
        table.loc[("cam", "map"), "significant"]
        and table.loc[("cam", "accuracy"), "significant"]
    )
    assert (
        not table.loc[("lm", "map"), "significant"]
        and not table.loc[("lm", "accuracy"), "significant"]
    )
    assert (
        np.isnan(table.loc[("ce", "map"), "p"])
        and not table.loc[("ce", "map"), "significant"]
    )
    # The paired difference and its Student-t interval.
    d = (CE8 + DIFF8["lm"]) - CE8
    low, high = stats.t.interval(0.95, 7, loc=d.mean(), scale=stats.sem(d))
    assert table.loc[
        ("lm", "map"), ["diff", "diff_ci_low", "diff_ci_high"]
    ].tolist() == pytest.approx([d.mean(), low, high])
    assert table.loc[("lm", "map"), "n_paired"] == 8
    # Markers follow p_holm, and the caption says what they mean.
    assert (
        "| **0.601 ± 0.023*** | **0.901 ± 0.023*** |" in markdown
    )  # cam: best and significant
    assert (
        "| 0.524 ± 0.024      | 0.824 ± 0.024      |" in markdown
    )  # lm: not separated after Holm
    note = (
        "*: differs from ce by an exact paired sign-flip permutation test over 8 seeds, "
        "Holm-corrected over the table's 5 comparisons, p < 0.05; "
        "with 8 seeds the smallest possible p is 0.00781, 0.0391 after Holm; "
        "no test where fewer than 3 seeds pair up"
    )
    assert note in markdown


def test_constant_difference_gets_no_marker():
    """The old p = 0 case: [0.50, 0.60] against [0.49, 0.59] was starred."""
    rows = []
    for seed, (ce, cam) in enumerate([(0.49, 0.50), (0.59, 0.60), (0.69, 0.70)]):
        for loss, value in [("ce", ce), ("cam", cam)]:
            rows.append(
                dict(
                    dataset="digits",
                    regime="full",
                    backbone="cnn",
                    loss=loss,
                    seed=seed,
                    retrieval="exact",
                    metric="map",
                    value=value,
                )
            )
    metrics = pd.DataFrame(rows)
    decl = {"rows": ["loss"], "metrics": ["map"], "baseline": "ce"}
    two = build_table("c", decl, metrics[metrics["seed"] < 2]).set_index("row")
    assert np.isnan(two.loc["cam", "p"]) and not two["significant"].any()
    _, markdown, _ = render("c", decl, two.reset_index())
    assert (
        "*: no test against ce (fewer than 3 seeds paired with it), so no marker"
        in markdown
    )
    assert "**0.550 ± 0.071** |" in markdown  # best, no star
    three = build_table("c", decl, metrics)
    assert (
        three.set_index("row").loc["cam", "p"] == 0.25
        and not three["significant"].any()
    )
    _, markdown, latex = render("c", decl, three)
    assert (
        "*: differs from ce by an exact paired sign-flip permutation test over 3 seeds, "
        "Holm-corrected over the table's 1 comparison, p < 0.05; "
        "with 3 seeds the smallest possible p is 0.25, so no marker can appear"
    ) in markdown
    assert "*" not in markdown.split("\n", 1)[1].replace(
        "**", ""
    )  # no marker in the body (bold aside)


def test_three_seeds_never_marked_even_when_every_seed_agrees():
    frame = metrics_frame()
    frame = frame[frame["seed"] < 3]
    table = build_table("t", DECL, frame)
    assert not table["significant"].any()
    assert table["p"].min() == 0.25
    _, markdown, _ = render("t", DECL, table)
    assert (
        "over 3 seeds, Holm-corrected over the table's 8 comparisons, "
        "p < 0.05; with 3 seeds the smallest possible p is 0.25, so no marker can appear"
    ) in markdown


def with_two_stage(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame plus a two-stage retrieval of every cell at other values."""
    two = frame.assign(retrieval="two_stage_c1", value=frame["value"] - 0.1)
    return pd.concat([frame, two], ignore_index=True)


def test_a_table_without_a_retrieval_shows_exact_retrieval_only():
    # Before: exact and two-stage rows were averaged as if they were seeds
    # ("cam 0.296 ± 0.000, n = 3" from one seed).
    decl = {k: v for k, v in DECL.items() if k != "baseline"}
    frame = build_table("t", decl, with_two_stage(metrics_frame()))
    cam = frame[
        (frame["row"] == "cam")
        & (frame["regime"] == "full")
        & (frame["metric"] == "map")
    ].iloc[0]
    assert cam["n"] == 4 and cam["mean"] == pytest.approx(np.mean(MAP[("full", "cam")]))
    # Laid out, both retrievals show, each on its own.
    laid = build_table(
        "t",
        {**decl, "columns": ["regime", "retrieval"]},
        with_two_stage(metrics_frame()),
    )
    two = laid[
        (laid["row"] == "cam")
        & (laid["regime"] == "full")
        & (laid["retrieval"] == "two_stage_c1")
        & (laid["metric"] == "map")
    ].iloc[0]
    assert two["mean"] == pytest.approx(np.mean(MAP[("full", "cam")]) - 0.1)


def test_a_table_never_pools_results_of_one_seed():
    # Two regimes in one row (not laid out): every seed has two values.
    decl = {"rows": ["loss"], "metrics": ["map"]}
    with pytest.raises(
        ConfigError,
        match=r"tables\.t: row 'ce' would average .* regime \(full, fewshot\); .*tables\.t\.select",
    ):
        build_table("t", decl, metrics_frame())
    with pytest.raises(ConfigError, match=r"retrieval \(exact, two_stage_c1\)"):
        build_table(
            "t",
            {
                **decl,
                "select": {"retrieval": ["exact", "two_stage_c1"], "regime": "full"},
            },
            with_two_stage(metrics_frame()),
        )


def test_the_table_of_a_dataset_and_regime_is_a_declared_table():
    """The per-(dataset, regime) table every run writes goes through the one
    engine: a block per backbone, a row per loss in config order, the
    quality metrics in the registry's order (cost rows left out), the first
    loss as the baseline; so it has the declared tables' columns and markers."""
    frame = metrics_frame()
    second = frame[frame["regime"] == "full"].assign(backbone="vit")
    cost = frame.assign(metric="distance_computations_per_query", value=100.0)
    frame = pd.concat([frame, second, cost], ignore_index=True)
    frame["distance"] = frame["geometry"] = "euclidean"
    decl = tables.regime_declaration(frame, "digits", "full")
    assert decl["blocks"] == ["backbone"] and decl["rows"] == ["loss"]
    assert decl["metrics"] == ["top1_error", "map"]  # the registry's order; no cost row
    assert decl["baseline"] == "ce" and decl["select"] == {
        "dataset": "digits",
        "regime": "full",
    }
    built = build_table("digits/full", decl, frame)
    assert list(dict.fromkeys(built["backbone"])) == ["cnn", "vit"]
    assert list(dict.fromkeys(built["row"])) == ["ce", "cam", "lm"]
    full = frame[(frame["regime"] == "full") & (frame["backbone"] == "cnn")]
    cam = built[
        (built["backbone"] == "cnn")
        & (built["row"] == "cam")
        & (built["metric"] == "map")
    ].iloc[0]
    assert np.isclose(cam["mean"], np.mean(MAP["full", "cam"]))
    assert cam["best"] and cam["n_paired"] == 4
    assert np.isclose(
        cam["diff"], np.mean(MAP["full", "cam"]) - np.mean(MAP["full", "ce"])
    )
    assert set(full["regime"]) == {"full"}
    markdown = render("digits/full", decl, built)[1]
    assert "**0.605 ± 0.021**" in markdown and "differs from ce" in markdown
    # One loss: nothing to compare, no baseline.
    alone = frame[frame["loss"] == "ce"]
    assert "baseline" not in tables.regime_declaration(alone, "digits", "full")


# ---------------------------------------------------------------- published values beside ours (issue 23)

REFERENCE = {
    "source": "Paper, Table 9",
    "scale": "percent",
    "values": {"ce": {"map": 50.5}, "cam": {"map": 70.0}, "lm": {"map": 50.0}},
}


def test_a_reference_puts_the_published_value_our_mean_the_difference_and_the_ci_in_every_format():
    decl = {
        "caption": "Ref",
        "select": {"regime": "full"},
        "rows": ["loss"],
        "metrics": ["map"],
        "baseline": "ce",
        "reference": REFERENCE,
    }
    frame = build_table("ref", decl, metrics_frame())
    by_row = frame.set_index("row")
    assert by_row["published"].to_dict() == pytest.approx(
        {"ce": 0.505, "cam": 0.70, "lm": 0.50}
    )
    assert by_row.loc["cam", "published_diff"] == pytest.approx(
        np.mean(MAP[("full", "cam")]) - 0.70
    )
    for loss in ["ce", "cam", "lm"]:
        _, _, low, high = mean_ci(np.array(MAP[("full", loss)]))
        assert by_row.loc[loss, "published_in_ci"] == (
            low <= by_row.loc[loss, "published"] <= high
        )
    # ce's mean is 0.505 (inside), cam's 0.605 is far from 0.70 (outside).
    assert bool(by_row.loc["ce", "published_in_ci"]) and not bool(
        by_row.loc["cam", "published_in_ci"]
    )
    csv, markdown, latex = render("ref", decl, frame)
    assert "published,published_diff,published_in_ci" in csv.splitlines()[0]
    assert (
        "published: Paper, Table 9 (in percent, ours too); diff: ours - published"
        in markdown
    )
    header = markdown.splitlines()[2]
    assert ["map published", "map ours", "map diff", "map in 95% CI"] == [
        c.strip() for c in header.split("|")[2:6]
    ]
    cam = next(line for line in markdown.splitlines() if line.startswith("| cam"))
    assert [c.strip() for c in cam.split("|")[2:6]] == [
        "70.00",
        "**60.50 ± 2.08**",
        "-9.50",
        "no",
    ]
    assert (
        r"70.00 & \textbf{60.50 $\pm$ 2.08} & -9.50 & no" in latex
        and r"in 95\% CI" in latex
    )


def test_a_reference_with_one_seed_shows_only_the_difference():
    one = metrics_frame()[lambda f: f["seed"] == 0]
    decl = {
        "select": {"regime": "full"},
        "rows": ["loss"],
        "metrics": ["map"],
        "reference": {
            **REFERENCE,
            "scale": "fraction",
            "values": {
                k: {"map": v["map"] / 100} for k, v in REFERENCE["values"].items()
            },
        },
    }
    frame = build_table("ref", decl, one)
    assert frame["published_in_ci"].isna().all()
    _, markdown, _ = render("ref", decl, frame)
    assert "in 95% CI |" not in markdown.splitlines()[2] and "map diff" in markdown
    assert "0.505" in markdown  # the published value, as a fraction


@pytest.mark.parametrize(
    "values, message",
    [
        (
            {"ce": {"map": 50}, "cam": {"map": 60}},
            "config key tables.t.reference.values: no published values for the row 'lm'",
        ),
        (
            {"ce": {"map": 50}, "cam": {"map": 60}, "lm": {}},
            "config key tables.t.reference.values.lm: no published value of map",
        ),
        (
            {"ce": {"map": 50}, "cam": {"map": 60}, "lm": {"map": 1, "pr_auc": 2}},
            "config key tables.t.reference.values.lm.pr_auc: 'pr_auc' is not among tables.t.metrics",
        ),
        (
            {"ce": {"map": 50}, "cam": {"map": 60}, "lm": {"map": 1}, "LM": {"map": 1}},
            "config key tables.t.reference.values.LM: 'LM' is no row of the table",
        ),
    ],
)
def test_a_reference_missing_a_row_or_metric_stops_before_any_job_naming_the_key(
    values, message
):
    from workflow.config_loader import load_config
    from workflow.guards import check_config

    config = {
        "datasets": {"digits": {"source": "sklearn_digits"}},
        "regimes": {"full": {}},
        "backbones": {"small_cnn": {"arch": "small_cnn"}},
        "losses": {"ce": {"impl": "ce"}, "cam": {"impl": "cam"}, "lm": {"impl": "lm"}},
        "seeds": [0],
        "tables": {
            "t": {"metrics": ["map"], "reference": {"source": "s", "values": values}}
        },
    }
    with pytest.raises(ConfigError) as error:
        check_config(load_config(config))
    assert message in str(error.value)
    # The table's job says the same where the rows are only known then.
    decl = {
        "select": {"regime": "full"},
        "rows": ["loss"],
        "metrics": ["map"],
        "reference": {"source": "s", "values": values},
    }
    with pytest.raises(ConfigError, match="config key tables.t.reference.values"):
        build_table("t", decl, metrics_frame())


def test_the_lm_configs_carry_the_papers_values_for_every_row_and_metric():
    import yaml
    from conftest import REPO

    from workflow.config_loader import load_config
    from workflow.guards.declarations import check_tables

    for name, rows in [("lm_places365", 3), ("lm_places365_hard5", 2)]:
        config = load_config(
            yaml.safe_load((REPO / "config" / f"{name}.yaml").read_text())
        )
        check_tables(config)
        (table,) = config["tables"].values()
        reference = table["reference"]
        assert reference["scale"] == "percent" and len(reference["values"]) == rows
        assert all(list(v) == table["metrics"] for v in reference["values"].values())
        assert (
            "mAP@k" in table["caption"] and "whole validation set" in table["caption"]
        )
    assert "precision@10" in table["metrics"]

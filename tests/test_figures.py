"""Figures render from real data (digits) and show what they claim."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.colors import to_hex

from workflow.datasets import load_dataset
from workflow.figures import (
    RIGHT,
    WRONG,
    anchor_distance_figure,
    history_frame,
    retrieval_examples_figure,
    training_curves_figure,
    tsne_figure,
)

DIGITS = load_dataset("sklearn_digits")


def test_tsne_has_one_panel_per_loss_with_all_points():
    emb = DIGITS.images.reshape(len(DIGITS.images), -1)[:300].astype(np.float32)
    labels = DIGITS.labels[:300]
    fig = tsne_figure({"ce": (emb, labels), "cam": (emb * 2, labels)}, max_points=200)
    axes = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in axes] == ["ce", "cam"]
    assert all(len(ax.collections[0].get_offsets()) == 200 for ax in axes)


def test_retrieval_examples_frame_right_and_wrong_results():
    labels = DIGITS.labels
    query = 0
    same = [int(i) for i in np.flatnonzero(labels == labels[query])[1:3]]
    other = [int(i) for i in np.flatnonzero(labels != labels[query])[:3]]
    fig = retrieval_examples_figure(
        DIGITS.images,
        labels,
        [query],
        {"ce": {query: same + other}},
        DIGITS.class_names,
        top=5,
    )
    colours = [to_hex(ax.spines["top"].get_edgecolor()) for ax in fig.axes[1:6]]
    assert colours == [RIGHT] * 2 + [WRONG] * 3


def test_training_curves_and_anchor_heatmap():
    history = pd.DataFrame(
        [
            {"loss": l, "seed": s, "epoch": e, "term": t, "value": 1.0 / e}
            for l in ["ce", "cam"]
            for s in [0, 1]
            for e in [1, 2, 3]
            for t in ["loss", "accuracy"]
        ]
    )
    fig = training_curves_figure(history)
    assert [ax.get_title() for ax in fig.axes] == ["loss", "accuracy"]
    anchors = np.eye(3, dtype=np.float32) * 2
    fig = anchor_distance_figure(anchors, ["a", "b", "c"])
    mesh = fig.axes[0].collections[0].get_array().reshape(3, 3)
    assert np.allclose(
        mesh, [[0, 8**0.5, 8**0.5], [8**0.5, 0, 8**0.5], [8**0.5, 8**0.5, 0]]
    )


def test_training_curves_plot_loss_terms_when_recorded():
    """Histories with ``terms`` (CAM, LM) get one panel of terms per loss; a
    history without terms (CE) and an old-style history of plain numbers
    still plot their totals."""

    def cam_epoch(e):
        return {
            "loss": 3.0 / e,
            "accuracy": 0.2 * e,
            "images": 64,
            "terms": {"attractor": 2.0 / e, "repeller": 0.5 / e, "min_norm": 0.5 / e},
            "diagnostics": {
                "pairs_within_margin": 1.0 / e,
                "anchors_below_min_norm": 0.5 / e,
            },
        }

    histories = [("cam", s, [cam_epoch(e) for e in [1, 2, 3]]) for s in [0, 1]]
    histories += [
        ("lm", 0, [{"loss": 1.0, "accuracy": 0.5, "terms": {"ce": 0.9, "lm": 0.1}}] * 3)
    ]
    histories += [
        ("ce", 0, [{"loss": 1.0, "accuracy": 0.5}] * 3),
        ("old", 0, [2.0, 1.0, 0.5]),
    ]
    frame = history_frame(histories)
    terms = frame[(frame["part"] == "term") & (frame["loss"] == "cam")]
    assert sorted(set(terms["term"])) == ["attractor", "min_norm", "repeller"]
    totals = frame[
        (frame["part"] == "total")
        & (frame["term"] == "loss")
        & (frame["loss"] == "cam")
    ]
    by_epoch = terms.groupby(["seed", "epoch"])["value"].sum()
    assert np.allclose(
        by_epoch.to_numpy(),
        totals.set_index(["seed", "epoch"])["value"].loc[by_epoch.index],
    )
    assert set(frame.loc[frame["loss"] == "old", "term"]) == {"loss"}
    assert "images" not in set(frame["term"])  # bookkeeping, not a curve

    fig = training_curves_figure(frame)
    assert [ax.get_title() for ax in fig.axes] == [
        "loss",
        "accuracy",
        "cam: terms",
        "lm: terms",
        "cam: diagnostics",
    ]
    diagnostics = fig.axes[4]
    assert [t.get_text() for t in diagnostics.get_legend().get_texts()] == [
        "pairs_within_margin",
        "anchors_below_min_norm",
    ]
    assert np.allclose(diagnostics.get_lines()[0].get_ydata(), [1.0, 0.5, 1.0 / 3])
    assert fig.axes[2].get_yscale() == "symlog"
    # The total loss too (losses' totals differ by orders of magnitude);
    # accuracy, a fraction, stays linear.
    assert [ax.get_yscale() for ax in fig.axes[:2]] == ["symlog", "linear"]
    # Five panels: a grid of four a row, the unused fifth... eighth removed.
    rows = sorted({round(ax.get_position().y0, 3) for ax in fig.axes})
    assert len(rows) == 2
    cam_panel = fig.axes[2]
    legend = [t.get_text() for t in cam_panel.get_legend().get_texts()]
    assert legend == ["attractor", "repeller", "min_norm"]
    # The attractor line is the mean over the two seeds: 2 / epoch.
    attractor = cam_panel.get_lines()[0]
    assert np.allclose(attractor.get_ydata(), [2.0, 1.0, 2.0 / 3])
    loss_legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert loss_legend == ["cam", "lm", "ce", "old"]


def test_every_figure_is_drawn_in_workflow_figures():
    """Issue 22: one module for every figure. The report's and the
    selection's figures (PR curves, speed-up, sensitivity) are drawn here,
    and no other module of workflow/ draws."""
    import re
    from pathlib import Path

    from workflow.figures import pr_figure, sensitivity_figure, speedup_figure

    curves = pd.DataFrame(
        [
            {
                "backbone": "cnn",
                "loss": loss,
                "seed": 0,
                "cutoff": c,
                "precision": 1 - c / 4,
                "recall": c / 4,
            }
            for loss in ["ce", "cam"]
            for c in range(1, 5)
        ]
    )
    assert pr_figure(curves, "digits (full)").axes[0].get_title() == "digits (full)"
    metrics = pd.DataFrame(
        [
            {
                "backbone": "cnn",
                "loss": "cam",
                "seed": 0,
                "retrieval": r,
                "metric": m,
                "value": v,
                "geometry": "euclidean",
                "distance": "euclidean",
            }
            for r, cost in [("exact", 100.0), ("two_stage_c2", 25.0)]
            for m, v in [
                ("precision@5", 0.5),
                ("distance_computations_per_query", cost),
            ]
        ]
    )
    assert speedup_figure(metrics, 5, "t").axes[0].get_xscale() == "log"
    record = {
        "metric": "map",
        "values": {"params.margin": 1.0},
        "scores": [
            {"values": {"params.margin": m}, "score": s}
            for m, s in [(0.5, 0.2), (1.0, 0.4)]
        ],
    }
    assert len(sensitivity_figure(record, "cam").axes) == 1

    workflow = Path(__file__).resolve().parents[1] / "workflow"
    drawing = re.compile(
        r"\bplt\.(subplots|figure|subplot)\(|\bsns\.(lineplot|heatmap|scatterplot|set_theme)\("
    )
    others = [
        str(p.relative_to(workflow))
        for p in workflow.rglob("*.py")
        if p.name != "figures.py" and drawing.search(p.read_text())
    ]
    assert not others, others

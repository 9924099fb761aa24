"""Figures beyond the precision-recall curves, in one consistent style.

- :func:`tsne_figure`: t-SNE maps of database embeddings, one panel per loss
  (LM paper Figs. 4, 6, 8);
- :func:`retrieval_examples_figure`: queries with their top results per loss,
  green / red frames for right / wrong class (LM paper Fig. 5);
- :func:`training_curves_figure`: loss, accuracy and the loss's terms per
  epoch (:func:`history_frame` reads them from the checkpoints' histories);
- :func:`anchor_distance_figure`: heatmap of anchor-to-anchor distances.

Every function returns a matplotlib figure; the rule scripts save it as PNG
and PDF.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from sklearn.manifold import TSNE  # noqa: E402

RIGHT, WRONG = "#2ca02c", "#d62728"
# Per-epoch history entries plotted as totals (besides the loss terms).
TOTALS = ("loss", "accuracy")
PANELS_PER_ROW = 4


def set_style() -> None:
    sns.set_theme(style="whitegrid", context="paper", palette="tab10")


def tsne_figure(panels: dict[str, tuple[np.ndarray, np.ndarray]], seed: int = 0, max_points: int = 2000, title: str = ""):
    """``panels``: loss name -> (embeddings (N, D), labels (N,)). The same
    subsample of points (chosen by ``seed``) is used in every panel."""
    set_style()
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.4), dpi=150, squeeze=False)
    for ax, (name, (emb, labels)) in zip(axes[0], panels.items()):
        rng = np.random.default_rng(seed)
        keep = np.sort(rng.choice(len(emb), size=min(max_points, len(emb)), replace=False))
        perplexity = float(min(30, max(2, (len(keep) - 1) / 3)))
        xy = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(emb[keep])
        n_classes = len(np.unique(labels))
        palette = "tab10" if n_classes <= 10 else "husl"
        sns.scatterplot(
            x=xy[:, 0], y=xy[:, 1], hue=labels[keep], palette=palette, s=6, linewidth=0, legend=False, ax=ax
        )
        ax.set(title=name, xticks=[], yticks=[])
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def _show(ax, image: np.ndarray, colour: str | None = None) -> None:
    ax.imshow(image.squeeze(), cmap="gray" if image.shape[-1] == 1 else None, vmin=0, vmax=255)
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(colour is not None)
        if colour:
            spine.set_edgecolor(colour)
            spine.set_linewidth(3)


def retrieval_examples_figure(
    images: np.ndarray,
    labels: np.ndarray,
    query_index: list[int],
    results: dict[str, dict[int, list[int]]],
    class_names: list[str],
    top: int = 5,
):
    """One row per (query, loss): the query, then its ``top`` results framed
    green (same class) or red. ``results``: loss -> query index -> ranked
    database indices (rows of the prepared dataset)."""
    set_style()
    losses = list(results)
    rows = len(query_index) * len(losses)
    fig, axes = plt.subplots(rows, top + 1, figsize=(1.2 * (top + 1) + 1.2, 1.25 * rows), dpi=150, squeeze=False)
    for qi, q in enumerate(query_index):
        for li, loss in enumerate(losses):
            row = axes[qi * len(losses) + li]
            _show(row[0], images[q])
            row[0].set_ylabel(loss, rotation=0, ha="right", va="center", fontsize=8)
            if li == 0:
                row[0].set_title(f"query: {class_names[labels[q]]}", fontsize=7)
            for k, db in enumerate(results[loss][q][:top]):
                _show(row[k + 1], images[db], RIGHT if labels[db] == labels[q] else WRONG)
                if qi == 0 and li == 0:
                    row[k + 1].set_title(f"top {k + 1}", fontsize=7)
    fig.tight_layout()
    return fig


def history_frame(histories: list[tuple[str, int, list]]) -> pd.DataFrame:
    """Long frame of training histories for :func:`training_curves_figure`.

    ``histories``: (loss name, seed, checkpoint ``history``) per cell; a
    history is one record per epoch: a number (the mean loss), or a dict of
    numbers (``loss``, ``accuracy``) with optional ``terms`` (the loss's
    ``last_terms`` averaged over the epoch, e.g. CAM's attractor, repeller,
    min_norm) and ``diagnostics`` (its ``last_diagnostics``, e.g. CAM's
    fractions of anchor pairs within the margin and of anchors below the
    minimum norm) dicts. Other entries (bookkeeping such as ``images``) are
    left out. Columns: loss, seed, epoch, term, value, and ``part``:
    ``total`` for loss and accuracy, ``term`` for a loss term,
    ``diagnostic`` for a diagnostic."""
    rows = []
    for loss, seed, history in histories:
        for epoch, record in enumerate(history, start=1):
            record = record if isinstance(record, dict) else {"loss": record}
            for name, value in record.items():
                if name in ("terms", "diagnostics"):
                    for term, term_value in value.items():
                        rows.append((loss, seed, epoch, term, float(term_value), name[:-1]))
                elif name in TOTALS:
                    rows.append((loss, seed, epoch, name, float(value), "total"))
    return pd.DataFrame(rows, columns=["loss", "seed", "epoch", "term", "value", "part"])


def training_curves_figure(history: pd.DataFrame, title: str = ""):
    """``history``: columns loss (the cell's loss name), seed, epoch, term,
    value and optionally part (see :func:`history_frame`). One panel per
    total quantity (loss, accuracy) with one line per loss; then, for every
    loss that recorded its terms, one panel "<loss>: terms" with one line per
    term (weighted as they enter the loss, so they add up to its total; a
    symmetric log scale, so that a small term next to a large one and a
    term at 0 both show), and for every loss that recorded diagnostics, one
    panel "<loss>: diagnostics" (fractions, 0 to 1). Lines are means over
    seeds with a ± sd band."""
    set_style()
    if "part" not in history:
        history = history.assign(part="total")
    totals = history[history["part"] == "total"]
    panels = [(name, totals[totals["term"] == name], "loss", "total") for name in dict.fromkeys(totals["term"])]
    for part, label in [("term", "terms"), ("diagnostic", "diagnostics")]:
        rows = history[history["part"] == part]
        panels += [(f"{loss}: {label}", rows[rows["loss"] == loss], "term", part) for loss in dict.fromkeys(rows["loss"])]
    # A grid of at most PANELS_PER_ROW panels a row (a grid with 13 losses
    # has 17 panels: one row would be unreadably wide).
    ncols = min(PANELS_PER_ROW, len(panels))
    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.4 * ncols, 3.0 * nrows), dpi=150, squeeze=False)
    for ax in axes.flat[len(panels):]:
        fig.delaxes(ax)
    for ax, (name, data, hue, part) in zip(axes.flat, panels):
        sns.lineplot(data=data, x="epoch", y="value", hue=hue, errorbar="sd", ax=ax)
        ax.set(title=name, ylabel="")
        handles, labels = ax.get_legend_handles_labels()
        if len(labels) > 6:  # many losses: a compact legend that leaves the curves visible
            ax.legend(handles, labels, fontsize="xx-small", ncol=2, framealpha=0.6)
        if part == "term":
            ax.set_yscale("symlog", linthresh=1e-3)
        elif part == "diagnostic":
            ax.set_ylim(-0.02, 1.02)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def anchor_distance_figure(anchors: np.ndarray, class_names: list[str], title: str = ""):
    """Heatmap of L2 distances between the learned anchors (or centres)."""
    set_style()
    dist = np.sqrt(((anchors[:, None, :] - anchors[None, :, :]) ** 2).sum(-1))
    size = min(10, 2 + 0.25 * len(anchors))
    fig, ax = plt.subplots(figsize=(size + 1, size), dpi=150)
    show_names = len(class_names) <= 30
    sns.heatmap(
        dist, ax=ax, cmap="viridis", square=True, cbar_kws={"label": "L2 distance"},
        xticklabels=class_names if show_names else False, yticklabels=class_names if show_names else False,
    )
    ax.set_title(title)
    fig.tight_layout()
    return fig

"""Every figure of the pipeline (one rule script each calls one function here).

- :func:`pr_figure`: mean precision-recall curves per loss;
- :func:`speedup_figure`: precision@k against the speed-up of two-stage
  over exact retrieval (:func:`speedup_points` computes the points);
- :func:`sensitivity_figure`: validation score of every trial against each
  swept parameter (selection, docs "Fair comparisons");
- :func:`tsne_figure`: t-SNE maps of database embeddings, one panel per loss
  (LM paper Figs. 4, 6, 8);
- :func:`retrieval_examples_figure`: queries with their top results per loss,
  green / red frames for right / wrong class (LM paper Fig. 5);
- :func:`training_curves_figure`: loss, accuracy and the loss's terms per
  epoch (:func:`history_frame` reads them from the checkpoints' histories);
- :func:`anchor_distance_figure`: heatmap of anchor-to-anchor distances.
- :func:`critical_difference_figure`: average ranks of a ranking with the
  post-hoc test's bars (``rankings:``, :mod:`workflow.rankings`).

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
from matplotlib.ticker import FuncFormatter, NullFormatter  # noqa: E402

from workflow.geometry import own_distance_rows  # noqa: E402
from workflow.retrieval.metrics import METRICS  # noqa: E402

RIGHT, WRONG = "#2ca02c", "#d62728"
# Per-epoch history entries plotted as totals (besides the loss terms).
TOTALS = ("loss", "accuracy")
PANELS_PER_ROW = 4


def set_style() -> None:
    sns.set_theme(style="whitegrid", context="paper", palette="tab10")


def tsne_figure(
    panels: dict[str, tuple[np.ndarray, np.ndarray]],
    seed: int = 0,
    max_points: int = 2000,
    title: str = "",
):
    """``panels``: loss name -> (embeddings (N, D), labels (N,)). The same
    subsample of points (chosen by ``seed``) is used in every panel."""
    from sklearn.manifold import TSNE  # only this figure needs scikit-learn

    set_style()
    fig, axes = plt.subplots(
        1, len(panels), figsize=(3.2 * len(panels), 3.4), dpi=150, squeeze=False
    )
    for ax, (name, (emb, labels)) in zip(axes[0], panels.items()):
        rng = np.random.default_rng(seed)
        keep = np.sort(
            rng.choice(len(emb), size=min(max_points, len(emb)), replace=False)
        )
        perplexity = float(min(30, max(2, (len(keep) - 1) / 3)))
        xy = TSNE(
            n_components=2, perplexity=perplexity, init="pca", random_state=seed
        ).fit_transform(emb[keep])
        n_classes = len(np.unique(labels))
        palette = "tab10" if n_classes <= 10 else "husl"
        sns.scatterplot(
            x=xy[:, 0],
            y=xy[:, 1],
            hue=labels[keep],
            palette=palette,
            s=6,
            linewidth=0,
            legend=False,
            ax=ax,
        )
        ax.set(title=name, xticks=[], yticks=[])
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def _show(ax, image: np.ndarray, colour: str | None = None) -> None:
    ax.imshow(
        image.squeeze(), cmap="gray" if image.shape[-1] == 1 else None, vmin=0, vmax=255
    )
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
    fig, axes = plt.subplots(
        rows,
        top + 1,
        figsize=(1.2 * (top + 1) + 1.2, 1.25 * rows),
        dpi=150,
        squeeze=False,
    )
    for qi, q in enumerate(query_index):
        for li, loss in enumerate(losses):
            row = axes[qi * len(losses) + li]
            _show(row[0], images[q])
            row[0].set_ylabel(loss, rotation=0, ha="right", va="center", fontsize=8)
            if li == 0:
                row[0].set_title(f"query: {class_names[labels[q]]}", fontsize=7)
            for k, db in enumerate(results[loss][q][:top]):
                _show(
                    row[k + 1], images[db], RIGHT if labels[db] == labels[q] else WRONG
                )
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
                        rows.append(
                            (loss, seed, epoch, term, float(term_value), name[:-1])
                        )
                elif name in TOTALS:
                    rows.append((loss, seed, epoch, name, float(value), "total"))
    return pd.DataFrame(
        rows, columns=["loss", "seed", "epoch", "term", "value", "part"]
    )


def training_curves_figure(history: pd.DataFrame, title: str = ""):
    """``history``: columns loss (the cell's loss name), seed, epoch, term,
    value and optionally part (see :func:`history_frame`). One panel per
    total quantity (loss, accuracy) with one line per loss; then, for every
    loss that recorded its terms, one panel "<loss>: terms" with one line per
    term (weighted as they enter the loss, so they add up to its total; a
    symmetric log scale, as for the total loss, so that a small term next
    to a large one and a term at 0 both show), and for every loss that
    recorded diagnostics, one panel "<loss>: diagnostics" (fractions, 0 to
    1). Lines are means over seeds with a ± sd band."""
    set_style()
    if "part" not in history:
        history = history.assign(part="total")
    totals = history[history["part"] == "total"]
    panels = [
        (name, totals[totals["term"] == name], "loss", "total")
        for name in dict.fromkeys(totals["term"])
    ]
    for part, label in [("term", "terms"), ("diagnostic", "diagnostics")]:
        rows = history[history["part"] == part]
        panels += [
            (f"{loss}: {label}", rows[rows["loss"] == loss], "term", part)
            for loss in dict.fromkeys(rows["loss"])
        ]
    # A grid of at most PANELS_PER_ROW panels a row (a grid with 13 losses
    # has 17 panels: one row would be unreadably wide).
    ncols = min(PANELS_PER_ROW, len(panels))
    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(3.4 * ncols, 3.0 * nrows), dpi=150, squeeze=False
    )
    for ax in axes.flat[len(panels) :]:
        fig.delaxes(ax)
    for ax, (name, data, hue, part) in zip(axes.flat, panels):
        sns.lineplot(data=data, x="epoch", y="value", hue=hue, errorbar="sd", ax=ax)
        ax.set(title=name, ylabel="")
        handles, labels = ax.get_legend_handles_labels()
        if (
            len(labels) > 6
        ):  # many losses: a compact legend that leaves the curves visible
            ax.legend(handles, labels, fontsize="xx-small", ncol=2, framealpha=0.6)
        if part == "term" or name == "loss":
            # Totals of different losses differ by orders of magnitude too
            # (island's pairwise term keeps its total near 13,000 where
            # CE's is 2 to 5 on CIFAR-100).
            ax.set_yscale("symlog", linthresh=1e-3)
        elif part == "diagnostic":
            ax.set_ylim(-0.02, 1.02)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def anchor_distance_figure(
    anchors: np.ndarray, class_names: list[str], title: str = ""
):
    """Heatmap of L2 distances between the learned anchors (or centres)."""
    set_style()
    dist = np.sqrt(((anchors[:, None, :] - anchors[None, :, :]) ** 2).sum(-1))
    size = min(10, 2 + 0.25 * len(anchors))
    fig, ax = plt.subplots(figsize=(size + 1, size), dpi=150)
    show_names = len(class_names) <= 30
    sns.heatmap(
        dist,
        ax=ax,
        cmap="viridis",
        square=True,
        cbar_kws={"label": "L2 distance"},
        xticklabels=class_names if show_names else False,
        yticklabels=class_names if show_names else False,
    )
    ax.set_title(title)
    fig.tight_layout()
    return fig


def pr_figure(curves: pd.DataFrame, title: str):
    """Mean precision-recall curve per (backbone, loss), averaged over seeds
    at each cutoff. ``curves`` has columns backbone, loss, seed, cutoff,
    precision, recall."""
    mean = curves.groupby(["backbone", "loss", "cutoff"], as_index=False)[
        ["precision", "recall"]
    ].mean()
    sns.set_theme(style="whitegrid", context="paper")
    fig, ax = plt.subplots(figsize=(4.5, 3.5), dpi=150)
    multiple_backbones = mean["backbone"].nunique() > 1
    sns.lineplot(
        data=mean,
        x="recall",
        y="precision",
        hue="loss",
        hue_order=list(dict.fromkeys(curves["loss"])),  # config order
        style="backbone" if multiple_backbones else None,
        estimator=None,
        sort=False,
        ax=ax,
    )
    ax.set(
        xlim=(0, 1), ylim=(0, 1.02), xlabel="recall", ylabel="precision", title=title
    )
    fig.tight_layout()
    return fig


def speedup_points(metrics: pd.DataFrame, k: int) -> pd.DataFrame:
    """Per (backbone, loss, retrieval): mean and std over seeds of precision@k
    and of the speed-up over exact retrieval, measured in distance
    computations per query (exact's / the method's, so exact is 1)."""
    precision = f"precision@{k}"
    cost = "distance_computations_per_query"
    metrics = own_distance_rows(metrics)
    rows = metrics[metrics["metric"].isin([precision, cost])]
    wide = rows.pivot_table(
        index=["backbone", "loss", "seed", "retrieval"],
        columns="metric",
        values="value",
        sort=False,
    ).reset_index()
    exact = wide.loc[wide["retrieval"] == "exact", ["backbone", "loss", "seed", cost]]
    wide = wide.merge(
        exact.rename(columns={cost: "exact_cost"}), on=["backbone", "loss", "seed"]
    )
    wide["speedup"] = wide["exact_cost"] / wide[cost]
    points = (
        wide.groupby(["backbone", "loss", "retrieval"], sort=False)
        .agg(
            precision=(precision, "mean"),
            precision_std=(precision, "std"),
            speedup=("speedup", "mean"),
            speedup_std=("speedup", "std"),
            seeds=("seed", "count"),
        )
        .reset_index()
    )
    return points


def speedup_figure(metrics: pd.DataFrame, k: int, title: str):
    """precision@k against speed-up over exact retrieval (in distance
    computations per query), one point per loss and retrieval (exact at 1,
    two-stage per c), mean over seeds with the std as error bars; a loss's
    points are joined in order of speed-up."""
    points = speedup_points(metrics, k)
    sns.set_theme(style="whitegrid", context="paper")
    fig, ax = plt.subplots(figsize=(4.5, 3.5), dpi=150)
    losses = list(dict.fromkeys(metrics["loss"]))  # config order, as pr_figure
    colours = dict(zip(losses, sns.color_palette(n_colors=len(losses))))
    backbones = list(dict.fromkeys(points["backbone"]))
    markers = dict(zip(backbones, ["o", "s", "^", "D", "v", "P"] * len(backbones)))
    for (backbone, loss), group in points.groupby(["backbone", "loss"], sort=False):
        group = group.sort_values("speedup")
        label = loss if len(backbones) == 1 else f"{loss} ({backbone})"
        ax.errorbar(
            group["speedup"],
            group["precision"],
            yerr=group["precision_std"].fillna(0),
            color=colours[loss],
            marker=markers[backbone],
            markersize=4,
            capsize=2,
            linewidth=1,
            label=label,
        )
        for _, point in group.iterrows():
            if point["retrieval"] != "exact":
                c = point["retrieval"].removeprefix("two_stage_c")
                ax.annotate(
                    f"c={c}",
                    (point["speedup"], point["precision"]),
                    fontsize=6,
                    xytext=(3, 3),
                    textcoords="offset points",
                    color=colours[loss],
                )
    ax.set_xscale("log")
    # Plain "2x" labels; on the minor ticks too when the range is under a
    # decade (it may then hold no major tick).
    times = FuncFormatter(lambda x, _: f"{x:.3g}x")
    ax.xaxis.set_major_formatter(times)
    low, high = ax.get_xlim()
    ax.xaxis.set_minor_formatter(times if high / low < 10 else NullFormatter())
    ax.tick_params(axis="x", which="both", labelsize=6)
    ax.set(
        xlabel="speed-up over exact retrieval (distance computations)",
        ylabel=METRICS.label(f"precision@{k}"),
        title=title,
    )
    if not (points["retrieval"] != "exact").any():
        ax.text(
            0.5,
            0.5,
            "no loss with class anchors:\nno two-stage retrieval",
            transform=ax.transAxes,
            ha="center",
            va="center",
            fontsize=8,
        )
    ax.legend(fontsize=6, loc="best")
    fig.tight_layout()
    return fig


def sensitivity_figure(record: dict, title: str):
    """One panel per swept parameter: the validation score of every trial
    against that parameter's value (log axis for positive values spanning
    more than a factor 10); the selected trial is marked."""
    keys = list(record["scores"][0]["values"]) or ["(no sweep)"]
    fig, axes = plt.subplots(
        1, len(keys), figsize=(3.2 * len(keys), 2.8), squeeze=False
    )
    for ax, key in zip(axes[0], keys):
        x = [s["values"].get(key, 0) for s in record["scores"]]
        y = [s["score"] for s in record["scores"]]
        numeric = all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in x
        )
        positions = x if numeric else list(range(len(x)))
        ax.scatter(positions, y, color="tab:blue", zorder=2)
        chosen = next(
            i for i, s in enumerate(record["scores"]) if s["values"] == record["values"]
        )
        ax.scatter(
            [positions[chosen]],
            [y[chosen]],
            s=120,
            facecolors="none",
            edgecolors="tab:red",
            zorder=3,
            label="selected",
        )
        if numeric and min(x) > 0 and max(x) / min(x) > 10:
            ax.set_xscale("log")
        if not numeric:
            ax.set_xticks(positions, [str(v) for v in x], rotation=45)
        ax.set_xlabel(key.split(".", 1)[-1])
        ax.set_ylabel(f"validation {METRICS.label(record['metric'])}")
        ax.grid(alpha=0.3)
    axes[0][0].legend(loc="best", fontsize="small")
    fig.suptitle(title, fontsize="medium")
    fig.tight_layout()
    return fig


def critical_difference_figure(
    average: pd.Series,
    posthoc: pd.DataFrame,
    title: str,
    note: str,
    alpha: float = 0.05,
):
    """Critical-difference diagram (Demšar 2006) of a ranking
    (:mod:`workflow.rankings`), drawn by scikit-posthocs: each loss at its
    average rank (1 = best, on the left), a bar joining the losses whose
    post-hoc p is at least ``alpha`` (not told apart; with no test, where
    the p-values are NaN, one bar joins them all and ``note`` says why)."""
    import scikit_posthocs as sp

    set_style()
    fig, ax = plt.subplots(figsize=(6.0, 1.2 + 0.28 * len(average)), dpi=150)
    sp.critical_difference_diagram(average, posthoc.fillna(1.0), alpha=alpha, ax=ax)
    ax.set_title(title, fontsize="medium")
    fig.text(0.5, 0.01, note, ha="center", va="bottom", fontsize=6, wrap=True)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return fig

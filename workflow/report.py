"""aggregate, tables and figures: from per-cell results to what a reader sees."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter, NullFormatter  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from workflow.config import Cell  # noqa: E402
from workflow.geometry import own_distance_rows  # noqa: E402
from workflow.retrieval.metrics import METRICS  # noqa: E402

CELL_COLUMNS = ["dataset", "regime", "backbone", "loss", "seed"]
METRICS_COLUMNS = CELL_COLUMNS + ["geometry", "distance", "retrieval", "metric", "value"]


# Rows of results/metrics.csv about a retrieval method's cost or about the
# split, not about retrieval quality: kept out of the tables.
NOT_IN_TABLES = tuple(m.name for m in METRICS if not m.quality)


def aggregate(cells: list[Cell], metric_files: list[str], factors: list[dict] | None = None) -> pd.DataFrame:
    """One tidy frame of every cell's metrics: each cell's rows (columns
    ``geometry``, ``distance``, ``retrieval``, ``metric``, ``value``, as
    ``evaluate`` writes them) with
    the cell's dataset, regime, backbone, loss and seed, then its fixed
    factors (``factors``, one dict per cell: embedding size, optimiser,
    epochs, batch size, augmentation), which tables may lay out."""
    frames = []
    for i, (cell, path) in enumerate(zip(cells, metric_files)):
        frame = pd.read_csv(path)
        for column in CELL_COLUMNS:
            frame[column] = getattr(cell, column)
        for column, value in (factors[i] if factors else {}).items():
            frame[column] = value
        frames.append(frame)
    factor_columns = list(factors[0]) if factors else []
    return pd.concat(frames, ignore_index=True)[METRICS_COLUMNS + factor_columns]


def exact_quality_rows(metrics: pd.DataFrame) -> pd.DataFrame:
    """The rows the tables show: exact retrieval's quality metrics, each
    loss in its own geometry."""
    metrics = own_distance_rows(metrics)
    keep = (metrics["retrieval"] == "exact") & ~metrics["metric"].isin(NOT_IN_TABLES)
    return metrics[keep]


def metric_order(names) -> list[str]:
    """Metrics in reading order: the registry's, a pattern's by k."""
    return METRICS.order(names)


def summary_table(metrics: pd.DataFrame) -> pd.DataFrame:
    """Rows (backbone, loss), columns (metric, mean/std/n) over seeds, of
    exact retrieval's quality metrics."""
    metrics = exact_quality_rows(metrics)
    stats = (
        metrics.groupby(["backbone", "loss", "metric"], sort=False)["value"]
        .agg(mean="mean", std="std", n="count")
        .reset_index()
    )
    table = stats.pivot(index=["backbone", "loss"], columns="metric", values=["mean", "std", "n"])
    table = table.swaplevel(0, 1, axis=1)
    # Rows in config order (the order cells appear), columns in reading order.
    rows = pd.MultiIndex.from_frame(stats[["backbone", "loss"]].drop_duplicates())
    columns = pd.MultiIndex.from_product([metric_order(stats["metric"]), ["mean", "std", "n"]])
    return table.reindex(index=rows, columns=columns)


def formatted_table(table: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """'mean ± std' strings (std over seeds; only the mean with one seed)."""
    out = pd.DataFrame(index=table.index)
    for metric in table.columns.get_level_values(0).unique():
        mean, std = table[(metric, "mean")], table[(metric, "std")]
        out[metric] = [
            f"{m:.{digits}f}" if pd.isna(s) else f"{m:.{digits}f} ± {s:.{digits}f}"
            for m, s in zip(mean, std)
        ]
    return out


def table_outputs(table: pd.DataFrame, caption: str) -> tuple[str, str, str]:
    """CSV (numbers), Markdown and LaTeX (booktabs) text of a summary table."""
    flat = table.copy()
    flat.columns = [f"{metric} {stat}" for metric, stat in flat.columns]
    csv = flat.reset_index().to_csv(index=False)
    text = formatted_table(table)
    markdown = f"**{caption}**\n\n" + text.reset_index().to_markdown(index=False) + "\n"
    latex = (
        text.reset_index()
        .style.hide(axis="index")
        .to_latex(hrules=True, caption=caption.replace("±", r"$\pm$"), position="t")
        .replace("±", r"$\pm$")
        .replace("_", r"\_")
    )
    return csv, markdown, latex


def pr_figure(curves: pd.DataFrame, title: str):
    """Mean precision-recall curve per (backbone, loss), averaged over seeds
    at each cutoff. ``curves`` has columns backbone, loss, seed, cutoff,
    precision, recall."""
    mean = curves.groupby(["backbone", "loss", "cutoff"], as_index=False)[["precision", "recall"]].mean()
    sns.set_theme(style="whitegrid", context="paper")
    fig, ax = plt.subplots(figsize=(4.5, 3.5), dpi=150)
    multiple_backbones = mean["backbone"].nunique() > 1
    sns.lineplot(
        data=mean, x="recall", y="precision", hue="loss",
        hue_order=list(dict.fromkeys(curves["loss"])),  # config order
        style="backbone" if multiple_backbones else None,
        estimator=None, sort=False, ax=ax,
    )
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="recall", ylabel="precision", title=title)
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
        index=["backbone", "loss", "seed", "retrieval"], columns="metric", values="value", sort=False
    ).reset_index()
    exact = wide.loc[wide["retrieval"] == "exact", ["backbone", "loss", "seed", cost]]
    wide = wide.merge(exact.rename(columns={cost: "exact_cost"}), on=["backbone", "loss", "seed"])
    wide["speedup"] = wide["exact_cost"] / wide[cost]
    points = (
        wide.groupby(["backbone", "loss", "retrieval"], sort=False)
        .agg(precision=(precision, "mean"), precision_std=(precision, "std"),
             speedup=("speedup", "mean"), speedup_std=("speedup", "std"), seeds=("seed", "count"))
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
            group["speedup"], group["precision"], yerr=group["precision_std"].fillna(0),
            color=colours[loss], marker=markers[backbone], markersize=4, capsize=2,
            linewidth=1, label=label,
        )
        for _, point in group.iterrows():
            if point["retrieval"] != "exact":
                c = point["retrieval"].removeprefix("two_stage_c")
                ax.annotate(f"c={c}", (point["speedup"], point["precision"]), fontsize=6,
                            xytext=(3, 3), textcoords="offset points", color=colours[loss])
    ax.set_xscale("log")
    # Plain "2x" labels; on the minor ticks too when the range is under a
    # decade (it may then hold no major tick).
    times = FuncFormatter(lambda x, _: f"{x:.3g}x")
    ax.xaxis.set_major_formatter(times)
    low, high = ax.get_xlim()
    ax.xaxis.set_minor_formatter(times if high / low < 10 else NullFormatter())
    ax.tick_params(axis="x", which="both", labelsize=6)
    ax.set(xlabel="speed-up over exact retrieval (distance computations)",
           ylabel=METRICS.label(f"precision@{k}"), title=title)
    if not (points["retrieval"] != "exact").any():
        ax.text(0.5, 0.5, "no loss with class anchors:\nno two-stage retrieval",
                transform=ax.transAxes, ha="center", va="center", fontsize=8)
    ax.legend(fontsize=6, loc="best")
    fig.tight_layout()
    return fig

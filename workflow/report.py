"""aggregate, tables and figures: from per-cell results to what a reader sees."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from workflow.config import Cell  # noqa: E402

CELL_COLUMNS = ["dataset", "regime", "backbone", "loss", "seed"]
METRICS_COLUMNS = CELL_COLUMNS + ["retrieval", "metric", "value"]
# Lower is better for these; every other metric is higher-is-better.
LOWER_IS_BETTER_SUFFIX = "_error"


def aggregate(cells: list[Cell], metric_files: list[str]) -> pd.DataFrame:
    """One tidy frame of every cell's metrics (``retrieval`` = ``exact``)."""
    frames = []
    for cell, path in zip(cells, metric_files):
        frame = pd.read_csv(path)
        for column in CELL_COLUMNS:
            frame[column] = getattr(cell, column)
        frame["retrieval"] = "exact"
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)[METRICS_COLUMNS]


def metric_order(names) -> list[str]:
    """Metrics in reading order: precision@k by k, errors by k, then the rest."""
    def key(name: str):
        if name.startswith("precision@"):
            return (0, int(name.split("@")[1]), name)
        if name.endswith("_error"):
            return (1, int(name[3:-6]) if name[3:-6].isdigit() else 0, name)
        rest = ["map", "map@r", "r_precision", "pr_auc", "accuracy"]
        return (2, rest.index(name) if name in rest else len(rest), name)

    return sorted(set(names), key=key)


def summary_table(metrics: pd.DataFrame) -> pd.DataFrame:
    """Rows (backbone, loss), columns (metric, mean/std/n) over seeds."""
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

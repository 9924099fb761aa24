"""aggregate and the per-(dataset, regime) tables: from per-cell results to
what a reader sees (the figures are drawn by workflow/figures.py)."""

from __future__ import annotations

import pandas as pd

from workflow.config import Cell
from workflow.geometry import own_distance_rows
from workflow.io import read_csv
from workflow.retrieval.metrics import METRICS

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
        frame = read_csv(path, METRICS_COLUMNS[len(CELL_COLUMNS):])
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

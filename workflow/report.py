"""aggregate: every cell's metrics in one tidy frame, results/metrics.csv
(the tables are built by workflow/tables.py, the figures drawn by
workflow/figures.py)."""

from __future__ import annotations

import pandas as pd

from workflow.config import Cell
from workflow.io import read_csv

CELL_COLUMNS = ["dataset", "regime", "backbone", "loss", "seed"]
METRICS_COLUMNS = CELL_COLUMNS + [
    "geometry",
    "distance",
    "retrieval",
    "metric",
    "value",
]


def aggregate(
    cells: list[Cell], metric_files: list[str], factors: list[dict] | None = None
) -> pd.DataFrame:
    """One tidy frame of every cell's metrics: each cell's rows (columns
    ``geometry``, ``distance``, ``retrieval``, ``metric``, ``value``, as
    ``evaluate`` writes them) with
    the cell's dataset, regime, backbone, loss and seed, then its fixed
    factors (``factors``, one dict per cell: embedding size, optimiser,
    epochs, batch size, augmentation), which tables may lay out."""
    frames = []
    for i, (cell, path) in enumerate(zip(cells, metric_files)):
        frame = read_csv(path, METRICS_COLUMNS[len(CELL_COLUMNS) :])
        for column in CELL_COLUMNS:
            frame[column] = getattr(cell, column)
        for column, value in (factors[i] if factors else {}).items():
            frame[column] = value
        frames.append(frame)
    factor_columns = list(factors[0]) if factors else []
    return pd.concat(frames, ignore_index=True)[METRICS_COLUMNS + factor_columns]

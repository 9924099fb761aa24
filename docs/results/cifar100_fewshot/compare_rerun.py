"""This folder's metrics (unfused Adam on the CPU) against a rerun of the
same config at a newer commit (fused Adam), cell by cell: per loss and
metric, the mean over seeds of both runs, the mean of the per-cell
differences, the largest per-cell difference, and the committed run's
standard deviation over seeds (the noise the tables already show).

    python docs/results/cifar100_fewshot/compare_rerun.py RERUN/results/metrics.csv
"""

import sys
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
METRICS = ["map", "map@r", "precision@1", "precision@10", "accuracy"]
KEYS = ["dataset", "regime", "backbone", "loss", "seed", "metric"]

committed = pd.read_csv(HERE / "metrics.csv")
rerun = pd.read_csv(sys.argv[1])
pairs = (committed[committed.retrieval == "exact"]
         .merge(rerun[rerun.retrieval == "exact"], on=KEYS, suffixes=("_committed", "_rerun")))
pairs = pairs[pairs.metric.isin(METRICS)].dropna(subset=["value_committed", "value_rerun"])
pairs["difference"] = pairs.value_rerun - pairs.value_committed
identical = (pairs.difference == 0).mean()
summary = pairs.groupby(["metric", "loss"]).agg(
    committed=("value_committed", "mean"), rerun=("value_rerun", "mean"),
    mean_difference=("difference", "mean"),
    largest_cell_difference=("difference", lambda d: d.abs().max()),
    committed_seed_std=("value_committed", "std"),
).reset_index()
summary["difference_over_std"] = summary.mean_difference.abs() / summary.committed_seed_std
print(f"{len(pairs)} (cell, metric) pairs; identical: {identical:.0%}")
print(summary.to_markdown(index=False, floatfmt=".4f"))

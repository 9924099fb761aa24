"""Cost per cell, from the ``benchmark:`` files of train and evaluate, from
the training job's ``train_stats.json`` (device, images seen, time in the
training loop) and from evaluate's ``timing.json`` (wall time of the exact
search per query, kept out of ``metrics.csv`` so that it is reproducible)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from workflow.config import Cell


def read_benchmark(path) -> pd.Series:
    """Snakemake's benchmark TSV: ``s`` (wall seconds), ``max_rss`` (MB), ..."""
    return pd.read_csv(path, sep="\t").iloc[-1]


def cost_table(
    cells: list[Cell],
    checkpoints,
    train_benchmarks,
    evaluate_benchmarks,
    evaluate_timings,
) -> pd.DataFrame:
    rows = []
    for cell, ckpt_path, train_b, eval_b, timing_path in zip(
        cells, checkpoints, train_benchmarks, evaluate_benchmarks, evaluate_timings
    ):
        # Device, images seen and loop time are in train_stats.json beside
        # model.pt (kept out of model.pt so that it is reproducible).
        checkpoint = json.loads(
            (Path(ckpt_path).parent / "train_stats.json").read_text()
        )
        train, evaluate = read_benchmark(train_b), read_benchmark(eval_b)
        images = checkpoint.get("images_seen")
        loop_seconds = checkpoint.get("train_seconds")
        # The exact search in the loss's own geometry.
        timing = json.loads(Path(timing_path).read_text())
        search = timing["search"][timing["geometry"]]["exact"]
        rows.append(
            {
                "dataset": cell.dataset,
                "regime": cell.regime,
                "backbone": cell.backbone,
                "loss": cell.loss,
                "seed": cell.seed,
                "device": checkpoint.get("device", "unknown"),
                "train_wall_s": float(train["s"]),
                "train_peak_rss_mb": float(train["max_rss"]),
                # Images per second of the training loop itself (no start-up).
                "train_images_per_s": images / loop_seconds
                if images and loop_seconds
                else float("nan"),
                "evaluate_wall_s": float(evaluate["s"]),
                "evaluate_peak_rss_mb": float(evaluate["max_rss"]),
                "search_s_per_query": search["seconds_per_query"],
            }
        )
    return pd.DataFrame(rows)

"""split: per (dataset, regime, seed) the train / database / query images.

Stratified per class and drawn from two independent random streams of the
seed, so query and database depend only on (dataset, seed) and are the same
for every regime, backbone and loss; the regime only picks the training
images. Datasets with an official train/test division train on the official
train images and draw query and database from the official test images;
others first hold out a stratified ``test_fraction`` of each class.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from workflow.config import ConfigError


def _by_class(labels: np.ndarray, indices: np.ndarray) -> dict[int, np.ndarray]:
    return {int(c): indices[labels[indices] == c] for c in np.unique(labels[indices])}


def make_split(
    labels: np.ndarray,
    official_split: np.ndarray,
    seed: int,
    query_per_class: int,
    database_per_class: int | None = None,
    test_fraction: float = 0.3,
    train_per_class: int | None = None,
    name: str = "dataset",
    regime: str = "regime",
) -> pd.DataFrame:
    """Return a frame with columns ``index`` and ``split`` (train/database/query),
    sorted by index. Errors name the config key that asks for too much."""
    labels = np.asarray(labels)
    eval_rng = np.random.default_rng([seed, 0])
    train_rng = np.random.default_rng([seed, 1])
    all_idx = np.arange(len(labels))
    if np.any(official_split != "none"):
        train_pool = all_idx[official_split == "train"]
        eval_pool = all_idx[official_split == "test"]
    else:
        train_parts, eval_parts = [], []
        for c, idx in _by_class(labels, all_idx).items():
            idx = eval_rng.permutation(idx)
            n_eval = int(round(test_fraction * len(idx)))
            eval_parts.append(idx[:n_eval])
            train_parts.append(idx[n_eval:])
        train_pool = np.concatenate(train_parts)
        eval_pool = np.concatenate(eval_parts)

    parts = []
    for c, idx in _by_class(labels, eval_pool).items():
        idx = eval_rng.permutation(idx)
        n_db = len(idx) - query_per_class if database_per_class is None else database_per_class
        if query_per_class + max(n_db, 1) > len(idx):
            raise ConfigError(
                f"config keys datasets.{name}.query_per_class/database_per_class: "
                f"class {c} has {len(idx)} evaluation images, fewer than "
                f"{query_per_class} queries plus {database_per_class or 1} database images"
            )
        parts.append(("query", idx[:query_per_class]))
        parts.append(("database", idx[query_per_class : query_per_class + n_db]))

    for c, idx in _by_class(labels, train_pool).items():
        if train_per_class is not None:
            if train_per_class > len(idx):
                raise ConfigError(
                    f"config key regimes.{regime}.train_per_class: {train_per_class} training "
                    f"images per class asked, class {c} of {name} has {len(idx)}"
                )
            idx = train_rng.choice(idx, size=train_per_class, replace=False)
        parts.append(("train", idx))

    frame = pd.DataFrame(
        {
            "index": np.concatenate([idx for _, idx in parts]).astype(np.int64),
            "split": np.concatenate([[s] * len(idx) for s, idx in parts]),
        }
    )
    return frame.sort_values("index", ignore_index=True)

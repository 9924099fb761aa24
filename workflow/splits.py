"""split: per (dataset, regime, seed) the train / database / query images.

Stratified per class and drawn from two independent random streams of the
seed, so query and database depend only on (dataset, seed) and are the same
for every regime, backbone and loss; the regime only picks the training
images. Datasets with an official train/test division train on the official
train images and draw query and database from the official test images;
others first hold out a stratified ``test_fraction`` of each class.

``database_from="train"`` draws the database from the training pool instead
(``database_per_class`` per class, before the regime picks its training
images from the rest), e.g. the LM paper's Places365 Table 2: 1,000 database
and 1,000 training images per class from train-standard, all validation
images as queries.
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
    database_from: str = "test",
    class_names: list[str] | None = None,
) -> pd.DataFrame:
    """Return a frame with columns ``index`` and ``split`` (train/database/query),
    sorted by index. Errors name the config key that asks for too much and
    the class that has too few images."""
    labels = np.asarray(labels)
    eval_rng = np.random.default_rng([seed, 0])
    train_rng = np.random.default_rng([seed, 1])
    all_idx = np.arange(len(labels))

    def cls(c: int) -> str:
        return f"class {c} ({class_names[c]})" if class_names is not None else f"class {c}"

    if database_from not in ("test", "train"):
        raise ConfigError(f"config key datasets.{name}.database_from: {database_from!r} is not 'test' or 'train'")
    if database_from == "train" and database_per_class is None:
        raise ConfigError(
            f"config key datasets.{name}.database_per_class: must be a number when "
            "database_from is 'train' (otherwise no training images would be left)"
        )
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
        if database_from == "train":
            if query_per_class > len(idx):
                raise ConfigError(
                    f"config key datasets.{name}.query_per_class: {cls(c)} has {len(idx)} "
                    f"evaluation images, fewer than {query_per_class} queries"
                )
            parts.append(("query", idx[:query_per_class]))
            continue
        n_db = len(idx) - query_per_class if database_per_class is None else database_per_class
        if query_per_class + max(n_db, 1) > len(idx):
            raise ConfigError(
                f"config keys datasets.{name}.query_per_class/database_per_class: "
                f"{cls(c)} has {len(idx)} evaluation images, fewer than "
                f"{query_per_class} queries plus {database_per_class or 1} database images"
            )
        parts.append(("query", idx[:query_per_class]))
        parts.append(("database", idx[query_per_class : query_per_class + n_db]))

    for c, idx in _by_class(labels, train_pool).items():
        taken = ""
        if database_from == "train":
            # From the evaluation stream: the database depends on (dataset, seed) only.
            idx = eval_rng.permutation(idx)
            if database_per_class >= len(idx):
                raise ConfigError(
                    f"config key datasets.{name}.database_per_class: {cls(c)} has {len(idx)} "
                    f"training images, not more than the {database_per_class} database images "
                    "asked (database_from: train leaves the rest for training)"
                )
            parts.append(("database", idx[:database_per_class]))
            idx = np.sort(idx[database_per_class:])
            taken = f" after {database_per_class} database images"
        if train_per_class is not None:
            if train_per_class > len(idx):
                raise ConfigError(
                    f"config key regimes.{regime}.train_per_class: {train_per_class} training "
                    f"images per class asked, {cls(c)} of {name} has {len(idx)}{taken}"
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

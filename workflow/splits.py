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


def _pools(labels, official_split, test_fraction, eval_rng) -> tuple[np.ndarray, np.ndarray]:
    """(training pool, evaluation pool): the official division, or a
    stratified ``test_fraction`` of each class held out (drawn from
    ``eval_rng``, whose state the caller goes on using)."""
    all_idx = np.arange(len(labels))
    if np.any(official_split != "none"):
        return all_idx[official_split == "train"], all_idx[official_split == "test"]
    train_parts, eval_parts = [], []
    for c, idx in _by_class(labels, all_idx).items():
        idx = eval_rng.permutation(idx)
        n_eval = int(round(test_fraction * len(idx)))
        eval_parts.append(idx[:n_eval])
        train_parts.append(idx[n_eval:])
    return np.concatenate(train_parts), np.concatenate(eval_parts)


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

    def cls(c: int) -> str:
        return f"class {c} ({class_names[c]})" if class_names is not None else f"class {c}"

    if database_from not in ("test", "train"):
        raise ConfigError(f"config key datasets.{name}.database_from: {database_from!r} is not 'test' or 'train'")
    if database_from == "train" and database_per_class is None:
        raise ConfigError(
            f"config key datasets.{name}.database_per_class: must be a number when "
            "database_from is 'train' (otherwise no training images would be left)"
        )
    train_pool, eval_pool = _pools(labels, official_split, test_fraction, eval_rng)

    parts = []
    for c, idx in _by_class(labels, eval_pool).items():
        idx = eval_rng.permutation(idx)
        if database_from == "train":
            if query_per_class > len(idx):
                raise ConfigError(
                    f"config key datasets.{name}.query_per_class: {cls(c)} has {len(idx)} "
                    f"evaluation images, fewer than {query_per_class} queries; lower it"
                )
            parts.append(("query", idx[:query_per_class]))
            continue
        n_db = len(idx) - query_per_class if database_per_class is None else database_per_class
        if query_per_class + max(n_db, 1) > len(idx):
            raise ConfigError(
                f"config keys datasets.{name}.query_per_class/database_per_class: "
                f"{cls(c)} has {len(idx)} evaluation images, fewer than "
                f"{query_per_class} queries plus {database_per_class or 1} database images; "
                "lower them (or add images of that class)"
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
                    "asked (database_from: train leaves the rest for training); lower it"
                )
            parts.append(("database", idx[:database_per_class]))
            idx = np.sort(idx[database_per_class:])
            taken = f" after {database_per_class} database images"
        if train_per_class is not None:
            if train_per_class > len(idx):
                raise ConfigError(
                    f"config key regimes.{regime}.train_per_class: {train_per_class} training "
                    f"images per class asked, {cls(c)} of {name} has {len(idx)}{taken}; "
                    "lower it to at most that"
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


def make_validation_split(
    labels: np.ndarray,
    official_split: np.ndarray,
    split: pd.DataFrame,
    seed: int,
    query_per_class: int = 5,
    database_per_class: int = 20,
    class_disjoint: bool = False,
    class_fraction: float = 0.5,
    test_fraction: float = 0.3,
    name: str = "dataset",
    regime: str = "regime",
) -> pd.DataFrame:
    """The validation split of a (dataset, regime, seed): a frame like
    :func:`make_split`'s (``train``, ``database``, ``query``) that trials
    train on and are scored on. It reads only training-pool images: the
    test queries and database of ``split`` are never in it.

    Per class, validation query and database images come from the training
    pool images the regime leaves unused when there are enough (so
    few-shot training images stay untouched and trials train on exactly
    them); otherwise from the class's training images, which the trials then
    leave out of training. With ``class_disjoint``, a seeded
    ``class_fraction`` of the classes is held out: validation draws from
    their whole training pool and trials train on the other classes only.
    Draws come from a third random stream of the seed.
    """
    labels = np.asarray(labels)
    train_pool, _ = _pools(labels, official_split, test_fraction, np.random.default_rng([seed, 0]))
    evaluation = set(split.loc[split["split"] != "train", "index"].tolist())
    train = np.sort(split.loc[split["split"] == "train", "index"].to_numpy())
    pool = np.array([i for i in train_pool if i not in evaluation], dtype=np.int64)
    rng = np.random.default_rng([seed, 2])
    need = query_per_class + database_per_class
    classes = np.unique(labels[pool])
    held_out = set()
    if class_disjoint:
        n_held = int(round(class_fraction * len(classes)))
        if not 1 <= n_held < len(classes):
            raise ConfigError(
                f"config key validation.class_fraction: {class_fraction} of {len(classes)} classes "
                f"holds out {n_held}; at least one class must be held out and one left to train on"
            )
        held_out = set(rng.choice(classes, size=n_held, replace=False).tolist())
    parts = []
    for c in classes:
        of_class = pool[labels[pool] == c]
        unused = of_class[~np.isin(of_class, train)]
        trained = of_class[np.isin(of_class, train)]
        if class_disjoint and c not in held_out:
            parts.append(("train", trained))  # a training class: no validation images
            continue
        if c in held_out:
            source, keep_training = of_class, np.array([], dtype=np.int64)
        elif len(unused) >= need:
            source, keep_training = unused, trained
        else:
            source = trained
            if len(trained) < need + 1:
                raise ConfigError(
                    f"config keys validation.query_per_class/database_per_class: class {c} of "
                    f"{name} ({regime}) has {len(unused)} unused and {len(trained)} training "
                    f"images, too few for {query_per_class} validation queries plus "
                    f"{database_per_class} database images (and one image left to train on); "
                    "lower them"
                )
            keep_training = None
        if len(source) < need:
            raise ConfigError(
                f"config keys validation.query_per_class/database_per_class: held-out class {c} "
                f"of {name} has {len(source)} training-pool images, fewer than "
                f"{query_per_class} + {database_per_class}; lower them"
            )
        drawn = rng.permutation(source)
        parts.append(("query", drawn[:query_per_class]))
        parts.append(("database", drawn[query_per_class:need]))
        if keep_training is None:
            keep_training = np.setdiff1d(trained, drawn[:need])
        parts.append(("train", keep_training))
    frame = pd.DataFrame(
        {
            "index": np.concatenate([idx for _, idx in parts]).astype(np.int64),
            "split": np.concatenate([[s] * len(idx) for s, idx in parts]),
        }
    )
    return frame.sort_values("index", ignore_index=True)

"""The validation split of a (dataset, regime, seed): the images trials
train on and are scored on, drawn from the training pool only (see
:mod:`workflow.splits` for the test side and the protocols), and the
held-out classes of class-disjoint validation.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from workflow.config import ConfigError
from workflow.seeds import stream_rng
from workflow.splits import ALL_AGAINST_ALL, MIN_CLASSES, draw_pools, split_frame


def held_out_classes(class_fraction: float, n_classes: int) -> int:
    """How many of ``n_classes`` classes class-disjoint validation holds out."""
    return int(round(class_fraction * n_classes))


def class_fraction_problem(
    class_fraction: float, n_classes: int, how: str = ""
) -> str | None:
    """Why class-disjoint validation cannot hold out ``class_fraction`` of
    ``n_classes`` training classes, or None: the held-out classes (scored)
    and the classes the trials train on need :data:`MIN_CLASSES` each."""
    held = held_out_classes(class_fraction, n_classes)
    if MIN_CLASSES <= held <= n_classes - MIN_CLASSES:
        return None
    if n_classes < 2 * MIN_CLASSES:
        fix = (
            f"class-disjoint validation needs at least {2 * MIN_CLASSES} training classes: give more "
            "(datasets.<name>.train_classes or classes), or, with protocol closed_set, set "
            "validation.class_disjoint: false"
        )
    else:
        fix = (
            f"set it between {MIN_CLASSES / n_classes:.3g} and {(n_classes - MIN_CLASSES) / n_classes:.3g} "
            f"(round(class_fraction x {n_classes}) classes are held out)"
        )
    return (
        f"config key validation.class_fraction: {class_fraction} of {n_classes} training classes{how} holds out "
        f"{held} for validation and leaves {n_classes - held} for the trials to train on; each needs at least "
        f"{MIN_CLASSES} (one held-out class scores every trial a perfect 1.0, so the selection is a tie; one "
        f"training class trains nothing); {fix}"
    )


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
    database_from: str = "test",
    dataset_database_per_class: int | None = None,
    protocol: str = "closed_set",
    train_classes: int | None = None,
) -> pd.DataFrame:
    """The validation split of a (dataset, regime, seed): a frame like
    :func:`make_split`'s (``train``, ``database``, ``query``) that trials
    train on and are scored on. ``split`` holds the regime's training
    images (rows ``train``: the training split file, or :func:`make_split`'s
    frame). It reads only training-pool images: the pool is recomputed from
    the training-pool keys (``test_fraction``, ``database_from`` and the
    dataset's ``dataset_database_per_class``), so test queries and database
    (also a database drawn from the training pool) are never in it; rows of
    ``split`` other than ``train`` are left out too.

    Per class, validation query and database images come from the training
    pool images the regime leaves unused when there are enough (so
    few-shot training images stay untouched and trials train on exactly
    them); otherwise from the class's training images, which the trials then
    leave out of training. With ``class_disjoint``, a seeded
    ``class_fraction`` of the classes is held out: validation draws from
    their whole training pool and trials train on the other classes only.
    A dataset of protocol class_disjoint is always validated so (inside its
    training classes, as the Reality Check does), and the whole training
    pool of its held-out classes is evaluated all against all
    (:data:`ALL_AGAINST_ALL`), as its test classes are.
    Draws come from the seed's ``validation_split`` stream.
    """
    labels = np.asarray(labels)
    pools, _, _, _ = draw_pools(
        labels,
        official_split,
        seed,
        test_fraction,
        database_from,
        dataset_database_per_class,
        name,
        None,
        protocol,
        train_classes,
    )
    all_against_all = protocol == "class_disjoint"
    class_disjoint = class_disjoint or all_against_all
    pool = np.concatenate(list(pools.values())).astype(np.int64)
    pool = pool[
        ~np.isin(pool, split.loc[split["split"] != "train", "index"].to_numpy())
    ]
    train = np.sort(split.loc[split["split"] == "train", "index"].to_numpy())
    rng = stream_rng(seed, "validation_split")
    need = query_per_class + database_per_class
    classes = np.unique(labels[pool])
    held_out = set()
    if class_disjoint:
        n_held = held_out_classes(class_fraction, len(classes))
        problem = class_fraction_problem(
            class_fraction, len(classes), f" of dataset {name}"
        )
        if problem:
            raise ConfigError(problem)
        held_out = set(rng.choice(classes, size=n_held, replace=False).tolist())
    parts = []
    for c in classes:
        of_class = pool[labels[pool] == c]
        unused = of_class[~np.isin(of_class, train)]
        trained = of_class[np.isin(of_class, train)]
        if class_disjoint and c not in held_out:
            parts.append(("train", trained))  # a training class: no validation images
            continue
        if c in held_out and all_against_all:
            parts.append((ALL_AGAINST_ALL, of_class))
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
    return split_frame(parts)

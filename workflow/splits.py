"""split: per (dataset, seed) the query and database images, and per
(dataset, regime, seed) the training images, written as two files.

``make_evaluation_split`` gives query and database; they depend only on
(dataset, seed) and on the dataset keys ``test_fraction``,
``query_per_class``, ``database_per_class`` and ``database_from``, never on
the regime, backbone or loss. ``make_training_split`` gives the training
images of a regime; they depend only on the keys that decide the training
pool (``test_fraction``, ``database_from``, and ``database_per_class`` when
``database_from`` is ``train``: :func:`workflow.config.training_pool_spec`)
and on ``train_per_class``. So changing ``query_per_class`` re-draws query
and database and re-embeds every cell, but trains nothing again.

Datasets with an official train/test division train on the official train
images and draw query and database from the official test images; others
first hold out a stratified ``test_fraction`` of each class (the
evaluation pool). Random streams of a seed (``workflow.seeds``; a
class's sub-stream is numbered ``c + 1`` because ``SeedSequence`` ignores
trailing zeros, so ``[seed, 1, 0]`` would be the stream ``[seed, 1]``
itself):

- ``evaluation_split``: the ``test_fraction`` hold-out, then per class of
  the evaluation pool one permutation whose first ``query_per_class``
  images are the queries and the next ``database_per_class`` the database
  (the permutation does not depend on those numbers); with
  ``database_from="train"``, sub-stream ``c + 1`` draws the database images
  of class ``c`` from its training pool (``database_per_class``; the rest is
  the class's training pool), e.g. the LM paper's Places365 Table 2: 1,000
  database and 1,000 training images per class from train-standard, all
  validation images as queries;
- ``training_split``, sub-stream ``c + 1``: one permutation of class
  ``c``'s training pool (sorted by index), of which a regime with
  ``train_per_class`` k takes the first k. Every k of one (dataset, seed)
  cuts the same permutation, so few-shot regimes are **nested**: the
  5-shot images of a class are among its 20-shot images, which are among
  its full training pool;
- ``validation_split``: the validation split (:func:`workflow.validation_split.make_validation_split`).

Query, database and training images are disjoint. :func:`make_split`
gives all three in one frame (tests, benchmarks).

**Protocols** (dataset key ``protocol``). ``closed_set`` (the default) is
the above: query and database share the training classes. With
``class_disjoint`` (the deep-metric-learning standard: CUB-200-2011,
Cars196, SOP, In-Shop) test classes never appear in training: with
``train_classes`` N (a dataset key, or the dataset's registered official
boundary: CUB 100, Cars196 98) the first N classes (classes.json order)
are the training pool, all their images, and the other classes the
evaluation pool; without one, the official sides, which must then be
class-disjoint (SOP's Ebay_train / Ebay_test, In-Shop's train / query and
gallery). Regimes draw from the training classes only. The evaluation
split then holds every image of the test classes with ``split`` =
:data:`ALL_AGAINST_ALL` (``"all"``): each is a query against all the
others, itself excluded, and part of everyone's database; where every
test image has an official ``query`` or ``database`` side (In-Shop's query
and gallery), those rows instead. ``query_per_class``,
``database_per_class`` and ``test_fraction`` do not apply. The validation
split of such a dataset is class-disjoint inside the training classes
(:func:`workflow.validation_split.make_validation_split`), its held-out classes all against all too.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from workflow.config import ConfigError
from workflow.seeds import stream_rng

# The ``split`` value of an evaluation (or validation) row that is query
# and database at once: evaluated all against all, itself excluded.
ALL_AGAINST_ALL = "all"
PROTOCOLS = ("closed_set", "class_disjoint")
# Official sides of the evaluation pool: "test", or an official query and
# database division of it (In-Shop's query and gallery).
EVALUATION_SIDES = ("test", "query", "database")


def _by_class(labels: np.ndarray, indices: np.ndarray) -> dict[int, np.ndarray]:
    return {int(c): indices[labels[indices] == c] for c in np.unique(labels[indices])}


def _class_name(class_names: list[str] | None):
    def cls(c: int) -> str:
        return (
            f"class {c} ({class_names[c]})" if class_names is not None else f"class {c}"
        )

    return cls


def split_frame(parts: list[tuple[str, np.ndarray]]) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "index": np.concatenate([idx for _, idx in parts] or [[]]).astype(np.int64),
            "split": np.concatenate(
                [[s] * len(idx) for s, idx in parts] or [[]]
            ).astype(object),
        }
    )
    return frame.sort_values("index", ignore_index=True)


def _pools(
    labels, official_split, test_fraction, eval_rng, name, cls
) -> tuple[np.ndarray, np.ndarray]:
    """(training pool, evaluation pool): the official division, or a
    stratified ``test_fraction`` of each class held out (drawn from
    ``eval_rng``, whose state the caller goes on using).

    Every class must have images on both sides: a class without evaluation
    images would get no queries and drop out of every metric without a
    word, one without training images would be retrieved but never
    trained on. So a class whose held-out share rounds to 0 (or to all of
    it) stops with the class and ``test_fraction`` named, and with an
    official division, a class missing on one side stops too."""
    all_idx = np.arange(len(labels))
    if np.any(official_split != "none"):
        train, evaluation = (
            all_idx[official_split == "train"],
            all_idx[np.isin(official_split, EVALUATION_SIDES)],
        )
        for side, pool in [("test", evaluation), ("train", train)]:
            missing = sorted(
                set(np.unique(labels).tolist()) - set(np.unique(labels[pool]).tolist())
            )
            if missing:
                raise ConfigError(
                    f"dataset {name}: {cls(missing[0])} has no images on the official {side} side"
                    + (
                        f" ({len(missing)} classes have none)"
                        if len(missing) > 1
                        else ""
                    )
                    + f", so it would {'get no queries' if side == 'test' else 'never be trained on'}; "
                    f"add {side} images of it, or leave it out with config key datasets.{name}.classes "
                    f"(a dataset whose sides hold different classes needs datasets.{name}.protocol: "
                    "class_disjoint)"
                )
        return train, evaluation
    train_parts, eval_parts = [], []
    for c, idx in _by_class(labels, all_idx).items():
        idx = eval_rng.permutation(idx)
        n_eval = int(round(test_fraction * len(idx)))
        if not 0 < n_eval < len(idx):
            raise ConfigError(
                f"config key datasets.{name}.test_fraction: {test_fraction} of the {len(idx)} images of "
                f"{cls(c)} rounds to {n_eval} held-out images, so that class would "
                + ("get no queries" if n_eval == 0 else "keep no training images")
                + "; every class needs at least one image on each side: "
                + ("raise test_fraction" if n_eval == 0 else "lower test_fraction")
                + ", add images of that class, or leave it out with datasets."
                + f"{name}.classes"
            )
        eval_parts.append(idx[:n_eval])
        train_parts.append(idx[n_eval:])
    return np.concatenate(train_parts), np.concatenate(eval_parts)


# Every set of classes that is trained, retrieved, clustered or selected on
# holds at least this many: with one class every database image is
# relevant to every query (each metric a meaningless 1.0), a classifier
# has nothing to tell apart (loss 0) and a pair loss no negatives.
MIN_CLASSES = 2


def class_disjoint_boundary_problem(
    train_classes: int, n_classes: int, name: str, how: str = "", note: str = ""
) -> str | None:
    """Why the first ``train_classes`` (``note``: where that value comes
    from) of ``n_classes`` classes (``how``: how that number is known) cannot train against the rest as test classes
    under protocol class_disjoint, or None: both sides need
    :data:`MIN_CLASSES`. Checked before any job where the config gives the
    number of classes (``workflow.guards``), else by the split job."""
    trained, test = min(train_classes, n_classes), max(n_classes - train_classes, 0)
    if trained >= MIN_CLASSES and test >= MIN_CLASSES:
        return None
    fix = (
        f"set it between {MIN_CLASSES} and {n_classes - MIN_CLASSES}"
        if n_classes >= 2 * MIN_CLASSES
        else f"the protocol needs at least {2 * MIN_CLASSES} classes ({MIN_CLASSES} to train, {MIN_CLASSES} to "
        f"test): give the dataset more classes (datasets.{name}.classes) or use protocol closed_set"
    )
    leaves = (
        "no test class"
        if not test
        else f"{test} test class"
        if test < MIN_CLASSES
        else f"{trained} training class"
    )
    return (
        f"config key datasets.{name}.train_classes: {train_classes}{note} with {n_classes} classes{how} leaves "
        f"{leaves}: "
        "the first train_classes classes (classes.json order) train, the rest are test classes, and each side "
        f"needs at least {MIN_CLASSES} (one test class scores every metric a meaningless 1.0, one training "
        f"class trains nothing); {fix}"
    )


def _class_disjoint_pools(
    labels, official_split, train_classes, name, cls
) -> tuple[np.ndarray, np.ndarray]:
    """(training pool, evaluation pool) of the class-disjoint protocol: the
    first ``train_classes`` classes against the others, or, with None, the
    official sides, which must then hold different classes; each side with
    at least :data:`MIN_CLASSES` classes."""
    all_idx = np.arange(len(labels))
    present = np.unique(labels)
    if train_classes is not None:
        train, evaluation = (
            all_idx[labels < train_classes],
            all_idx[labels >= train_classes],
        )
        problem = class_disjoint_boundary_problem(
            train_classes,
            len(present),
            name,
            f" (labels {present.min()}..{present.max()})",
        )
        if problem:
            raise ConfigError(problem)
        return train, evaluation
    if not np.any(official_split != "none"):
        raise ConfigError(
            f"dataset {name}: protocol class_disjoint needs a division of the classes, and this dataset has "
            f"no official train and test sides; set config key datasets.{name}.train_classes: N (the first N "
            "classes train, the others are test classes)"
        )
    train, evaluation = (
        all_idx[official_split == "train"],
        all_idx[np.isin(official_split, EVALUATION_SIDES)],
    )
    both = np.intersect1d(labels[train], labels[evaluation])
    if both.size:
        raise ConfigError(
            f"dataset {name}: {cls(int(both[0]))} has images on both official sides (train and test)"
            + (f" ({both.size} classes have)" if both.size > 1 else "")
            + ", so the official division is not class-disjoint; set config key "
            f"datasets.{name}.train_classes: N (the first N classes train), or use protocol closed_set"
        )
    for side, pool in [("train", train), ("test", evaluation)]:
        found = len(np.unique(labels[pool]))
        if found < MIN_CLASSES:
            raise ConfigError(
                f"dataset {name}: {found} class{'' if found == 1 else 'es'} on the official {side} side, so "
                f"protocol class_disjoint has {found} {'training' if side == 'train' else 'test'} "
                f"class{'' if found == 1 else 'es'}; it needs at least {MIN_CLASSES} on each side (one test class "
                "scores every metric a meaningless 1.0, one training class trains nothing): add classes, or set "
                f"config key datasets.{name}.train_classes: N (the first N classes train)"
            )
    return train, evaluation


def check_classes(labels: np.ndarray, class_names: list[str] | None, name: str) -> None:
    """Retrieval needs at least two classes with images: with one, every
    database image is relevant to every query and each metric is a
    perfect 1.0 that says nothing."""
    present = np.unique(np.asarray(labels))
    if len(present) < 2:
        found = ", ".join(_class_name(class_names)(int(c)) for c in present) or "none"
        raise ConfigError(
            f"dataset {name}: {len(present)} class{'' if len(present) == 1 else 'es'} with images ({found}); "
            "retrieval needs at least 2 classes (with one, every metric is a meaningless 1.0). Add classes "
            "to the dataset"
            f" or, if config key datasets.{name}.classes names only one, name more"
        )


def draw_pools(
    labels: np.ndarray,
    official_split: np.ndarray,
    seed: int,
    test_fraction: float,
    database_from: str,
    database_per_class: int | None,
    name: str,
    class_names: list[str] | None,
    protocol: str = "closed_set",
    train_classes: int | None = None,
) -> tuple[
    dict[int, np.ndarray], dict[int, np.ndarray], np.ndarray, np.random.Generator
]:
    """Per class, the training pool and (``database_from="train"``) the
    database images taken out of it; the evaluation pool; and the
    evaluation stream after the hold-out (for the queries). Only the
    training-pool keys enter here, so the training split never depends on
    ``query_per_class`` (nor on ``database_per_class`` when the database
    comes from the test side)."""
    labels = np.asarray(labels)
    official_split = np.asarray(official_split)
    cls = _class_name(class_names)
    if database_from not in ("test", "train"):
        raise ConfigError(
            f"config key datasets.{name}.database_from: {database_from!r} is not 'test' or 'train'"
        )
    if database_from == "train" and database_per_class is None:
        raise ConfigError(
            f"config key datasets.{name}.database_per_class: must be a number when "
            "database_from is 'train' (otherwise no training images would be left)"
        )
    if protocol not in PROTOCOLS:
        raise ConfigError(
            f"config key datasets.{name}.protocol: {protocol!r} is not one of {', '.join(PROTOCOLS)}"
        )
    if protocol != "class_disjoint" and train_classes is not None:
        raise ConfigError(
            f"config key datasets.{name}.train_classes: applies only with protocol class_disjoint (it moves the "
            f"boundary between training and test classes); set datasets.{name}.protocol: class_disjoint or remove it"
        )
    if protocol == "class_disjoint" and database_from == "train":
        raise ConfigError(
            f"config key datasets.{name}.database_from: 'train' would put training classes into the database; "
            f"protocol class_disjoint evaluates the test classes among themselves: remove database_from"
        )
    check_classes(labels, class_names, name)
    eval_rng = stream_rng(seed, "evaluation_split")
    if protocol == "class_disjoint":
        train_pool, eval_pool = _class_disjoint_pools(
            labels, official_split, train_classes, name, cls
        )
    else:
        train_pool, eval_pool = _pools(
            labels, official_split, test_fraction, eval_rng, name, cls
        )
    pools, databases = {}, {}
    for c, idx in _by_class(labels, train_pool).items():
        if database_from == "train":
            # A sub-stream per class: the database depends on (dataset,
            # seed, database_per_class) only, never on the queries.
            idx = stream_rng(seed, "evaluation_split", c + 1).permutation(np.sort(idx))
            if database_per_class >= len(idx):
                raise ConfigError(
                    f"config key datasets.{name}.database_per_class: {cls(c)} has {len(idx)} "
                    f"training images, not more than the {database_per_class} database images "
                    "asked (database_from: train leaves the rest for training); lower it"
                )
            databases[c] = idx[:database_per_class]
            idx = np.sort(idx[database_per_class:])
        pools[c] = idx
    return pools, databases, eval_pool, eval_rng


def make_training_split(
    labels: np.ndarray,
    official_split: np.ndarray,
    seed: int,
    train_per_class: int | None = None,
    test_fraction: float = 0.3,
    database_from: str = "test",
    database_per_class: int | None = None,
    name: str = "dataset",
    regime: str = "regime",
    class_names: list[str] | None = None,
    protocol: str = "closed_set",
    train_classes: int | None = None,
) -> pd.DataFrame:
    """The training images of a (dataset, regime, seed): a frame with
    columns ``index`` and ``split`` (all ``train``), sorted by index.

    ``train_per_class`` None takes each class's whole training pool; k takes
    the first k of the class's permutation (stream ``training_split``,
    sub-stream ``c + 1``), so
    for one (dataset, seed) a smaller k gives a subset of a larger k's
    images (nested few-shot regimes). ``database_per_class`` matters only
    with ``database_from="train"`` (the database leaves the pool first).
    Errors name the config key that asks for too much and the class."""
    labels = np.asarray(labels)
    cls = _class_name(class_names)
    pools, _, _, _ = draw_pools(
        labels,
        official_split,
        seed,
        test_fraction,
        database_from,
        database_per_class,
        name,
        class_names,
        protocol,
        train_classes,
    )
    taken = (
        f" after {database_per_class} database images"
        if database_from == "train"
        else ""
    )
    parts = []
    for c, idx in pools.items():
        if train_per_class is not None:
            if train_per_class > len(idx):
                raise ConfigError(
                    f"config key regimes.{regime}.train_per_class: {train_per_class} training "
                    f"images per class asked, {cls(c)} of {name} has {len(idx)}{taken}; "
                    "lower it to at most that"
                )
            # One permutation per class, independent of k and of the other
            # classes: the first k of it nest for every k.
            idx = stream_rng(seed, "training_split", c + 1).permutation(np.sort(idx))[
                :train_per_class
            ]
        parts.append(("train", idx))
    return split_frame(parts)


def make_evaluation_split(
    labels: np.ndarray,
    official_split: np.ndarray,
    seed: int,
    query_per_class: int,
    database_per_class: int | None = None,
    test_fraction: float = 0.3,
    database_from: str = "test",
    name: str = "dataset",
    class_names: list[str] | None = None,
    protocol: str = "closed_set",
    train_classes: int | None = None,
) -> pd.DataFrame:
    """The query and database images of a (dataset, seed), the same for
    every regime: a frame with columns ``index`` and ``split``
    (``query``/``database``, or :data:`ALL_AGAINST_ALL` with protocol
    class_disjoint), sorted by index. Errors name the config key that asks
    for too much and the class that has too few images."""
    labels = np.asarray(labels)
    cls = _class_name(class_names)
    _, databases, eval_pool, eval_rng = draw_pools(
        labels,
        official_split,
        seed,
        test_fraction,
        database_from,
        database_per_class,
        name,
        class_names,
        protocol,
        train_classes,
    )
    if protocol == "class_disjoint":
        official = np.asarray(official_split)[eval_pool]
        if np.isin(official, ["query", "database"]).all():
            return split_frame(
                [
                    ("query", eval_pool[official == "query"]),
                    ("database", eval_pool[official == "database"]),
                ]
            )
        return split_frame([(ALL_AGAINST_ALL, eval_pool)])
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
        n_db = (
            len(idx) - query_per_class
            if database_per_class is None
            else database_per_class
        )
        if query_per_class + max(n_db, 1) > len(idx):
            raise ConfigError(
                f"config keys datasets.{name}.query_per_class/database_per_class: "
                f"{cls(c)} has {len(idx)} evaluation images, fewer than "
                f"{query_per_class} queries plus {database_per_class or 1} database images; "
                "lower them (or add images of that class)"
            )
        parts.append(("query", idx[:query_per_class]))
        parts.append(("database", idx[query_per_class : query_per_class + n_db]))
    parts += [("database", idx) for idx in databases.values()]
    return split_frame(parts)


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
    protocol: str = "closed_set",
    train_classes: int | None = None,
) -> pd.DataFrame:
    """Both files in one frame: columns ``index`` and ``split``
    (train/database/query/all), sorted by index (the pipeline writes
    :func:`make_training_split` and :func:`make_evaluation_split` apart)."""
    pool = dict(
        test_fraction=test_fraction,
        database_from=database_from,
        database_per_class=database_per_class,
        name=name,
        class_names=class_names,
        protocol=protocol,
        train_classes=train_classes,
    )
    evaluation = make_evaluation_split(
        labels, official_split, seed, query_per_class, **pool
    )
    training = make_training_split(
        labels, official_split, seed, train_per_class, regime=regime, **pool
    )
    return pd.concat([training, evaluation]).sort_values("index", ignore_index=True)

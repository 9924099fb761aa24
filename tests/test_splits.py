"""Splits: disjoint, stratified, k per class in few-shot, reproducible."""

from __future__ import annotations

import numpy as np
import pytest

from workflow.config import ConfigError
from workflow.datasets import load_dataset
from workflow.splits import make_split

DIGITS = load_dataset("sklearn_digits")
NONE = np.full(len(DIGITS.labels), "none")


def split_sets(frame):
    return {name: set(frame.loc[frame["split"] == name, "index"]) for name in ["train", "database", "query"]}


def per_class(frame, name, labels):
    idx = frame.loc[frame["split"] == name, "index"].to_numpy()
    return np.bincount(labels[idx], minlength=labels.max() + 1)


def test_splits_are_disjoint_and_cover_the_dataset():
    frame = make_split(DIGITS.labels, NONE, seed=0, query_per_class=10)
    sets = split_sets(frame)
    assert not sets["train"] & sets["database"]
    assert not sets["train"] & sets["query"]
    assert not sets["database"] & sets["query"]
    assert set().union(*sets.values()) == set(range(len(DIGITS.labels)))
    assert frame["index"].is_monotonic_increasing and frame["index"].is_unique


def test_splits_are_stratified():
    labels = DIGITS.labels
    frame = make_split(labels, NONE, seed=3, query_per_class=7, database_per_class=20, test_fraction=0.3)
    assert (per_class(frame, "query", labels) == 7).all()
    assert (per_class(frame, "database", labels) == 20).all()
    # The evaluation pool is 30% of every class; the rest trains.
    class_sizes = np.bincount(labels)
    assert np.array_equal(per_class(frame, "train", labels), class_sizes - np.rint(0.3 * class_sizes))


def test_few_shot_takes_k_per_class_and_keeps_query_and_database():
    labels = DIGITS.labels
    full = make_split(labels, NONE, seed=1, query_per_class=10)
    few = make_split(labels, NONE, seed=1, query_per_class=10, train_per_class=5)
    assert (per_class(few, "train", labels) == 5).all()
    assert split_sets(few)["train"] < split_sets(full)["train"]
    for name in ["database", "query"]:
        assert split_sets(few)[name] == split_sets(full)[name]


def test_same_seed_same_split_other_seed_other_split():
    a = make_split(DIGITS.labels, NONE, seed=5, query_per_class=10, train_per_class=3)
    b = make_split(DIGITS.labels, NONE, seed=5, query_per_class=10, train_per_class=3)
    c = make_split(DIGITS.labels, NONE, seed=6, query_per_class=10, train_per_class=3)
    assert a.equals(b)
    assert not a.equals(c)


def test_official_division_is_respected():
    labels = np.repeat(np.arange(3), 20)
    official = np.tile(np.array(["train"] * 12 + ["test"] * 8), 3)
    frame = make_split(labels, official, seed=0, query_per_class=2)
    sets = split_sets(frame)
    test_idx = set(np.flatnonzero(official == "test"))
    assert sets["query"] | sets["database"] == test_idx
    assert sets["train"] == set(np.flatnonzero(official == "train"))


def test_asking_for_too_many_images_names_the_key():
    with pytest.raises(ConfigError, match=r"regimes\.fewshot500\.train_per_class"):
        make_split(DIGITS.labels, NONE, seed=0, query_per_class=10, train_per_class=500, regime="fewshot500")
    with pytest.raises(ConfigError, match=r"datasets\.digits\.query_per_class"):
        make_split(DIGITS.labels, NONE, seed=0, query_per_class=60, name="digits")


def test_database_from_train_draws_the_database_from_the_training_pool():
    labels = np.repeat(np.arange(3), 30)
    official = np.tile(np.array(["train"] * 24 + ["test"] * 6), 3)
    frame = make_split(labels, official, seed=2, query_per_class=6, database_per_class=10,
                       database_from="train", train_per_class=5)
    sets = split_sets(frame)
    train_side = set(np.flatnonzero(official == "train"))
    assert sets["query"] == set(np.flatnonzero(official == "test"))
    assert sets["database"] < train_side and sets["train"] < train_side
    assert not sets["database"] & sets["train"]
    assert (per_class(frame, "database", labels) == 10).all()
    assert (per_class(frame, "train", labels) == 5).all()
    # The database is the same for every regime of a seed.
    full = make_split(labels, official, seed=2, query_per_class=6, database_per_class=10, database_from="train")
    assert split_sets(full)["database"] == sets["database"]
    assert split_sets(full)["train"] == train_side - sets["database"]


def test_database_from_train_needs_a_database_size_and_enough_images():
    labels = np.repeat(np.arange(2), 10)
    official = np.tile(np.array(["train"] * 8 + ["test"] * 2), 2)
    with pytest.raises(ConfigError, match=r"datasets\.d\.database_per_class: must be a number"):
        make_split(labels, official, seed=0, query_per_class=1, database_from="train", name="d")
    with pytest.raises(ConfigError, match=r"class 0 \(cat\) has 8 training images, not more than the 8"):
        make_split(labels, official, seed=0, query_per_class=1, database_per_class=8, database_from="train",
                   name="d", class_names=["cat", "dog"])


def test_errors_name_the_class_by_its_name():
    labels = np.repeat(np.arange(2), 10)
    official = np.tile(np.array(["train"] * 8 + ["test"] * 2), 2)
    with pytest.raises(ConfigError, match=r"regimes\.k9\.train_per_class: .*class 0 \(cat\) of d has 8"):
        make_split(labels, official, seed=0, query_per_class=1, train_per_class=9, name="d", regime="k9",
                   class_names=["cat", "dog"])
    with pytest.raises(ConfigError, match=r"class 0 \(cat\) has 2 evaluation images, fewer than 3 queries"):
        make_split(labels, official, seed=0, query_per_class=3, name="d", class_names=["cat", "dog"])

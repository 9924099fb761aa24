"""Splits: disjoint, stratified, k per class in few-shot, reproducible."""

from __future__ import annotations

import numpy as np
import pytest

from workflow.config import ConfigError
from workflow.datasets import load_dataset
from workflow.splits import make_evaluation_split, make_split, make_training_split
from workflow.validation_split import make_validation_split

DIGITS = load_dataset("sklearn_digits")
NONE = np.full(len(DIGITS.labels), "none")


def split_sets(frame):
    return {
        name: set(frame.loc[frame["split"] == name, "index"])
        for name in ["train", "database", "query"]
    }


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
    frame = make_split(
        labels,
        NONE,
        seed=3,
        query_per_class=7,
        database_per_class=20,
        test_fraction=0.3,
    )
    assert (per_class(frame, "query", labels) == 7).all()
    assert (per_class(frame, "database", labels) == 20).all()
    # The evaluation pool is 30% of every class; the rest trains.
    class_sizes = np.bincount(labels)
    assert np.array_equal(
        per_class(frame, "train", labels), class_sizes - np.rint(0.3 * class_sizes)
    )


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
        make_split(
            DIGITS.labels,
            NONE,
            seed=0,
            query_per_class=10,
            train_per_class=500,
            regime="fewshot500",
        )
    with pytest.raises(ConfigError, match=r"datasets\.digits\.query_per_class"):
        make_split(DIGITS.labels, NONE, seed=0, query_per_class=60, name="digits")


def test_database_from_train_draws_the_database_from_the_training_pool():
    labels = np.repeat(np.arange(3), 30)
    official = np.tile(np.array(["train"] * 24 + ["test"] * 6), 3)
    frame = make_split(
        labels,
        official,
        seed=2,
        query_per_class=6,
        database_per_class=10,
        database_from="train",
        train_per_class=5,
    )
    sets = split_sets(frame)
    train_side = set(np.flatnonzero(official == "train"))
    assert sets["query"] == set(np.flatnonzero(official == "test"))
    assert sets["database"] < train_side and sets["train"] < train_side
    assert not sets["database"] & sets["train"]
    assert (per_class(frame, "database", labels) == 10).all()
    assert (per_class(frame, "train", labels) == 5).all()
    # The database is the same for every regime of a seed.
    full = make_split(
        labels,
        official,
        seed=2,
        query_per_class=6,
        database_per_class=10,
        database_from="train",
    )
    assert split_sets(full)["database"] == sets["database"]
    assert split_sets(full)["train"] == train_side - sets["database"]


def test_database_from_train_needs_a_database_size_and_enough_images():
    labels = np.repeat(np.arange(2), 10)
    official = np.tile(np.array(["train"] * 8 + ["test"] * 2), 2)
    with pytest.raises(
        ConfigError, match=r"datasets\.d\.database_per_class: must be a number"
    ):
        make_split(
            labels, official, seed=0, query_per_class=1, database_from="train", name="d"
        )
    with pytest.raises(
        ConfigError, match=r"class 0 \(cat\) has 8 training images, not more than the 8"
    ):
        make_split(
            labels,
            official,
            seed=0,
            query_per_class=1,
            database_per_class=8,
            database_from="train",
            name="d",
            class_names=["cat", "dog"],
        )


def test_errors_name_the_class_by_its_name():
    labels = np.repeat(np.arange(2), 10)
    official = np.tile(np.array(["train"] * 8 + ["test"] * 2), 2)
    with pytest.raises(
        ConfigError, match=r"regimes\.k9\.train_per_class: .*class 0 \(cat\) of d has 8"
    ):
        make_split(
            labels,
            official,
            seed=0,
            query_per_class=1,
            train_per_class=9,
            name="d",
            regime="k9",
            class_names=["cat", "dog"],
        )
    with pytest.raises(
        ConfigError,
        match=r"class 0 \(cat\) has 2 evaluation images, fewer than 3 queries",
    ):
        make_split(
            labels,
            official,
            seed=0,
            query_per_class=3,
            name="d",
            class_names=["cat", "dog"],
        )


# --- training and evaluation split apart; nested few-shot regimes ----------


def train_per_class_sets(frame, labels):
    train = frame.loc[frame["split"] == "train", "index"].to_numpy()
    return {int(c): set(train[labels[train] == c]) for c in np.unique(labels)}


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_few_shot_regimes_of_one_seed_are_nested(seed):
    """The 1-shot images of a class are among its 5-shot ones, those among
    its 20-shot ones, those among its full training pool (per class)."""
    labels = DIGITS.labels
    sets = [
        train_per_class_sets(
            make_split(labels, NONE, seed=seed, query_per_class=10, train_per_class=k),
            labels,
        )
        for k in [1, 5, 20, None]
    ]
    for c in range(10):
        for smaller, larger in zip(sets, sets[1:]):
            assert smaller[c] < larger[c], (seed, c)
    assert [len(s[0]) for s in sets[:3]] == [1, 5, 20]


def test_few_shot_regimes_are_nested_with_the_database_from_the_training_pool():
    labels = np.repeat(np.arange(3), 40)
    official = np.tile(np.array(["train"] * 30 + ["test"] * 10), 3)
    kwargs = dict(query_per_class=4, database_per_class=8, database_from="train")
    five, twenty = (
        train_per_class_sets(
            make_split(labels, official, seed=4, train_per_class=k, **kwargs), labels
        )
        for k in [5, 20]
    )
    assert all(five[c] < twenty[c] for c in range(3))


def test_training_split_depends_only_on_the_training_pool_keys():
    """query_per_class and (database from the test side) database_per_class
    change the evaluation split only; the training split takes no such
    argument at all."""
    labels = DIGITS.labels
    train = make_training_split(labels, NONE, seed=2, train_per_class=5)
    for query, database in [(10, None), (3, 20), (20, 5)]:
        both = make_split(
            labels,
            NONE,
            seed=2,
            query_per_class=query,
            database_per_class=database,
            train_per_class=5,
        )
        assert both[both["split"] == "train"].reset_index(drop=True).equals(train)
    assert set(train["split"]) == {"train"} and train["index"].is_monotonic_increasing
    # The evaluation split is one for every regime.
    evaluation = make_evaluation_split(labels, NONE, seed=2, query_per_class=10)
    assert set(evaluation["split"]) == {"query", "database"}
    for k in [None, 5, 20]:
        both = make_split(labels, NONE, seed=2, query_per_class=10, train_per_class=k)
        assert both[both["split"] != "train"].reset_index(drop=True).equals(evaluation)


@pytest.mark.parametrize("database_from", ["test", "train"])
def test_training_and_evaluation_files_are_disjoint(database_from):
    """What the pipeline writes as two files: every regime's training images
    are disjoint from the seed's query and database images."""
    labels = np.repeat(np.arange(4), 50)
    official = np.tile(np.array(["train"] * 35 + ["test"] * 15), 4)
    pool = dict(database_from=database_from, database_per_class=6)
    evaluation = make_evaluation_split(
        labels, official, seed=3, query_per_class=5, **pool
    )
    query = set(evaluation.loc[evaluation["split"] == "query", "index"])
    database = set(evaluation.loc[evaluation["split"] == "database", "index"])
    assert query and database and not query & database
    assert (np.bincount(labels[list(query)]) == 5).all() and (
        np.bincount(labels[list(database)]) == 6
    ).all()
    for k in [None, 1, 5, 20]:
        train = set(
            make_training_split(labels, official, seed=3, train_per_class=k, **pool)[
                "index"
            ]
        )
        assert train and not train & (query | database), k
        if k is None:
            side = set(np.flatnonzero(official == "train"))
            assert train | (database if database_from == "train" else set()) == side


def test_validation_split_from_the_training_file_leaves_a_training_pool_database_out():
    labels = np.repeat(np.arange(3), 60)
    official = np.tile(np.array(["train"] * 50 + ["test"] * 10), 3)
    pool = dict(database_from="train", database_per_class=10)
    train = make_training_split(labels, official, seed=0, train_per_class=5, **pool)
    evaluation = make_evaluation_split(
        labels, official, seed=0, query_per_class=4, **pool
    )
    val = make_validation_split(
        labels,
        official,
        train,
        0,
        query_per_class=3,
        database_per_class=6,
        database_from="train",
        dataset_database_per_class=10,
    )
    assert not set(val["index"]) & set(evaluation["index"])
    assert set(val.loc[val["split"] == "train", "index"]) == set(train["index"])
    # The same frame as from make_split's combined frame.
    both = make_split(
        labels, official, seed=0, query_per_class=4, train_per_class=5, **pool
    )
    assert make_validation_split(
        labels,
        official,
        both,
        0,
        query_per_class=3,
        database_per_class=6,
        database_from="train",
        dataset_database_per_class=10,
    ).equals(val)

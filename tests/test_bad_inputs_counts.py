"""The bad-input catalogue of counts and sizes (issue 30): too few classes
wherever classes are trained, retrieved, clustered or selected on; integers
written as floats; cutoffs beyond a database; attributes laid out twice;
two-stage selections that can never match; sizes that cannot fit in
memory. The case lists have the shapes of ``tests/test_bad_inputs.py``'s:

- ``COUNT_CONFIG_CASES`` (id, config, targets, fragments): ``snakemake -n``
  in one workspace, exit status 1, nothing under ``results/``;
- ``COUNT_IN_PROCESS_CASES`` (same shape): ``check_config(load_config(...))``,
  the code ``snakemake -n`` runs;
- ``COUNT_SPLIT_CASES`` (id, split arguments, fragments): the split jobs'
  own check, where the config does not give the number of classes;
- ``COUNT_JOB_CASES`` (id, what fails, fragments): checks inside jobs
  (validation split, training, prepare, evaluate).
"""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import yaml
from bad_inputs import (
    BASE,
    assert_config_error,
    assert_config_error_in_process,
    changed,
    dry_runs,
    leftovers,
)
from conftest import make_workspace

TABLE = {"metrics": ["map"], "rows": ["loss"]}
SELECTION = {"budget": 1}


def dataset(**spec) -> dict:
    """BASE with its digits dataset given ``spec`` (beside its source)."""
    return changed(("datasets", "digits"), {"source": "sklearn_digits", **spec})


def with_(config: dict, **sections) -> dict:
    return {**copy.deepcopy(config), **sections}


CLASS_DISJOINT = dataset(protocol="class_disjoint", train_classes=5)
NO_ANCHORS = changed(
    ("losses",), {"triplet": {"impl": "triplet"}, "supcon": {"impl": "supcon"}}
)

# (id, config, targets, message fragments): `snakemake -n`.
COUNT_CONFIG_CASES = [
    # Degenerate class counts (README: meaningless results stop before any job).
    (
        "class_disjoint_one_test_class",
        dataset(protocol="class_disjoint", train_classes=9),
        [],
        [
            "config key datasets.digits.train_classes: 9 with 10 classes (dataset 'sklearn_digits' has 10) leaves "
            "1 test class",
            "set it between 2 and 8",
        ],
    ),
    (
        "class_disjoint_one_training_class",
        dataset(protocol="class_disjoint", train_classes=1),
        [],
        [
            "config key datasets.digits.train_classes: 1 is less than the minimum of 2",
            "Each side needs at least 2",
        ],
    ),
    (
        "class_disjoint_validation_holding_out_one_class",
        with_(
            dataset(protocol="class_disjoint", train_classes=8),
            selection=SELECTION,
            validation={"class_fraction": 0.1},
        ),
        [],
        [
            "config key validation.class_fraction: 0.1 of 8 training classes of dataset digits "
            "(datasets.digits.train_classes) holds out 1 for validation",
            "set it between 0.25 and 0.75",
        ],
    ),
    (
        "closed_set_validation_leaving_one_training_class",
        with_(
            BASE,
            selection=SELECTION,
            validation={"class_disjoint": True, "class_fraction": 0.9},
        ),
        [],
        [
            "config key validation.class_fraction: 0.9 of 10 training classes of dataset digits",
            "leaves 1 for the trials to train on",
        ],
    ),
    # Integers written as floats.
    (
        "epochs_as_a_float",
        changed(("training", "epochs"), 1.0),
        [],
        [
            "config key training.epochs: 1.0 is not an integer; write 1",
            "Number of passes",
        ],
    ),
    (
        "seed_as_a_float",
        changed(("seeds",), [0, 1.0]),
        [],
        ["config key seeds.1: 1.0 is not an integer; write 1"],
    ),
    (
        "precision_cutoff_as_a_float",
        changed(("evaluation",), {"precision_at": [1, 5.0]}),
        [],
        ["config key evaluation.precision_at.1: 5.0 is not an integer; write 5"],
    ),
    (
        "train_per_class_as_a_float",
        changed(("regimes", "full", "train_per_class"), 5.0),
        [],
        ["config key regimes.full.train_per_class: 5.0 is not an integer; write 5"],
    ),
    # Cutoffs, layouts and two-stage selections.
    (
        "recall_cutoff_beyond_the_database",
        with_(dataset(database_per_class=3), evaluation={"recall_at": [1, 50]}),
        [],
        [
            "config key evaluation.recall_at: cutoff 50 exceeds the database of dataset digits: 30 images "
            "(3 per class x 10 classes",
            "raise datasets.digits.database_per_class",
        ],
    ),
    (
        "ranking_blocks_named_twice",
        with_(
            BASE, rankings={"r": {"blocks": ["dataset", "dataset"], "metric": "map"}}
        ),
        [],
        [
            "config key rankings.r.blocks: 'dataset' is laid out twice in rankings.r.blocks",
            "name each attribute once",
        ],
    ),
    (
        "two_stage_table_under_class_disjoint",
        with_(
            CLASS_DISJOINT,
            tables={"t": {**TABLE, "select": {"retrieval": "two_stage_c1"}}},
        ),
        [],
        [
            "config key tables.t.select.retrieval: two_stage_c1 can never match: dataset digits is of protocol "
            "class_disjoint",
            "select retrieval exact",
        ],
    ),
]

# (id, config, targets, message fragments): in-process, the code `snakemake -n` runs.
COUNT_IN_PROCESS_CASES = [
    (
        "class_disjoint_listed_classes_leaving_one_test_class",
        dataset(
            protocol="class_disjoint", train_classes=3, classes=["0", "1", "2", "3"]
        ),
        [],
        [
            "config key datasets.digits.train_classes: 3 with 4 classes (the classes datasets.digits.classes lists) "
            "leaves 1 test class",
            "set it between 2 and 2",
        ],
    ),
    (
        "class_disjoint_official_boundary_beyond_the_listed_classes",
        changed(
            ("datasets", "birds"),
            {
                "source": "cub200",
                "protocol": "class_disjoint",
                "classes": ["001.a", "002.b", "003.c", "004.d", "005.e"],
            },
        ),
        [],
        [
            "config key datasets.birds.train_classes: 100 (the official boundary of 'cub200', taken while the key is "
            "not set) with 5 classes",
            "leaves no test class",
            "set it between 2 and 3",
        ],
    ),
    (
        "class_disjoint_on_three_classes",
        dataset(protocol="class_disjoint", train_classes=2, classes=["0", "1", "2"]),
        [],
        [
            "leaves 1 test class",
            "the protocol needs at least 4 classes (2 to train, 2 to test)",
        ],
    ),
    (
        "class_disjoint_validation_of_three_training_classes",
        with_(dataset(protocol="class_disjoint", train_classes=3), selection=SELECTION),
        [],
        [
            "config key validation.class_fraction: 0.5 of 3 training classes of dataset digits",
            "class-disjoint validation needs at least 4 training classes",
        ],
    ),
    (
        "closed_set_validation_of_three_listed_classes",
        with_(
            dataset(classes=["0", "1", "2"]),
            selection=SELECTION,
            validation={"class_disjoint": True},
        ),
        [],
        [
            "config key validation.class_fraction: 0.5 of 3 training classes of dataset digits (the classes "
            "datasets.digits.classes lists) holds out 2"
        ],
    ),
    (
        "sampler_needing_more_classes_than_the_dataset",
        changed(("losses", "ce", "sampler"), {"m_per_class": 2}),
        [],
        [
            "config key losses.ce.sampler.m_per_class: 2 with training.batch_size 64 (backbone small_cnn) needs 32 "
            "classes per batch, but its cells of dataset digits train on 10 classes"
        ],
    ),
    (
        "sampler_needing_more_classes_than_the_trials_train_on",
        with_(
            dataset(protocol="class_disjoint", train_classes=6),
            losses={
                "t": {
                    "impl": "triplet",
                    "sampler": {"m_per_class": 8},
                    "training": {"lr": [0.1, 0.01]},
                }
            },
            training={"batch_size": 32},
            selection={"budget": 2},
        ),
        [],
        [
            "config key losses.t.sampler.m_per_class: 8 with training.batch_size 32 (backbone small_cnn) needs 4 "
            "classes per batch, but its selection trials of dataset digits train on 3 classes "
            "(datasets.digits.train_classes, less 3 held out by validation.class_fraction)"
        ],
    ),
    (
        "embedding_size_as_a_float",
        changed(("backbones", "small_cnn", "embedding_size"), 8.0),
        [],
        [
            "config key backbones.small_cnn.embedding_size: 8.0 is not an integer; write 8"
        ],
    ),
    (
        "query_per_class_as_a_float",
        dataset(query_per_class=5.0),
        [],
        ["config key datasets.digits.query_per_class: 5.0 is not an integer; write 5"],
    ),
    (
        "loss_batch_size_as_a_float",
        changed(("losses", "ce", "training"), {"batch_size": 32.0}),
        [],
        ["config key losses.ce.training.batch_size: 32.0 is not an integer; write 32"],
    ),
    (
        "example_queries_as_a_float",
        changed(("figures",), {"example_queries": 3.0}),
        [],
        ["config key figures.example_queries: 3.0 is not an integer; write 3"],
    ),
    (
        "selection_budget_as_a_float",
        with_(BASE, selection={"budget": 1.0}),
        [],
        ["config key selection.budget: 1.0 is not an integer; write 1"],
    ),
    (
        "m_per_class_as_a_float",
        changed(("losses", "ce", "sampler"), {"m_per_class": 2.0}),
        [],
        ["config key losses.ce.sampler.m_per_class: 2.0 is not an integer; write 2"],
    ),
    (
        "input_size_as_a_float",
        changed(("training", "input_size"), 16.0),
        [],
        ["config key training.input_size: 16.0 is not an integer; write 16"],
    ),
    (
        "two_stage_classes_as_floats",
        changed(("evaluation",), {"two_stage": {"classes": [1.0, 2]}}),
        [],
        ["config key evaluation.two_stage.classes.0: 1.0 is not an integer; write 1"],
    ),
    (
        "swept_epochs_as_floats",
        changed(
            ("losses", "ce", "training"), {"epochs": {"range": [1.0, 3.0], "points": 3}}
        ),
        [],
        [
            "config key losses.ce-epochs1.0.training.epochs: 1.0 is not an integer; write 1"
        ],
    ),
    (
        "conv_width_as_a_float",
        changed(("backbones", "small_cnn", "params"), {"widths": [8, 16.0]}),
        [],
        [
            "config key backbones.small_cnn.params.widths: [8, 16.0] has item 1 = 16.0, which is not an integer "
            "(write 16)"
        ],
    ),
    (
        "default_precision_cutoff_beyond_a_small_database",
        dataset(database_per_class=1, classes=["0", "1", "2"]),
        [],
        [
            "config key evaluation.precision_at: cutoff 10 exceeds the database of dataset digits: 3 images"
        ],
    ),
    (
        "top_k_error_beyond_the_database",
        with_(
            dataset(database_per_class=2, classes=["0", "1"]),
            evaluation={"precision_at": [1], "top_k_error": [5]},
        ),
        [],
        [
            "config key evaluation.top_k_error: cutoff 5 exceeds the database of dataset digits: 4 images"
        ],
    ),
    (
        "cutoff_beyond_the_validation_database",
        with_(
            dataset(classes=["0", "1", "2"]),
            selection=SELECTION,
            validation={"database_per_class": 2},
        ),
        [],
        [
            "config key evaluation.precision_at: cutoff 10 exceeds the database of dataset digits (the validation "
            "split, on which selection trials are scored): 6 images",
            "raise validation.database_per_class",
        ],
    ),
    (
        "table_rows_naming_an_attribute_twice",
        with_(BASE, tables={"t": {**TABLE, "rows": ["loss", "loss"]}}),
        [],
        ["config key tables.t.rows: 'loss' is laid out twice in tables.t.rows"],
    ),
    (
        "table_columns_and_blocks_sharing_an_attribute",
        with_(
            BASE, tables={"t": {**TABLE, "columns": ["regime"], "blocks": ["regime"]}}
        ),
        [],
        [
            "config key tables.t.blocks: 'regime' is laid out in both tables.t.columns and tables.t.blocks"
        ],
    ),
    (
        "two_stage_ranking_under_class_disjoint",
        with_(
            CLASS_DISJOINT,
            rankings={
                "r": {
                    "blocks": ["seed"],
                    "metric": "map",
                    "select": {"retrieval": ["two_stage_c1", "two_stage_c2"]},
                }
            },
        ),
        [],
        [
            "config key rankings.r.select.retrieval: two_stage_c1, two_stage_c2 can never match"
        ],
    ),
    (
        "two_stage_explicit_row_under_class_disjoint",
        with_(
            CLASS_DISJOINT,
            tables={
                "t": {
                    **TABLE,
                    "rows": [
                        {"label": "A", "loss": "cam", "retrieval": "two_stage_c1"},
                        {"label": "B", "loss": "ce"},
                    ],
                }
            },
        ),
        [],
        ["config key tables.t.rows[0].retrieval: two_stage_c1 can never match"],
    ),
    (
        "two_stage_of_losses_without_anchors",
        with_(
            NO_ANCHORS, tables={"t": {**TABLE, "select": {"retrieval": "two_stage_c2"}}}
        ),
        [],
        [
            "config key tables.t.select.retrieval: two_stage_c2 can never match: no loss selected (triplet, supcon) "
            "learns class anchors",
            "arcface, cam",
        ],
    ),
]

# (id, split arguments, message fragments): make_evaluation_split and
# make_training_split both refuse (a dataset whose classes the config does
# not give: its split job decides).
COUNT_SPLIT_CASES = [
    (
        "train_classes_leaving_one_test_class",
        dict(
            labels=np.repeat(np.arange(6), 4),
            official_split=np.full(24, "none"),
            train_classes=5,
        ),
        [
            "config key datasets.d.train_classes: 5 with 6 classes (labels 0..5) leaves 1 test class",
            "set it between 2 and 4",
        ],
    ),
    (
        "train_classes_leaving_one_training_class",
        dict(
            labels=np.repeat(np.arange(6), 4),
            official_split=np.full(24, "none"),
            train_classes=1,
        ),
        [
            "config key datasets.d.train_classes: 1 with 6 classes (labels 0..5) leaves 1 training class"
        ],
    ),
    (
        "official_test_side_of_one_class",
        dict(
            labels=np.repeat(np.arange(4), 4),
            official_split=np.array(["train"] * 12 + ["test"] * 4),
        ),
        [
            "dataset d: 1 class on the official test side, so protocol class_disjoint has 1 test class",
            "config key datasets.d.train_classes: N",
        ],
    ),
    (
        "official_training_side_of_one_class",
        dict(
            labels=np.repeat(np.arange(4), 4),
            official_split=np.array(["train"] * 4 + ["test"] * 12),
        ),
        [
            "dataset d: 1 class on the official train side, so protocol class_disjoint has 1 training class"
        ],
    ),
]


def _validation_split(class_fraction: float, protocol: str = "closed_set", **pool):
    from workflow.splits import make_training_split
    from workflow.validation_split import make_validation_split

    labels = np.repeat(np.arange(10), 12)
    official = np.full(len(labels), "none")
    train = make_training_split(labels, official, 0, protocol=protocol, **pool)
    return make_validation_split(
        labels,
        official,
        train,
        0,
        query_per_class=2,
        database_per_class=3,
        class_disjoint=True,
        class_fraction=class_fraction,
        protocol=protocol,
        **pool,
    )


def _train_one_class(tmp):
    from workflow.training.inputs import training_classes

    return training_classes(np.array([3, 3, 3]), 10)


def _digits_cell(**training):
    from conftest import training_settings

    from workflow.datasets import load_dataset
    from workflow.training.loop import train_cell

    data = load_dataset("sklearn_digits")
    settings = training_settings("ce", epochs=1, device="cpu", **training)
    return train_cell(
        data.images, data.labels, np.arange(200), 10, settings, progress=False
    )


def _data_on_device_beyond_memory(tmp):
    import torch
    from conftest import training_settings

    from workflow.training.inputs import check_images_fit

    # 10**5 images of 2000 x 2000 x 3: 1.2 TB of uint8, more than any host has.
    check_images_fit(
        (2000, 2000, 3), 10**5, training_settings("ce"), torch.device("cpu")
    )


def _prepare_digits(tmp, image_size):
    from workflow.datasets import load_dataset
    from workflow.prepare import write_prepared

    try:
        write_prepared(
            load_dataset("sklearn_digits"),
            tmp / "images.npy",
            tmp / "labels.parquet",
            tmp / "classes.json",
            image_size=image_size,
            name="digits",
        )
    finally:
        assert not list(tmp.iterdir())  # nothing written, not even a temporary file


def _evaluate_trial_beyond_its_database(tmp):
    from workflow.evaluate import evaluate_cell

    frame = pd.DataFrame(
        {
            "index": np.arange(20),
            "split": ["query"] * 8 + ["database"] * 12,
            "label": np.arange(20) % 4,
            "prediction": np.full(20, -1),
            "embedding": list(np.random.default_rng(0).normal(size=(20, 4))),
        }
    )
    return evaluate_cell(
        frame, pd.DataFrame({"label": [], "anchor": []}), {"precision_at": [1, 50]}
    )


# (id, what fails (given a tmp folder), message fragments): checks inside jobs.
COUNT_JOB_CASES = [
    (
        "validation_holding_out_one_class",
        lambda tmp: _validation_split(0.1),
        [
            "config key validation.class_fraction: 0.1 of 10 training classes of dataset dataset holds out 1"
        ],
    ),
    (
        "validation_leaving_one_training_class",
        lambda tmp: _validation_split(0.9),
        [
            "config key validation.class_fraction: 0.9 of 10 training classes of dataset dataset holds out 9 for "
            "validation and leaves 1",
            "set it between 0.2 and 0.8",
        ],
    ),
    (
        "class_disjoint_validation_of_three_training_classes",
        lambda tmp: _validation_split(0.5, protocol="class_disjoint", train_classes=3),
        [
            "config key validation.class_fraction: 0.5 of 3 training classes",
            "needs at least 4 training classes",
        ],
    ),
    (
        "training_on_one_class",
        _train_one_class,
        ["the training images hold 1 class; training needs at least 2"],
    ),
    (
        "input_size_batch_beyond_memory",
        lambda tmp: _digits_cell(input_size=100_000),
        [
            "config key training.input_size: one batch of 40 images at 100000 x 100000 x 1 (float32) take",
            "GiB of memory available on the host; lower it (or training.batch_size)",
        ],
    ),
    (
        "training_set_on_device_beyond_memory",
        _data_on_device_beyond_memory,
        [
            "config key training.data_on_device: true copies the 100000 training images of digits (2000 x 2000 x 3 "
            "bytes each)",
            "set training.data_on_device: false",
            "storage: jpeg",
        ],
    ),
    (
        "image_size_resized_in_memory_beyond_memory",
        lambda tmp: _prepare_digits(tmp, 40_000),
        [
            "config key datasets.digits.image_size: 1797 images resized in memory to 40000 x 40000 x 1 (uint8) take",
            "lower datasets.digits.image_size, or set datasets.digits.storage: jpeg",
        ],
    ),
    (
        "image_size_of_one_image_beyond_memory",
        lambda tmp: _prepare_digits(tmp, 1_000_000),
        [
            "config key datasets.digits.image_size: 1 image(s) in flight at 1000000 x 1000000 x 3 (uint8)"
        ],
    ),
    (
        "trial_cutoff_beyond_its_database",
        _evaluate_trial_beyond_its_database,
        [
            "config key evaluation.precision_at: cutoff 50 exceeds the database of this cell (12 images)",
            "for selection trials validation.database_per_class",
        ],
    ),
]


@pytest.fixture(scope="module")
def count_config_runs(tmp_path_factory) -> dict:
    """``snakemake -n`` for every config case, three at a time, in one workspace."""
    return dry_runs(
        make_workspace(tmp_path_factory.mktemp("count_config_cases"), BASE),
        COUNT_CONFIG_CASES,
    )


@pytest.mark.parametrize(
    "case", COUNT_CONFIG_CASES, ids=[c[0] for c in COUNT_CONFIG_CASES]
)
def test_count_config_error(count_config_runs, case):
    name, _, _, fragments = case
    assert_config_error(count_config_runs, name, fragments)


@pytest.mark.parametrize(
    "case", COUNT_IN_PROCESS_CASES, ids=[c[0] for c in COUNT_IN_PROCESS_CASES]
)
def test_count_config_error_in_process(case):
    _, config, _, fragments = case
    assert_config_error_in_process(config, fragments)


@pytest.mark.parametrize(
    "case", COUNT_SPLIT_CASES, ids=[c[0] for c in COUNT_SPLIT_CASES]
)
def test_count_split_error(case):
    from workflow.config import ConfigError
    from workflow.splits import make_evaluation_split, make_training_split

    _, arguments, fragments = case
    common = dict(seed=0, name="d", protocol="class_disjoint", **arguments)
    for make in [
        lambda: make_evaluation_split(query_per_class=1, **common),
        lambda: make_training_split(**common),
    ]:
        with pytest.raises(ConfigError) as error:
            make()
        for fragment in fragments:
            assert fragment in str(error.value), f"{fragment!r} not in {error.value}"


@pytest.mark.parametrize("case", COUNT_JOB_CASES, ids=[c[0] for c in COUNT_JOB_CASES])
def test_count_job_error(tmp_path, case):
    _, fail, fragments = case
    with pytest.raises(Exception) as error:
        fail(tmp_path)
    for fragment in fragments:
        assert fragment in str(error.value), f"{fragment!r} not in {error.value}"
    assert not leftovers(tmp_path)


def test_every_integer_key_of_the_schema_refuses_a_float():
    """The integer check is one walk of the whole schema: every key typed
    ``integer`` (in ``$defs``, nested sections, arrays) refuses ``1.0``,
    found by walking the schema itself, so a key added later is covered."""
    from workflow.config import ConfigError
    from workflow.config_schema import SCHEMA, check_integers

    schema = yaml.safe_load(SCHEMA.read_text())

    def resolve(node):
        while "$ref" in node:
            node = schema["$defs"][node["$ref"].split("/")[-1]]
        return node

    def integer_places(node, path):
        """The config path of every integer key (``*``: any name, 0: an item)."""
        node = resolve(node)
        types = node.get("type", [])
        if "integer" in (types if isinstance(types, list) else [types]):
            yield path
        for sub in node.get("allOf", []):
            yield from integer_places(sub, path)
        for key, sub in (node.get("properties") or {}).items():
            yield from integer_places(sub, path + [key])
        if isinstance(node.get("additionalProperties"), dict):
            yield from integer_places(node["additionalProperties"], path + ["*"])
        if isinstance(node.get("items"), dict):
            yield from integer_places(node["items"], path + [0])

    places = list(dict.fromkeys(tuple(p) for p in integer_places(schema, [])))
    assert (
        len(places) >= 30
    )  # epochs, seeds, cutoffs, per-class counts, figure counts, budget, ...
    # A name for each `*` (any name), by the section it names an entry of.
    names = {
        "datasets": "digits",
        "regimes": "full",
        "backbones": "small_cnn",
        "losses": "ce",
    }
    for place in places:
        parts = [
            names.get(place[i - 1], "x") if p == "*" else p for i, p in enumerate(place)
        ]
        config = copy.deepcopy(BASE)
        node = config
        for part, following in zip(parts, parts[1:] + [None]):
            value = 1.0 if following is None else [] if following == 0 else {}
            if isinstance(part, int):
                node.append(value)
            elif following in (None, 0) or not isinstance(node.get(part), type(value)):
                node[part] = value
            node = node[part] if not isinstance(part, int) else node[-1]
        with pytest.raises(ConfigError, match="is not an integer; write 1") as error:
            check_integers(config)
        key = ".".join(map(str, parts))
        assert f"config key {key}: 1.0" in str(error.value), (key, str(error.value))


CATALOGUE = [
    COUNT_CONFIG_CASES,
    COUNT_IN_PROCESS_CASES,
    COUNT_SPLIT_CASES,
    COUNT_JOB_CASES,
]

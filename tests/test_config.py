"""Config checks: sweeps, registry names and schema errors that name the key."""

from __future__ import annotations

import copy

import pytest
from conftest import TINY_CONFIG, make_workspace, snakemake

from workflow.config import Cell, ConfigError, cell_settings, cells, settings_hash
from workflow.config_loader import load_config, prepare_config
from workflow.losses import LOSSES
from workflow.sweeps import expand_losses


def test_list_parameters_expand_into_named_entries():
    losses = {
        "ce": {"impl": "ce"},
        "cam": {"impl": "cam", "params": {"margin": [1, 2.5], "min_norm": 1}},
    }
    expanded = expand_losses(losses)
    assert list(expanded) == ["ce", "cam-margin1", "cam-margin2.5"]
    assert expanded["cam-margin2.5"]["params"] == {"margin": 2.5, "min_norm": 1}
    assert losses["cam"]["params"]["margin"] == [1, 2.5]  # input untouched


def test_two_lists_expand_to_their_product():
    expanded = expand_losses(
        {"cam": {"impl": "cam", "params": {"margin": [1, 2], "min_norm": [0.5, 1]}}}
    )
    assert len(expanded) == 4 and "cam-margin2-min_norm0.5" in expanded


def test_cells_are_the_product_of_the_grid():
    config = prepare_config(TINY_CONFIG)
    grid = cells(config)
    assert len(grid) == 1 * 2 * 1 * 3 * 2
    assert Cell("digits", "fewshot5", "small_cnn", "lm", 1) in grid


def test_training_overrides_per_backbone_then_loss():
    config = copy.deepcopy(TINY_CONFIG)
    config["training"] = {"epochs": 5, "lr": 0.1, "batch_size": 8}
    config["backbones"]["small_cnn"]["training"] = {"epochs": 7, "lr": 0.2}
    config["losses"]["cam"]["training"] = {"lr": 0.3}
    config = prepare_config(config)
    settings = cell_settings(config, Cell("digits", "full", "small_cnn", "cam", 0))
    assert settings["training"] == {"epochs": 7, "lr": 0.3, "batch_size": 8}
    other = cell_settings(config, Cell("digits", "full", "small_cnn", "ce", 0))
    assert other["training"]["lr"] == 0.2
    assert settings_hash(settings) != settings_hash(other)
    assert settings_hash(settings) == settings_hash(copy.deepcopy(settings))


@pytest.mark.parametrize(
    "section, key, value",
    [
        ("losses", "impl", "no_such_loss"),
        ("backbones", "arch", "resnet9000"),
        ("datasets", "source", "mnist_typo"),
    ],
)
def test_unregistered_names_are_rejected_naming_the_key(section, key, value):
    config = copy.deepcopy(TINY_CONFIG)
    name = next(iter(config[section]))
    config[section][name][key] = value
    with pytest.raises(
        ConfigError,
        match=rf"{section}\.{name}\.{key}: unknown .*'{value}'; registered: ",
    ):
        prepare_config(config)


BAD_VALUES = [
    # (path in the config, bad value, words the message must contain)
    (
        ("losses", "cam", "impl"),
        "camm",
        [
            "config key losses.cam.impl: unknown loss 'camm'",
            "registered: " + ", ".join(LOSSES.names()),
        ],
    ),
    (
        ("datasets", "digits", "source"),
        "cifar",
        ["config key datasets.digits.source: unknown dataset 'cifar'"],
    ),
    (
        ("backbones", "small_cnn", "arch"),
        "vit_huge",
        ["config key backbones.small_cnn.arch: unknown backbone 'vit_huge'"],
    ),
    (
        ("regimes", "fewshot5", "train_per_class"),
        -5,
        [
            "config key regimes.fewshot5.train_per_class: -5 is less than the minimum of 1"
        ],
    ),
    (
        ("training", "epochs"),
        "ten",
        ["config key training.epochs: 'ten' is not of type 'integer'"],
    ),
    (
        ("training", "optimizer"),
        "adamax",
        ["config key training.optimizer: 'adamax' is not one of"],
    ),
    (("seeds",), [0, "one"], ["config key seeds.1: 'one' is not of type 'integer'"]),
    (
        ("datasets", "digits", "query_per_class"),
        0,
        ["config key datasets.digits.query_per_class: 0 is less than"],
    ),
    (
        ("losses", "ce", "lr"),
        0.1,
        ["config key losses.ce:", "'lr' was unexpected"],
    ),  # misplaced key
    (
        ("backbones", "small_cnn", "embedding_size"),
        1.5,
        ["config key backbones.small_cnn.embedding_size: 1.5 is not of type 'integer'"],
    ),
]


@pytest.mark.parametrize("path, value, words", BAD_VALUES, ids=lambda v: str(v))
def test_bad_config_stops_snakemake_before_any_job(tmp_path, path, value, words):
    config = copy.deepcopy(TINY_CONFIG)
    node = config
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value
    workdir = make_workspace(tmp_path, config)
    result = snakemake(workdir, "--cores", "1", "--dry-run", check=False)
    message = result.stdout + result.stderr
    assert result.returncode != 0
    for word in words:
        assert word in message, f"{word!r} not in:\n{message}"
    assert not (workdir / "results").exists()


def test_names_that_would_escape_results_are_rejected():
    config = copy.deepcopy(TINY_CONFIG)
    config["losses"]["../../etc"] = {"impl": "ce"}
    with pytest.raises(
        ConfigError, match=r"config key losses: '\.\./\.\./etc' does not match"
    ):
        load_config(config)


def test_load_config_fills_schema_defaults():
    config = load_config({k: v for k, v in TINY_CONFIG.items() if k != "training"})
    assert config["training"]["epochs"] == 15 and config["training"]["device"] == "auto"
    assert config["datasets"]["digits"]["test_fraction"] == 0.3
    assert config["evaluation"]["precision_at"] == [1, 5, 10]


def test_evaluation_defaults_follow_the_dataset_protocol():
    """recall_at and clustering left null: a class-disjoint dataset gets
    its registered Recall@k cutoffs (CUB 1, 2, 4, 8; SOP 1, 10, 100, 1000;
    In-Shop 1, 10, 20, 30, 50; others 1, 2, 4, 8) and NMI/AMI; a closed-set
    dataset gets the mapping it had before (no recall, no clustering), so
    no finished cell is evaluated again. Explicit values win."""
    from workflow.config import dataset_evaluation
    from workflow.config_loader import load_config
    from workflow.retrieval.metrics import METRICS

    datasets = {
        "cub": {"source": "cub200", "protocol": "class_disjoint"},
        "sop": {"source": "sop", "protocol": "class_disjoint"},
        "shop": {"source": "inshop", "protocol": "class_disjoint"},
        "cifar": {
            "source": "cifar100",
            "protocol": "class_disjoint",
            "train_classes": 50,
        },
        "digits": {"source": "sklearn_digits"},
    }
    config = load_config({**TINY_CONFIG, "datasets": datasets})
    got = {name: dataset_evaluation(config, name) for name in datasets}
    assert got["cub"]["recall_at"] == [1, 2, 4, 8] and got["cub"]["clustering"] is True
    assert got["sop"]["recall_at"] == [1, 10, 100, 1000]
    assert got["shop"]["recall_at"] == [1, 10, 20, 30, 50]
    assert (
        got["cifar"]["recall_at"] == [1, 2, 4, 8] and got["cifar"]["clustering"] is True
    )
    assert {"recall@1", "nmi", "ami"} <= set(METRICS.names(got["cifar"]))
    assert got["digits"] == {
        "precision_at": [1, 5, 10],
        "top_k_error": [1, 5],
        "recall_at": [],
        "clustering": False,
        **{
            k: v
            for k, v in got["digits"].items()
            if k not in ("precision_at", "top_k_error", "recall_at", "clustering")
        },
    }
    assert "speedup_precision_at" not in got["digits"]
    explicit = load_config(
        {
            **TINY_CONFIG,
            "datasets": datasets,
            "evaluation": {"recall_at": [1], "clustering": False},
        }
    )
    assert dataset_evaluation(explicit, "sop")["recall_at"] == [1]
    assert dataset_evaluation(explicit, "cub")["clustering"] is False

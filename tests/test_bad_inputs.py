"""The catalogue of bad inputs: each case is one bad config value, target or
file, with the exit status Snakemake must give, a fragment of the message
(which names the culprit: key, file or class, and says what to do) and a
check that nothing partial was written.

Three groups share work to stay fast:

- config errors: ``snakemake -n`` on one workspace, one config file per case,
  run a few at a time; nothing may appear under ``results/``;
- data errors: one real ``snakemake -k`` run of several datasets, each broken
  in its own way (mirror files, image folders, split sizes); each case's job
  log must hold its message and its outputs must not exist;
- planted files: files that a real run would have written, broken on
  purpose (an unreadable Parquet file, anchors of another size, a changed
  CIFAR-100 pickle), given to the rules that read them (``--allowed-rules``);
- in-process: further config errors (``check_config(load_config(...))``,
  the code ``snakemake -n`` runs), ``prepare`` errors (nothing written) and
  split errors, and wrong outcomes made right (a 16-bit PNG, LaTeX
  escaping).

Every group also checks that no temporary file (``*.tmp``, ``*.part``,
``*.partial-*``) is left anywhere under ``results/``.

The last tests inspect the code itself: every writer goes through a
temporary name, nothing unpickles outside files except the checksummed
CIFAR-100 loader, and no rule builds a shell command.
"""

from __future__ import annotations

import ast
import contextlib
import copy
import json
import os
import re
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import REPO, make_workspace, snakemake
from official_formats import (
    ARITHMETIC_JPEG,
    SHARED_DATASETS,
    jpeg_bytes,
    make_imagefolder,
)

BASE = {
    "datasets": {"digits": {"source": "sklearn_digits", "query_per_class": 5}},
    "regimes": {"full": {}},
    "backbones": {"small_cnn": {"arch": "small_cnn", "embedding_size": 8}},
    "losses": {"ce": {"impl": "ce"}, "cam": {"impl": "cam"}},
    "seeds": [0],
}


def leftovers(results: Path) -> list[str]:
    """Temporary or partial files and folders anywhere under ``results``."""
    if not results.exists():
        return []
    return [
        str(p)
        for p in results.rglob("*")
        if p.name.endswith((".tmp", ".part"))
        or ".partial-" in p.name
        or ".compact" in p.name
    ]


def changed(path: tuple, value) -> dict:
    config = copy.deepcopy(BASE)
    node = config
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value
    return config


# ---------------------------------------------------------------- config errors

DUPLICATE_LOSS = """\
datasets: {digits: {source: sklearn_digits}}
regimes: {full: {}}
backbones: {small_cnn: {arch: small_cnn, embedding_size: 8}}
losses:
  cam: {impl: cam}
  ce: {impl: ce}
  cam: {impl: lm, params: {beta: 0.1}}
seeds: [0]
"""

TABLE = {"metrics": ["map"], "rows": ["loss"]}

# (id, config (a dict, or YAML text), targets, message fragments)
CONFIG_CASES = [
    (
        "unknown_loss",
        changed(("losses", "cam", "impl"), "camm"),
        [],
        ["config key losses.cam.impl: unknown loss 'camm'; registered: "],
    ),
    (
        "unknown_backbone",
        changed(("backbones", "small_cnn", "arch"), "resnet9000"),
        [],
        [
            "config key backbones.small_cnn.arch: unknown backbone 'resnet9000'; registered: "
        ],
    ),
    (
        "unknown_dataset",
        changed(("datasets", "digits", "source"), "mnist"),
        [],
        ["config key datasets.digits.source: unknown dataset 'mnist'; registered: "],
    ),
    (
        "unknown_regime_target",
        BASE,
        ["results/splits/digits/fewshot1/seed0.train.parquet"],
        [
            "'fewshot1' in the requested target is not in the config key regimes (configured: full)"
        ],
    ),
    (
        "wrong_type_epochs",
        changed(("training", "epochs"), "ten"),
        [],
        [
            "config key training.epochs: 'ten' is not of type 'integer'",
            "Number of passes",
        ],
    ),
    (
        "unknown_compile_mode",
        changed(("training", "compile"), "fast"),
        [],
        ["config key training.compile: 'fast' is not one of", "reduce-overhead"],
    ),
    (
        "zero_batch_size",
        changed(("training", "batch_size"), 0),
        [],
        ["config key training.batch_size: 0 is less than the minimum of 2"],
    ),
    (
        "zero_embedding_size",
        changed(("backbones", "small_cnn", "embedding_size"), 0),
        [],
        [
            "config key backbones.small_cnn.embedding_size: 0 is less than the minimum of 1"
        ],
    ),
    (
        "negative_train_per_class",
        changed(("regimes", "full", "train_per_class"), -5),
        [],
        ["config key regimes.full.train_per_class: -5 is less than the minimum of 1"],
    ),
    (
        "duplicate_loss_name",
        DUPLICATE_LOSS,
        [],
        [
            "line 7: key 'cam' appears twice in one mapping (first on line 5)",
            "Rename or remove one",
        ],
    ),
    (
        "table_missing_metric",
        {**BASE, "tables": {"t": {**TABLE, "metrics": ["map", "precision@50"]}}},
        [],
        [
            "config key tables.t.metrics: no metric 'precision@50' is computed",
            "precision@1, precision@5, precision@10",
        ],
    ),
    (
        "table_name_with_slash",
        {**BASE, "tables": {"../t": TABLE}},
        [],
        ["config key tables: '../t' does not match"],
    ),
    (
        "swept_value_unsafe_in_name",
        changed(("losses", "cam", "params"), {"margin": ["1;rm"]}),
        [],
        ["cam-margin1;rm"],
    ),
    (
        "unknown_loss_parameter",
        changed(("losses", "cam", "params"), {"margn": 2.0}),
        [],
        [
            "config key losses.cam.params.margn: loss 'cam' has no parameter 'margn' (did you mean 'margin'?)"
        ],
    ),
    (
        "dataset_root_from_config",
        changed(
            ("datasets", "digits"), {"source": "cifar100", "params": {"root": "/tmp"}}
        ),
        [],
        [
            "config key datasets.digits.params: dataset 'cifar100' has no parameter 'root'"
        ],
    ),
    # A seed of 10**30 (a 1 and 30 zeros) would trip Snakemake's periodic-wildcard guard.
    (
        "seed_beyond_2_to_32",
        changed(("seeds",), [0, 10**30]),
        [],
        [
            "config key seeds.1: 1000000000000000000000000000000 is greater than the maximum of 4294967295",
            "torch and NumPy take seeds below 2**32",
        ],
    ),
    (
        "negative_cam_margin",
        changed(("losses", "cam", "params"), {"margin": -1}),
        [],
        [
            "config key losses.cam.params.margin: -1 is out of range; loss 'cam' takes a number > 0 for it"
        ],
    ),
    (
        "table_unknown_baseline",
        {**BASE, "tables": {"t": {**TABLE, "baseline": "triplet"}}},
        [],
        [
            "config key tables.t.baseline: 'triplet' is no loss this table shows (ce, cam)",
            "or null for no",
        ],
    ),
    # Every number must be finite: YAML's .nan and .inf pass the schema's bounds.
    (
        "nan_learning_rate",
        changed(("training", "lr"), float("nan")),
        [],
        ["config key training.lr: nan is not a finite number"],
    ),
    # YAML 1.1 (PyYAML, so Snakemake) reads 1e-3 as a string.
    (
        "exponent_without_a_dot",
        yaml.safe_dump(BASE, sort_keys=False) + "training: {lr: 1e-3}\n",
        [],
        ["config key training.lr: '1e-3' is not of type 'number'", "write 1.0e-3"],
    ),
    (
        "table_selects_an_unknown_attribute",
        {**BASE, "tables": {"t": {**TABLE, "select": {"colour": "red"}}}},
        [],
        [
            "config key tables.t.select.colour: 'colour' is not a cell attribute",
            "selects by and lays out dataset, regime, backbone, loss, distance, retrieval",
        ],
    ),
    (
        "example_queries_beyond_the_queries",
        {
            **changed(("datasets", "digits", "classes"), ["0", "1", "2"]),
            "figures": {"example_queries": 16},
        },
        [],
        [
            "config key figures.example_queries: 16 queries asked for the retrieval-examples figure, but dataset "
            "digits has 15 queries (5 per class x 3 classes)"
        ],
    ),
    # Published values beside ours and rankings (issue 23).
    (
        "table_reference_missing_a_row",
        {
            **BASE,
            "tables": {
                "t": {
                    **TABLE,
                    "reference": {"source": "paper", "values": {"ce": {"map": 50.0}}},
                }
            },
        },
        [],
        ["config key tables.t.reference.values: no published values for the row 'cam'"],
    ),
]

# The same checks in-process (no exit status, but cheap): further config
# errors of the same mechanisms as above.
IN_PROCESS_CASES = [
    (
        "unknown_top_level_key",
        {**BASE, "lossses": {}},
        [],
        [
            "config key (top level): Additional properties are not allowed ('lossses' was unexpected)"
        ],
    ),
    (
        "wrong_type_seed",
        changed(("seeds",), ["0"]),
        [],
        ["config key seeds.0: '0' is not of type 'integer'"],
    ),
    (
        "zero_image_size",
        changed(("datasets", "digits", "image_size"), 0),
        [],
        ["config key datasets.digits.image_size: 0 is less than the minimum of 1"],
    ),
    (
        "table_misspelt_metric",
        {**BASE, "tables": {"t": {**TABLE, "metrics": ["mAP"]}}},
        [],
        [
            "config key tables.t.metrics: no metric 'mAP' is computed (did you mean 'map'?)"
        ],
    ),
    (
        "table_metric_of_a_cutoff_not_evaluated",
        {**BASE, "tables": {"t": {**TABLE, "metrics": ["top3_error"]}}},
        [],
        [
            "config key tables.t.metrics: no metric 'top3_error' is computed",
            "top{k}_error exists for the k in evaluation.top_k_error",
        ],
    ),
    (
        "table_recall_without_recall_cutoffs",
        {**BASE, "tables": {"t": {**TABLE, "metrics": ["recall@1"]}}},
        [],
        [
            "config key tables.t.metrics: no metric 'recall@1' is computed",
            "recall@{k} exists for the k in evaluation.recall_at",
        ],
    ),
    (
        "table_nmi_without_clustering",
        {**BASE, "tables": {"t": {**TABLE, "metrics": ["nmi"]}}},
        [],
        [
            "config key tables.t.metrics: no metric 'nmi' is computed",
            "nmi with evaluation.clustering: true",
        ],
    ),
    (
        "loss_name_traversal",
        changed(("losses", "../../etc"), {"impl": "ce"}),
        [],
        ["config key losses: '../../etc' does not match"],
    ),
    (
        "pipeline_set_parameter",
        changed(("losses", "cam", "params"), {"num_classes": 3}),
        [],
        [
            "config key losses.cam.params.num_classes: the pipeline sets 'num_classes' itself"
        ],
    ),
    (
        "unknown_backbone_parameter",
        changed(("backbones", "small_cnn", "params"), {"width": [8]}),
        [],
        [
            "config key backbones.small_cnn.params.width: backbone 'small_cnn' has no parameter 'width' "
            "(did you mean 'widths'?)"
        ],
    ),
    # Names and seeds are wildcard values: bounded so that Snakemake's
    # periodic-wildcard guard (a suffix repeated 20 times) never skips a cell.
    (
        "name_with_a_periodic_suffix",
        changed(("regimes",), {"k1" + "0" * 20: {}}),
        [],
        [
            "config key regimes: 'k100000000000000000000' does not match",
            "not ending in a piece repeated 20 times",
        ],
    ),
    (
        "swept_value_making_a_periodic_name",
        changed(("losses", "cam", "params"), {"margin": [1, 10**25]}),
        [],
        [
            "config key losses: 'cam-margin10000000000000000000000000' does not match",
            "repeated 20 times",
        ],
    ),
    (
        "selection_seed_beyond_2_to_32",
        {**BASE, "selection": {"budget": 1, "seed": 2**32}},
        [],
        [
            "config key selection.seed: 4294967296 is greater than the maximum of 4294967295"
        ],
    ),
    (
        "one_class_selected",
        changed(("datasets", "digits", "classes"), ["0"]),
        [],
        ["config key datasets.digits.classes: ['0'] is too short", "At least 2"],
    ),
    (
        "same_number_swept_twice",
        changed(("losses", "cam", "params"), {"margin": [1, 1.0]}),
        [],
        [
            "config key losses.cam.params.margin: the sweep has the value 1 twice (as 1 and 1.0)",
            "remove one",
        ],
    ),
    (
        "string_loss_parameter",
        changed(("losses", "cam", "params"), {"margin": "big"}),
        [],
        [
            "config key losses.cam.params.margin: 'big' is not a number; loss 'cam' takes a number > 0"
        ],
    ),
    (
        "swept_loss_parameter_out_of_range",
        changed(("losses", "cam", "params"), {"min_norm": [1.0, -0.5]}),
        [],
        [
            "config key losses.cam.params.min_norm: -0.5 is out of range; loss 'cam' takes a number >= 0"
        ],
    ),
    (
        "no_conv_widths",
        changed(("backbones", "small_cnn", "params"), {"widths": []}),
        [],
        [
            "config key backbones.small_cnn.params.widths: [] has 0 item(s); backbone 'small_cnn' takes a list of "
            "at least 1 item(s), each an integer >= 1"
        ],
    ),
    (
        "fractional_conv_width",
        changed(("backbones", "small_cnn", "params"), {"widths": [8, 2.5]}),
        [],
        [
            "config key backbones.small_cnn.params.widths: [8, 2.5] has item 1 = 2.5, which is not an integer"
        ],
    ),
    (
        "unknown_mining",
        changed(
            ("losses", "cam"), {"impl": "triplet", "params": {"mining": "hardest"}}
        ),
        [],
        [
            "config key losses.cam.params.mining: 'hardest' is not allowed; loss 'triplet' takes one of "
            "'semihard', 'batch_hard'"
        ],
    ),
    (
        "table_duplicate_row_label",
        {
            **BASE,
            "tables": {
                "t": {
                    **TABLE,
                    "rows": [
                        {"label": "A", "loss": "ce"},
                        {"label": "A", "loss": "cam"},
                    ],
                }
            },
        },
        [],
        ["config key tables.t.rows[1].label: rows 0 and 1 are both labelled 'A'"],
    ),
    (
        "table_row_matching_nothing",
        {
            **BASE,
            "tables": {
                "t": {
                    **TABLE,
                    "rows": [
                        {"label": "A", "loss": "ce"},
                        {"label": "B", "loss": "lm"},
                    ],
                }
            },
        },
        [],
        [
            "config key tables.t.rows[1].loss: 'lm' matches no loss of this config (ce, cam)"
        ],
    ),
    (
        "table_row_outside_its_select",
        {
            **BASE,
            "tables": {
                "t": {
                    **TABLE,
                    "select": {"loss": "ce"},
                    "rows": [
                        {"label": "A", "loss": "ce"},
                        {"label": "B", "loss": "cam"},
                    ],
                }
            },
        },
        [],
        [
            "config key tables.t.rows[1].loss: cam is not among what tables.t.select.loss keeps (ce)"
        ],
    ),
    (
        "table_selected_loss_matching_nothing",
        {**BASE, "tables": {"t": {**TABLE, "select": {"loss": ["ce", "lm"]}}}},
        [],
        [
            "config key tables.t.select.loss: 'lm' matches no loss of this config (ce, cam)"
        ],
    ),
    (
        "table_baseline_not_selected",
        {
            **BASE,
            "tables": {"t": {**TABLE, "select": {"loss": ["cam"]}, "baseline": "ce"}},
        },
        [],
        ["config key tables.t.baseline: 'ce' is no loss this table shows (cam)"],
    ),
    (
        "infinite_weight_decay",
        changed(("training", "weight_decay"), float("inf")),
        [],
        ["config key training.weight_decay: inf is not a finite number"],
    ),
    (
        "nan_end_of_a_sweep_range",
        changed(
            ("losses", "cam", "params"),
            {"margin": {"range": [0.5, float("nan")], "points": 3}},
        ),
        [],
        ["config key losses.cam.params.margin.range.1: nan is not a finite number"],
    ),
    (
        "exponent_loss_parameter",
        changed(("losses", "cam", "params"), {"margin": "1e1"}),
        [],
        ["config key losses.cam.params.margin: '1e1' is not a number", "write 1.0e+1"],
    ),
    (
        "table_column_misspelt",
        {**BASE, "tables": {"t": {**TABLE, "columns": ["regimes"]}}},
        [],
        [
            "config key tables.t.columns: 'regimes' is not a cell attribute (did you mean 'regime'?)"
        ],
    ),
    (
        "table_row_unknown_attribute",
        {**BASE, "tables": {"t": {**TABLE, "rows": [{"label": "A", "colour": "red"}]}}},
        [],
        ["config key tables.t.rows[0].colour: 'colour' is not a cell attribute"],
    ),
    # Random-resized-crop ranges (issue 20): bounds in order; a mapping, since a list is a sweep.
    (
        "augment_ratio_min_above_max",
        changed(
            ("losses", "ce", "training"), {"augment_ratio": {"min": 2.0, "max": 0.5}}
        ),
        [],
        [
            "config key losses.ce.training.augment_ratio: min 2.0 is above max 0.5; swap them"
        ],
    ),
    (
        "augment_scale_as_a_list",
        changed(("training", "augment_scale"), [0.08, 1.0]),
        [],
        [
            "training.augment_scale: ",
            "is not of type 'object'",
            "A mapping, not a list: a list would be a sweep",
        ],
    ),
    (
        "eval_crop_fraction_above_one",
        changed(("backbones", "small_cnn", "training"), {"eval_crop_fraction": 1.5}),
        [],
        [
            "config key backbones.small_cnn.training.eval_crop_fraction: 1.5 is greater than the maximum of 1"
        ],
    ),
    (
        "table_reference_missing_a_metric",
        {
            **BASE,
            "tables": {
                "t": {
                    **TABLE,
                    "metrics": ["map", "pr_auc"],
                    "reference": {
                        "source": "paper",
                        "values": {
                            "ce": {"map": 0.5, "pr_auc": 0.4},
                            "cam": {"map": 0.6},
                        },
                    },
                }
            },
        },
        [],
        ["config key tables.t.reference.values.cam: no published value of pr_auc"],
    ),
    (
        "ranking_with_losses_as_blocks",
        {**BASE, "rankings": {"r": {"blocks": ["loss"], "metric": "map"}}},
        [],
        [
            "config key rankings.r.blocks: 'loss' cannot make blocks",
            "the losses are what is ranked",
        ],
    ),
    (
        "ranking_of_an_unconfigured_loss",
        {
            **BASE,
            "rankings": {
                "r": {"blocks": ["seed"], "metric": "map", "losses": ["ce", "lm"]}
            },
        },
        [],
        [
            "config key rankings.r.losses: 'lm' is no loss this ranking selects (ce, cam)"
        ],
    ),
    (
        "ranking_of_losses_trained_for_different_epochs",
        {
            **changed(("losses", "ce", "training"), {"epochs": 3}),
            "rankings": {"r": {"blocks": ["seed"], "metric": "map"}},
        },
        [],
        [
            "config key rankings.r: the compared cells differ in epochs (3 (ce), ",
            "make 'epochs' one of the ranking's blocks",
        ],
    ),
    (
        "train_classes_without_class_disjoint",
        changed(("datasets", "digits", "train_classes"), 5),
        [],
        [
            "config key datasets.digits.train_classes: applies only with protocol class_disjoint",
            "set datasets.digits.protocol: class_disjoint or remove it",
        ],
    ),
]


def dry_runs(workdir: Path, cases: list, workers: int = 3) -> dict:
    """``snakemake -n`` for every config case (a dict, or YAML text), a few
    at a time, in one workspace: ``{"workdir": ..., "results": {name: result}}``
    (the catalogue's files per kind use it too)."""

    def run(case):
        name, config, targets, _ = case
        path = workdir / f"{name}.yaml"
        path.write_text(
            config
            if isinstance(config, str)
            else yaml.safe_dump(config, sort_keys=False)
        )
        return snakemake(
            workdir,
            "-n",
            "--nolock",
            "--configfile",
            path.name,
            "--replace-workflow-config",
            *targets,
            check=False,
        )

    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = dict(zip([c[0] for c in cases], pool.map(run, cases)))
    return {"workdir": workdir, "results": results}


def assert_config_error(runs: dict, name: str, fragments: list[str]) -> None:
    """Case ``name`` of :func:`dry_runs` stopped (exit 1) with every
    fragment in its message, and wrote no results/."""
    result = runs["results"][name]
    message = result.stdout + result.stderr
    assert result.returncode == 1, message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in:\n{message}"
    assert not (runs["workdir"] / "results").exists()


def assert_config_error_in_process(config, fragments: list[str]) -> None:
    """``check_config(load_config(config))``, the code ``snakemake -n``
    runs, raises a ConfigError holding every fragment."""
    from workflow.config import ConfigError
    from workflow.config_loader import load_config
    from workflow.guards import check_config

    with pytest.raises(ConfigError) as error:
        check_config(load_config(config))
    for fragment in fragments:
        assert fragment in str(error.value), f"{fragment!r} not in {error.value}"


@pytest.fixture(scope="module")
def config_runs(tmp_path_factory) -> dict:
    """``snakemake -n`` for every config case, three at a time, in one workspace."""
    return dry_runs(
        make_workspace(tmp_path_factory.mktemp("config_cases"), BASE), CONFIG_CASES
    )


def catalogue_size() -> int:
    """Every case of the catalogue (docs/testing.md gives this number): the lists here, and the ``CATALOGUE`` lists of the
    catalogue's other files (``tests/test_bad_inputs_*.py``, one per kind)."""
    import importlib

    others = [
        importlib.import_module(path.stem).CATALOGUE
        for path in sorted(Path(__file__).parent.glob("test_bad_inputs_*.py"))
    ]
    return sum(
        len(cases)
        for cases in [
            CONFIG_CASES,
            IN_PROCESS_CASES,
            PREPARE_CASES,
            SPLIT_CASES,
            OUTCOME_CASES,
            DATA_CASES,
            PLANTED_CASES,
            CHECKPOINT_CASES,
            MODEL_CASES,
            JOB_CASES,
            CONFIG_FILE_CASES,
            RESULT_FILE_CASES,
            DML_DATA_CASES,
            JPEG_STORE_CASES,
            EVALUATION_CASES,
            *(c for lists in others for c in lists),
        ]
    )


def test_the_catalogue_has_at_least_twenty_cases():
    assert len(CONFIG_CASES) + len(DATA_CASES) + len(PLANTED_CASES) >= 20


def test_the_docs_give_the_catalogue_size():
    """The testing page (docs/testing.md, "The bad-input catalogue") states
    the catalogue's size."""
    page = " ".join((REPO / "docs/testing.md").read_text().split())
    assert f"holds the catalogue ({catalogue_size()} cases)" in page


@pytest.mark.parametrize("case", CONFIG_CASES, ids=[c[0] for c in CONFIG_CASES])
def test_config_error(config_runs, case):
    name, _, _, fragments = case
    assert_config_error(config_runs, name, fragments)


def test_the_base_config_of_the_config_cases_is_valid(config_runs):
    result = snakemake(config_runs["workdir"], "-n", "--nolock", check=False)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("case", IN_PROCESS_CASES, ids=[c[0] for c in IN_PROCESS_CASES])
def test_config_error_in_process(case):
    _, config, _, fragments = case
    assert_config_error_in_process(config, fragments)


def test_duplicate_keys_are_found_at_any_depth_and_in_json(tmp_path):
    from workflow.config import ConfigError
    from workflow.guards.files import check_config_file

    nested = tmp_path / "nested.yaml"
    nested.write_text(
        "losses:\n  cam:\n    impl: cam\n    params: {margin: 1, margin: 2}\n"
    )
    with pytest.raises(
        ConfigError, match=rf"{nested}, line 4: key 'margin' appears twice"
    ):
        check_config_file(nested)
    as_json = tmp_path / "config.json"
    as_json.write_text('{"seeds": [0],\n "seeds": [1]}')
    with pytest.raises(ConfigError, match="line 2: key 'seeds' appears twice"):
        check_config_file(as_json)
    fine = tmp_path / "fine.yaml"
    fine.write_text(yaml.safe_dump(BASE))
    check_config_file(fine)


# Broken config files (id, text; None: no such file, fragments). Snakemake
# reads the files given with --configfile itself, before the workflow runs,
# with its own message; the workflow checks config.yaml before Snakemake
# reads it, and `python -m workflow.guards FILE` checks any file.
CONFIG_FILE_CASES = [
    (
        "config_file_syntax_error",
        "seeds: [0\nlosses: {ce: {impl: ce}}\n",
        ["line 2, column 7: not valid YAML: expected ',' or ']', but got ':'"],
    ),
    (
        "config_file_with_a_tab",
        "datasets:\n  digits:\n\tsource: sklearn_digits\n",
        [
            "line 3, column 1: not valid YAML: found character '\\t' that cannot start any token",
            "never tabs",
        ],
    ),
    (
        "empty_config_file",
        "# nothing yet\n",
        ["is empty (or only comments); a config is a mapping of keys"],
    ),
    (
        "config_file_holding_a_list",
        "- datasets\n- losses\n",
        ["holds a list, not a mapping of keys"],
    ),
    (
        "config_file_holding_one_value",
        "datasets\n",
        ["holds the single value 'datasets', not a mapping of keys"],
    ),
    (
        "missing_config_file",
        None,
        ["no such file; give the path of a YAML or JSON config file"],
    ),
]


@pytest.fixture(scope="module")
def config_file_runs(tmp_path_factory) -> dict:
    """Per case: ``snakemake -n`` with the file as the workflow's
    config.yaml, ``python -m workflow.guards`` on it, and ``snakemake -n
    --configfile`` with it."""
    root = tmp_path_factory.mktemp("config_files")
    cli = make_workspace(root / "cli", BASE)

    def run(case):
        name, text, _ = case
        own = make_workspace(root / name, BASE)
        (own / "config.yaml").unlink()
        for folder in [own, cli]:
            if text is not None:
                (folder / f"{name}.yaml").write_text(text)
        if text is not None:
            (own / "config.yaml").write_text(text)
        check = subprocess.run(
            [sys.executable, "-m", "workflow.guards", f"{name}.yaml"],
            cwd=own,
            capture_output=True,
            text=True,
        )
        return name, {
            "workdir": own,
            "config.yaml": snakemake(own, "-n", "--nolock", check=False),
            "check": check,
            "--configfile": snakemake(
                cli,
                "-n",
                "--nolock",
                "--configfile",
                f"{name}.yaml",
                "--replace-workflow-config",
                check=False,
            ),
        }

    with ThreadPoolExecutor(max_workers=3) as pool:
        return dict(pool.map(run, CONFIG_FILE_CASES))


@pytest.mark.parametrize(
    "case", CONFIG_FILE_CASES, ids=[c[0] for c in CONFIG_FILE_CASES]
)
def test_config_file_error(config_file_runs, case):
    name, text, fragments = case
    runs = config_file_runs[name]
    own = runs["config.yaml"]
    message = own.stdout + own.stderr
    assert own.returncode == 1, message
    if text is None:  # Snakemake's own message names the file
        assert (
            "Workflow defines configfile config.yaml but it is not present" in message
        )
    else:
        for fragment in ["config file config.yaml", *fragments]:
            assert fragment in message, f"{fragment!r} not in:\n{message}"
    check = runs["check"]
    assert check.returncode == 1
    for fragment in [f"config file {name}.yaml", *fragments]:
        assert fragment in check.stderr, f"{fragment!r} not in:\n{check.stderr}"
    # Given with --configfile, Snakemake reads it before the workflow: its
    # own message (README "Configuration"), but exit status 1 all the same.
    assert runs["--configfile"].returncode == 1
    assert not (runs["workdir"] / "results").exists()


# ---------------------------------------------------------------- prepare and split errors (in-process)


def _npz(
    path: Path,
    labels,
    class_names,
    dtype=np.uint8,
    shape=(4, 4, 1),
    n_images=None,
    **extra,
) -> Path:
    labels = np.asarray(labels)
    images = np.zeros(
        (len(labels) if n_images is None else n_images, *shape), dtype=dtype
    )
    np.savez(
        path,
        images=images,
        labels=labels,
        class_names=np.asarray(class_names, dtype=str),
        **extra,
    )
    return path


# (id, dataset (name, config entry) from a tmp folder, message fragments)
PREPARE_CASES = [
    (
        "one_class_dataset",
        lambda tmp: (
            "one",
            {
                "source": "npz",
                "params": {"path": str(_npz(tmp / "one.npz", [0] * 12, ["cat"]))},
            },
        ),
        [
            "dataset one: 1 class with images (class 0 (cat)); retrieval needs at least 2 classes"
        ],
    ),
    (
        "one_class_with_images",
        lambda tmp: (
            "two",
            {
                "source": "npz",
                "params": {
                    "path": str(_npz(tmp / "two.npz", [1] * 12, ["cat", "dog"]))
                },
            },
        ),
        [
            "dataset two: 1 class with images (class 1 (dog)); retrieval needs at least 2 classes"
        ],
    ),
    (
        "fractional_npz_labels",
        lambda tmp: (
            "frac",
            {
                "source": "npz",
                "params": {
                    "path": str(
                        _npz(tmp / "frac.npz", [0.0, 1.0, 0.7, 1.7] * 3, ["a", "b"])
                    )
                },
            },
        ),
        [
            "frac.npz: labels must be integers (class numbers 0..C-1), found 0.7 at position 2 (6 such labels)"
        ],
    ),
    (
        "nan_npz_labels",
        lambda tmp: (
            "nan",
            {
                "source": "npz",
                "params": {
                    "path": str(
                        _npz(tmp / "nan.npz", [0.0, 1.0, np.nan] * 4, ["a", "b"])
                    )
                },
            },
        ),
        [
            "nan.npz: labels must be integers (class numbers 0..C-1), found nan at position 2"
        ],
    ),
    (
        "float32_image_without_a_range",
        lambda tmp: (
            "floats",
            {
                "source": "imagefolder",
                "params": {"path": str(_float_images(tmp / "floats"))},
                "image_size": 4,
            },
        ),
        [
            "cannot decode the image (floating-point pixels (Pillow mode F) have no fixed range to scale to 8 bits"
        ],
    ),
    # npz files: each error names the file, the value found and what is expected.
    (
        "pickle_saved_as_npz",
        lambda tmp: _npz_case(
            tmp,
            "pickled",
            lambda p: p.write_bytes(
                __import__("pickle").dumps(_Planted(tmp / "unpickled"))
            ),
        ),
        [
            "pickled.npz: not an npz archive: it starts with b'\\x80\\x04",
            "not the zip signature",
            "never loaded: unpickling can run code",
            "save the arrays with numpy.savez",
        ],
    ),
    (
        "random_bytes_saved_as_npz",
        lambda tmp: _npz_case(
            tmp, "noise", lambda p: p.write_bytes(b"GIF89a" + bytes(range(200)))
        ),
        [
            "noise.npz: not an npz archive: it starts with b'GIF89a\\x00\\x01'",
            "save the arrays with numpy.savez",
        ],
    ),
    (
        "npz_float_images",
        lambda tmp: _npz_case(
            tmp, "fimg", lambda p: _npz(p, [0, 1] * 6, ["a", "b"], dtype=np.float32)
        ),
        [
            "fimg.npz: images must be uint8 with shape (N, H, W, C), found dtype float32 and shape (12, 4, 4, 1)",
            "store 8-bit pixel values 0..255 as uint8",
        ],
    ),
    (
        "npz_images_without_a_channel_axis",
        lambda tmp: _npz_case(
            tmp, "grey", lambda p: _npz(p, [0, 1] * 6, ["a", "b"], shape=(4, 4))
        ),
        [
            "grey.npz: images must be uint8 with shape (N, H, W, C), found dtype uint8 and shape (12, 4, 4)",
            "add the channel axis",
        ],
    ),
    (
        "npz_label_count",
        lambda tmp: _npz_case(
            tmp, "count", lambda p: _npz(p, [0, 1] * 6, ["a", "b"], n_images=13)
        ),
        [
            "count.npz: labels has shape (12,) for 13 images; one label per image is required"
        ],
    ),
    (
        "npz_label_out_of_range",
        lambda tmp: _npz_case(
            tmp,
            "range",
            lambda p: _npz(p, [0, 1, 0, 5, 1, 0, 1, -1] + [0, 1] * 2, ["a", "b"]),
        ),
        [
            "range.npz: label 5 at position 3 (2 such labels) is no class number: there are 2 class names, "
            "so labels must lie in 0..1"
        ],
    ),
    (
        "npz_official_split_holds_val",
        lambda tmp: _npz_case(
            tmp,
            "val",
            lambda p: _npz(
                p,
                [0, 1] * 6,
                ["a", "b"],
                official_split=np.array(["train", "test", "val"] * 4),
            ),
        ),
        [
            "val.npz: official_split holds 'val'; each image's value must be 'train' or 'test'"
        ],
    ),
    (
        "npz_official_split_length",
        lambda tmp: _npz_case(
            tmp,
            "sides",
            lambda p: _npz(
                p,
                [0, 1] * 6,
                ["a", "b"],
                official_split=np.array(["train", "test"] * 5),
            ),
        ),
        [
            "sides.npz: official_split has shape (10,) for 12 images; one value per image is required"
        ],
    ),
    (
        "empty_npz",
        lambda tmp: _npz_case(tmp, "void", lambda p: _npz(p, [], ["a", "b"])),
        ["void.npz: holds no images (images has shape (0, 4, 4, 1))"],
    ),
    # image folders: nothing is skipped without a word.
    (
        "dangling_image_symlink",
        lambda tmp: _folder_case(
            tmp,
            "dangling",
            lambda r: (r / "train/dog/gone.jpg").symlink_to(r / "nowhere.jpg"),
        ),
        [
            "dangling/train/dog/gone.jpg: a symbolic link whose target is missing or that loops (No such file"
        ],
    ),
    (
        "class_folder_symlink_loop",
        lambda tmp: _folder_case(
            tmp,
            "loop",
            lambda r: [
                (r / side / "eel").symlink_to(r / side / "eel")
                for side in ["train", "test"]
            ],
        ),
        [
            "loop/train/eel: a symbolic link whose target is missing or that loops (Too many levels of symbolic links)"
        ],
    ),
    (
        "subfolder_linked_to_a_folder_above",
        lambda tmp: _folder_case(
            tmp, "cycle", lambda r: (r / "train/dog/up").symlink_to(r / "train")
        ),
        [
            "cycle/train/dog/up: a symbolic link to",
            "cycle/train, a folder it lies in (a loop)",
        ],
    ),
    (
        "folder_beside_train_and_test",
        lambda tmp: _folder_case(
            tmp,
            "sides3",
            lambda r: __import__("shutil").copytree(r / "train", r / "val"),
        ),
        ["sides3: beside train/ and test/ it holds val/, which would not be read"],
    ),
    (
        "image_outside_a_class_folder",
        lambda tmp: _folder_case(
            tmp,
            "stray",
            lambda r: (r / "test" / "owl" / "img00.jpg").rename(r / "test" / "x.JPG"),
        ),
        [
            "stray/test/x.JPG is an image outside any class folder; move it into its class folder"
        ],
    ),
]


def _npz_case(tmp: Path, name: str, write) -> tuple[str, dict]:
    """Dataset ``name``: the npz file ``write`` makes at ``tmp/<name>.npz``."""
    path = tmp / f"{name}.npz"
    write(path)
    return name, {"source": "npz", "params": {"path": str(path)}}


def _folder_case(tmp: Path, name: str, damage) -> tuple[str, dict]:
    """Dataset ``name``: a generated image folder, then ``damage(root)``."""
    make_imagefolder(tmp / name, n_train=2, n_test=1)
    damage(tmp / name)
    return name, {
        "source": "imagefolder",
        "params": {"path": str(tmp / name)},
        "image_size": 8,
    }


def _float_images(root: Path) -> Path:
    """Two class folders of 32-bit float images (TIFF bytes under a .png
    name: Pillow decodes by content)."""
    from PIL import Image

    for name in ["a", "b"]:
        (root / name).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((4, 4), 0.5 * i, dtype=np.float32)).save(
                root / name / f"{i}.png", format="TIFF"
            )
    return root


@pytest.mark.parametrize("case", PREPARE_CASES, ids=[c[0] for c in PREPARE_CASES])
def test_prepare_error(tmp_path, case):
    """prepare stops with the message and writes none of its outputs."""
    from workflow.prepare import prepare

    _, make, fragments = case
    name, spec = make(tmp_path)
    out = tmp_path / "results" / "data" / name
    out.mkdir(parents=True)
    with pytest.raises((ValueError, OSError)) as error:
        prepare(
            spec,
            out / "images.npy",
            out / "labels.parquet",
            out / "classes.json",
            name=name,
        )
    for fragment in fragments:
        assert fragment in str(error.value), f"{fragment!r} not in {error.value}"
    assert list(out.iterdir()) == []  # no output, no temporary file
    assert not (tmp_path / "unpickled").exists()  # no planted pickle ever runs


# (id, split arguments, message fragments): make_evaluation_split and
# make_training_split must both refuse (they share the pools).
SPLIT_CASES = [
    (
        "held_out_share_rounds_to_zero",
        dict(
            labels=np.array([0] * 10 + [1] * 10 + [2]),
            official_split=np.full(21, "none"),
            test_fraction=0.3,
        ),
        [
            "config key datasets.d.test_fraction: 0.3 of the 1 images of class 2 (owl) rounds to 0 held-out images, "
            "so that class would get no queries",
            "raise test_fraction",
        ],
    ),
    (
        "held_out_share_rounds_to_all",
        dict(
            labels=np.array([0] * 10 + [1] * 10 + [2]),
            official_split=np.full(21, "none"),
            test_fraction=0.6,
        ),
        [
            "config key datasets.d.test_fraction: 0.6 of the 1 images of class 2 (owl) rounds to 1 held-out images, "
            "so that class would keep no training images",
            "lower test_fraction",
        ],
    ),
    (
        "class_missing_on_the_official_test_side",
        dict(
            labels=np.array([0] * 10 + [1] * 10 + [2] * 5),
            official_split=np.array(["train", "test"] * 10 + ["train"] * 5),
        ),
        [
            "dataset d: class 2 (owl) has no images on the official test side, so it would get no queries",
            "config key datasets.d.classes",
        ],
    ),
    (
        "one_class_split",
        dict(labels=np.zeros(20, dtype=int), official_split=np.full(20, "none")),
        [
            "dataset d: 1 class with images (class 0 (cat)); retrieval needs at least 2 classes"
        ],
    ),
    # The class-disjoint protocol (issue 21).
    (
        "class_disjoint_boundary_beyond_the_classes",  # a 3-class subset of CUB at the official boundary of 100
        dict(
            labels=np.repeat([0, 1, 2], 4),
            official_split=np.full(12, "none"),
            protocol="class_disjoint",
            train_classes=100,
        ),
        [
            "config key datasets.d.train_classes: 100 with 3 classes (labels 0..2) leaves no test class",
            "the protocol needs at least 4 classes (2 to train, 2 to test)",
        ],
    ),
    (
        "class_disjoint_official_sides_sharing_a_class",
        dict(
            labels=np.repeat([0, 1, 2], 4),
            official_split=np.array(["train", "test"] * 6),
            protocol="class_disjoint",
        ),
        [
            "dataset d: class 0 (cat) has images on both official sides (train and test)",
            "set config key datasets.d.train_classes: N",
        ],
    ),
    (
        "class_disjoint_without_a_division",
        dict(
            labels=np.repeat([0, 1, 2], 4),
            official_split=np.full(12, "none"),
            protocol="class_disjoint",
        ),
        [
            "dataset d: protocol class_disjoint needs a division of the classes",
            "datasets.d.train_classes: N",
        ],
    ),
    (
        "closed_set_on_class_disjoint_sides",  # SOP's or In-Shop's division read as a closed set
        dict(
            labels=np.repeat([0, 1, 2], 4),
            official_split=np.array(["train"] * 8 + ["test"] * 4),
        ),
        [
            "dataset d: class 0 (cat) has no images on the official test side (2 classes have none)",
            "needs datasets.d.protocol: class_disjoint",
        ],
    ),
]


@pytest.mark.parametrize("case", SPLIT_CASES, ids=[c[0] for c in SPLIT_CASES])
def test_split_error(case):
    from workflow.config import ConfigError
    from workflow.splits import make_evaluation_split, make_training_split

    _, arguments, fragments = case
    common = dict(seed=0, name="d", class_names=["cat", "dog", "owl"], **arguments)
    for make in [
        lambda: make_evaluation_split(query_per_class=1, **common),
        lambda: make_training_split(**common),
    ]:
        with pytest.raises(ConfigError) as error:
            make()
        for fragment in fragments:
            assert fragment in str(error.value), f"{fragment!r} not in {error.value}"


# ---------------------------------------------------------------- wrong outcomes made right


def sixteen_bit_png_is_scaled(tmp_path):
    """A 16-bit greyscale PNG whose values span 0..65535 becomes 0..255
    (round(v / 257)), not clipped to white."""
    from PIL import Image

    from workflow.images import decode_image

    values = np.linspace(0, 65535, 64).round().astype(np.uint16).reshape(8, 8)
    Image.fromarray(values).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I;16")
    decoded = decode_image(tmp_path / "deep.png", None)
    assert decoded.dtype == np.uint8 and decoded.shape == (8, 8, 3)
    assert np.array_equal(decoded[..., 0], np.rint(values / 257).astype(np.uint8))
    assert decoded.min() == 0 and decoded.max() == 255 and len(np.unique(decoded)) == 64
    resized = decode_image(tmp_path / "deep.png", 4)[
        ..., 0
    ]  # resized after scaling: still a gradient
    assert (
        resized.min() < 64
        and resized.max() > 192
        and np.all(np.diff(resized.ravel()[::5]) > 0)
    )


# What each LaTeX special character must become: none may reach the .tex as is.
TEX_EXPECTED = {
    "\\": r"\textbackslash{}",
    "{": r"\{",
    "}": r"\}",
    "#": r"\#",
    "$": r"\$",
    "%": r"\%",
    "&": r"\&",
    "_": r"\_",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "<": "$<$",
    ">": "$>$",
    "|": r"\textbar{}",
    "±": r"$\pm$",
}


def latex_captions_are_escaped(tmp_path):
    """Every special character of a caption and of row labels is escaped:
    against the full table, then in a rendered .tex, whose caption and
    rows hold no unescaped special character (no TeX engine is needed)."""
    import sys

    sys.path.insert(0, str(REPO / "tests"))
    from test_tables import metrics_frame

    from workflow.table_text import render, tex_escape
    from workflow.tables import build_table

    for char, expected in TEX_EXPECTED.items():
        assert tex_escape(f"a{char}b") == f"a{expected}b", char
    nasty = "".join(TEX_EXPECTED)
    assert tex_escape(nasty) == "".join(
        TEX_EXPECTED.values()
    )  # one pass: nothing escaped twice
    decl = {
        "caption": f"Costs: 50% of #1 {nasty}",
        "columns": ["regime"],
        "metrics": ["map"],
        "rows": [
            {"label": "CE #1 {x}", "loss": "ce"},
            {"label": "CAM_$^", "loss": "cam"},
        ],
        "baseline": "CE #1 {x}",
    }
    latex = render("t", decl, build_table("t", decl, metrics_frame()))[2]
    caption = re.search(r"\\caption\{(.*)\}\n", latex).group(1)
    assert caption.startswith(r"Costs: 50\% of \#1 " + "".join(TEX_EXPECTED.values()))
    body = latex.split(r"\midrule")[1].split(r"\bottomrule")[0]
    assert r"CE \#1 \{x\}" in body and r"CAM\_\$\textasciicircum{}" in body
    escaped = r"\\(textbackslash|textasciitilde|textasciicircum|textbar)\{\}|\\[{}#$%&_]|\$(\\pm|<|>)\$"
    labels = [line.split(" & ")[0] for line in body.strip().splitlines()]
    for text in [caption, *labels]:
        assert not set(re.sub(escaped, "", text)) & set("#$%&_~^\\<>|{}"), text


def every_pillow_format_is_read(tmp_path):
    """BMP, GIF, TIFF and WebP files beside PNG and JPEG ones (any case of
    extension, in subfolders too) are read; hidden files and files of other
    extensions are not."""
    from PIL import Image

    from workflow.prepare import prepare

    make_imagefolder(tmp_path / "mixed", n_train=2, n_test=1)
    cat = tmp_path / "mixed" / "train" / "cat"
    for name, value in [
        ("a.bmp", 10),
        ("b.GIF", 20),
        ("c.tif", 30),
        ("deeper/d.webp", 40),
    ]:
        (cat / name).parent.mkdir(exist_ok=True)
        Image.fromarray(np.full((8, 8, 3), value, dtype=np.uint8)).save(cat / name)
    (cat / "README.txt").write_text("not an image")
    (cat / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    out = tmp_path / "data"
    out.mkdir()
    prepare(
        {
            "source": "imagefolder",
            "params": {"path": str(tmp_path / "mixed")},
            "image_size": 8,
        },
        out / "images.npy",
        out / "labels.parquet",
        out / "classes.json",
        name="mixed",
    )
    labels = pd.read_parquet(out / "labels.parquet")
    images = np.load(out / "images.npy")
    assert len(labels) == 13
    read = {f: images[i] for i, f in enumerate(labels["file_id"])}
    for name, value in [
        ("a.bmp", 10),
        ("b.GIF", 20),
        ("c.tif", 30),
        ("deeper/d.webp", 40),
    ]:
        assert np.abs(read[f"train/cat/{name}"].astype(int) - value).max() <= 2, (
            name
        )  # WebP is lossy
    assert not any(f.endswith(("README.txt", ".DS_Store")) for f in read)


def changed_user_files_are_prepared_again(tmp_path):
    """A real run; then, with nothing changed, nothing to be done; then an
    image added to the folder, an image replaced and the .npz replaced:
    both datasets are prepared again and their arrays show the change."""
    from PIL import Image

    config = copy.deepcopy(BASE)
    config["datasets"] = {
        "own": {"source": "imagefolder", "params": {"path": "own"}, "image_size": 8},
        "arr": {"source": "npz", "params": {"path": "arr.npz"}},
    }
    workdir = make_workspace(tmp_path / "work", config)
    make_imagefolder(workdir / "own", n_train=2, n_test=1)
    _npz(workdir / "arr.npz", [0, 1] * 3, ["a", "b"])
    targets = ["results/data/own/images.npy", "results/data/arr/images.npy"]
    snakemake(workdir, "--cores", "2", *targets)
    assert (
        np.load(workdir / targets[0]).shape[0] == 9
        and np.load(workdir / targets[1]).shape[0] == 6
    )
    again = snakemake(workdir, "-n", *targets)
    assert "Nothing to be done" in again.stdout + again.stderr

    Image.fromarray(np.full((8, 8, 3), 77, dtype=np.uint8)).save(
        workdir / "own" / "train" / "cat" / "new.bmp"
    )
    replaced = workdir / "own" / "test" / "dog" / "img00.jpg"
    Image.fromarray(np.full((8, 8, 3), 200, dtype=np.uint8)).save(
        replaced, format="JPEG", quality=100
    )
    _npz(workdir / "arr.npz", [0, 1] * 4, ["a", "b"])
    rerun = snakemake(workdir, "--cores", "2", *targets)
    assert (rerun.stdout + rerun.stderr).count("rule prepare:") == 2
    labels = pd.read_parquet(workdir / "results/data/own/labels.parquet")
    images = np.load(workdir / targets[0])
    assert len(labels) == 10 and "train/cat/new.bmp" in set(labels["file_id"])
    row = list(labels["file_id"]).index("test/dog/img00.jpg")
    assert np.abs(images[row].astype(int) - 200).max() <= 2
    assert np.load(workdir / targets[1]).shape[0] == 8
    again = snakemake(workdir, "-n", *targets)
    assert "Nothing to be done" in again.stdout + again.stderr


def arithmetic_coded_jpeg_is_stored_as_baseline(tmp_path):
    """With ``storage: jpeg``, a JPEG that Pillow reads but a decoder of
    training does not (arithmetic-coded: nvJPEG has no arithmetic decoding)
    is encoded again at prepare, a baseline JPEG of the same pixels;
    baseline JPEGs of at most the storage size keep their own bytes."""
    from PIL import Image

    from workflow.datasets import load_dataset
    from workflow.jpeg_store import JpegStore, frame_of
    from workflow.prepare import write_prepared

    root = tmp_path / "img"
    names = make_imagefolder(root, n_train=2, n_test=2)
    (root / "train/cat/img00.jpg").write_bytes(ARITHMETIC_JPEG)
    with Image.open(root / "train/cat/img00.jpg") as image:
        original = np.asarray(image.convert("RGB"), dtype=float)
    data = load_dataset("imagefolder", path=str(root))
    out = tmp_path / "data" / "pics"
    write_prepared(
        data,
        out / "images.jpegs",
        out / "labels.parquet",
        out / "classes.json",
        image_size=24,
        name="pics",
        storage="jpeg",
    )
    store = JpegStore(out / "images.jpegs")
    i = list(data.file_ids).index("train/cat/img00.jpg")
    stored = store.read([i])[0].numpy().tobytes()
    assert frame_of(ARITHMETIC_JPEG) == (0xC9, 8) and frame_of(stored) == (
        0xC0,
        8,
    )  # baseline now
    assert (store.heights[i], store.widths[i]) == (12, 16)
    assert (
        np.abs(store[i].astype(float) - original).mean() < 3
    )  # quality 90 of the same pixels
    assert len(store.decode(np.arange(len(store)))) == len(names)
    small = [
        k
        for k, name in enumerate(data.file_ids)
        if name.endswith(".jpg") and k != i and min(Image.open(root / name).size) <= 24
    ]
    assert small and all(
        store.read([k])[0].numpy().tobytes() == (root / data.file_ids[k]).read_bytes()
        for k in small
    )


OUTCOME_CASES = [
    ("sixteen_bit_png_is_scaled", sixteen_bit_png_is_scaled),
    (
        "arithmetic_coded_jpeg_is_stored_as_baseline",
        arithmetic_coded_jpeg_is_stored_as_baseline,
    ),
    ("latex_captions_are_escaped", latex_captions_are_escaped),
    ("every_pillow_format_is_read", every_pillow_format_is_read),
    ("changed_user_files_are_prepared_again", changed_user_files_are_prepared_again),
]


@pytest.mark.parametrize("case", OUTCOME_CASES, ids=[c[0] for c in OUTCOME_CASES])
def test_outcome(tmp_path, case):
    case[1](tmp_path)


# ---------------------------------------------------------------- data errors (a real run)

TINY_OFFICIAL_MD5 = "90528d7ca1a48142e341f4ef8d21d0de"
TINY_SUBSET_MD5 = "3720c701c700f824f268e9d6974d016b"
CIFAR_META_MD5 = "7973b15100ade9c7d40fb424638fde48"

DATA_CONFIG = {
    "data_mirror": "mirror",
    "datasets": {
        "c100": {"source": "cifar100"},
        "tiny": {"source": "tiny_imagenet"},
        "tiny_sub": {"source": "tiny_imagenet", "params": {"subset": True}},
        "broken": {
            "source": "imagefolder",
            "params": {"path": "img/broken"},
            "image_size": 8,
        },
        "empty_class": {
            "source": "imagefolder",
            "params": {"path": "img/empty_class"},
            "image_size": 8,
        },
        "empty": {
            "source": "imagefolder",
            "params": {"path": "img/empty"},
            "image_size": 8,
        },
        "nowhere": {
            "source": "imagefolder",
            "params": {"path": "img/nowhere"},
            "image_size": 8,
        },
        "small": {
            "source": "imagefolder",
            "params": {"path": "img/small"},
            "image_size": 8,
            "query_per_class": 1,
        },
        "too_many_queries": {"source": "sklearn_digits", "query_per_class": 1000},
        "too_big_database": {"source": "sklearn_digits", "database_per_class": 1000},
        "pickled": {"source": "npz", "params": {"path": "pickled.npz"}},
    },
    "regimes": {"k5": {"train_per_class": 5}},
    "backbones": {"small_cnn": {"arch": "small_cnn", "embedding_size": 8}},
    "losses": {"ce": {"impl": "ce"}},
    "seeds": [0],
}

# (id, dataset, the job log holding the message, outputs that must not exist, fragments)
DATA_CASES = [
    (
        "missing_mirror_file",
        "tiny",
        "download/tiny_imagenet.log",
        ["raw/tiny_imagenet", "data/tiny"],
        [
            "data_mirror mirror: tiny-imagenet-200.zip is missing",
            TINY_OFFICIAL_MD5,
            "Put the official file",
        ],
    ),
    (
        "flipped_byte_in_mirror",
        "c100",
        "download/cifar100.log",
        ["raw/cifar100", "data/c100"],
        [
            "mirror/cifar-100-python/meta: md5 is",
            f"expected {CIFAR_META_MD5}",
            f"Put the official file (md5 {CIFAR_META_MD5}) at mirror/cifar-100-python/meta",
        ],
    ),
    (
        "truncated_archive",
        "tiny_sub",
        "download/{tiny_sub}.log",
        ["raw/{tiny_sub}", "data/tiny_sub"],
        [
            "mirror/tiny-imagenet-200-subset.zip: md5 is",
            f"expected {TINY_SUBSET_MD5}",
            "It is not the official tiny-imagenet-200-subset.zip",
            "into the data_mirror folder mirror",
        ],
    ),
    (
        "undecodable_image",
        "broken",
        "prepare/broken.log",
        ["data/broken"],
        [
            "img/broken/train/dog/img01.png: cannot decode the image",
            "Replace or delete the file",
            "datasets.broken.skip_undecodable: true",
        ],
    ),
    (
        "empty_class_folder",
        "empty_class",
        "prepare/empty_class.log",
        ["data/empty_class"],
        [
            "class folder img/empty_class/train/owl holds no image files (none with an extension Pillow reads",
            "add images to it or remove it",
        ],
    ),
    (
        "pickle_saved_as_npz_in_a_run",
        "pickled",
        "prepare/pickled.log",
        ["data/pickled"],
        [
            "pickled.npz: not an npz archive: it starts with b'\\x80",
            "never loaded: unpickling can run code",
        ],
    ),
    (
        "empty_dataset_folder",
        "empty",
        "prepare/empty.log",
        ["data/empty"],
        [
            "imagefolder img/empty: no class folders found; expected img/empty/train/<class>/"
        ],
    ),
    (
        "missing_dataset_folder",
        "nowhere",
        "prepare/nowhere.log",
        ["data/nowhere"],
        ["imagefolder path img/nowhere: no such folder; set the dataset's params.path"],
    ),
    (
        "k_larger_than_smallest_class",
        "small",
        "train_split/small/k5/seed0.log",
        ["splits/small"],
        [
            "config key regimes.k5.train_per_class: 5 training images per class asked, class 2 (owl) of small has 3",
            "lower it",
        ],
    ),
    (
        "more_queries_than_images",
        "too_many_queries",
        "evaluation_split/too_many_queries/seed0.log",
        ["splits/too_many_queries"],
        [
            "config keys datasets.too_many_queries.query_per_class/database_per_class: class 0 (0) has",
            "fewer than 1000 queries plus 1 database images; lower them",
        ],
    ),
    (
        "database_larger_than_available",
        "too_big_database",
        "evaluation_split/too_big_database/seed0.log",
        ["splits/too_big_database"],
        [
            "config keys datasets.too_big_database.query_per_class/database_per_class: class 0 (0) has",
            "fewer than 10 queries plus 1000 database images",
        ],
    ),
]


def make_data_workspace(workdir: Path) -> None:
    mirror = workdir / "mirror"
    cifar = mirror / "cifar-100-python"
    cifar.mkdir(parents=True)
    for name in ["train", "test"]:
        (cifar / name).symlink_to(SHARED_DATASETS / "cifar-100-python" / name)
    meta = bytearray((SHARED_DATASETS / "cifar-100-python" / "meta").read_bytes())
    meta[len(meta) // 2] ^= 0x01  # one flipped bit
    (cifar / "meta").write_bytes(bytes(meta))
    with open(SHARED_DATASETS / "tiny-imagenet-200-subset.zip", "rb") as f:
        (mirror / "tiny-imagenet-200-subset.zip").write_bytes(
            f.read(1 << 20)
        )  # cut off after 1 MiB
    img = workdir / "img"
    make_imagefolder(img / "broken", n_train=3, n_test=2)
    (img / "broken" / "train" / "dog" / "img01.png").write_bytes(jpeg_bytes()[:40])
    make_imagefolder(img / "empty_class", n_train=3, n_test=2)
    for f in (img / "empty_class" / "train" / "owl").iterdir():
        f.unlink()
    (img / "empty").mkdir()
    import pickle

    (workdir / "pickled.npz").write_bytes(
        pickle.dumps({"images": [1]})
    )  # never unpickled
    make_imagefolder(img / "small", n_train=6, n_test=2)
    for f in sorted((img / "small" / "train" / "owl").iterdir())[3:]:
        f.unlink()  # owl, the smallest class, keeps 3 training images


@pytest.fixture(scope="module")
def data_run(tmp_path_factory) -> dict:
    workdir = make_workspace(tmp_path_factory.mktemp("data_cases"), DATA_CONFIG)
    make_data_workspace(workdir)
    # Each dataset's split that fails: the training split where a regime asks
    # for too many images (small), the evaluation split elsewhere.
    targets = [
        f"results/splits/{d}/k5/seed0.train.parquet"
        if d == "small"
        else f"results/splits/{d}/seed0.evaluation.parquet"
        for d in DATA_CONFIG["datasets"]
    ]
    result = snakemake(workdir, "--cores", "2", "--keep-going", *targets, check=False)
    from workflow.download import plan_downloads

    keys, _ = plan_downloads(DATA_CONFIG["datasets"])
    return {
        "workdir": workdir,
        "result": result,
        "keys": {"tiny_sub": keys["tiny_sub"]},
    }


@pytest.mark.parametrize("case", DATA_CASES, ids=[c[0] for c in DATA_CASES])
def test_data_error(data_run, case):
    name, dataset, log, outputs, fragments = case
    workdir, result = data_run["workdir"], data_run["result"]
    assert result.returncode == 1
    log_path = workdir / "results" / "logs" / log.format(**data_run["keys"])
    text = log_path.read_text()
    for fragment in fragments:
        assert fragment in text, f"{fragment!r} not in {log_path}:\n{text}"
        assert fragment in result.stderr  # Snakemake shows it too
    for output in outputs:
        assert not (workdir / "results" / output.format(**data_run["keys"])).exists(), (
            output
        )
    assert leftovers(workdir / "results") == []


def test_the_data_run_made_only_complete_outputs(data_run):
    """The datasets that could be prepared were; nothing else is in results/
    besides logs and benchmarks, and the download cache holds nothing."""
    results = data_run["workdir"] / "results"
    data = sorted(
        p.relative_to(results).as_posix()
        for p in (results / "data").rglob("*")
        if p.is_file()
    )
    assert data == [
        f"data/{d}/{f}"
        for d in ["small", "too_big_database", "too_many_queries"]
        for f in ["classes.json", "images.npy", "labels.parquet"]
    ]
    assert {p.name for p in results.iterdir()} <= {
        "benchmarks",
        "data",
        "logs",
        "raw",
        "downloads",
        "splits",
    }
    for folder in ["raw", "downloads", "splits"]:
        assert not (results / folder).exists() or not any(
            p.is_file() for p in (results / folder).rglob("*")
        )
    assert leftovers(results) == []


# ---------------------------------------------------------------- planted files

PLANTED_CONFIG = {
    "datasets": {
        "digits": {"source": "sklearn_digits"},
        "c100": {"source": "cifar100"},
    },
    "regimes": {"full": {}},
    "backbones": {"small_cnn": {"arch": "small_cnn", "embedding_size": 16}},
    "losses": {"ce": {"impl": "ce"}, "cam": {"impl": "cam"}, "lm": {"impl": "lm"}},
    "seeds": [0],
    "evaluation": {"precision_at": [1, 1000]},
}
CELL = "results/cells/digits/full/small_cnn/{}/seed0"

# (id, target, the job log, fragments)
PLANTED_CASES = [
    (
        "unreadable_parquet",
        f"{CELL.format('ce')}/metrics.csv",
        "evaluate/digits/full/small_cnn/ce/seed0.log",
        [
            f"{CELL.format('ce')}/embeddings.parquet: not a readable Parquet file",
            "Delete it and run Snakemake again",
        ],
    ),
    (
        "anchors_of_another_size",
        f"{CELL.format('cam')}/metrics.csv",
        "evaluate/digits/full/small_cnn/cam/seed0.log",
        [
            f"{CELL.format('cam')}/anchors.parquet: anchors of size 8, but the embeddings in "
            f"{CELL.format('cam')}/embeddings.parquet have size 16",
            "Delete both and run Snakemake again",
        ],
    ),
    (
        "cutoff_beyond_the_database",
        f"{CELL.format('lm')}/metrics.csv",
        "evaluate/digits/full/small_cnn/lm/seed0.log",
        [
            "config key evaluation.precision_at: cutoff 1000 exceeds the database of this cell (40 images)"
        ],
    ),
    (
        "changed_cifar_pickle",
        "results/data/c100/images.npy",
        "prepare/c100.log",
        [
            "results/raw/cifar100/cifar-100-python/meta: md5 is",
            f"expected {CIFAR_META_MD5}",
            "not the official CIFAR-100 file, so it is not unpickled",
        ],
    ),
]


def plant(workdir: Path) -> None:
    from workflow.embedding import write_embeddings

    rng = np.random.default_rng(0)
    split = pd.DataFrame(
        {"index": np.arange(50), "split": ["query"] * 10 + ["database"] * 40}
    )
    labels = np.arange(50) % 5

    def cell(loss, size, anchor_size):
        folder = workdir / CELL.format(loss)
        write_embeddings(
            folder / "embeddings.parquet",
            folder / "anchors.parquet",
            split,
            labels,
            rng.normal(size=(50, size)).astype(np.float32),
            np.full(50, -1),
            rng.normal(size=(5, anchor_size)).astype(np.float32),
            {"loss": loss},
        )

    cell("ce", 16, 16)
    (workdir / CELL.format("ce") / "embeddings.parquet").write_bytes(
        b"PAR1 not really parquet"
    )
    cell("cam", 16, 8)
    cell("lm", 16, 16)
    raw = workdir / "results" / "raw" / "cifar100" / "cifar-100-python"
    raw.mkdir(parents=True)
    for name in ["train", "test"]:
        (raw / name).symlink_to(SHARED_DATASETS / "cifar-100-python" / name)
    meta = (SHARED_DATASETS / "cifar-100-python" / "meta").read_bytes()
    (raw / "meta").write_bytes(meta[:-1] + bytes([meta[-1] ^ 0x01]))


@pytest.fixture(scope="module")
def planted_run(tmp_path_factory) -> dict:
    workdir = make_workspace(tmp_path_factory.mktemp("planted_cases"), PLANTED_CONFIG)
    plant(workdir)
    targets = [case[1] for case in PLANTED_CASES]
    result = snakemake(
        workdir,
        "--cores",
        "2",
        "--keep-going",
        *targets,
        "--allowed-rules",
        "evaluate",
        "prepare",
        check=False,
    )
    return {"workdir": workdir, "result": result}


@pytest.mark.parametrize("case", PLANTED_CASES, ids=[c[0] for c in PLANTED_CASES])
def test_planted_file_error(planted_run, case):
    name, target, log, fragments = case
    workdir, result = planted_run["workdir"], planted_run["result"]
    assert result.returncode == 1, result.stderr
    text = (workdir / "results" / "logs" / log).read_text()
    for fragment in fragments:
        assert fragment in text, f"{fragment!r} not in {log}:\n{text}"
    assert not (workdir / target).exists()
    folder = (workdir / target).parent
    assert (
        not (folder / "pr_curve.parquet").exists()
        and not (folder / "labels.parquet").exists()
    )
    assert leftovers(workdir / "results") == []


METRICS_CSV = (
    "geometry,distance,retrieval,metric,value\neuclidean,euclidean,exact,map,0.5\n"
)

# (id, text of a cell's metrics.csv, fragments): given to aggregate, which
# must name the file (pandas' own errors name none) and write nothing.
RESULT_FILE_CASES = [
    (
        "emptied_cell_metrics",
        "",
        [
            "metrics.csv: empty file, not a complete CSV; delete it and run Snakemake again"
        ],
    ),
    (
        "cell_metrics_without_rows",
        METRICS_CSV.splitlines()[0] + "\n",
        ["metrics.csv: a header but no rows, not a complete file; delete it"],
    ),
    (
        "cell_metrics_cut_short",
        METRICS_CSV[:22],
        [
            "metrics.csv: no column retrieval, metric, value (has geometry, "
            "distance, retr)"
        ],
    ),
]


@pytest.fixture(scope="module")
def result_file_runs(tmp_path_factory) -> dict:
    """``snakemake results/metrics.csv --allowed-rules aggregate`` per case:
    ce's metrics.csv planted broken, cam's complete."""

    def run(case):
        name, text, _ = case
        workdir = make_workspace(tmp_path_factory.mktemp(name), BASE)
        for loss, content in [("ce", text), ("cam", METRICS_CSV)]:
            path = workdir / CELL.format(loss) / "metrics.csv"
            path.parent.mkdir(parents=True)
            path.write_text(content)
        result = snakemake(
            workdir,
            "--cores",
            "1",
            "results/metrics.csv",
            "--allowed-rules",
            "aggregate",
            check=False,
        )
        return name, {"workdir": workdir, "result": result}

    with ThreadPoolExecutor(max_workers=3) as pool:
        return dict(pool.map(run, RESULT_FILE_CASES))


@pytest.mark.parametrize(
    "case", RESULT_FILE_CASES, ids=[c[0] for c in RESULT_FILE_CASES]
)
def test_result_file_error(result_file_runs, case):
    name, _, fragments = case
    workdir, result = (
        result_file_runs[name]["workdir"],
        result_file_runs[name]["result"],
    )
    assert result.returncode == 1, result.stderr
    text = (workdir / "results" / "logs" / "aggregate.log").read_text()
    for fragment in [f"{CELL.format('ce')}/{fragments[0]}", *fragments[1:]]:
        assert fragment in text, f"{fragment!r} not in aggregate.log:\n{text}"
    assert not (workdir / "results" / "metrics.csv").exists()
    assert leftovers(workdir / "results") == []


# ---------------------------------------------------------------- checkpoints and train jobs


def _tiny_cell(epochs=2, **training):
    """Settings of a small digits CE cell and its 60 training images (in-process cases)."""
    from workflow.config import cell_settings
    from workflow.config_loader import load_config
    from workflow.datasets import load_dataset

    config = changed(("training",), {"epochs": epochs, "batch_size": 20, **training})
    data = load_dataset("sklearn_digits")
    train = np.concatenate([np.flatnonzero(data.labels == c)[:6] for c in range(10)])
    return cell_settings(load_config(config), _cell()), data, train


def _cell():
    from workflow.config import Cell

    return Cell("digits", "full", "small_cnn", "ce", 0)


class _Planted:
    """A pickle that would create ``marker`` if it were ever unpickled."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _random_bytes(path):
    path.write_bytes(np.random.default_rng(0).bytes(4096))


def _resume_from(make, reason):
    """A case: a last.pt made by ``make(path, tmp_path)`` is ignored with a
    log line naming it and ``reason``, and training starts afresh: the same
    model as a run without it."""

    def case(tmp_path):
        import io

        import torch

        from workflow.training.loop import train_cell

        settings, data, train = _tiny_cell()
        path = tmp_path / "last.pt"
        make(path, tmp_path)
        log = io.StringIO()
        with contextlib.redirect_stderr(log):
            model = train_cell(
                data.images,
                data.labels,
                train,
                10,
                settings,
                progress=False,
                checkpoint_path=path,
            )
        text = log.getvalue()
        assert (
            f"ignoring checkpoint {path}: {reason}" in text
            and "training from the start" in text
        ), text
        assert "weights_only=False" not in text
        assert model["stats"]["resumed_from_epoch"] == 0
        fresh = train_cell(
            data.images, data.labels, train, 10, settings, progress=False
        )
        for key, value in fresh["backbone"].items():
            assert torch.equal(value, model["backbone"][key]), key
        assert fresh["history"] == model["history"]
        assert not (tmp_path / "unpickled").exists()  # no planted pickle ever runs

    return case


def _checkpoint_that_does_not_fit(path, tmp_path):
    """A checkpoint of this cell's settings (hash) whose backbone weights are
    another network's (another version of the code, a file copied over)."""
    import torch

    from workflow.checkpoints import save_torch
    from workflow.training.loop import train_cell

    settings, data, train = _tiny_cell()
    train_cell(
        data.images,
        data.labels,
        train,
        10,
        settings,
        progress=False,
        checkpoint_path=path,
        stop_after_epoch=1,
    )
    save_torch(
        path,
        {
            **torch.load(path, weights_only=True),
            "backbone": {"conv.weight": torch.zeros(2)},
        },
    )


def corrupt_pretrained_file(tmp_path):
    """A corrupt ``pretrained:`` file of your own (its checksum pinned, so it
    passes the checksum check) is named, without torch's advice to load it
    with weights_only=False."""
    import hashlib

    from workflow.backbones import build_backbone
    from workflow.backbones.weights import WeightsFileError

    path = tmp_path / "mine.pth"
    _random_bytes(path)
    spec = {
        "file": str(path),
        "checksum": "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest(),
        "mean": [0.5, 0.5, 0.5],
        "std": [0.2, 0.2, 0.2],
    }
    with pytest.raises(WeightsFileError) as error:
        build_backbone(
            "resnet18", in_channels=3, image_size=32, embedding_size=8, pretrained=spec
        )
    message = str(error.value)
    assert (
        f"{path}: not a valid state dict: torch.load(weights_only=True) cannot read it ("
        in message
    )
    assert "or replace the file" in message and "weights_only=False" not in message


# (id, function(tmp_path)): .pt files read in-process.
CHECKPOINT_CASES = [
    (
        "corrupt_last_pt_is_ignored",
        _resume_from(
            lambda path, tmp: _random_bytes(path),
            "not a valid resume checkpoint: torch.load(weights_only=True) cannot read it (",
        ),
    ),
    (
        "foreign_last_pt_is_ignored",
        _resume_from(
            lambda path, tmp: __import__("torch").save(
                {"conv.weight": __import__("torch").zeros(2)}, path
            ),
            "not a valid resume checkpoint: it lacks settings_hash, epoch, history",
        ),
    ),
    (
        "planted_pickle_as_last_pt_never_runs",
        _resume_from(
            lambda path, tmp: path.write_bytes(
                __import__("pickle").dumps(_Planted(tmp / "unpickled"))
            ),
            "not a valid resume checkpoint: torch.load(weights_only=True) cannot read it (",
        ),
    ),
    # (a last.pt of other settings: tests/test_resume.py)
    (
        "last_pt_that_does_not_fit_is_ignored",
        _resume_from(
            _checkpoint_that_does_not_fit,
            "its state does not fit this cell's training (RuntimeError: Error(s) in",
        ),
    ),
    ("corrupt_pretrained_file", corrupt_pretrained_file),
]


@pytest.mark.parametrize("case", CHECKPOINT_CASES, ids=[c[0] for c in CHECKPOINT_CASES])
def test_checkpoint_case(tmp_path, case):
    case[1](tmp_path)


# model.pt planted for the embed rule, in a real run of its own (the
# planted embeddings above must not be embedded again).
MODEL_CONFIG = {
    **BASE,
    "losses": {
        name: {"impl": name} for name in ["ce", "cam", "lm", "triplet", "supcon"]
    },
}

# (id, loss of the cell, message fragments)
MODEL_CASES = [
    (
        "corrupt_model_pt",
        "ce",
        [
            f"{CELL.format('ce')}/model.pt: not a valid model.pt of the train rule: torch.load(weights_only=True) "
            "cannot read it (",
            "Delete it and run Snakemake again: the train rule writes it anew",
        ],
    ),
    (
        "planted_pickle_as_model_pt",
        "cam",
        [
            f"{CELL.format('cam')}/model.pt: not a valid model.pt of the train rule",
            "Delete it",
        ],
    ),
    (
        "foreign_model_pt",
        "lm",
        [
            f"{CELL.format('lm')}/model.pt: not a valid model.pt of the train rule: it lacks backbone, loss, mean",
            "(it holds conv.weight)",
            "Delete it",
        ],
    ),
    (
        "model_pt_of_other_settings",
        "triplet",
        [
            f"{CELL.format('triplet')}/model.pt: a model trained for other settings (hash",
            "Delete it",
        ],
    ),
    (
        "model_pt_whose_weights_do_not_fit",
        "supcon",
        [
            f"{CELL.format('supcon')}/model.pt: its backbone weights do not fit backbone 'small_cnn' of this cell",
            "Missing key(s)",
            "Delete it",
        ],
    ),
]


def plant_models(workdir: Path) -> None:
    import torch

    from workflow.checkpoints import save_torch
    from workflow.config import Cell, cell_settings, settings_hash
    from workflow.config_loader import load_config

    def cell(loss):
        folder = workdir / CELL.format(loss)
        folder.mkdir(parents=True)
        return folder / "model.pt"

    _random_bytes(cell("ce"))
    cell("cam").write_bytes(__import__("pickle").dumps(_Planted(workdir / "unpickled")))
    torch.save({"conv.weight": torch.zeros(2)}, cell("lm"))
    config = load_config(MODEL_CONFIG)
    settings = cell_settings(config, Cell("digits", "full", "small_cnn", "supcon", 0))
    model = {
        "backbone": {"conv.weight": torch.zeros(2)},
        "loss": {},
        "mean": torch.zeros(1),
        "std": torch.ones(1),
        "in_channels": 1,
        "image_size": 8,
        "num_classes": 10,
        "history": [],
    }
    save_torch(
        cell("triplet"), {**model, "settings_hash": settings_hash(settings)}
    )  # supcon's
    save_torch(cell("supcon"), {**model, "settings_hash": settings_hash(settings)})


@pytest.fixture(scope="module")
def model_run(tmp_path_factory) -> dict:
    workdir = make_workspace(tmp_path_factory.mktemp("model_cases"), MODEL_CONFIG)
    plant_models(workdir)
    targets = [f"{CELL.format(case[1])}/embeddings.parquet" for case in MODEL_CASES]
    result = snakemake(
        workdir,
        "--cores",
        "2",
        "--keep-going",
        *targets,
        "--allowed-rules",
        "embed",
        "prepare",
        "download",
        "evaluation_split",
        check=False,
    )
    return {"workdir": workdir, "result": result}


@pytest.mark.parametrize("case", MODEL_CASES, ids=[c[0] for c in MODEL_CASES])
def test_planted_model_error(model_run, case):
    name, loss, fragments = case
    workdir, result = model_run["workdir"], model_run["result"]
    assert result.returncode == 1, result.stderr
    log = f"embed/digits/full/small_cnn/{loss}/seed0.log"
    text = (workdir / "results" / "logs" / log).read_text()
    for fragment in fragments:
        assert fragment in text, f"{fragment!r} not in {log}:\n{text}"
    assert "weights_only=False" not in text
    folder = workdir / CELL.format(loss)
    assert (
        not (folder / "embeddings.parquet").exists()
        and not (folder / "anchors.parquet").exists()
    )
    assert not (workdir / "unpickled").exists()  # no planted pickle ever runs
    assert leftovers(workdir / "results") == []


# A train job of a digits cell, run as a process of its own: python JOB CONFIG FOLDER.
JOB = """
import json, sys
import numpy as np
sys.path.insert(0, sys.argv[3])
from workflow.config import Cell, cell_settings
from workflow.config_loader import load_config
from workflow.datasets import load_dataset
from workflow.training.loop import train_job
config, folder = json.loads(sys.argv[1]), sys.argv[2]
settings = cell_settings(load_config(config), Cell("digits", "full", "small_cnn", "ce", 0))
data = load_dataset("sklearn_digits")
train = np.concatenate([np.flatnonzero(data.labels == c)[:20] for c in range(10)])
train_job(data.images, data.labels, train, 10, settings,
          f"{folder}/model.pt", f"{folder}/train_stats.json", f"{folder}/last.pt")
"""
LONG_JOB = changed(
    ("training",), {"epochs": 5000, "batch_size": 50}
)  # minutes: killed long before its end


def alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie has ended)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def start_job(tmp_path, config, parent_shell=False):
    script = tmp_path / "job.py"
    script.write_text(JOB)
    command = [
        sys.executable,
        str(script),
        json.dumps(config),
        str(tmp_path / "cell"),
        str(REPO),
    ]
    if (
        parent_shell
    ):  # the job is a child of a shell, as a rule's job is a child of Snakemake
        command = ["sh", "-c", '"$@" 2>"$0"; exit', str(tmp_path / "job.log"), *command]
        return subprocess.Popen(command, start_new_session=True)
    return subprocess.Popen(
        command, stderr=open(tmp_path / "job.log", "w"), start_new_session=True
    )


def wait_for(condition, seconds=120, what=""):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"not within {seconds} s: {what}"
        time.sleep(0.1)


def job_pid(shell) -> int:
    """The PID of the job that ``shell`` started (its only child)."""
    children = [
        int(p.name)
        for p in Path("/proc").iterdir()
        if p.name.isdigit() and alive(int(p.name)) and _ppid(int(p.name)) == shell.pid
    ]
    return children[0] if children else 0


def _ppid(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (FileNotFoundError, IndexError):
        return 0


def second_job_of_a_cell(tmp_path):
    """While one job trains a cell, a second job of that cell (here with
    other settings, as after a changed config) stops at once naming the
    cell and the PID of the first, and writes nothing; once the first is
    killed, its lock no longer blocks."""
    first = start_job(tmp_path, LONG_JOB)
    folder = tmp_path / "cell"
    try:
        wait_for(
            lambda: (folder / "last.pt").exists(), what="the first job's checkpoint"
        )
        before = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
        script = tmp_path / "job.py"
        short = changed(("training",), {"epochs": 1, "batch_size": 50})
        second = subprocess.run(
            [sys.executable, str(script), json.dumps(short), str(folder), str(REPO)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert second.returncode == 1
        assert (
            f"cell digits/full/small_cnn/ce/seed0: another train job is training it (PID {first.pid} on host"
            in second.stderr
        ), second.stderr[-2000:]
        assert (
            f"holds the lock {folder}/last.pt.lock" in second.stderr
            and f"kill {first.pid}" in second.stderr
        )
        assert (
            not (folder / "model.pt").exists()
            and not (folder / "train_stats.json").exists()
        )
        assert (folder / "last.pt.lock").read_text().split()[0] == str(first.pid)
        assert set(before) <= {p.name for p in folder.iterdir()}
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    again = subprocess.run(
        [sys.executable, str(script), json.dumps(short), str(folder), str(REPO)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert again.returncode == 0, again.stderr[-2000:]
    assert (
        "ignoring checkpoint" in again.stderr
    )  # the killed job's, written for other settings
    assert (folder / "model.pt").exists() and not (folder / "last.pt").exists()
    assert not (folder / "last.pt.lock").exists()


def job_whose_parent_is_killed(tmp_path):
    """A train job whose parent process is killed (as Snakemake by kill -9)
    stops within seconds without writing model.pt, saying why."""
    shell = start_job(tmp_path, LONG_JOB, parent_shell=True)
    folder = tmp_path / "cell"
    try:
        wait_for(lambda: (folder / "last.pt").exists(), what="the job's checkpoint")
        pid = job_pid(shell)
        assert pid and alive(pid)
        os.kill(shell.pid, signal.SIGKILL)  # the parent only
        shell.wait()
        wait_for(
            lambda: not alive(pid), seconds=30, what=f"the orphaned job {pid} to stop"
        )
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(shell.pid, signal.SIGKILL)  # the job too, should it still run
    assert (
        not (folder / "model.pt").exists()
        and not (folder / "train_stats.json").exists()
    )
    log = (tmp_path / "job.log").read_text()
    assert (
        f"stopping: the Snakemake process that started this job (PID {shell.pid}) has ended"
        in log
    ), log[-2000:]
    assert leftovers(folder) == []


# (id, function(tmp_path)): train jobs as real processes.
JOB_CASES = [
    ("second_job_of_a_cell", second_job_of_a_cell),
    ("job_whose_parent_is_killed", job_whose_parent_is_killed),
]


@pytest.mark.parametrize("case", JOB_CASES, ids=[c[0] for c in JOB_CASES])
def test_train_job_case(tmp_path, case):
    case[1](tmp_path)


# ---------------------------------------------------------------- the code itself

WORKFLOW = REPO / "workflow"
# Calls that write a file at their first argument (or second, for torch.save).
WRITERS = {
    "to_csv": 0,
    "to_parquet": 0,
    "savefig": 0,
    "write_text": None,
    "write_bytes": None,
    "write_table": 1,
    "open_memmap": 0,
    "save": 0,
}
# Writes that need no temporary name: the rule's log is streamed on purpose
# (a killed job's log shows how far it got) and is never an input.
STREAMED = {("logs.py", "open")}


def _python_files():
    return sorted(p for p in WORKFLOW.rglob("*.py") if "__pycache__" not in p.parts)


def _calls(path: Path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = (
                func.attr
                if isinstance(func, ast.Attribute)
                else getattr(func, "id", None)
            )
            yield node, name, ast.get_source_segment(path.read_text(), node)


def _is_temporary(source: str) -> bool:
    """The written path is a temporary name (atomic_path's ``tmp``, a
    ``*_tmp``, the download's ``work`` folder), an open file object or an
    in-memory buffer."""
    return bool(re.search(r"\b(\w*tmp\w*|work|f|fout|out|buffer)\b", source))


def writer_offenders(path: Path) -> list[str]:
    """Calls in ``path`` that write a file under its final name."""
    text = path.read_text()
    offenders = []
    for node, name, source in _calls(path):
        if name == "open":
            modes = [a.value for a in node.args[1:2] if isinstance(a, ast.Constant)]
            modes += [
                k.value.value
                for k in node.keywords
                if k.arg == "mode" and isinstance(k.value, ast.Constant)
            ]
            if (
                any(set(m) & set("wax+") for m in modes)
                and (path.name, "open") not in STREAMED
            ):
                if not _is_temporary(ast.get_source_segment(text, node.args[0])):
                    offenders.append(f"{path.name}:{node.lineno}: {source}")
            continue
        if name not in WRITERS:
            continue
        owner = getattr(getattr(node.func, "value", None), "id", "")
        if name == "save" and owner not in {"np", "torch"}:
            continue
        position = 1 if (name == "save" and owner == "torch") else WRITERS[name]
        if position is None:  # Path.write_text: the path is the object
            target = ast.get_source_segment(text, node.func.value)
        elif len(node.args) > position:
            target = ast.get_source_segment(text, node.args[position])
        else:
            continue  # to_csv() without a path returns text
        if not _is_temporary(target):
            offenders.append(f"{path.name}:{node.lineno}: {source}")
    return offenders


def test_every_writer_writes_to_a_temporary_name():
    """Outside workflow/io.py (whose atomic_path renames a temporary file
    onto the output when complete), every call that writes a file writes a
    temporary name, and every open() for writing opens one."""
    offenders = [
        o
        for path in _python_files()
        if path.name != "io.py"
        for o in writer_offenders(path)
    ]
    assert offenders == [], (
        "write through workflow.io (atomic_path, save_*):\n" + "\n".join(offenders)
    )


def test_the_writer_check_finds_writes_in_place(tmp_path):
    module = tmp_path / "bad.py"
    module.write_text(
        "import numpy as np, torch\n"
        "frame.to_csv(output_path, index=False)\n"
        "torch.save(checkpoint, snakemake.output[0])\n"
        "np.save(path, images)\n"
        "open(log_path, 'w').write('x')\n"
        "Path(output).write_text('x')\n"
        "fig.savefig(png_path)\n"
        "frame.to_csv(index=False)\n"  # returns text: fine
        "with atomic_path(output) as tmp:\n    torch.save(checkpoint, tmp)\n"  # fine
    )
    assert sorted(int(o.split(":")[1]) for o in writer_offenders(module)) == [
        2,
        3,
        4,
        5,
        6,
        7,
    ]


def test_nothing_unpickles_outside_files():
    """torch.load only with weights_only=True, np.load never with
    allow_pickle, no pandas read_pickle or joblib, and pickle.load only in
    the CIFAR-100 loader, which checks each file's official checksum first."""
    offenders = []
    for path in _python_files():
        text = path.read_text()
        for node, name, source in _calls(path):
            func = node.func
            owner = getattr(getattr(func, "value", None), "id", None)
            keywords = {k.arg: k.value for k in node.keywords}
            if owner == "torch" and name == "load":
                value = keywords.get("weights_only")
                if not (isinstance(value, ast.Constant) and value.value is True):
                    offenders.append(f"{path.name}:{node.lineno}: {source}")
            elif owner == "np" and name == "load" and "allow_pickle" in keywords:
                offenders.append(f"{path.name}:{node.lineno}: {source}")
            elif name in {"read_pickle", "loads"} and owner in {
                "pd",
                "pickle",
                "joblib",
            }:
                offenders.append(f"{path.name}:{node.lineno}: {source}")
            elif (
                owner in {"pickle", "joblib", "dill", "cloudpickle"} and name == "load"
            ):
                if path.name != "cifar100.py":
                    offenders.append(f"{path.name}:{node.lineno}: {source}")
        assert "Unpickler" not in text, path
    assert offenders == []


def test_the_cifar_loader_checks_the_checksum_before_unpickling(tmp_path):
    from workflow.datasets.cifar100 import _unpickle

    assert (
        "apple"
        in _unpickle(SHARED_DATASETS / "cifar-100-python" / "meta")["fine_label_names"]
    )
    import pickle

    evil = tmp_path / "meta"
    evil.write_bytes(pickle.dumps({"fine_label_names": ["x"]}))
    with pytest.raises(
        ValueError, match="not the official CIFAR-100 file, so it is not unpickled"
    ):
        _unpickle(evil)


def test_no_rule_builds_a_shell_command():
    """Rules run Python (script:/run:), so no config value ever reaches a
    shell; every wildcard that becomes a path segment is constrained."""
    rules = [REPO / "Snakefile", *sorted((REPO / "rules").glob("*.smk"))]
    for path in rules:
        text = path.read_text()
        assert not re.search(r"^\s*shell:", text, flags=re.M), path
        assert "os.system" not in text and "subprocess" not in text, path
    common = (REPO / "rules" / "common.smk").read_text()
    constraints = dict(re.findall(r'^\s+(\w+)="([^"]+)",$', common, flags=re.M))
    used = set()
    for path in rules:
        used |= set(re.findall(r"\{(\w+)\}", path.read_text()))
    for wildcard in used & {
        "dataset",
        "regime",
        "backbone",
        "loss",
        "seed",
        "table",
        "download",
    }:
        assert wildcard in constraints, wildcard
        assert not re.fullmatch(constraints[wildcard], ".."), wildcard
        assert not re.fullmatch(constraints[wildcard], "a/b"), wildcard


def test_the_metric_names_of_the_table_check_are_those_evaluate_writes():
    """The config-time check of tables.<name>.metrics and selection.metric
    reads the metric registry (workflow/retrieval/metrics.py); evaluate_cell
    must write exactly the registered names, in their order, for each
    retrieval method (two-stage rows without the exact-only metrics)."""
    from workflow.evaluate import evaluate_cell
    from workflow.guards.declarations import check_table_metrics
    from workflow.retrieval.metrics import METRICS

    rng = np.random.default_rng(1)
    split = ["query"] * 12 + ["database"] * 30
    labels = np.arange(42) % 3
    frame = pd.DataFrame(
        {
            "index": np.arange(42),
            "split": split,
            "label": labels,
            "prediction": np.full(42, -1),
            "embedding": list(rng.normal(size=(42, 4))),
        }
    )
    anchors = pd.DataFrame(
        {"label": np.arange(3), "anchor": list(rng.normal(size=(3, 4)))}
    )
    evaluation = {
        "precision_at": [1, 3],
        "top_k_error": [2],
        "two_stage": {"classes": [1]},
    }
    metrics, _ = evaluate_cell(
        frame, anchors, dict(evaluation, two_stage={"classes": [1], "rest": "follow"})
    )
    assert set(metrics["retrieval"]) == {"exact", "two_stage_c1"}
    for method, rows in metrics.groupby("retrieval"):
        assert rows["metric"].tolist() == METRICS.names(evaluation, retrieval=method), (
            method
        )
    assert sorted(set(metrics["metric"])) == sorted(METRICS.names(evaluation))
    # A closed-set dataset: the metrics evaluate writes for it (a protocol
    # fills in its own recall and clustering defaults).
    config = {
        "datasets": {"d": {"source": "sklearn_digits"}},
        "evaluation": evaluation,
        "tables": {"t": {"metrics": METRICS.names(evaluation)}},
    }
    check_table_metrics(config)  # every name evaluate writes is accepted


def test_every_loss_and_backbone_declares_the_range_of_each_parameter():
    """Parameter ranges are declared once, with the registration
    (``params=``), for every keyword the config may set, so that
    ``snakemake -n`` checks each value (workflow.guards.check_parameters)."""
    import inspect

    from workflow.backbones import BACKBONES
    from workflow.guards.entries import PIPELINE_ARGUMENTS
    from workflow.losses import LOSSES

    for section, registry in [("losses", LOSSES), ("backbones", BACKBONES)]:
        for name in registry.names():
            declared = registry.metadata(name).get("params")
            assert declared is not None, (
                f"{registry.kind} {name!r}: register it with params={{...}}"
            )
            signature = inspect.signature(registry.get(name)).parameters
            settable = {
                p for p in signature if p not in PIPELINE_ARGUMENTS[section] | {"self"}
            }
            assert set(declared) == settable, (
                registry.kind,
                name,
                sorted(declared),
                sorted(settable),
            )
            for param, rule in declared.items():
                default = signature[param].default
                default = list(default) if isinstance(default, tuple) else default
                assert default is None or rule.problem(default) is None, (
                    registry.kind,
                    name,
                    param,
                    default,
                )


@pytest.mark.parametrize(
    "umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)]
)
def test_outputs_are_created_with_the_mode_the_umask_gives(tmp_path, umask, mode):
    # tempfile makes its files 0600 whatever the umask; an output renamed
    # from one must get the mode `open` would give it, so that results/ on a
    # shared cluster is as readable as the user's umask says.
    from workflow.io import save_json

    old = os.umask(umask)
    try:
        save_json(tmp_path / "out.json", {"a": 1})
    finally:
        os.umask(old)
    assert (tmp_path / "out.json").stat().st_mode & 0o777 == mode


# ---------------------------------------------------------------- the DML datasets' files (issue 21)

CUB_MD5 = "97eceeb196236b17998738112f37df78"
CARS_IMAGES_MD5 = "d5c8f0aa497503f355e17dc7886c3f14"


def _fetch(source: str, tmp: Path, checksums=None, mirror: bool = True) -> None:
    from workflow.download import OfficialFile, fetch_files, plan_downloads

    keys, files = plan_downloads(
        {"d": {"source": source, "checksums": checksums or {}}}
    )
    (tmp / "mirror").mkdir(exist_ok=True)
    fetch_files(
        [OfficialFile.from_dict(f) for f in files[keys["d"]]],
        tmp / "raw" / keys["d"],
        mirror=tmp / "mirror" if mirror else None,
        cache=tmp / "cache",
    )


def _cub_archive(tmp: Path) -> Path:
    from official_formats import make_cub200, tar_gz

    make_cub200(tmp / "src")
    (tmp / "mirror").mkdir(exist_ok=True)
    return tar_gz(
        tmp / "src" / "CUB_200_2011",
        tmp / "mirror" / "CUB_200_2011.tgz",
        "CUB_200_2011",
    )


def _cub_without_boxes(tmp: Path) -> None:
    from workflow.prepare import prepare

    _cub_archive(tmp)
    (tmp / "src" / "CUB_200_2011" / "bounding_boxes.txt").unlink()
    spec = {"source": "cub200", "params": {"bounding_boxes": True}, "image_size": 8}
    prepare(
        spec,
        tmp / "images.npy",
        tmp / "labels.parquet",
        tmp / "classes.json",
        root=tmp / "src",
        name="d",
    )


# (id, what fails, message fragments): each names the file, and its expected checksum where one is known.
DML_DATA_CASES = [
    (
        "cub_archive_missing_from_the_mirror",
        lambda tmp: _fetch("cub200", tmp),
        ["CUB_200_2011.tgz is missing", f"Put the official file (md5 {CUB_MD5})"],
    ),
    (
        "cub_subset_archive_without_a_pinned_checksum",
        lambda tmp: (_cub_archive(tmp), _fetch("cub200", tmp)),
        [
            "mirror/CUB_200_2011.tgz: md5 is",
            f"expected {CUB_MD5}",
            "It is not the official CUB_200_2011.tgz",
        ],
    ),
    (
        "cub_archive_other_than_the_pinned_one",
        lambda tmp: (
            _cub_archive(tmp),
            _fetch("cub200", tmp, {"CUB_200_2011.tgz": "0" * 32}),
        ),
        [
            "mirror/CUB_200_2011.tgz: md5 is",
            "expected " + "0" * 32,
            "It is not the copy pinned in the config",
            "Put your copy of CUB_200_2011.tgz (md5 "
            + "0" * 32
            + " pinned in the config, key checksums)",
        ],
    ),
    (
        "cars_files_without_a_mirror",
        lambda tmp: _fetch("cars196", tmp, mirror=False),
        [
            "car_ims.tgz has no public download address",
            f"md5 {CARS_IMAGES_MD5}",
            "The original address (http://ai.stanford.edu/~jkrause/car196/) no longer serves",
        ],
    ),
    (
        "cars_annotations_missing_from_the_mirror",
        lambda tmp: _fetch("cars196", tmp, {"car_ims.tgz": _md5_of(_cars_images(tmp))}),
        [
            "cars_annos.mat is missing",
            "md5 b407c6086d669747186bd1d764ff9dbc",
            "no longer serves",
        ],
    ),
    (
        "inshop_without_a_pinned_checksum",
        lambda tmp: _fetch("inshop", tmp),
        [
            "config key datasets.d.checksums: img.zip has no published checksum",
            "add img.zip: <its md5 or sha256>",
        ],
    ),
    (
        "checksum_pinned_for_a_file_the_dataset_lacks",
        lambda tmp: _fetch("cub200", tmp, {"CUB_200.tgz": "0" * 32}),
        [
            "config key datasets.d.checksums: 'CUB_200.tgz' is not a file of this dataset; its files are "
            "CUB_200_2011.tgz"
        ],
    ),
    (
        "cub_listing_missing_from_the_archive",
        _cub_without_boxes,
        [
            "CUB_200_2011/bounding_boxes.txt: missing; it is part of the official CUB_200_2011.tgz"
        ],
    ),
]


def _cars_images(tmp: Path) -> Path:
    from official_formats import make_cars196, tar_gz

    make_cars196(tmp / "src")
    (tmp / "mirror").mkdir(exist_ok=True)
    return tar_gz(tmp / "src" / "car_ims", tmp / "mirror" / "car_ims.tgz", "car_ims")


def _md5_of(path: Path) -> str:
    from official_formats import md5

    return md5(path)


@pytest.mark.parametrize("case", DML_DATA_CASES, ids=[c[0] for c in DML_DATA_CASES])
def test_dml_data_error(tmp_path, case):
    _, fail, fragments = case
    with pytest.raises(Exception) as error:
        fail(tmp_path)
    for fragment in fragments:
        assert fragment in str(error.value), f"{fragment!r} not in {error.value}"
    assert not (tmp_path / "raw").exists() or not any(
        (tmp_path / "raw").iterdir()
    )  # nothing half-assembled
    assert not (tmp_path / "images.npy").exists()


# ---------------------------------------------------------------- JPEG stores (storage: jpeg)


def _jpeg_store(tmp: Path, image_size=24):
    """A generated image folder prepared as dataset ``pics``'s JPEG store;
    -> (store path, labels)."""
    from workflow.datasets import load_dataset
    from workflow.prepare import write_prepared

    make_imagefolder(tmp / "img", n_train=4, n_test=2)
    out = tmp / "data" / "pics"
    write_prepared(
        load_dataset("imagefolder", path=str(tmp / "img")),
        out / "images.jpegs",
        out / "labels.parquet",
        out / "classes.json",
        image_size=image_size,
        name="pics",
        storage="jpeg",
    )
    return out / "images.jpegs", pd.read_parquet(out / "labels.parquet")[
        "label"
    ].to_numpy()


def _train_from_store(tmp: Path, damage=None, image_size=24, **training):
    from workflow.config import Cell, cell_settings
    from workflow.config_loader import load_config
    from workflow.jpeg_store import JpegStore
    from workflow.training.loop import train_cell

    path, labels = _jpeg_store(tmp, image_size)
    if damage:
        damage(path)
    config = copy.deepcopy(BASE)
    config["datasets"]["digits"]["storage"] = "jpeg"
    config["training"] = {
        **config.get("training", {}),
        "epochs": 1,
        "batch_size": 8,
        "loader_workers": 2,
        **training,
    }
    settings = cell_settings(
        load_config(config), Cell("digits", "full", "small_cnn", "ce", 0)
    )
    train_cell(
        JpegStore(path), labels, np.arange(len(labels)), 3, settings, progress=False
    )


def _flip_byte_of_image(index: int):
    def damage(path: Path):
        from workflow.jpeg_store import JpegStore

        at = int(JpegStore(path).offsets[index]) + 40
        data = bytearray(path.read_bytes())
        data[at] ^= 0xFF
        path.write_bytes(bytes(data))

    return damage


def _undecodable_image(tmp: Path):
    """A store whose image 1 has a right checksum but is no JPEG the
    decoder takes (what a JPEG Pillow reads but libjpeg-turbo refuses
    would give)."""
    from workflow.jpeg_store import JpegStore, StoreWriter

    path, labels = _jpeg_store(tmp)
    store = JpegStore(path)
    writer = StoreWriter(tmp / "bad.jpegs", 24)
    for i in range(len(store)):
        data = store.read([i])[0].numpy().tobytes()
        writer.add(
            b"\xff\xd8" + bytes(300) if i == 1 else data,
            int(store.heights[i]),
            int(store.widths[i]),
        )
    writer.close()
    (tmp / "bad.jpegs").replace(path)
    JpegStore(path).decode(np.arange(len(labels)))


# (id, what fails, fragments): a damaged store stops the job naming the
# image (index and original file), the dataset and what to do.
JPEG_STORE_CASES = [
    (
        "flipped_byte_in_a_stored_jpeg",
        lambda tmp: _train_from_store(tmp, _flip_byte_of_image(3)),
        [
            "data/pics/images.jpegs: image 3 (file train/cat/img03.png) of dataset pics is corrupt "
            "(its bytes do not match the checksum written by prepare)",
            "Delete it and run Snakemake again",
        ],
    ),
    (
        "jpeg_store_cut_short",
        lambda tmp: _train_from_store(
            tmp, lambda p: p.write_bytes(p.read_bytes()[:-100])
        ),
        [
            "data/pics/images.jpegs: the JPEG store of dataset pics is cut short or is no JPEG store",
            "Delete it and run Snakemake again",
        ],
    ),
    (
        "stored_image_that_does_not_decode",
        _undecodable_image,
        [
            "data/pics/images.jpegs: image 1 (file train/cat/img01.png) of dataset pics does not decode "
            "(Image is incomplete or truncated)"
        ],
    ),
    (
        "jpeg_store_of_own_sizes_without_an_input_size",
        lambda tmp: _train_from_store(tmp, image_size=None),
        [
            "dataset pics is stored as JPEGs of their own sizes (storage: jpeg without image_size)",
            "needs training.input_size: set it (e.g. 224), or set the dataset's image_size",
        ],
    ),
]


@pytest.mark.parametrize("case", JPEG_STORE_CASES, ids=[c[0] for c in JPEG_STORE_CASES])
def test_jpeg_store_error(tmp_path, case):
    _, fail, fragments = case
    with pytest.raises(Exception) as error:
        fail(tmp_path)
    for fragment in fragments:
        assert fragment in str(error.value), f"{fragment!r} not in {error.value}"


# ---------------------------------------------------------------- evaluation (all against all)


def _cell_embeddings(split, n=20, classes=4):
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "index": np.arange(n),
            "split": split,
            "label": np.arange(n) % classes,
            "prediction": np.full(n, -1),
            "embedding": list(rng.normal(size=(n, 4))),
        }
    )


def _evaluate(embeddings, evaluation):
    from workflow.evaluate import evaluate_cell

    return evaluate_cell(
        embeddings, pd.DataFrame({"label": [], "anchor": []}), evaluation
    )


# (id, what fails, fragments of its message)
EVALUATION_CASES = [
    (
        "all_against_all_rows_mixed_with_queries",
        lambda tmp: _evaluate(_cell_embeddings(["all"] * 15 + ["query"] * 5), {}),
        [
            "embeddings mix split 'all' (all against all) with query",
            "delete results/splits/<dataset>/",
        ],
    ),
    (
        "recall_cutoff_beyond_the_other_test_images",
        lambda tmp: _evaluate(_cell_embeddings("all"), {"recall_at": [1, 20]}),
        [
            "config key evaluation.recall_at: cutoff 20 exceeds the database of this cell (19 images)"
        ],
    ),
    (
        "all_against_all_with_single_image_classes",
        lambda tmp: _evaluate(_cell_embeddings("all", n=4, classes=4), {}),
        ["none of the 4 queries has a class with another item"],
    ),
]


@pytest.mark.parametrize("case", EVALUATION_CASES, ids=[c[0] for c in EVALUATION_CASES])
def test_evaluation_case(tmp_path, case):
    _, fail, fragments = case
    with pytest.raises(Exception) as error:
        fail(tmp_path)
    for fragment in fragments:
        assert fragment in str(error.value), f"{fragment!r} not in {error.value}"

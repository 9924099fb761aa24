"""The catalogue of bad inputs: each case is one bad config value, target or
file, with the exit status Snakemake must give, a fragment of the message
(which names the culprit: key, file or class, and says what to do) and a
check that nothing partial was written.

The catalogue lies in files by stage, each with a ``CATALOGUE`` list of its
case lists (``bad_inputs.catalogue_size()`` counts them all; the helpers
they share are in ``tests/bad_inputs.py``):

- this file, config errors before any job: ``snakemake -n`` on one
  workspace, one config file per case, run a few at a time; nothing may
  appear under ``results/``; further config errors in-process
  (``check_config(load_config(...))``, the code ``snakemake -n`` runs); and
  broken config files;
- ``test_bad_inputs_data.py``, dataset preparation: ``prepare`` errors
  (nothing written), split errors, wrong outcomes made right (a 16-bit
  PNG, LaTeX escaping), one real ``snakemake -k`` run of several datasets,
  each broken in its own way (mirror files, image folders, split sizes:
  each case's job log must hold its message and its outputs must not
  exist), and the DML datasets' files;
- ``test_bad_inputs_jobs.py``, the inputs of training, embedding,
  evaluation and aggregation jobs: planted files, files that a real run
  would have written, broken on purpose (an unreadable Parquet file,
  anchors of another size, a changed CIFAR-100 pickle), given to the rules
  that read them (``--allowed-rules``), checkpoints, train jobs as real
  processes, JPEG stores and evaluation settings;
- ``test_bad_inputs_code.py``: the code itself: every writer goes through
  a temporary name, nothing unpickles outside files except the checksummed
  CIFAR-100 loader, and no rule builds a shell command;
- ``test_bad_inputs_{counts,listings,rankings,faults}.py``: one file per
  kind.

Every group also checks that no temporary file (``*.tmp``, ``*.part``,
``*.partial-*``) is left anywhere under ``results/``.
"""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
import yaml
from bad_inputs import (
    BASE,
    TABLE,
    assert_config_error,
    assert_config_error_in_process,
    catalogue_size,
    changed,
    dry_runs,
)
from conftest import REPO, make_workspace, snakemake

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


@pytest.fixture(scope="module")
def config_runs(tmp_path_factory) -> dict:
    """``snakemake -n`` for every config case, three at a time, in one workspace."""
    return dry_runs(
        make_workspace(tmp_path_factory.mktemp("config_cases"), BASE), CONFIG_CASES
    )


def test_the_catalogue_has_at_least_twenty_cases():
    from test_bad_inputs_data import DATA_CASES
    from test_bad_inputs_jobs import PLANTED_CASES

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
    # own message (docs "Configuration"), but exit status 1 all the same.
    assert runs["--configfile"].returncode == 1
    assert not (runs["workdir"] / "results").exists()


CATALOGUE = [
    CONFIG_CASES,
    IN_PROCESS_CASES,
    CONFIG_FILE_CASES,
]

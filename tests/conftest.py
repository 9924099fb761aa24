"""Shared fixtures (a tiny pipeline workspace run once per test session),
the test configs of tests/configs/, and the test tiers: the one place that
marks tests slow, slurm, chromium or data."""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
PIPELINE_FILES = ["Snakefile", "rules", "workflow", "envs"]

CONFIGS = REPO / "tests" / "configs"


def read_test_config(name: str) -> dict:
    """The test config ``tests/configs/<name>.yaml``, a new dict each call."""
    return yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())


TINY_CONFIG = read_test_config("tiny")


def training_settings(loss: str = "ce", sampler=None, epochs: int = 4, **training):
    """Settings of the digits/full/small_cnn/<loss>/seed0 cell of
    TINY_CONFIG with ``loss`` (and ``sampler``) alone, batches of 40 and a
    step schedule halving every 2 epochs; ``training`` adds training keys."""
    from workflow.config import Cell, cell_settings
    from workflow.config_loader import load_config

    config = copy.deepcopy(TINY_CONFIG)
    config["losses"] = {loss: {"impl": loss, "sampler": sampler}}
    config["training"] = {
        "epochs": epochs,
        "batch_size": 40,
        "lr_schedule": "step",
        "lr_step_epochs": 2,
        "lr_gamma": 0.5,
        **training,
    }
    return cell_settings(
        load_config(config), Cell("digits", "full", "small_cnn", loss, 0)
    )


def digits_training_set(per_class: int = 24):
    """sklearn's digits and the indices of the first ``per_class`` images of each class."""
    import numpy as np

    from workflow.datasets import load_dataset

    data = load_dataset("sklearn_digits")
    return data, np.concatenate(
        [np.flatnonzero(data.labels == c)[:per_class] for c in range(10)]
    )


def make_workspace(path: Path, config: dict) -> Path:
    """A copy of the pipeline code in ``path`` with ``config`` as config.yaml."""
    path.mkdir(parents=True, exist_ok=True)
    for name in PIPELINE_FILES:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(
                src, path / name, ignore=shutil.ignore_patterns("__pycache__")
            )
        else:
            shutil.copy2(src, path / name)
    (path / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def snakemake(
    workdir: Path, *args: str, check: bool = True
) -> subprocess.CompletedProcess:
    refuse_snakemake_outside_the_slow_tier(args)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", *args],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"snakemake {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
        )
    return result


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """The tiny config run end to end once, as `snakemake --cores 2 --resources gpu=1`."""
    workdir = make_workspace(tmp_path_factory.mktemp("pipeline"), TINY_CONFIG)
    snakemake(workdir, "--cores", "2", "--resources", "gpu=1")
    return workdir


# ---------------------------------------------------------------- test tiers
# `pytest` runs the fast tier: pyproject.toml's addopts deselects every
# marker below (`-m "not slow and ..."`); `pytest -m ""` runs every test (CI
# and README's quick start do), `pytest -m slow` (or slurm, chromium, data)
# runs one tier. The markers are given here and nowhere else: by the
# fixtures a test uses, as torchvision's conftest marks by need, and by name
# for the tests whose own body starts Snakemake, trains for seconds or reads
# the real datasets. Every Snakemake process is slow: even `snakemake -n`
# of the tiny config costs about 6 CPU seconds (imports, DAG, checks), so
# the fast tier checks configs in-process (check_config(load_config(...)),
# the code `snakemake -n` runs). tests/test_tiers.py checks that no test
# starting Snakemake, SLURM or Chromium slips into the fast tier, and
# snakemake() below refuses to start outside the slow tier.

# Fixtures that start Snakemake (jobs or dry runs), SLURM or Chromium, or
# read ../shared/datasets: every test using one (directly or through
# another fixture) gets their markers.
FIXTURE_MARKERS = {
    # real pipeline runs
    "tiny_run": ["slow"],
    "default_run": ["slow"],
    "selection_run": ["slow"],
    "model_run": ["slow"],
    "result_file_runs": ["slow"],
    "job_run": ["slow"],
    "tensorboard_run": ["slow"],
    # batteries of dry runs (snakemake -n)
    "config_runs": ["slow"],
    "config_file_runs": ["slow"],
    "count_config_runs": ["slow"],
    "ranking_config_runs": ["slow"],
    "result_path_runs": ["slow"],
    "dry_run": ["slow"],
    "rule_names": ["slow"],
    # real pipeline runs on the real datasets
    "real_run": ["slow", "data"],
    "data_run": ["slow", "data"],
    "planted_run": ["slow", "data"],
    # a SLURM cluster, and a cluster left running by a killed test run
    "cluster": ["slow", "slurm"],
    "stale_daemons": ["slow", "slurm"],
    # headless Chromium (tests/test_report.py's ensure_chromium; also
    # tests/test_docs.py's), and the documentation site built by Sphinx
    "browser": ["chromium"],
    "site": ["slow"],
}

# Tests that need a tier by themselves, as "file::test" (every parameter)
# or "file::test[id]" (one parameter); tests/test_tiers.py checks that each
# names a collected test.
TEST_MARKERS = {
    "slow": [
        # real pipeline runs
        "test_bad_inputs_data.py::test_outcome[changed_user_files_are_prepared_again]",
        "test_bad_inputs_listings.py::test_outcome[cub_listing_twice_stops_the_real_run]",
        "test_determinism.py::test_same_cell_evaluated_twice_gives_byte_identical_metrics",
        "test_devices.py::test_real_train_jobs_hold_distinct_devices",
        "test_dml_datasets.py::test_class_disjoint_run",
        "test_download.py::test_snakemake_stops_on_a_missing_mirror_file_and_writes_nothing",
        "test_loss_library.py::test_pipeline_runs_library_losses_end_to_end",
        "test_pipeline.py::test_changing_evaluation_keys_retrains_nothing",
        "test_resume.py::test_snakemake_run_killed_during_training_resumes_to_identical_outputs",
        "test_resume.py::test_snakemake_killed_alone_its_train_job_stops_and_the_rerun_trains_the_new_settings",
        "test_selection.py::test_selection_is_unchanged_when_the_test_labels_are_noise",
        "test_training_log.py::test_tensorboard_false_writes_no_event_files",
        # dry runs and other Snakemake commands
        "test_bad_inputs_faults.py::test_a_tensorboard_file_passes_with_tensorboard_off",
        "test_config.py::test_bad_config_stops_snakemake_before_any_job",
        "test_docs.py::test_the_pipeline_picture_is_the_snakefiles_rule_graph",
        "test_datasets.py::test_cifar100_fewshot_config_plans_its_grid",
        "test_datasets.py::test_cifar100_gpu_config_plans_its_grid_from_the_npz_pool",
        "test_download.py::test_snakemake_names_a_wrong_loader_parameter_before_running",
        "test_paper_configs.py::test_dry_run_lists_the_expected_jobs_offline",
        "test_repository.py::test_selection_trials_get_the_resources_of_the_cells",
        "test_repository.py::test_snakemake_lint_is_clean",
        "test_repository.py::test_the_docs_give_the_size_of_the_default_grid",
        "test_selection.py::test_the_shipped_fair_comparison_config_plans_equal_budgets",
        # real processes for seconds: jobs killed, disks filled, benchmarks
        # (--durations=0 under load: 8 to 183 s)
        "test_bad_inputs_faults.py::test_a_memory_map_past_the_free_space_fails_with_enospc_not_sigbus",
        "test_bad_inputs_faults.py::test_disk_case",
        "test_bad_inputs_faults.py::test_parent_case",
        "test_bad_inputs_jobs.py::test_train_job_case",
        "test_benchmarks.py::test_gpu_session_script_runs_end_to_end_in_dry_mode",
        "test_benchmarks.py::test_input_path_benchmark_compares_both_loops_and_the_storage_modes",
        "test_benchmarks.py::test_throughput_benchmark_writes_both_loops_side_by_side",
        # training for seconds (--durations=0 under load: 7 to 54 s)
        "test_jpeg_store.py::test_training_from_a_store_is_reproducible_with_and_without_workers_and_resumes",
        "test_regenerate.py::test_regenerate_reproduces_committed_tables",
        "test_resume.py::test_training_on_one_and_two_threads_agrees_but_not_bit_for_bit",
        "test_training.py::test_batches_read_from_host_memory_train_the_same_model",
        "test_training.py::test_compiled_training_learns_what_eager_training_learns",
        "test_training.py::test_inputs_prepared_ahead_in_a_thread_give_the_same_bits",
    ],
    "data": [
        "test_bad_inputs_code.py::test_the_cifar_loader_checks_the_checksum_before_unpickling",
        "test_download.py::test_the_shared_mirror_is_where_the_tests_expect_it",
        "test_download.py::test_real_cifar100_from_the_mirror_is_verified_and_copied",
        "test_download.py::test_a_corrupted_byte_in_the_mirror_names_the_file_and_its_checksum",
        "test_download.py::test_a_missing_mirror_file_names_it_and_where_to_put_it",
        "test_download.py::test_an_archive_in_the_mirror_is_checked_against_the_official_archive_checksum",
        "test_download.py::test_tiny_imagenet_subset_is_refused_without_the_explicit_setting",
        "test_download.py::test_tiny_imagenet_subset_under_the_official_name_fails_the_official_checksum",
        "test_download.py::test_a_corrupted_tiny_imagenet_subset_is_refused",
        "test_datasets.py::test_cifar100_fewshot_config_plans_its_grid",
        "test_datasets.py::test_cifar100_gpu_config_plans_its_grid_from_the_npz_pool",
        "test_download.py::test_snakemake_stops_on_a_missing_mirror_file_and_writes_nothing",
        "test_selection.py::test_selection_is_unchanged_when_the_test_labels_are_noise",
        "test_selection.py::test_the_shipped_fair_comparison_config_plans_equal_budgets",
    ],
}


def tier_markers(item) -> set[str]:
    """The tier markers ``item`` gets from FIXTURE_MARKERS and TEST_MARKERS."""
    names = set()
    for fixture in getattr(item, "fixturenames", ()):
        names.update(FIXTURE_MARKERS.get(fixture, ()))
    keys = {
        f"{item.path.name}::{item.name}",
        f"{item.path.name}::{getattr(item, 'originalname', item.name)}",
    }
    names.update(marker for marker, tests in TEST_MARKERS.items() if keys & set(tests))
    return names


COLLECTED = pytest.StashKey[list]()


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Marks every test of a tier (before ``-m`` deselects), and keeps the
    whole collection for tests/test_tiers.py."""
    for item in items:
        for name in sorted(tier_markers(item)):
            item.add_marker(name)
    config.stash[COLLECTED] = list(items)


_RUNNING = {}


def pytest_runtest_setup(item):
    _RUNNING["item"] = item


def refuse_snakemake_outside_the_slow_tier(args) -> None:
    """A test that starts Snakemake (a few CPU seconds even for ``-n``) must
    be marked slow (above): it fails at once otherwise, so that none slips
    into the fast tier."""
    item = _RUNNING.get("item")
    if item is not None and item.get_closest_marker("slow") is None:
        raise AssertionError(
            f"{item.nodeid} starts Snakemake (snakemake {' '.join(args)}) "
            "but is not in the slow tier: add its fixture to FIXTURE_MARKERS "
            "or the test to TEST_MARKERS in tests/conftest.py"
        )

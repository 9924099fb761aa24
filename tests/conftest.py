"""Shared fixtures: a tiny pipeline workspace run once per test session."""

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

TINY_CONFIG = {
    "datasets": {"digits": {"source": "sklearn_digits", "query_per_class": 5}},
    "regimes": {"full": {"train_per_class": None}, "fewshot5": {"train_per_class": 5}},
    "backbones": {
        "small_cnn": {
            "arch": "small_cnn",
            "embedding_size": 16,
            "params": {"widths": [8, 16]},
        }
    },
    "losses": {"ce": {"impl": "ce"}, "cam": {"impl": "cam"}, "lm": {"impl": "lm"}},
    "seeds": [0, 1],
    "training": {"epochs": 2, "batch_size": 64},
    "tables": {
        "tiny_grid": {
            "select": {"retrieval": "exact"},
            "rows": ["loss"],
            "columns": ["regime"],
            "metrics": ["map", "precision@5"],
            "baseline": "ce",
        }
    },
}


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

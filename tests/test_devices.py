"""One GPU per job (workflow/devices.py, issue 29).

This machine has no GPU: the tests simulate a device count with
``CBIR_SIMULATED_GPUS`` (the claims take the same locks as on a GPU
machine; the jobs compute on the CPU). Lock folders are per test.
"""

from __future__ import annotations

import copy
import fcntl
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from conftest import REPO, TINY_CONFIG, make_workspace

from workflow.devices import claim_device


@pytest.fixture
def gpus(tmp_path, monkeypatch):
    """Two simulated GPUs with a lock folder of this test's own."""
    monkeypatch.setenv("CBIR_SIMULATED_GPUS", "2")
    monkeypatch.setenv("CBIR_GPU_LOCK_DIR", str(tmp_path / "locks"))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    return tmp_path / "locks"


def test_claims_take_distinct_devices_and_wait_when_all_are_held(gpus):
    lines = []
    with (
        claim_device("auto", 1, "a", log=lines.append) as a,
        claim_device("auto", 1, "b", log=lines.append) as b,
    ):
        assert {a.index, b.index} == {"0", "1"} and a.device == torch.device(
            "cpu"
        )  # simulated
        got = []
        waiter = threading.Thread(target=lambda: got.append(_claim_once("c", lines)))
        waiter.start()
        time.sleep(1.0)
        assert not got, "a third job got a device while both were held"
    waiter.join(5)
    assert got and got[0] in {"0", "1"}
    assert any("all 2 GPU(s) x 1 job(s) per GPU are held" in line for line in lines)


def _claim_once(job, lines):
    with claim_device("auto", 1, job, log=lines.append) as claim:
        return claim.index


def test_jobs_spread_over_the_gpus_before_sharing_one(gpus):
    with (
        claim_device("auto", 2, "a") as a,
        claim_device("auto", 2, "b") as b,
        claim_device("auto", 2, "c") as c,
    ):
        assert [(a.index, a.slot), (b.index, b.slot), (c.index, c.slot)] == [
            ("0", 0),
            ("1", 0),
            ("0", 1),
        ]


def test_a_killed_job_frees_its_device(gpus):
    """A job killed with SIGKILL (no clean-up runs) leaves its device free."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time\nfrom workflow.devices import claim_device\n"
            "with claim_device('auto', 1, 'holder') as c:\n    print(c.index, flush=True)\n    time.sleep(60)",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "CBIR_SIMULATED_GPUS": "1"},
    )
    assert holder.stdout.readline().strip() == "0"
    os.environ["CBIR_SIMULATED_GPUS"] = "1"
    lock = gpus / "gpu-0.slot0.lock"
    fd = os.open(lock, os.O_RDWR)
    with pytest.raises(BlockingIOError):
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held by the live job
    os.close(fd)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    start = time.monotonic()
    with claim_device("auto", 1, "next") as claim:
        assert claim.index == "0" and time.monotonic() - start < 1.0


def test_cuda_visible_devices_and_slurm_are_respected(gpus, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    with claim_device("auto", 1, "a") as a, claim_device("auto", 1, "b") as b:
        assert (a.index, b.index) == ("3", "5")
    # Under SLURM the scheduler gave the job its GPU: no lock, the first it sees.
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2")
    with claim_device("auto", 1, "a") as a, claim_device("auto", 1, "b") as b:
        assert a.index == b.index == "2" and a.slot is None
    assert not list(gpus.glob("gpu-2*"))


def test_cpu_and_pinned_devices_claim_nothing(gpus):
    with claim_device("cpu", 1, "a") as claim:
        assert claim.device == torch.device("cpu") and claim.index is None
    if not torch.cuda.is_available():
        with pytest.raises(
            RuntimeError,
            match="training.device is 'cuda:1' but this machine has 0 CUDA",
        ):
            with claim_device("cuda:1", 1, "a"):
                pass
    os.environ.pop("CBIR_SIMULATED_GPUS")
    if not torch.cuda.is_available():
        with pytest.raises(
            RuntimeError, match="training.device is 'cuda' but no CUDA device"
        ):
            with claim_device("cuda", 1, "a"):
                pass
        with claim_device("auto", 1, "a") as claim:
            assert claim.device == torch.device("cpu")


def _held(locks: Path) -> set[str]:
    """The lock files some process holds now."""
    held = set()
    for path in locks.glob("gpu-*.lock"):
        fd = os.open(path, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
        except BlockingIOError:
            held.add(path.name)
        finally:
            os.close(fd)
    return held


@pytest.mark.parametrize(
    "jobs_per_gpu, resources, most", [(1, "gpu=4", 2), (2, "gpu=1", 2)]
)
def test_real_train_jobs_hold_distinct_devices(tmp_path, jobs_per_gpu, resources, most):
    """Four real train jobs on 2 simulated GPUs. With --resources gpu=4 and
    one job per GPU, Snakemake starts all four and only two hold a device
    at a time (the others wait); with jobs_per_gpu: 2 and --resources
    gpu=1 (one GPU, two slots), Snakemake itself runs two at a time."""
    config = copy.deepcopy(TINY_CONFIG)
    config.update(
        seeds=[0, 1],
        regimes={"full": {"train_per_class": None}},
        tables={},
        losses={"ce": {"impl": "ce"}, "lm": {"impl": "lm"}},
        jobs_per_gpu=jobs_per_gpu,
    )
    config["training"]["epochs"] = 3
    workdir = make_workspace(tmp_path / "run", config)
    locks = tmp_path / "locks"
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "CUDA_VISIBLE_DEVICES", "SLURM_JOB_ID")
    }
    env.update(CBIR_SIMULATED_GPUS="2", CBIR_GPU_LOCK_DIR=str(locks))
    cells = [
        f"results/cells/digits/full/small_cnn/{loss}/seed{seed}"
        for loss in ("ce", "lm")
        for seed in (0, 1)
    ]
    run = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "snakemake",
            *[f"{cell}/model.pt" for cell in cells],
            "--cores",
            "4",
            "--resources",
            resources,
        ],
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    seen = []
    while run.poll() is None:
        if locks.exists():
            seen.append(_held(locks))
        time.sleep(0.05)
    output = run.stdout.read()
    assert run.returncode == 0, output
    assert max(len(s) for s in seen) == most, seen
    stats = [
        json.loads((workdir / cell / "train_stats.json").read_text()) for cell in cells
    ]
    assert {s["device_index"] for s in stats} <= {"0", "1"}
    logs = "".join(
        (
            workdir / "results/logs/train" / f"{cell.split('results/cells/')[1]}.log"
        ).read_text()
        for cell in cells
    )
    assert "device: GPU" in logs
    if jobs_per_gpu == 1:
        assert "are held by other jobs" in logs  # two of the four waited
    else:
        assert {s["device_slot"] for s in stats} <= {0, 1}


def test_evaluation_device_is_opt_in_and_keeps_cpu_numbers():
    """evaluation.device: cpu (default) adds no key to the evaluation
    mapping, so no finished cell is evaluated again; auto or cuda add it
    (changing it re-evaluates) and give evaluate a GPU slot. On the device
    the CPU is, the metrics are those of the default path."""
    import numpy as np
    import pandas as pd

    from workflow.config import dataset_evaluation
    from workflow.config_loader import load_config
    from workflow.evaluate import evaluate_cell

    config = load_config(copy.deepcopy(TINY_CONFIG))
    assert "device" not in dataset_evaluation(config, "digits")
    gpu = load_config({**copy.deepcopy(TINY_CONFIG), "evaluation": {"device": "auto"}})
    assert dataset_evaluation(gpu, "digits")["device"] == "auto"

    rng = np.random.default_rng(0)
    rows = [
        {
            "index": i,
            "split": "query" if i < 20 else "database",
            "label": int(i % 4),
            "prediction": -1,
            "embedding": rng.normal(size=6).astype(np.float32),
        }
        for i in range(120)
    ]
    embeddings = pd.DataFrame(rows)
    anchors = pd.DataFrame({"label": [], "anchor": []})
    cpu, _ = evaluate_cell(embeddings, anchors)
    claimed, _ = evaluate_cell(embeddings, anchors, device=torch.device("cpu"))
    pd.testing.assert_frame_equal(cpu, claimed)

"""Resume after a kill gives the same bits as an uninterrupted run, and
the same config and seed give the same files (issue #10).

The Snakemake test kills a real run (SIGKILL to the whole process group)
while the training job is between checkpoints, re-runs it with
``--rerun-incomplete`` and compares every deterministic output with an
uninterrupted run in another workspace."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import (
    digits_training_set,
    make_workspace,
    read_test_config,
    snakemake,
    training_settings,
)


@pytest.fixture(scope="module")
def digits():
    return digits_training_set()


def model_bytes(model: dict) -> bytes:
    """model.pt as the train script writes it (without the timing stats)."""
    buffer = io.BytesIO()
    torch.save({k: v for k, v in model.items() if k != "stats"}, buffer)
    return buffer.getvalue()


def assert_same_model(a: dict, b: dict) -> None:
    for part in ("backbone", "loss"):
        assert a[part].keys() == b[part].keys()
        for key, value in a[part].items():
            assert torch.equal(value, b[part][key]), f"{part}.{key}"
    assert a["history"] == b["history"]
    assert model_bytes(a) == model_bytes(b)


@pytest.mark.parametrize(
    "loss, sampler, augment",
    [
        ("ce", None, "none"),
        ("triplet", {"m_per_class": 4}, "crop_flip"),
        ("ce", None, "crop_flip"),
    ],
    ids=["shuffled", "m_per_class+augment", "shuffled+augment"],
)
def test_interrupted_then_resumed_equals_uninterrupted_bit_for_bit(
    tmp_path, digits, loss, sampler, augment
):
    from workflow.training.loop import train_cell

    data, train = digits
    s = training_settings(loss, sampler, augment=augment, augment_padding=1)
    whole = train_cell(data.images, data.labels, train, 10, s, progress=False)
    path = tmp_path / "last.pt"
    assert (
        train_cell(
            data.images,
            data.labels,
            train,
            10,
            s,
            progress=False,
            checkpoint_path=path,
            stop_after_epoch=1,
        )
        is None
    )
    state = torch.load(path, weights_only=True)
    assert state["epoch"] == 1 and len(state["history"]) == 1
    resumed = train_cell(
        data.images, data.labels, train, 10, s, progress=False, checkpoint_path=path
    )
    assert resumed["stats"]["resumed_from_epoch"] == 1
    assert_same_model(whole, resumed)
    # Resuming from the middle is not the same as starting over at the end:
    # the run differs from one that skips the checkpointed optimiser/RNG state.
    fresh_after_one = train_cell(
        data.images,
        data.labels,
        train,
        10,
        training_settings(loss, sampler, epochs=3, augment=augment, augment_padding=1),
        progress=False,
    )
    assert fresh_after_one["history"] != resumed["history"][1:]


def test_checkpoint_of_other_settings_is_ignored_with_a_log_line(
    tmp_path, digits, capfd
):
    from workflow.training.loop import train_cell

    data, train = digits
    path = tmp_path / "last.pt"
    train_cell(
        data.images,
        data.labels,
        train,
        10,
        training_settings(lr=0.01),
        progress=False,
        checkpoint_path=path,
        stop_after_epoch=2,
    )
    capfd.readouterr()
    s = training_settings()
    model = train_cell(
        data.images, data.labels, train, 10, s, progress=False, checkpoint_path=path
    )
    assert "ignoring checkpoint" in capfd.readouterr().err
    assert model["stats"]["resumed_from_epoch"] == 0
    assert_same_model(
        model, train_cell(data.images, data.labels, train, 10, s, progress=False)
    )


# Tolerances (weights rtol, atol; loss rel) between 1 and 2 threads. bf16
# rounds every product to 8 bits of mantissa, so the last-bit differences of
# fp32 become bf16 rounding flips: measured on this CPU (2 epochs) the
# weights differ by up to 8e-4 and the epoch losses by 1.3e-5 relative.
THREAD_TOLERANCES = {"fp32": (1e-3, 1e-5, 1e-4), "bf16": (1e-2, 5e-3, 1e-3)}


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_training_on_one_and_two_threads_agrees_but_not_bit_for_bit(digits, precision):
    """Measured with torch 2.14 on this CPU: fp32 convolutions give the same
    bits on 1 and 2 intra-op threads, but batch norm's training-mode
    statistics do not (the per-channel reduction is split across threads),
    so models trained with different thread counts differ in their last
    bits. The train rule therefore runs with a fixed ``threads: 1``; here
    the two runs must still agree closely."""
    from workflow.training.loop import train_cell

    data, train = digits
    s = training_settings("cam", epochs=2, precision=precision)
    one = train_cell(data.images, data.labels, train, 10, s, threads=1, progress=False)
    two = train_cell(data.images, data.labels, train, 10, s, threads=2, progress=False)
    assert two["stats"]["threads"] == 2 and two["stats"]["precision"] == precision
    rtol, atol, loss_rel = THREAD_TOLERANCES[precision]
    for key, value in one["backbone"].items():
        assert torch.allclose(
            value.float(), two["backbone"][key].float(), rtol=rtol, atol=atol
        ), key
    for a, b in zip(one["history"], two["history"]):
        assert a["loss"] == pytest.approx(b["loss"], rel=loss_rel)


# A cell that trains for several seconds, so the kill lands between two
# checkpoints: the full digits training set (about 1,200 images), 25 epochs.
RESUME_CONFIG = read_test_config("resume")
CELL = "digits/full/small_cnn/cam/seed0"
TARGETS = [f"results/cells/{CELL}/metrics.csv"]


def deterministic_files(results) -> dict:
    """Every output that must be the same run to run: file bytes (metrics.csv
    too: it holds no timing); logs, benchmarks (evaluate's timing.json
    among them), TensorBoard event files (named by time and host) and
    train_stats.json record time and are left out."""
    files = {}
    for path in sorted(results.rglob("*")):
        relative = path.relative_to(results).as_posix()
        if (
            not path.is_file()
            or relative.startswith(("logs/", "benchmarks/", "tensorboard/"))
            or path.name == "train_stats.json"
        ):
            continue
        files[relative] = path.read_bytes()
    return files


@pytest.mark.parametrize("storage", ["array", "jpeg"])
def test_snakemake_run_killed_during_training_resumes_to_identical_outputs(
    tmp_path, storage
):
    """The killed-and-resumed run is also a second run of the same config:
    its splits, model.pt, Parquet files and metrics equal the first run's.
    With ``storage: jpeg`` the images are decoded batch by batch by
    DataLoader workers (workflow/jpeg_store.py)."""
    config = copy.deepcopy(RESUME_CONFIG)
    config["datasets"]["digits"]["storage"] = storage
    reference = make_workspace(tmp_path / "reference", config)
    snakemake(reference, "--cores", "1", *TARGETS)

    killed = make_workspace(tmp_path / "killed", config)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    process = subprocess.Popen(
        [sys.executable, "-m", "snakemake", "--cores", "1", *TARGETS],
        cwd=killed,
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    checkpoint = killed / f"results/checkpoints/{CELL}/last.pt"
    deadline = time.monotonic() + 300
    while not checkpoint.exists():
        assert process.poll() is None, "snakemake ended before the first checkpoint"
        assert time.monotonic() < deadline, "no checkpoint within 300 s"
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)  # snakemake and its training job
    process.wait()
    assert not (killed / f"results/cells/{CELL}/model.pt").exists()

    snakemake(killed, "--unlock")  # the killed run left its lock behind
    snakemake(killed, "--cores", "1", "--rerun-incomplete", *TARGETS)
    log = (killed / f"results/logs/train/{CELL}.log").read_text()
    assert "resuming from" in log, log[-2000:]
    stats = json.loads((killed / f"results/cells/{CELL}/train_stats.json").read_text())
    assert 0 < stats["resumed_from_epoch"] < config["training"]["epochs"]
    assert not checkpoint.exists()  # removed once model.pt is written

    expected = deterministic_files(reference / "results")
    assert {
        "splits/digits/full/seed0.train.parquet",
        "splits/digits/seed0.evaluation.parquet",
        f"cells/{CELL}/model.pt",
        f"cells/{CELL}/embeddings.parquet",
        f"cells/{CELL}/anchors.parquet",
        f"cells/{CELL}/metrics.csv",
        f"data/digits/images.{'jpegs' if storage == 'jpeg' else 'npy'}",
    } <= expected.keys()
    resumed = deterministic_files(killed / "results")
    assert resumed.keys() == expected.keys()
    different = [path for path in expected if resumed[path] != expected[path]]
    assert not different, f"{different} differ from the uninterrupted run"


def test_a_temporary_left_by_a_killed_writer_is_removed_by_the_next_write(tmp_path):
    """A SIGKILL between atomic_path's temporary and its rename leaves a
    hidden ``.name.*.tmp``; the next write of that path removes it (and
    only temporaries of that path)."""
    from workflow.io import atomic_path, save_json

    target = (
        tmp_path / "metrics[1].json"
    )  # glob characters in the name are taken literally
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target) as tmp:
            tmp.write_text("{")
            left = tmp_path / f".{target.name}.killed.tmp"
            tmp.rename(
                left
            )  # what a killed writer leaves: the finally clause never runs
            raise KeyboardInterrupt
    other = tmp_path / ".other.json.x.tmp"
    other.write_text("")
    assert left.exists()
    save_json(target, {"map": 0.5})
    assert not left.exists() and other.exists()
    assert json.loads(target.read_text()) == {"map": 0.5}


def test_snakemake_killed_alone_its_train_job_stops_and_the_rerun_trains_the_new_settings(
    tmp_path,
):
    """kill -9 of Snakemake alone leaves its train job running; that job
    stops within seconds without writing model.pt, so README's recovery
    (--unlock, --rerun-incomplete) after a changed setting trains the new
    setting and nothing of the old run's lands in model.pt."""
    config = {
        **RESUME_CONFIG,
        "training": {**RESUME_CONFIG["training"], "epochs": 2000, "augment": "none"},
    }
    workdir = make_workspace(tmp_path / "run", config)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    process = subprocess.Popen(
        [sys.executable, "-m", "snakemake", "--cores", "1", *TARGETS],
        cwd=workdir,
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    checkpoint = workdir / f"results/checkpoints/{CELL}/last.pt"
    model = workdir / f"results/cells/{CELL}/model.pt"
    try:
        deadline = time.monotonic() + 300
        while not checkpoint.exists():
            assert process.poll() is None, "snakemake ended before the first checkpoint"
            assert time.monotonic() < deadline, "no checkpoint within 300 s"
            time.sleep(0.05)
        job = [p for p in children(process.pid) if "train.py" in command_line(p)]
        assert len(job) == 1, [command_line(p) for p in children(process.pid)]
        os.kill(process.pid, signal.SIGKILL)  # Snakemake only, as `kill -9 <its PID>`
        process.wait()
        deadline = time.monotonic() + 30
        while running(job[0]):
            assert time.monotonic() < deadline, (
                "the orphaned train job still runs 30 s after its Snakemake ended"
            )
            time.sleep(0.1)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    assert not model.exists()
    log = (workdir / f"results/logs/train/{CELL}.log").read_text()
    assert (
        f"stopping: the Snakemake process that started this job (PID {process.pid}) has ended"
        in log
    )

    config["training"]["epochs"] = 2  # a changed setting before resuming
    (workdir / "config.yaml").write_text(json.dumps(config))  # JSON is YAML
    snakemake(workdir, "--unlock")
    snakemake(workdir, "--cores", "1", "--rerun-incomplete", *TARGETS)
    assert len(torch.load(model, weights_only=True)["history"]) == 2
    assert (
        "ignoring checkpoint"
        in (workdir / f"results/logs/train/{CELL}.log").read_text()
    )
    assert not checkpoint.exists() and not checkpoint.with_name("last.pt.lock").exists()


def _stat(pid: int) -> list[str]:
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, IndexError):
        return []


def children(pid: int) -> list[int]:
    return [
        int(p)
        for p in os.listdir("/proc")
        if p.isdigit() and _stat(int(p))[1:2] == [str(pid)]
    ]


def command_line(pid: int) -> str:
    try:
        return open(f"/proc/{pid}/cmdline").read().replace("\0", " ")
    except FileNotFoundError:
        return ""


def running(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie has ended)."""
    return _stat(pid)[:1] not in ([], ["Z"])

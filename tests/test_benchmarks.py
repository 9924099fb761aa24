"""benchmarks/throughput.py runs end to end (a tiny CPU run) and writes
its table with the loop settings it measured."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]


def test_throughput_benchmark_writes_both_loops_side_by_side(tmp_path):
    output = tmp_path / "throughput.md"
    subprocess.run(
        [
            sys.executable,
            "benchmarks/throughput.py",
            "--models",
            "small_cnn:8:16",
            "--steps",
            "2",
            "--warmup",
            "1",
            "--repeats",
            "1",
            "--workers",
            "0",
            "--threads",
            "1",
            "--device",
            "cpu",
            "--loss",
            "cam",
            "--precision",
            "fp32",
            "--channels-last",
            "true",
            "--output",
            str(output),
        ],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    text = output.read_text()
    assert "Device: " in text and "--loss cam" in text
    table = pd.read_csv(
        io.StringIO(text.split("```csv\n")[1].split("```")[0]), keep_default_na=False
    )
    row = table.iloc[0]
    assert (row["model"], row["loss"], row["batch"]) == ("small_cnn 8x8", "cam", 16)
    assert (
        row["project_settings"] == "fp32, channels-last"
    )  # what was asked, not the CPU's auto
    for column in [
        "train_img_s_project",
        "train_img_s_plain",
        "embed_img_s_project",
        "embed_img_s_plain",
    ]:
        assert row[column] > 0, column
    assert row["train_speedup"] == pytest.approx(
        row["train_img_s_project"] / row["train_img_s_plain"]
    )
    assert row["gpu_busy_project"] == "n/a"  # no GPU kernel time on the CPU

    # The project step's host time, phase by phase, from the profiler.
    phases = pd.read_csv(
        io.StringIO(
            text.split("## Where the project step's host time goes")[1].split("\n\n")[2]
        ),
        sep="|",
        skipinitialspace=True,
    ).iloc[1:, 1:-1]
    phases.columns = [c.strip() for c in phases.columns]
    shares = (
        phases[["inputs_%", "forward_%", "backward_%", "optimizer_%", "bookkeeping_%"]]
        .astype(float)
        .iloc[0]
    )
    assert (shares > 0).all(), (
        shares
    )  # every phase ran and was timed (CAM classifies: bookkeeping too)
    assert shares.sum() == pytest.approx(100, abs=0.5)
    assert (
        float(phases["profiled_step_ms"].iloc[0]) > 0
        and float(phases["step_ms"].iloc[0]) > 0
    )


def test_input_path_benchmark_compares_both_loops_and_the_storage_modes():
    """benchmarks/input_path.py --quick: the project's JPEG input path and
    the plain ImageFolder loop side by side, and each storage mode's bytes."""
    result = subprocess.run(
        [sys.executable, "benchmarks/input_path.py", "--quick", "--device", "cpu"],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    )
    text = result.stdout
    assert "Device: cpu" in text and "decoding on the CPU (DataLoader workers)" in text
    rows = {
        line.split("|")[1].strip(): line.split("|")[2:5]
        for line in text.splitlines()
        if line.startswith(("| project", "| plain"))
    }
    for loop in ("project", "plain"):
        assert float(rows[loop][0]) > 0 and float(rows[loop][1]) > 0, rows
    assert "project / plain: input path alone" in text
    sizes = {
        line.split("|")[1].strip(): int(line.split("|")[2].replace(",", ""))
        for line in text.splitlines()
        if line.startswith("| JPEG files") or line.startswith("| storage:")
    }
    files, array, jpeg = sizes.values()
    assert array == 48 * 256 * 256 * 3 + 128  # .npy header
    assert files <= jpeg < files * 1.01  # the files' own bytes, plus the index


def test_gpu_session_script_runs_end_to_end_in_dry_mode(tmp_path):
    """benchmarks/gpu_session.sh with DRY=1 (issue 29): every step is
    reached, each benchmark's command runs tiny on the CPU, the GPU
    measurements are reported as skipped with the reason, the report is
    written as Markdown and JSON under OUT, and nothing is written into the
    repository (benchmarks/results/ holds committed measurements)."""
    import json
    import os

    before = subprocess.run(
        ["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True
    ).stdout
    out = tmp_path / "gpu_out"
    env = {**os.environ, "DRY": "1", "OUT": str(out), "PYTHON": sys.executable}
    env.pop("PYTHONPATH", None)
    result = subprocess.run(
        ["bash", "benchmarks/gpu_session.sh"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    steps = json.loads((out / "report.json").read_text())["steps"]
    status = {s["step"]: s for s in steps}
    gpu_steps = [
        "cuda_tests",
        "input_path",
        "train_224_eager",
        "train_224_compiled",
        "all_against_all",
    ]
    assert set(status) == {
        "machine",
        "two_gpus",
        *gpu_steps,
        *[f"{s} (CPU smoke)" for s in gpu_steps],
    }
    assert status["machine"]["status"] == "ok"
    for step in gpu_steps:
        assert status[f"{step} (CPU smoke)"]["status"] == "ok", (
            step,
            (out / status[step]["output"]).read_text()[-2000:],
        )
        assert (
            status[step]["status"] == "skipped" and "dry mode" in status[step]["reason"]
        )
    assert status["two_gpus"]["status"] == "skipped" and status["two_gpus"]["reason"]
    report = (out / "report.md").read_text()
    assert (
        "| train_224_compiled | skipped | 0 | dry mode" in report
        and "## all_against_all (CPU smoke)" in report
    )
    after = subprocess.run(
        ["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True
    ).stdout
    assert after == before

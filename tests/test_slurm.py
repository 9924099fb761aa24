"""The pipeline on a real SLURM cluster, through Snakemake's SLURM executor
plugin and profiles/slurm, gives the same outputs as a local run.

The cluster (tests/slurm_cluster.py) is one node on this machine with two
fake GPUs; its partitions take the names profiles/slurm asks for, so the
profile runs as shipped. The command line adds only what a test needs:
shorter status-check delays, kept SLURM logs, one thread per job (the
profile's 4 are more CPUs than this machine has, and the local run must
use the same thread count: it changes float sums). If SLURM cannot be
installed or started, the test errors with the daemon logs; it never skips.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml
from conftest import REPO, TINY_CONFIG, make_workspace
from slurm_cluster import slurm_cluster

# The tiny config cut to one regime, one seed and two losses (CAM has
# anchors), run up to each cell's metrics: 9 SLURM jobs in 5 steps (every
# job starts Snakemake twice, which takes most of its time here).
SLURM_CONFIG = copy.deepcopy(TINY_CONFIG)
SLURM_CONFIG["regimes"] = {"fewshot5": {"train_per_class": 5}}
SLURM_CONFIG["losses"] = {"ce": {"impl": "ce"}, "cam": {"impl": "cam"}}
SLURM_CONFIG["seeds"] = [0]
TARGETS = [
    f"results/cells/digits/fewshot5/small_cnn/{loss}/seed0/metrics.csv"
    for loss in SLURM_CONFIG["losses"]
]
EXPECTED_RULES = {
    "prepare": 1,
    "train_split": 1,
    "evaluation_split": 1,
    "train": 2,
    "embed": 2,
    "evaluate": 2,
}
GPU_RULES = {"train", "embed"}

THREADS = ["--set-threads", "train=1", "embed=1", "evaluate=1"]
# Status checks 5 s after a submission, then 15, 25 s... apart (the plugin
# adds 10 s while no job finishes): jobs here take 15-45 s.
TEST_ONLY = [
    "--slurm-init-seconds-before-status-checks",
    "5",
    "--seconds-between-status-checks",
    "5",
    "--slurm-keep-successful-logs",
    "--latency-wait",
    "5",
]
SUBMITTED = re.compile(
    r"Job (\d+) has been submitted with SLURM jobid (\d+) \(log: (.+?)\)\."
)
TIMEOUT_S = 600


def slurm_profile() -> dict:
    return yaml.safe_load((REPO / "profiles/slurm/config.yaml").read_text())


def partitions_of(profile: dict) -> list[str]:
    """The default partition first, then those set per rule."""
    names = [profile["default-resources"]["slurm_partition"]]
    for resources in profile.get("set-resources", {}).values():
        if "slurm_partition" in resources and resources["slurm_partition"] not in names:
            names.append(resources["slurm_partition"])
    return names


def resource(profile: dict, rule: str, name: str, backbone: str):
    """A resource of ``rule`` as Snakemake evaluates the profile's expression
    (first attempt)."""
    value = (
        profile.get("set-resources", {})
        .get(rule, {})
        .get(name, profile["default-resources"][name])
    )
    if isinstance(value, str):
        try:
            return eval(
                value, {"attempt": 1, "wildcards": SimpleNamespace(backbone=backbone)}
            )
        except NameError:
            return value
    return value


def workspace(path: Path) -> Path:
    make_workspace(path, SLURM_CONFIG)
    shutil.copytree(REPO / "profiles", path / "profiles")
    return path


def start_snakemake(workdir: Path, env: dict, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "snakemake", *args],
        cwd=workdir,
        env={k: v for k, v in env.items() if k != "PYTHONPATH"},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(process: subprocess.Popen) -> str:
    """The output of a snakemake run, which must succeed within TIMEOUT_S."""
    try:
        output, _ = process.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
        pytest.fail(f"{' '.join(process.args)} ran over {TIMEOUT_S} s:\n{output}")
    assert process.returncode == 0, f"{' '.join(process.args)} failed:\n{output}"
    return output


ABORTED_RUN = """
import json, os, signal, sys
sys.path.insert(0, sys.argv[1])
from slurm_cluster import read_pids, slurm_cluster
with slurm_cluster(sys.argv[2:]) as cluster:
    print(json.dumps(read_pids(cluster.root)), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)  # dies without stopping its daemons
"""


def start_time(pid: int) -> str | None:
    """When ``pid`` started (field 22 of /proc/<pid>/stat); None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(") ", 1)[1].split()
    return None if fields[0] == "Z" else fields[19]


@pytest.fixture(scope="module")
def stale_daemons() -> dict[int, str]:
    """The daemons of a cluster run that was killed before stopping them,
    as {pid: start time}: still running when the test cluster starts."""
    partitions = partitions_of(slurm_profile())
    result = subprocess.run(
        [sys.executable, "-c", ABORTED_RUN, str(Path(__file__).parent), *partitions],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == -9 and result.stdout.strip(), (
        result.stdout + result.stderr
    )
    pids = json.loads(result.stdout.strip().splitlines()[-1]).values()
    alive = {pid: start_time(pid) for pid in pids}
    assert set(alive) and None not in alive.values(), (
        f"the aborted run's daemons are not running: {alive}"
    )
    return alive


@pytest.fixture(scope="module")
def cluster(stale_daemons):
    with slurm_cluster(partitions_of(slurm_profile())) as running:
        yield running


def test_daemons_left_by_an_aborted_run_are_stopped_first(stale_daemons, cluster):
    states = cluster.command("sinfo", "-h", "-N", "-o", "%R %T").splitlines()
    assert sorted(states) == sorted(f"{name} idle" for name in cluster.partitions)
    still_running = {
        pid for pid, started in stale_daemons.items() if start_time(pid) == started
    }
    assert not still_running, f"daemons of the aborted run still run: {still_running}"


def test_pipeline_runs_as_slurm_jobs_with_the_profile_and_matches_a_local_run(
    cluster, tmp_path
):
    profile = slurm_profile()
    on_slurm = workspace(tmp_path / "slurm")
    local = workspace(tmp_path / "local")

    # The local run goes on while the SLURM run waits for its jobs.
    start = time.monotonic()
    local_run = start_snakemake(
        local,
        dict(os.environ),
        "--workflow-profile",
        "profiles/local",
        *TARGETS,
        *THREADS,
    )
    try:
        output = finish(
            start_snakemake(
                on_slurm,
                cluster.env,
                "--workflow-profile",
                "profiles/slurm",
                *TARGETS,
                *THREADS,
                *TEST_ONLY,
            )
        )
        slurm_seconds = time.monotonic() - start
        finish(local_run)
    finally:
        if local_run.poll() is None:
            local_run.kill()
            local_run.wait()
    print(
        f"SLURM run: {slurm_seconds:.0f} s; both runs: {time.monotonic() - start:.0f} s"
    )

    # Every job went through sbatch and completed as the profile asked.
    submissions = SUBMITTED.findall(output)
    assert "Falling back to 'sacct'" not in output
    rules = {}
    for _, job_id, log in submissions:
        job = cluster.job(job_id)
        rule = re.fullmatch(r"rule_(\w+?)(_wildcards_.*)?", job["Comment"]).group(1)
        rules[rule] = rules.get(rule, 0) + 1
        assert job["JobState"] == "COMPLETED" and job["ExitCode"] == "0:0", (rule, job)
        assert job["Partition"] == resource(
            profile, rule, "slurm_partition", "small_cnn"
        ), (rule, job)
        assert job["Account"] == resource(
            profile, rule, "slurm_account", "small_cnn"
        ), (rule, job)
        assert (
            job["MinMemoryNode"] == f"{resource(profile, rule, 'mem_mb', 'small_cnn')}M"
        ), (rule, job)
        minutes = resource(profile, rule, "runtime", "small_cnn")
        assert job["TimeLimit"] == f"{minutes // 60:02d}:{minutes % 60:02d}:00", (
            rule,
            job,
        )
        gpus = "gres:gpu:1" if rule in GPU_RULES else None
        assert job.get("TresPerJob") == gpus, (rule, job)
        # The SLURM log (kept by --slurm-keep-successful-logs) is the job's
        # output file, named by its job id, and shows the rule that ran.
        log_path = on_slurm / log
        assert job["StdOut"] == str(log_path) and log_path.name == f"{job_id}.log", (
            log,
            job,
        )
        assert f"rule {rule}:" in log_path.read_text(), log_path.read_text()
    assert rules == EXPECTED_RULES, output

    # The same outputs as the local run.
    slurm_results, local_results = on_slurm / "results", local / "results"
    parquet = sorted(
        p.relative_to(local_results)
        for p in (local_results / "cells").rglob("*.parquet")
    )
    assert len(parquet) == 3 * 2  # embeddings, anchors, pr_curve per cell
    for name in parquet:
        assert pq.read_table(slurm_results / name).equals(
            pq.read_table(local_results / name), check_metadata=True
        ), name
    for target in TARGETS:
        metrics, expected = (pd.read_csv(d / target) for d in (on_slurm, local))
        assert len(metrics) > 0 and metrics["value"].notna().all(), target
        assert list(metrics["metric"]) == list(expected["metric"]), target
        pd.testing.assert_frame_equal(metrics, expected, check_exact=True)

"""`python -m workflow.regenerate`: the committed results' tables are what
today's engine writes from the committed metrics.csv (docs "Results on
real data")."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from workflow.regenerate import declarations, read_run

REPO = Path(__file__).resolve().parents[1]
RUNS = sorted(p.parent for p in (REPO / "docs" / "results").glob("*/metrics.csv"))


def test_regenerate_reproduces_committed_tables(tmp_path):
    """The command, run as README names it, rewrites one committed run's
    tables byte for byte, and nothing else."""
    run = REPO / "docs" / "results" / "tiny_imagenet"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "workflow.regenerate",
            str(run.relative_to(REPO)),
            "--out",
            str(tmp_path),
        ],
        cwd=REPO,
        check=True,
        capture_output=True,
    )
    written = sorted(
        p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file()
    )
    committed = sorted(
        p.relative_to(run / "tables")
        for p in (run / "tables").rglob("*")
        if p.is_file()
    )
    assert written == committed
    for relative in written:
        assert (tmp_path / relative).read_text() == (
            run / "tables" / relative
        ).read_text(), relative


@pytest.mark.parametrize("run", RUNS, ids=[r.name for r in RUNS])
def test_results_folder_holds_exactly_the_regenerated_tables(run):
    """Every results folder names its regenerate command, and its tables/
    holds the files the command writes (no table of an older format left
    beside them)."""
    assert (
        f"python -m workflow.regenerate docs/results/{run.name}"
        in (run / "README.md").read_text()
    )
    config, metrics = read_run(run)
    expected = sorted(
        f"{name}.{ext}"
        for name in declarations(config, metrics)
        for ext in ["csv", "md", "tex"]
    )
    committed = sorted(
        str(p.relative_to(run / "tables"))
        for p in (run / "tables").rglob("*")
        if p.is_file()
    )
    assert committed == expected

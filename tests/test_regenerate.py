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


@pytest.mark.parametrize(
    "name", ["tiny_imagenet", "fair_cifar100_closed", "fair_cifar100_disjoint"]
)
def test_regenerate_reproduces_committed_tables(tmp_path, name):
    """The command, run as the docs name it, rewrites a committed run's
    tables byte for byte, and nothing else (a tuned run's selection tables
    too, from its selection records)."""
    run = REPO / "docs" / "results" / name
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
    if (run / "selection").is_dir():  # a tuned run: rule selection_table's files
        expected = sorted(
            expected
            + [f"selection/{n}.{e}" for n in ["table", "trials"] for e in ["csv", "md"]]
        )
    committed = sorted(
        str(p.relative_to(run / "tables"))
        for p in (run / "tables").rglob("*")
        if p.is_file()
    )
    assert committed == expected


def test_a_tuned_run_without_one_selection_record_stops_naming_it(tmp_path):
    """A results folder whose selection/ lacks a tuned loss's record stops
    with the missing file named, and writes no table."""
    import shutil

    from workflow.regenerate import regenerate

    run = tmp_path / "run"
    shutil.copytree(
        REPO / "docs/results/fair_cifar100_closed",
        run,
        ignore=shutil.ignore_patterns("tables", "figures"),
    )
    missing = run / "selection/cifar100/fewshot20/small_cnn/lm.json"
    missing.unlink()
    with pytest.raises(FileNotFoundError, match=str(missing)):
        regenerate(run)
    assert not (run / "tables").exists()


@pytest.mark.parametrize("name", ["fair_cifar100_closed", "fair_cifar100_disjoint"])
def test_tuned_cams_margin_is_reached_as_its_results_say(name):
    """Issue 27's check on the committed tuned runs: the selected CAM
    reaches its margin in training (``pairs_within_margin`` below 1.0 at the
    last epoch of every seed, from the committed training history), and the
    folder's README states how far (the closed run: no pair within the
    margin in any epoch; the class-disjoint run: most pairs within it, the
    repeller acting)."""
    import pandas as pd

    run = REPO / "docs" / "results" / name
    history = pd.read_csv(run / "training_history.csv")
    within = history[
        (history["loss"] == "cam") & (history["term"] == "pairs_within_margin")
    ]
    assert sorted(within["seed"].unique()) == list(range(10))
    last = within[within["epoch"] == within["epoch"].max()]
    assert len(last) == 10 and (last["value"] < 1.0).all()
    readme = (run / "README.md").read_text()
    if within["value"].eq(0).all():
        assert "`pairs_within_margin` is 0.0 in every epoch of every seed" in readme
    else:
        low, high = within["value"].min(), within["value"].max()
        assert f"`pairs_within_margin` is {low:.3f}-{high:.3f}" in readme

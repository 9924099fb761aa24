"""The test tiers (tests/conftest.py): plain ``pytest`` must leave out every
test that starts Snakemake (even ``-n``: seconds each), SLURM or Chromium,
or reads the real datasets, so that the fast tier stays fast; ``pytest -m
""`` runs them all."""

from __future__ import annotations

import ast
import inspect
import shlex
import subprocess
import sys
import textwrap
import tomllib

import pytest
from conftest import (
    COLLECTED,
    REPO,
    TEST_MARKERS,
    snakemake,
    tier_markers,
)

TIERS = ["slow", "slurm", "chromium", "data"]


def default_selection() -> str:
    """The ``-m`` expression of pyproject.toml's addopts."""
    options = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["pytest"]
    args = shlex.split(options["ini_options"]["addopts"])
    return [value for option, value in zip(args, args[1:]) if option == "-m"][-1]


def selected_by_default(markers: set[str]) -> bool:
    """Whether the default ``-m`` expression keeps a test with ``markers``
    (its grammar, names with and, or, not and brackets, is Python's)."""
    expression = default_selection()
    names = {name: name in markers for name in TIERS}
    return eval(expression, {"__builtins__": {}}, names)


def what_it_starts(function) -> set[str]:
    """The tiers ``function``'s own code needs, read from its calls:
    Snakemake (``snakemake(...)``, or a ``[..., "snakemake", ...]``
    command), a SLURM cluster, Chromium."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    except (OSError, TypeError):
        return set()
    needs = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = getattr(node.func, "id", getattr(node.func, "attr", ""))
        constants = {
            n.value
            for n in ast.walk(node)
            if isinstance(n, ast.Constant) and isinstance(n.value, str)
        }
        if name in ("snakemake", "start_snakemake") or (
            name in ("run", "Popen", "check_output") and "snakemake" in constants
        ):
            needs.add("slow")
        if name == "slurm_cluster":
            needs.add("slurm")
        if name == "ensure_chromium" or {"chromium", "--headless"} & constants:
            needs.add("chromium")
    return needs


def needs_of(item) -> set[str]:
    """The tiers ``item`` needs by its own code and its fixtures' code."""
    needs = what_it_starts(getattr(item, "function", None))
    for name in item.fixturenames:
        for definition in item._fixtureinfo.name2fixturedefs.get(name, ()):
            needs |= what_it_starts(definition.func)
    return needs


@pytest.fixture(scope="module")
def collected(request) -> list:
    """Every test of this session before ``-m`` deselected any; the whole
    suite must have been collected (plain ``pytest`` collects it)."""
    items = request.config.stash.get(COLLECTED, [])
    files = {item.path.name for item in items}
    every = {path.name for path in (REPO / "tests").glob("test_*.py")}
    if not every <= files:
        pytest.skip(f"collect the whole suite to check the tiers ({len(files)} files)")
    return items


def test_the_default_options_select_the_fast_tier_only():
    assert selected_by_default(set())
    for tier in TIERS:
        assert not selected_by_default({tier}), tier


def test_every_test_that_starts_snakemake_slurm_or_chromium_is_left_out(
    collected,
):
    slipped = [
        f"{item.nodeid} (needs {sorted(needs)})"
        for item in collected
        if item.path.name != "test_tiers.py"  # its examples
        and (needs := needs_of(item))
        and selected_by_default(tier_markers(item))
    ]
    assert not slipped, (
        "these tests start Snakemake, SLURM or Chromium but plain pytest "
        "selects them: mark them in tests/conftest.py\n" + "\n".join(slipped)
    )


def test_every_listed_test_exists(collected):
    """A test renamed or removed must leave TEST_MARKERS too (an entry of a
    file that is not here yet waits for it)."""
    names = {f"{item.path.name}::{item.name}" for item in collected} | {
        f"{item.path.name}::{item.originalname}" for item in collected
    }
    listed = {
        test
        for tests in TEST_MARKERS.values()
        for test in tests
        if (REPO / "tests" / test.split("::")[0]).exists()
    }
    assert listed <= names, listed - names


def test_the_check_finds_snakemake_a_cluster_and_chromium():
    def unit():
        return sum([1, 2])

    def dry(workdir):
        snakemake(workdir, "-n")

    def real(workdir):
        subprocess.run([sys.executable, "-m", "snakemake", "--cores", "2"])

    def on_slurm():
        with slurm_cluster(["debug"]) as cluster:  # noqa: F821
            return cluster

    def page(browser):
        subprocess.run([browser, "--headless", "--dump-dom", "index.html"])

    assert what_it_starts(unit) == set()
    assert what_it_starts(dry) == {"slow"}
    assert what_it_starts(real) == {"slow"}
    assert what_it_starts(on_slurm) == {"slurm"}
    assert what_it_starts(page) == {"chromium"}


def test_a_test_outside_the_slow_tier_cannot_start_snakemake(tmp_path):
    with pytest.raises(AssertionError, match="is not in the slow tier"):
        snakemake(tmp_path, "-n")

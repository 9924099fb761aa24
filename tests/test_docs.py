"""The documentation: README as the front door, and the Sphinx site under
docs/ built with warnings as errors, its configuration and metric references
generated from the code (workflow/reference.py), opened in headless Chromium
(the helper of tests/test_report.py): the index page renders, and every
internal link of every built page resolves to a page and an anchor that
exist. The committed picture of the pipeline is the Snakefile's rule graph.
"""

from __future__ import annotations

import html
import json
import random
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"

# --- README ------------------------------------------------------------------


def quick_start_commands() -> list[str]:
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, flags=re.S).group(1)
    return [line for line in block.splitlines() if line and not line.startswith("#")]


def test_readme_quick_start_is_what_ci_runs():
    """The quick start's two commands: install and run the default grid;
    install and run the tests, which .ci/run runs verbatim."""
    install_and_run, install_and_test = quick_start_commands()
    assert install_and_run == (
        "python3.11 -m venv .venv && .venv/bin/pip install -q -r requirements.txt"
        " && .venv/bin/snakemake --cores 2"
    )
    assert install_and_test.startswith(
        "python3.11 -m venv .venv && .venv/bin/pip install -q -r requirements-test.txt"
    )
    ci = (REPO / ".ci/run").read_text().rstrip().splitlines()[-1]
    assert ci == install_and_test


def test_readme_is_a_front_door():
    """Short, with the pipeline's picture, the headline results with the
    test behind them, a map of the repository and links that exist."""
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    for heading in [
        "Quick start",
        "The pipeline",
        "Headline results",
        "Repository map",
    ]:
        assert f"\n## {heading}\n" in readme, heading
    assert "](docs/pipeline.svg)" in readme
    # The verdicts come from the tuned run, with the test that decides
    # them; the untuned runs are marked as such.
    assert "docs/results/fair_cifar100_closed/README.md" in readme
    assert "docs/results/fair_cifar100_disjoint/README.md" in readme
    assert "Holm-corrected" in readme and "none (defaults)" in readme
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", readme)
    local = [t for t in targets if not re.match(r"[a-z]+:", t)]
    assert len(local) >= 15
    for target in local:
        assert (REPO / target).exists(), f"README links to missing {target}"


def test_dated_measurements_live_on_the_performance_page():
    """Every "Measured" line and every dated figure of the manual is on
    docs/performance.md; the other pages link there."""
    dated = re.compile(r"\bMeasured\b|\b20\d\d-\d\d-\d\d\b")
    pages = [REPO / "README.md", *sorted(DOCS.glob("*.md"))]
    found = [
        f"{path.relative_to(REPO)}:{number}: {line}"
        for path in pages
        if path.name != "performance.md"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if dated.search(line)
    ]
    assert not found, "\n".join(found)
    performance = (DOCS / "performance.md").read_text()
    assert len(dated.findall(performance)) >= 10
    assert "### Measured and extrapolated GPU figures" in performance


def test_gpu_hours_say_which_are_measured_and_which_extrapolated():
    """The performance page's GPU-time table: a row whose throughput was
    measured on an H100 gives its hours as they are; every other row's hours
    are marked as an estimate (≈), and the page lists what was extrapolated."""
    page = (DOCS / "performance.md").read_text()
    section = page.split("## GPU time of the paper grids", 1)[1].split("\n## ", 1)[0]
    rows = [
        [cell.strip() for cell in line.strip("|").split("|")]
        for line in section.splitlines()
        if line.startswith("| `")
    ]
    assert len(rows) >= 7
    for config, backbone, _passes, measured, hours in rows:
        on_h100 = measured.startswith("H100:")
        assert ("≈" in hours) != on_h100, (config, backbone, measured, hours)
    paragraph = section.split("### Measured and extrapolated GPU figures", 1)[1]
    assert "Extrapolated, never run on a GPU: every 224x224 rate" in " ".join(
        paragraph.split()
    )


# --- the generated references (library code, no Sphinx) ---------------------


def test_expand_replaces_every_marker_and_rejects_unknown_ones():
    from workflow.reference import GENERATORS, expand

    page = "before\n<!-- generated: metric-table -->\nafter\n"
    expanded = expand(page)
    assert expanded.startswith("before\n| metric |") and expanded.endswith("|\nafter\n")
    assert "<!-- generated" not in expanded
    assert set(GENERATORS) == {"config-reference", "metric-table"}
    with pytest.raises(ValueError, match="unknown generated block 'metrics'"):
        expand("<!-- generated: metrics -->\n")


def test_config_reference_gives_type_default_and_description():
    from workflow.reference import config_keys, config_reference

    keys = {k.key: k for k in config_keys()}
    assert keys["training.epochs"].default == "`15`"
    assert keys["training.epochs"].type == "integer"
    assert keys["training.optimizer"].type == "adam or adamw or sgd"
    assert keys["seeds"].default == "(required)"
    assert keys["evaluation.precision_at"].default == "`[1, 5, 10]`"
    # keys of the training fields without a schema default are listed too
    assert "training.input_size" in keys
    assert all(k.description for k in keys.values())
    assert "`cam`" in keys["losses.<name>.impl"].description  # the registry's names
    table = config_reference()
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    assert len(rows) == len(keys)
    assert all(len(re.split(r"(?<!\\)\|", row)) == 6 for row in rows)  # 4 cells


def test_markdown_cells_keep_code_and_escape_prose():
    from workflow.reference import markdown_cell

    assert markdown_cell("a | b") == "a \\| b"
    assert markdown_cell("results/<name>/ and `x|<y>`") == (
        "results/\\<name\\>/ and `x\\|<y>`"
    )
    assert markdown_cell("2**32 - 1 [0, 1]") == "2\\*\\*32 - 1 \\[0, 1\\]"


def test_canonical_rulegraph_does_not_depend_on_snakemakes_order():
    from workflow.reference import canonical_rulegraph

    nodes = ['\t0[label = "all"];', '\t1[label = "train"];', '\t2[label = "prepare"];']
    edges = ["\t2 -> 1", "\t1 -> 0", "\t2 -> 0"]
    shuffled = edges[:]
    random.Random(0).shuffle(shuffled)
    renumbered = [n.replace("0[", "9[").replace("1[", "0[") for n in nodes]
    renumbered_edges = ["\t2 -> 0", "\t0 -> 9", "\t2 -> 9"]
    one = canonical_rulegraph("digraph {\n" + "\n".join(nodes + edges) + "\n}")
    two = canonical_rulegraph("digraph {\n" + "\n".join(nodes + shuffled) + "\n}")
    three = canonical_rulegraph(
        "digraph {\n" + "\n".join(renumbered + renumbered_edges) + "\n}"
    )
    assert one == two == three
    assert '0[label = "all"]' in one and "1 -> 2" in one and "1 -> 0" in one


# --- the picture of the pipeline ---------------------------------------------


def test_the_pipeline_picture_is_the_snakefiles_rule_graph(tmp_path):
    """docs/pipeline.dot is `snakemake --rulegraph` of the shipped config
    (canonical order), and docs/pipeline.svg was rendered from it: run
    `python -m workflow.reference rulegraph` after changing the rules."""
    import yaml
    from conftest import make_workspace

    from workflow.reference import (
        canonical_rulegraph,
        dot_checksum,
        rulegraph,
        svg_source_checksum,
    )

    config = yaml.safe_load((REPO / "config.yaml").read_text())
    workdir = make_workspace(tmp_path, config)
    dot = (DOCS / "pipeline.dot").read_text()
    assert rulegraph(workdir) == dot, (
        "the rules changed: run python -m workflow.reference rulegraph"
    )
    assert canonical_rulegraph(dot) == dot
    svg = (DOCS / "pipeline.svg").read_text()
    assert svg_source_checksum(svg) == dot_checksum(dot), (
        "docs/pipeline.svg is not drawn from docs/pipeline.dot: "
        "run python -m workflow.reference rulegraph"
    )
    labels = set(re.findall(r'label = "([^"]+)"', dot))
    assert {"prepare", "train", "embed", "evaluate", "aggregate"} <= labels
    assert labels == set(re.findall(r">([a-z_]+)</text>", svg))


# --- the site ------------------------------------------------------------------


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The site built as CI builds it: every warning an error, nitpicky."""
    out = tmp_path_factory.mktemp("site")
    start = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-n", "-q"]
        + ["-b", "html", str(DOCS), str(out)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-5000:]
    assert not result.stderr.strip(), result.stderr[-5000:]
    print(f"site built in {time.monotonic() - start:.1f} s")
    return out


def test_the_site_builds_without_warnings(site):
    pages = {p.relative_to(site).as_posix() for p in site.rglob("*.html")}
    for page in [
        "index.html",
        "installation.html",
        "pipeline.html",
        "configuration.html",
        "datasets.html",
        "backbones.html",
        "losses.html",
        "metrics.html",
        "tables.html",
        "selection.html",
        "paper_configs.html",
        "scaling.html",
        "guards.html",
        "testing.html",
        "performance.html",
        "results.html",
        "results/cifar100_fewshot/README.html",
    ]:
        assert page in pages, page
    index = (site / "index.html").read_text()
    assert "pipeline.svg" in index and (site / "_images/pipeline.svg").exists()
    # the quick start is README's, included
    installation = (site / "installation.html").read_text()
    text = html.unescape(re.sub(r"<[^>]+>", "", installation))
    for command in quick_start_commands():
        assert command in text


def table_rows(page: str) -> list[list[str]]:
    """The text of each body row's cells of every table of an HTML page."""
    rows = []
    for body in re.findall(r"<tbody>(.*?)</tbody>", page, flags=re.S):
        for row in re.findall(r"<tr[^>]*>(.*?)</tr>", body, flags=re.S):
            cells = re.findall(r"<td[^>]*>(.*?)</td>", row, flags=re.S)
            rows.append(
                [html.unescape(re.sub(r"<[^>]+>", "", c)).strip() for c in cells]
            )
    return rows


def test_the_built_references_are_the_schema_and_the_registry(site):
    from workflow.reference import config_keys
    from workflow.retrieval.metrics import METRICS

    rows = {r[0]: r for r in table_rows((site / "configuration.html").read_text())}
    keys = config_keys()
    assert len(rows) == len(keys)
    for key in keys:
        row = rows[key.key]
        assert row[1] == key.type.replace("\\", ""), key.key
        assert row[2] == key.default.strip("`"), key.key
        # the prose as written; a docs "<section>" becomes a link to its page
        prose = re.sub(r'docs "([^"]+)"', r"\1", key.description).replace("`", "")
        assert row[3].startswith(prose[:60]), key.key
    metrics = table_rows((site / "metrics.html").read_text())
    assert [r[0] for r in metrics] == [m.name for m in METRICS]
    assert all(
        r[4].startswith(m.definition[:30].replace("`", ""))
        for r, m in zip(metrics, METRICS)
    )


# Runs in the probe page at the site's root: loads every built page (as the
# browser does: XMLHttpRequest, DOMParser), and checks that each internal
# link's target loads and, for a link with a fragment, has that id.
PROBE = r"""
window.addEventListener("load", async () => {
  const out = {checked: 0, pages: 0, broken: [], error: null};
  const cache = {};
  const load = (url) => cache[url] || (cache[url] = new Promise((resolve) => {
    const xhr = new XMLHttpRequest();
    xhr.open("GET", url);
    xhr.onload = () => resolve(xhr.responseText);
    xhr.onerror = () => resolve(null);
    xhr.send();
  }));
  try {
    const root = new URL(".", location.href).href;
    for (const page of PAGES) {
      const url = new URL(page, root).href;
      const text = await load(url);
      if (text === null) { out.broken.push(page + ": does not load"); continue; }
      out.pages += 1;
      const doc = new DOMParser().parseFromString(text, "text/html");
      for (const a of doc.querySelectorAll("a[href]")) {
        const href = a.getAttribute("href");
        if (/^[a-z][a-z0-9+.-]*:/i.test(href) && !href.startsWith("file:")) continue;
        const target = new URL(href, url);
        if (!target.href.startsWith(root)) { out.broken.push(page + ": " + href + " leaves the site"); continue; }
        out.checked += 1;
        const file = target.href.split("#")[0];
        const body = file === url ? text : await load(file);
        if (body === null) { out.broken.push(page + ": " + href + " (no such file)"); continue; }
        const id = decodeURIComponent(target.hash.slice(1));
        if (!id) continue;
        const targetDoc = file === url ? doc : new DOMParser().parseFromString(body, "text/html");
        if (!targetDoc.getElementById(id) && !targetDoc.getElementsByName(id).length)
          out.broken.push(page + ": " + href + " (no anchor " + id + ")");
      }
    }
  } catch (e) {
    out.error = String(e);
  }
  const pre = document.createElement("pre");
  pre.id = "docs-probe";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
"""


@pytest.fixture(scope="module")
def browser() -> str:
    from test_report import ensure_chromium

    return ensure_chromium()


def chromium(browser: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            f"--user-data-dir={profile}",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )


def test_the_index_page_renders(site, browser, tmp_path):
    shot = tmp_path / "index.png"
    result = chromium(
        browser,
        tmp_path / "profile",
        "--window-size=1280,1400",
        "--virtual-time-budget=10000",
        f"--screenshot={shot}",
        (site / "index.html").as_uri(),
    )
    assert result.returncode == 0 and shot.exists(), result.stderr[-3000:]
    with Image.open(shot) as image:
        rgb = image.convert("RGB")
        colours = rgb.getcolors(maxcolors=1 << 24)
        size = rgb.width * rgb.height
    assert len(colours) > 50, "the index page renders (nearly) blank"
    assert max(count for count, _ in colours) < 0.95 * size


def test_every_internal_link_resolves(site, browser, tmp_path):
    pages = sorted(
        p.relative_to(site).as_posix()
        for p in site.rglob("*.html")
        if not p.relative_to(site).as_posix().startswith("_")
    )
    assert len(pages) >= 20
    probe = site / "link_probe.html"
    probe.write_text(
        "<!DOCTYPE html><html><body><script>const PAGES = "
        + json.dumps(pages)
        + ";"
        + PROBE
        + "</script></body></html>"
    )
    try:
        result = chromium(
            browser,
            tmp_path / "profile",
            "--allow-file-access-from-files",
            "--virtual-time-budget=120000",
            "--dump-dom",
            probe.as_uri(),
        )
    finally:
        probe.unlink()
    assert result.returncode == 0, result.stderr[-3000:]
    found = re.search(r'<pre id="docs-probe">(.*?)</pre>', result.stdout, flags=re.S)
    assert found, f"the probe did not finish; browser log:\n{result.stderr[-3000:]}"
    seen = json.loads(html.unescape(found.group(1)))
    assert seen["error"] is None, seen["error"]
    assert seen["pages"] == len(pages)
    assert seen["checked"] > 20 * len(pages)
    assert not seen["broken"], "\n".join(seen["broken"])


def test_build_outputs_are_ignored():
    """docs/_build (where README says to build) is git-ignored."""
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    result = subprocess.run(
        ["git", "check-ignore", "-q", "docs/_build/html/index.html"], cwd=REPO
    )
    assert result.returncode == 0

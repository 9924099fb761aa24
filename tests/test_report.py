"""The HTML report (`snakemake --report`) of a real tiny run, opened in a
real browser: headless Chromium (Debian's `chromium`, installed by this test
when missing, as root) runs the report's own JavaScript; a probe script added
to a copy of the report clicks through its menus and decodes every embedded
figure. The probe writes what it saw into the page, which `--dump-dom`
returns.

What is asserted: the report's menus list exactly the tables, figures and
metrics the run produced (every PNG under results/figures, every Markdown
table, cost.md, metrics.csv), each with a caption; every embedded figure
decodes in the browser at the size of the PNG on disk and is not blank.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess

import pytest
from PIL import Image

BROWSER = "chromium"

# Runs after the page has loaded: waits for the React app, walks every
# category and subcategory of the results menu (as a user clicks), and
# decodes every embedded image. `categories` and `results` are the report's
# own globals.
PROBE = r"""
window.addEventListener("load", async () => {
  const out = {listed: {}, images: {}, captions: {}, error: null};
  try {
    const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
    const links = () => Array.from(document.querySelectorAll("nav a"));
    const click = async (text) => {
      const a = links().find((a) => a.textContent.trim() === text);
      if (!a) return false;
      a.click();
      await sleep(200);
      return true;
    };
    for (let i = 0; i < 200 && !links().some((a) => a.textContent.trim() === "Results" || a.textContent.trim() in categories); i++) await sleep(100);
    for (const [category, subcategories] of Object.entries(categories)) {
      for (const sub of Object.keys(subcategories)) {
        if (!(await click(category))) throw new Error("no menu entry " + category);
        await click(sub);  // a category with one subcategory may list its files at once
        const cells = Array.from(document.querySelectorAll("td")).map((td) => td.textContent.trim());
        out.listed[category + "/" + sub] = cells.filter((t) => t.startsWith("results/"));
        await click("Results");
      }
    }
    for (const [path, entry] of Object.entries(results)) {
      out.captions[path] = (entry.caption || "").replace(/<[^>]+>/g, "").trim();
      if (!(entry.mime_type || "").startsWith("image/")) continue;
      // Loading (not img.decode()) holds Chromium's virtual clock until the
      // image is in, so --dump-dom waits for it.
      const img = new Image();
      await new Promise((resolve, reject) => { img.onload = resolve; img.onerror = () => reject(new Error("cannot decode " + path)); img.src = entry.data_uri; });
      const canvas = document.createElement("canvas");
      canvas.width = img.naturalWidth;
      canvas.height = img.naturalHeight;
      const ctx = canvas.getContext("2d");
      ctx.drawImage(img, 0, 0);
      const data = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
      const colours = new Set();
      for (let i = 0; i < data.length; i += 4) colours.add((data[i] << 16) | (data[i + 1] << 8) | data[i + 2]);
      out.images[path] = {width: img.naturalWidth, height: img.naturalHeight, colours: colours.size};
    }
  } catch (e) {
    out.error = String(e);
  }
  const pre = document.createElement("pre");
  pre.id = "report-probe";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
"""


def ensure_chromium() -> str:
    """Path of Debian's chromium; installs it with apt-get when missing
    (root only, as tests/slurm_cluster.py does for SLURM)."""
    found = shutil.which(BROWSER)
    if found:
        return found
    if os.geteuid() != 0:
        raise RuntimeError(
            f"{BROWSER} is missing and this is not root: run `apt-get install -y {BROWSER}` as root"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    wait = ["-o", "DPkg::Lock::Timeout=300"]
    for command in (
        ["apt-get", *wait, "update", "-qq"],
        ["apt-get", *wait, "install", "-y", "-qq", BROWSER],
    ):
        result = subprocess.run(
            command, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"`{' '.join(command)}` failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
            )
    found = shutil.which(BROWSER)
    if not found:
        raise RuntimeError(
            f"after apt-get install {BROWSER}, `{BROWSER}` is still not on PATH"
        )
    return found


def browse(browser: str, page, tmp_path) -> dict:
    """The probe's findings on ``page`` in headless Chromium."""
    result = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--virtual-time-budget=60000",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    found = re.search(r'<pre id="report-probe">(.*?)</pre>', result.stdout, flags=re.S)
    assert found, f"the probe did not finish; browser log:\n{result.stderr[-3000:]}"
    return json.loads(html.unescape(found.group(1)))


@pytest.fixture(scope="module")
def browser() -> str:
    return ensure_chromium()


def test_report_lists_and_shows_every_table_and_figure(tiny_run, browser, tmp_path):
    from conftest import snakemake

    report = tiny_run / "results/report_browser.html"
    snakemake(tiny_run, "--report", str(report.relative_to(tiny_run)))
    text = report.read_text()
    end = text.rindex("</body>")
    page = tmp_path / "report_probe.html"
    page.write_text(text[:end] + "<script>" + PROBE + "</script>" + text[end:])

    seen = browse(browser, page, tmp_path)
    assert seen["error"] is None, seen["error"]

    results = tiny_run / "results"
    figures = {str(p.relative_to(tiny_run)) for p in results.glob("figures/**/*.png")}
    tables = {str(p.relative_to(tiny_run)) for p in results.glob("tables/**/*.md")} | {
        "results/cost.md"
    }
    expected = figures | tables | {"results/metrics.csv"}
    assert (
        len(figures) >= 10 and len(tables) >= 4
    )  # pr, speedup, t-SNE, examples, training, anchors ...
    listed = [path for paths in seen["listed"].values() for path in paths]
    assert sorted(listed) == sorted(expected)  # every output once, nothing else
    assert {k.split("/")[0] for k in seen["listed"]} == {"Figures", "Tables", "Metrics"}
    assert all(seen["captions"][path] for path in expected), (
        "every result has a caption"
    )
    assert (
        "t-SNE maps of the database embeddings"
        in seen["captions"]["results/figures/digits/full/tsne_small_cnn.png"]
    )

    assert set(seen["images"]) == figures
    for path in figures:
        with Image.open(tiny_run / path) as png:
            size = png.size
        shown = seen["images"][path]
        assert (shown["width"], shown["height"]) == size, path
        assert shown["colours"] > 20, f"{path} renders (nearly) blank"

"""Sphinx configuration of the documentation site (Markdown pages, MyST).

Build: ``sphinx-build -W --keep-going -n -b html docs docs/_build/html``
(tests/test_docs.py builds it so, warnings as errors). The configuration and
metric references are generated here, at build time, from the schema and the
metric registry (``workflow/reference.py``): a page marks the place with
``<!-- generated: NAME -->``.
"""

import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from workflow.reference import expand  # noqa: E402

project = "CBIR loss benchmark"
author = "the CBIR loss benchmark authors"
copyright = "2026, " + author

extensions = ["myst_parser"]
source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence"]
nitpicky = True
# Quotes stay as written: names and messages are quoted as the code quotes them.
smartquotes = False
html_theme = "furo"
html_title = project
html_static_path = ["_static"]
html_css_files = ["tables.css"]

# Committed run records under results/ have no title of their own (the
# tables the pipeline writes, cost.md): the site gives them their file name.
UNTITLED = re.compile(r"^results/[^/]+/(cost|tables/.+)$")


def _source_read(app, docname, source):
    text = expand(source[0])
    if UNTITLED.match(docname) and not text.lstrip().startswith("#"):
        text = f"# {docname.removeprefix('results/')}.md\n\n{text}"
    source[0] = text


def setup(app):
    app.connect("source-read", _source_read)
    return {"parallel_read_safe": True}

"""Reference pages generated from the code, so that they cannot drift.

The documentation site (``docs/``, built by Sphinx) marks where a generated
block goes with a line ``<!-- generated: NAME -->``; :func:`expand` replaces
each marker with the block that :data:`GENERATORS` builds:

- ``config-reference``: every key of ``workflow/schemas/config.schema.yaml``
  with its type, default and description (:func:`config_reference`);
- ``metric-table``: the metric registry (:meth:`MetricRegistry.markdown`).

``python -m workflow.reference rulegraph`` regenerates the picture of the
pipeline: ``snakemake --rulegraph`` of the default config, in a canonical
order (:func:`canonical_rulegraph`), to ``docs/pipeline.dot``, rendered by
Graphviz's ``dot`` to ``docs/pipeline.svg``, which records the DOT's
checksum (:func:`svg_source_checksum`).
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

from workflow.io import save_text

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
RULEGRAPH_DOT = REPO / "docs" / "pipeline.dot"
RULEGRAPH_SVG = REPO / "docs" / "pipeline.svg"
MARKER = re.compile(r"^<!-- generated: ([a-z-]+) -->$", flags=re.M)


@dataclass(frozen=True)
class ConfigKey:
    key: str  # dotted path, `<name>` for a name of the user's choice
    type: str
    default: str
    description: str


def load_schema(path: Path = SCHEMA) -> dict:
    return yaml.safe_load(path.read_text())


def _resolve(node: dict, schema: dict) -> dict:
    """``node`` with its local ``$ref`` and ``allOf`` merged in (its own
    entries win, as a key's own default overrides its definition's)."""
    merged: dict = {}
    if "$ref" in node:
        name = node["$ref"].removeprefix("#/$defs/")
        merged.update(_resolve(schema["$defs"][name], schema))
    for part in node.get("allOf", []):
        merged.update(_resolve(part, schema))
    for key, value in node.items():
        if key == "properties" and "properties" in merged:
            merged["properties"] = {**merged["properties"]}
            for name, sub in value.items():
                merged["properties"][name] = {
                    **merged["properties"].get(name, {}),
                    **sub,
                }
        elif key not in ("$ref", "allOf"):
            merged[key] = value
    return merged


def _flow(value) -> str:
    """A YAML value as a config file would write it, on one line."""
    text = yaml.safe_dump(value, default_flow_style=True, width=1000).strip()
    return text.removesuffix("...").strip()


def _type(node: dict) -> str:
    if "enum" in node:
        return " or ".join(_flow(v) for v in node["enum"])
    if "const" in node:
        return _flow(node["const"])
    if "oneOf" in node:
        return " or ".join(_type(part) for part in node["oneOf"])
    kinds = node.get("type", "any")
    kinds = kinds if isinstance(kinds, list) else [kinds]
    words = {"object": "mapping", "array": "list", "null": "null"}
    return " or ".join(words.get(k, k) for k in kinds)


def _default(node: dict, required: bool) -> str:
    if "default" in node:
        return f"`{_flow(node['default'])}`"
    return "(required)" if required else "(none)"


def _walk(node: dict, schema: dict, prefix: str, required) -> Iterator[ConfigKey]:
    for name, raw in node.get("properties", {}).items():
        key = f"{prefix}{name}"
        sub = _resolve(raw, schema)
        # Fields without a description of their own (augment_scale's min
        # and max) are described by their parent.
        if sub.get("description"):
            yield ConfigKey(
                key,
                _type(sub),
                _default(sub, name in required),
                " ".join(sub["description"].split()),
            )
        # A `$ref`'d group (a backbone's or loss's `training`) is described
        # once, under the top-level key that holds its defaults.
        if "$ref" in raw:
            continue
        items = sub.get("additionalProperties")
        if isinstance(items, dict) and items.get("type") == "object":
            yield from _walk(items, schema, f"{key}.<name>.", items.get("required", []))
        yield from _walk(sub, schema, f"{key}.", sub.get("required", []))


# Keys whose values name a registry's entries: the reference lists them.
REGISTRIES = {
    "datasets.<name>.source": "workflow.datasets:DATASETS",
    "backbones.<name>.arch": "workflow.backbones:BACKBONES",
    "losses.<name>.impl": "workflow.losses:LOSSES",
}


def registered(key: str) -> list[str]:
    """The names a registry key may take (empty for other keys)."""
    import importlib

    if key not in REGISTRIES:
        return []
    module, name = REGISTRIES[key].split(":")
    return list(getattr(importlib.import_module(module), name).names())


def config_keys(schema: dict | None = None) -> list[ConfigKey]:
    """Every documented key of the config schema, in the schema's order;
    a key naming a registry's entry lists them."""
    schema = load_schema() if schema is None else schema
    keys = []
    for k in _walk(schema, schema, "", schema.get("required", [])):
        names = registered(k.key)
        if names:
            listed = ", ".join(f"`{n}`" for n in names)
            k = ConfigKey(
                k.key, k.type, k.default, f"{k.description} Registered: {listed}."
            )
        keys.append(k)
    return keys


def markdown_cell(text: str) -> str:
    """``text`` safe in a Markdown table cell: code spans kept as they are
    (a ``|`` in one escaped), ``| < > * _ [ ]`` and backslashes escaped
    outside them, so a `<name>` in prose stays text, never an HTML tag."""
    parts = re.split(r"(`[^`]*`)", text)
    out = []
    for i, part in enumerate(parts):
        if i % 2:
            out.append(part.replace("|", "\\|"))
        else:
            out.append(re.sub(r"([\\|<>*_\[\]])", r"\\\1", part))
    return "".join(out)


# The schema's descriptions point to sections of the manual as
# docs "<section>"; the site links each to its page.
SECTIONS = {
    "Configuration": "configuration.md",
    "Fair comparisons": "selection.md",
    "GPUs": "scaling.md#gpus",
    "Metrics": "metrics.md",
    "Selection": "selection.md#selection",
    "Tables and figures": "tables.md",
}


def _link_sections(cell: str) -> str:
    def link(match: re.Match) -> str:
        page = SECTIONS.get(match.group(1))
        return f"[{match.group(1)}]({page})" if page else match.group(0)

    return re.sub(r'docs "([^"]+)"', link, cell)


def config_reference(schema: dict | None = None) -> str:
    """The configuration reference: one table row per schema key."""
    lines = ["| key | type | default | description |", "|---|---|---|---|"]
    for k in config_keys(schema):
        description = _link_sections(markdown_cell(k.description))
        lines.append(
            f"| `{k.key}` | {markdown_cell(k.type)} | {k.default} | {description} |"
        )
    return "\n".join(lines) + "\n"


def metric_table() -> str:
    from workflow.retrieval.metrics import METRICS

    return METRICS.markdown()


GENERATORS: dict[str, Callable[[], str]] = {
    "config-reference": config_reference,
    "metric-table": metric_table,
}


def expand(text: str) -> str:
    """``text`` with every ``<!-- generated: NAME -->`` line replaced by
    the block NAME generates; an unknown NAME is an error."""

    def block(match: re.Match) -> str:
        name = match.group(1)
        if name not in GENERATORS:
            raise ValueError(
                f"unknown generated block {name!r}; known: {', '.join(GENERATORS)}"
            )
        return GENERATORS[name]().rstrip("\n")

    return MARKER.sub(block, text)


# --- the pipeline's picture -------------------------------------------------

_NODE = re.compile(r'^\s*(\d+)\[label = "([^"]+)"', flags=re.M)
_EDGE = re.compile(r"^\s*(\d+) -> (\d+)\s*$", flags=re.M)


def canonical_rulegraph(dot: str) -> str:
    """``snakemake --rulegraph`` output in an order that does not depend on
    the run (Snakemake prints the edges in set order): rules numbered
    alphabetically, edges sorted, each rule in one colour."""
    labels = dict(_NODE.findall(dot))
    if not labels:
        raise ValueError("no rule in the rule graph")
    number = {label: i for i, label in enumerate(sorted(labels.values()))}
    edges = sorted(
        {(number[labels[a]], number[labels[b]]) for a, b in _EDGE.findall(dot)}
    )
    lines = [
        "digraph rulegraph {",
        "    graph[bgcolor=white, margin=0, rankdir=TB];",
        '    node[shape=box, style="rounded,filled", fillcolor="#eef3fb",'
        ' color="#4a6fa5", fontname=sans, fontsize=10, penwidth=1.5];',
        "    edge[penwidth=1.5, color=grey];",
        *(f'    {i}[label = "{label}"];' for label, i in number.items()),
        *(f"    {a} -> {b}" for a, b in edges),
        "}",
    ]
    return "\n".join(lines) + "\n"


def rulegraph(workdir: Path = REPO) -> str:
    """The canonical rule graph of the config in ``workdir``."""
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "--rulegraph", "--nolock"],
        cwd=workdir,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise RuntimeError(f"snakemake --rulegraph failed:\n{result.stderr}")
    return canonical_rulegraph(result.stdout)


def dot_checksum(dot: str) -> str:
    return hashlib.sha256(dot.encode()).hexdigest()


def svg_source_checksum(svg: str) -> str | None:
    """The DOT checksum an SVG written by :func:`render_svg` records."""
    found = re.search(
        r"<!-- rendered from pipeline\.dot sha256 ([0-9a-f]{64}) -->", svg
    )
    return found.group(1) if found else None


def render_svg(dot: str) -> str:
    """``dot`` rendered by Graphviz, with the DOT's checksum in a comment."""
    result = subprocess.run(
        ["dot", "-Tsvg"], input=dot, capture_output=True, text=True, check=True
    )
    svg = result.stdout
    head, _, rest = svg.partition("?>")
    note = f"\n<!-- rendered from pipeline.dot sha256 {dot_checksum(dot)} -->"
    return head + "?>" + note + rest


def main(argv: list[str]) -> int:
    if argv == ["rulegraph"]:
        dot = rulegraph()
        save_text(RULEGRAPH_DOT, dot)
        save_text(RULEGRAPH_SVG, render_svg(dot))
        print(
            f"wrote {RULEGRAPH_DOT.relative_to(REPO)}, {RULEGRAPH_SVG.relative_to(REPO)}"
        )
        return 0
    if len(argv) == 1 and argv[0] in GENERATORS:
        print(GENERATORS[argv[0]](), end="")
        return 0
    print(
        "usage: python -m workflow.reference rulegraph | " + " | ".join(GENERATORS),
        file=sys.stderr,
    )
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""The bad-input guards in the code itself (see tests/test_bad_inputs.py):
every writer writes to a temporary name, nothing unpickles outside files
except the checksummed CIFAR-100 loader, no rule builds a shell command,
and the checks know the names and ranges the code uses."""

from __future__ import annotations

import ast
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import REPO
from official_formats import (
    SHARED_DATASETS,
)

# ---------------------------------------------------------------- the code itself

WORKFLOW = REPO / "workflow"


# Calls that write a file at their first argument (or second, for torch.save).
WRITERS = {
    "to_csv": 0,
    "to_parquet": 0,
    "savefig": 0,
    "write_text": None,
    "write_bytes": None,
    "write_table": 1,
    "open_memmap": 0,
    "save": 0,
}


# Writes that need no temporary name: the rule's log is streamed on purpose
# (a killed job's log shows how far it got) and is never an input.
STREAMED = {("logs.py", "open")}


def _python_files():
    return sorted(p for p in WORKFLOW.rglob("*.py") if "__pycache__" not in p.parts)


def _segment(lines: list[bytes], node) -> str:
    """``ast.get_source_segment`` of ``node``, from the file's lines split
    once (splitting them per call made these checks take seconds)."""
    part = lines[node.lineno - 1 : node.end_lineno]
    if len(part) == 1:
        return part[0][node.col_offset : node.end_col_offset].decode()
    part[0], part[-1] = part[0][node.col_offset :], part[-1][: node.end_col_offset]
    return b"".join(part).decode()


def _calls(path: Path):
    text = path.read_text()
    lines = text.encode().splitlines(keepends=True)
    tree = ast.parse(text)
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = (
                func.attr
                if isinstance(func, ast.Attribute)
                else getattr(func, "id", None)
            )
            yield node, name, _segment(lines, node)


def _is_temporary(source: str) -> bool:
    """The written path is a temporary name (atomic_path's ``tmp``, a
    ``*_tmp``, the download's ``work`` folder), an open file object or an
    in-memory buffer."""
    return bool(re.search(r"\b(\w*tmp\w*|work|f|fout|out|buffer)\b", source))


def writer_offenders(path: Path) -> list[str]:
    """Calls in ``path`` that write a file under its final name."""
    text = path.read_text()
    offenders = []
    for node, name, source in _calls(path):
        if name == "open":
            modes = [a.value for a in node.args[1:2] if isinstance(a, ast.Constant)]
            modes += [
                k.value.value
                for k in node.keywords
                if k.arg == "mode" and isinstance(k.value, ast.Constant)
            ]
            if (
                any(set(m) & set("wax+") for m in modes)
                and (path.name, "open") not in STREAMED
            ):
                if not _is_temporary(ast.get_source_segment(text, node.args[0])):
                    offenders.append(f"{path.name}:{node.lineno}: {source}")
            continue
        if name not in WRITERS:
            continue
        owner = getattr(getattr(node.func, "value", None), "id", "")
        if name == "save" and owner not in {"np", "torch"}:
            continue
        position = 1 if (name == "save" and owner == "torch") else WRITERS[name]
        if position is None:  # Path.write_text: the path is the object
            target = ast.get_source_segment(text, node.func.value)
        elif len(node.args) > position:
            target = ast.get_source_segment(text, node.args[position])
        else:
            continue  # to_csv() without a path returns text
        if not _is_temporary(target):
            offenders.append(f"{path.name}:{node.lineno}: {source}")
    return offenders


def test_every_writer_writes_to_a_temporary_name():
    """Outside workflow/io.py (whose atomic_path renames a temporary file
    onto the output when complete), every call that writes a file writes a
    temporary name, and every open() for writing opens one."""
    offenders = [
        o
        for path in _python_files()
        if path.name != "io.py"
        for o in writer_offenders(path)
    ]
    assert offenders == [], (
        "write through workflow.io (atomic_path, save_*):\n" + "\n".join(offenders)
    )


def test_the_writer_check_finds_writes_in_place(tmp_path):
    module = tmp_path / "bad.py"
    module.write_text(
        "import numpy as np, torch\n"
        "frame.to_csv(output_path, index=False)\n"
        "torch.save(checkpoint, snakemake.output[0])\n"
        "np.save(path, images)\n"
        "open(log_path, 'w').write('x')\n"
        "Path(output).write_text('x')\n"
        "fig.savefig(png_path)\n"
        "frame.to_csv(index=False)\n"  # returns text: fine
        "with atomic_path(output) as tmp:\n    torch.save(checkpoint, tmp)\n"  # fine
    )
    assert sorted(int(o.split(":")[1]) for o in writer_offenders(module)) == [
        2,
        3,
        4,
        5,
        6,
        7,
    ]


def test_nothing_unpickles_outside_files():
    """torch.load only with weights_only=True, np.load never with
    allow_pickle, no pandas read_pickle or joblib, and pickle.load only in
    the CIFAR-100 loader, which checks each file's official checksum first."""
    offenders = []
    for path in _python_files():
        text = path.read_text()
        for node, name, source in _calls(path):
            func = node.func
            owner = getattr(getattr(func, "value", None), "id", None)
            keywords = {k.arg: k.value for k in node.keywords}
            if owner == "torch" and name == "load":
                value = keywords.get("weights_only")
                if not (isinstance(value, ast.Constant) and value.value is True):
                    offenders.append(f"{path.name}:{node.lineno}: {source}")
            elif owner == "np" and name == "load" and "allow_pickle" in keywords:
                offenders.append(f"{path.name}:{node.lineno}: {source}")
            elif name in {"read_pickle", "loads"} and owner in {
                "pd",
                "pickle",
                "joblib",
            }:
                offenders.append(f"{path.name}:{node.lineno}: {source}")
            elif (
                owner in {"pickle", "joblib", "dill", "cloudpickle"} and name == "load"
            ):
                if path.name != "cifar100.py":
                    offenders.append(f"{path.name}:{node.lineno}: {source}")
        assert "Unpickler" not in text, path
    assert offenders == []


def test_the_cifar_loader_checks_the_checksum_before_unpickling(tmp_path):
    from workflow.datasets.cifar100 import _unpickle

    assert (
        "apple"
        in _unpickle(SHARED_DATASETS / "cifar-100-python" / "meta")["fine_label_names"]
    )
    import pickle

    evil = tmp_path / "meta"
    evil.write_bytes(pickle.dumps({"fine_label_names": ["x"]}))
    with pytest.raises(
        ValueError, match="not the official CIFAR-100 file, so it is not unpickled"
    ):
        _unpickle(evil)


def test_no_rule_builds_a_shell_command():
    """Rules run Python (script:/run:), so no config value ever reaches a
    shell; every wildcard that becomes a path segment is constrained."""
    rules = [REPO / "Snakefile", *sorted((REPO / "rules").glob("*.smk"))]
    for path in rules:
        text = path.read_text()
        assert not re.search(r"^\s*shell:", text, flags=re.M), path
        assert "os.system" not in text and "subprocess" not in text, path
    common = (REPO / "rules" / "common.smk").read_text()
    constraints = dict(re.findall(r'^\s+(\w+)="([^"]+)",$', common, flags=re.M))
    used = set()
    for path in rules:
        used |= set(re.findall(r"\{(\w+)\}", path.read_text()))
    for wildcard in used & {
        "dataset",
        "regime",
        "backbone",
        "loss",
        "seed",
        "table",
        "download",
    }:
        assert wildcard in constraints, wildcard
        assert not re.fullmatch(constraints[wildcard], ".."), wildcard
        assert not re.fullmatch(constraints[wildcard], "a/b"), wildcard


def test_the_metric_names_of_the_table_check_are_those_evaluate_writes():
    """The config-time check of tables.<name>.metrics and selection.metric
    reads the metric registry (workflow/retrieval/metrics.py); evaluate_cell
    must write exactly the registered names, in their order, for each
    retrieval method (two-stage rows without the exact-only metrics)."""
    from workflow.evaluate import evaluate_cell
    from workflow.guards import check_table_metrics
    from workflow.retrieval.metrics import METRICS

    rng = np.random.default_rng(1)
    split = ["query"] * 12 + ["database"] * 30
    labels = np.arange(42) % 3
    frame = pd.DataFrame(
        {
            "index": np.arange(42),
            "split": split,
            "label": labels,
            "prediction": np.full(42, -1),
            "embedding": list(rng.normal(size=(42, 4))),
        }
    )
    anchors = pd.DataFrame(
        {"label": np.arange(3), "anchor": list(rng.normal(size=(3, 4)))}
    )
    evaluation = {
        "precision_at": [1, 3],
        "top_k_error": [2],
        "two_stage": {"classes": [1]},
    }
    metrics, _ = evaluate_cell(
        frame, anchors, dict(evaluation, two_stage={"classes": [1], "rest": "follow"})
    )
    assert set(metrics["retrieval"]) == {"exact", "two_stage_c1"}
    for method, rows in metrics.groupby("retrieval"):
        assert rows["metric"].tolist() == METRICS.names(evaluation, retrieval=method), (
            method
        )
    assert sorted(set(metrics["metric"])) == sorted(METRICS.names(evaluation))
    # A closed-set dataset: the metrics evaluate writes for it (a protocol
    # fills in its own recall and clustering defaults).
    config = {
        "datasets": {"d": {"source": "sklearn_digits"}},
        "evaluation": evaluation,
        "tables": {"t": {"metrics": METRICS.names(evaluation)}},
    }
    check_table_metrics(config)  # every name evaluate writes is accepted


def test_every_loss_and_backbone_declares_the_range_of_each_parameter():
    """Parameter ranges are declared once, with the registration
    (``params=``), for every keyword the config may set, so that
    ``snakemake -n`` checks each value (workflow.guards.check_parameters)."""
    import inspect

    from workflow.backbones import BACKBONES
    from workflow.guards.entries import PIPELINE_ARGUMENTS
    from workflow.losses import LOSSES

    for section, registry in [("losses", LOSSES), ("backbones", BACKBONES)]:
        for name in registry.names():
            declared = registry.metadata(name).get("params")
            assert declared is not None, (
                f"{registry.kind} {name!r}: register it with params={{...}}"
            )
            signature = inspect.signature(registry.get(name)).parameters
            settable = {
                p for p in signature if p not in PIPELINE_ARGUMENTS[section] | {"self"}
            }
            assert set(declared) == settable, (
                registry.kind,
                name,
                sorted(declared),
                sorted(settable),
            )
            for param, rule in declared.items():
                default = signature[param].default
                default = list(default) if isinstance(default, tuple) else default
                assert default is None or rule.problem(default) is None, (
                    registry.kind,
                    name,
                    param,
                    default,
                )


@pytest.mark.parametrize(
    "umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)]
)
def test_outputs_are_created_with_the_mode_the_umask_gives(tmp_path, umask, mode):
    # tempfile makes its files 0600 whatever the umask; an output renamed
    # from one must get the mode `open` would give it, so that results/ on a
    # shared cluster is as readable as the user's umask says.
    from workflow.io import save_json

    old = os.umask(umask)
    try:
        save_json(tmp_path / "out.json", {"a": 1})
    finally:
        os.umask(old)
    assert (tmp_path / "out.json").stat().st_mode & 0o777 == mode


# The inspections of the code hold no cases.
CATALOGUE = []

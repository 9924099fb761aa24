"""Issue 28, one concept per module: the imports between workflow modules
say which concept depends on which. Evaluation, tables and figures read a
cell's files (``workflow.cell_files``) without importing training or
embedding code, and no workflow modules import each other in a circle."""

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Library modules of the steps after training and embedding.
AFTER_EMBEDDING = [
    "workflow.cell_files",
    "workflow.evaluate",
    "workflow.figures",
    "workflow.tables",
    "workflow.rankings",
    "workflow.report",
    "workflow.selection",
    "workflow.export",
]
# The rule scripts that train or embed; every other one must not import that code.
TRAINING_SCRIPTS = {"workflow.scripts.train", "workflow.scripts.embed"}


def is_training_code(module: str) -> bool:
    return module in ("workflow.training", "workflow.embedding") or module.startswith(
        "workflow.training."
    )


def module_names(root: Path) -> dict[str, Path]:
    """Dotted name -> file of every module under ``root``'s ``workflow/``."""
    names = {}
    for path in sorted((root / "workflow").rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def import_graph(root: Path = REPO) -> dict[str, set[str]]:
    """module -> the workflow modules it imports, at module level or inside
    a function (a deferred import is a dependency all the same)."""
    names = module_names(root)
    graph = {}
    for name, path in names.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parent = package.split(".")[
                        : len(package.split(".")) - node.level + 1
                    ]
                    base = ".".join(parent + ([base] if base else []))
                imported |= {base} | {f"{base}.{alias.name}" for alias in node.names}
        targets = set()
        for target in imported:  # the longest prefix that is a module
            while target and target not in names:
                target = target.rpartition(".")[0]
            if target and target != name:
                targets.add(target)
        graph[name] = targets
    return graph


def import_circle(graph: dict[str, set[str]]) -> list[str] | None:
    """One circle of imports (its modules, the first repeated at the end),
    or None: a depth-first search that meets a module still on its path."""
    state: dict[str, str] = {}  # module -> "open" (on the path) or "done"

    def visit(module, path):
        state[module] = "open"
        path.append(module)
        for target in sorted(graph.get(module, ())):
            if state.get(target) == "open":
                return path[path.index(target) :] + [target]
            if target not in state and (circle := visit(target, path)):
                return circle
        path.pop()
        state[module] = "done"
        return None

    for module in sorted(graph):
        if module not in state and (circle := visit(module, [])):
            return circle
    return None


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for target in graph.get(todo.pop(), ()):
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def test_no_workflow_modules_import_each_other_in_a_circle():
    assert import_circle(import_graph()) is None


def test_the_circle_check_finds_a_circle():
    assert import_circle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert import_circle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_evaluation_tables_and_figures_import_no_training_code():
    """Imported in a fresh interpreter, the modules after embedding load
    none of workflow.training or workflow.embedding."""
    code = (
        "import sys\n"
        f"for name in {AFTER_EMBEDDING!r}:\n"
        "    __import__(name)\n"
        "print('\\n'.join(sorted(sys.modules)))\n"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert [m for m in loaded if is_training_code(m)] == []


def test_rule_scripts_that_neither_train_nor_embed_import_no_training_code():
    """The scripts run Snakemake's injected code, so they are read, not
    imported: nothing they import, at any depth, is training code."""
    graph = import_graph()
    scripts = [m for m in graph if m.startswith("workflow.scripts.")]
    assert TRAINING_SCRIPTS <= set(scripts)
    found = {
        script: sorted(m for m in reachable(graph, script) if is_training_code(m))
        for script in scripts
        if script not in TRAINING_SCRIPTS
    }
    assert {script: m for script, m in found.items() if m} == {}

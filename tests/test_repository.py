"""Repository-level checks: pinned envs agree with the pip pins and hold
what their rules' scripts import, every rule has a log and a conda env, the
workflow profiles use only options Snakemake and the SLURM plugin know, the
workflow lints clean and its rule files are snakefmt-formatted."""

from __future__ import annotations

import ast
import copy
import importlib.metadata
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
PIN = re.compile(r"^([A-Za-z0-9_.\-\[\]]+)==([^\s#]+)")


def pins(lines) -> dict[str, str]:
    found = {}
    for line in lines:
        match = PIN.match(line.strip())
        if match:
            found[match.group(1).lower()] = match.group(2)
    return found


def env_files():
    return sorted((REPO / "envs").glob("*.yaml"))


def test_requirements_are_all_pinned():
    lines = [
        l
        for l in (REPO / "requirements.txt").read_text().splitlines()
        if l.strip() and not l.startswith("#")
    ]
    assert lines and len(pins(lines)) == len(lines), (
        "every requirement must be pinned with =="
    )


# conda-forge names that differ from the pip names in requirements.txt.
CONDA_TO_PIP = {
    "matplotlib-base": "matplotlib",
    "seaborn-base": "seaborn",
    "pytorch": "torch",
}
CONDA_PIN = re.compile(r"^([A-Za-z0-9_.\-]+)=([0-9][^=\s]*)$")


@pytest.mark.parametrize("env", env_files(), ids=lambda p: p.name)
def test_conda_env_pins_agree_with_pip_pins(env):
    """conda entries `name=version`, pip entries `name==version`, each the
    version requirements.txt pins (python and pip aside)."""
    requirements = pins((REPO / "requirements.txt").read_text().splitlines())
    spec = yaml.safe_load(env.read_text())
    assert spec["channels"] == ["conda-forge", "nodefaults"], f"{env.name}: channels"
    conda = [d for d in spec["dependencies"] if isinstance(d, str)]
    pip_sections = [d["pip"] for d in spec["dependencies"] if isinstance(d, dict)]
    assert (
        len(conda) + len(pip_sections) == len(spec["dependencies"])
        and len(pip_sections) <= 1
    )
    assert "python=3.11" in conda, f"{env.name}: python=3.11 (as requirements.txt)"

    found = {}
    for entry in conda:
        match = CONDA_PIN.match(entry)
        assert match, f"{env.name}: {entry!r} is not an exact conda pin `name=version`"
        name, version = match.groups()
        if name in ("python", "pip"):
            continue
        pip_name = CONDA_TO_PIP.get(name, name)
        assert requirements.get(pip_name) == version, (
            f"{env.name}: {entry} but requirements.txt has {pip_name}=={requirements.get(pip_name)}"
        )
        found[pip_name] = "conda"
    for entry in pip_sections[0] if pip_sections else []:
        env_pin = pins([entry])
        assert len(env_pin) == 1, (
            f"{env.name}: pip entry {entry!r} is not pinned `name==version`"
        )
        ((name, version),) = env_pin.items()
        assert requirements.get(name) == version, (
            f"{env.name}: {entry} but requirements.txt has {name}=={requirements.get(name)}"
        )
        assert name not in found, f"{env.name}: {name} both as a conda and a pip entry"
        found[name] = "pip"
    if pip_sections:
        assert any(e.startswith("pip=") for e in conda), (
            f"{env.name}: a pip section needs `pip=<version>`"
        )
    assert found, f"{env.name} pins nothing"


def test_conda_to_pip_names_are_what_they_say():
    """The mapping's pip names are real requirements (a rename shows here)."""
    requirements = pins((REPO / "requirements.txt").read_text().splitlines())
    assert set(CONDA_TO_PIP.values()) <= set(requirements)


def module_path(name: str) -> Path | None:
    base = REPO / Path(*name.split("."))
    for path in (base / "__init__.py", base.with_suffix(".py")):
        if path.is_file():
            return path
    return None


def third_party_imports(path: Path, seen: set[Path] | None = None) -> set[str]:
    """Top-level modules outside this repository and the standard library
    that ``path`` imports, following imports of ``workflow.*`` (and every
    module of a registry package, which imports them all); imports inside
    functions count too."""
    seen = set() if seen is None else seen
    if path in seen:
        return set()
    seen.add(path)
    text = path.read_text()
    found = set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [
                f"{node.module}.{alias.name}" for alias in node.names
            ]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "workflow":
                for k in range(1, len(parts) + 1):
                    if (sub := module_path(".".join(parts[:k]))) is not None:
                        found |= third_party_imports(sub, seen)
            elif parts[0] not in sys.stdlib_module_names and parts[0] not in (
                "_repo_path",
                "__future__",
            ):
                found.add(parts[0])
    if path.name == "__init__.py" and ("pkgutil" in text or "import_module" in text):
        for sub in sorted(path.parent.glob("*.py")):
            found |= third_party_imports(sub, seen)
    return found


def env_packages(env: Path) -> set[str]:
    """pip names of every package an env file pins."""
    names = set()
    for entry in yaml.safe_load(env.read_text())["dependencies"]:
        for item in entry["pip"] if isinstance(entry, dict) else [entry]:
            name = re.split(r"[=<>]", item)[0].lower()
            names.add(CONDA_TO_PIP.get(name, name))
    return names


def test_every_rule_env_has_what_its_script_imports():
    """Each rule's conda env pins the distribution of every module its script
    imports (Snakemake and its dependencies come with Snakemake itself)."""
    distributions = importlib.metadata.packages_distributions()
    with_snakemake = {"snakemake"} | {
        re.split(r"[ ;<>=!~\[]", req)[0].lower().replace("_", "-")
        for req in importlib.metadata.requires("snakemake") or []
        if "extra ==" not in req
    }
    checked = 0
    for name, body in rule_blocks().items():
        env = re.search(r'conda:\s*"\.\./(envs/[^"]+)"', body)
        script = re.search(r'script:\s*"\.\./([^"]+\.py)"', body)
        if not (env and script):
            continue
        needed = {
            dist.lower()
            for module in third_party_imports(REPO / script.group(1))
            for dist in distributions.get(module, [module])
        }
        missing = needed - env_packages(REPO / env.group(1)) - with_snakemake
        assert not missing, (
            f"rule {name}: {env.group(1)} lacks {sorted(missing)}, which {script.group(1)} imports"
        )
        checked += 1
    assert checked >= 5


def test_every_rule_uses_a_conda_env_that_exists():
    for smk in (REPO / "rules").glob("*.smk"):
        for env in re.findall(r'conda:\s*"\.\./(envs/[^"]+)"', smk.read_text()):
            assert (REPO / env).exists(), f"{smk.name} names missing {env}"


RULE = re.compile(r"^(?:rule|checkpoint) (\w+):\n((?:[ \t]+.*\n|\n)*)", re.M)
USE_RULE = re.compile(r"^use rule (\w+) as (\w+) with:\n((?:[ \t]+.*\n|\n)*)", re.M)
ACTIONS = ("script:", "shell:", "run:", "wrapper:", "notebook:", "cwl:")


def rule_blocks() -> dict[str, str]:
    """Each rule of the Snakefile and the files it includes, with the text of
    its body."""
    snakefile = REPO / "Snakefile"
    included = re.findall(r'^include:\s*"([^"]+)"', snakefile.read_text(), re.M)
    blocks, derived = {}, []
    for path in [snakefile, *(REPO / name for name in included)]:
        for name, body in RULE.findall(path.read_text() + "\n"):
            blocks[name] = body
        derived += USE_RULE.findall(path.read_text() + "\n")
    for (
        parent,
        name,
        body,
    ) in derived:  # `use rule a as b with:` inherits a's directives
        blocks[name] = blocks[parent] + body
    return blocks


@pytest.fixture(scope="module")
def rule_names() -> set[str]:
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "--list-rules"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return set(result.stdout.split())


def test_every_rule_that_runs_something_has_log_and_conda(rule_names):
    blocks = rule_blocks()
    assert set(blocks) == rule_names, (
        "rules parsed from the files differ from `snakemake --list-rules`"
    )
    for name, body in blocks.items():
        directives = {
            line.strip().split()[0] for line in body.splitlines() if line.strip()
        }
        if directives.isdisjoint(ACTIONS):
            continue  # a target rule such as `all` runs nothing
        assert "log:" in directives, f"rule {name} has no log:"
        assert "conda:" in directives, f"rule {name} has no conda:"
    assert {"train", "embed"} <= set(blocks)


PROFILES = ["local", "slurm"]
# Resources Snakemake itself defines (the rest must be read by the plugin).
STANDARD_RESOURCES = {
    "mem",
    "mem_mb",
    "mem_mib",
    "disk",
    "disk_mb",
    "disk_mib",
    "runtime",
    "tmpdir",
}
DRY_RUN_JOB = re.compile(r"^(?:local)?rule (\w+):\n((?:    .*\n)+)", re.M)


def profile(name: str) -> dict:
    return yaml.safe_load((REPO / "profiles" / name / "config.yaml").read_text())


def plugin_resource_names() -> set[str]:
    """Resource names the installed SLURM executor plugin (and its jobstep
    plugin, which sets CPUs) read, from their source."""
    import snakemake_executor_plugin_slurm
    import snakemake_executor_plugin_slurm_jobstep

    names = set()
    for module in (
        snakemake_executor_plugin_slurm,
        snakemake_executor_plugin_slurm_jobstep,
    ):
        for path in Path(module.__file__).parent.glob("*.py"):
            text = path.read_text()
            names |= set(re.findall(r"resources\.get\(\s*[\"'](\w+)[\"']", text))
            names |= set(re.findall(r"resources\.(\w+)", text)) - {"get"}
    return names


def dry_run_jobs(output: str) -> dict[str, dict[str, str]]:
    """rule -> {"threads": ..., resource: value} of the first job of each rule
    in a dry run's output."""
    jobs = {}
    for rule, body in DRY_RUN_JOB.findall(output):
        fields = dict(
            line.strip().split(": ", 1) for line in body.splitlines() if ": " in line
        )
        resources = dict(
            item.split("=", 1)
            for item in fields.get("resources", "").split(", ")
            if "=" in item
        )
        jobs.setdefault(rule, {"threads": fields.get("threads", "1"), **resources})
    return jobs


@pytest.fixture(scope="module")
def profile_workspace(tmp_path_factory) -> Path:
    from conftest import TINY_CONFIG, make_workspace

    path = make_workspace(tmp_path_factory.mktemp("profiles"), TINY_CONFIG)
    shutil.copytree(REPO / "profiles", path / "profiles")
    return path


@pytest.mark.parametrize("name", PROFILES)
def test_profile_parses_and_every_key_is_commented(name):
    path = REPO / "profiles" / name / "config.yaml"
    spec = profile(name)
    assert isinstance(spec, dict) and spec, f"{path} is not a YAML mapping"
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        if re.match(r"^[A-Za-z]", line):  # a top-level key
            assert "#" in line or lines[i - 1].lstrip().startswith("#"), (
                f"{path}: `{line}` has no comment"
            )


@pytest.fixture(scope="module")
def dry_run(profile_workspace):
    """The output of `snakemake --workflow-profile profiles/<name> -n` on
    the tiny config (as on a cluster, threads not capped by local cores)."""
    outputs = {}

    def run(name: str) -> subprocess.CompletedProcess:
        if name not in outputs:
            outputs[name] = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "snakemake",
                    "--workflow-profile",
                    f"profiles/{name}",
                    "-n",
                    "--cores",
                    "64",
                ],
                cwd=profile_workspace,
                capture_output=True,
                text=True,
            )
        return outputs[name]

    return run


@pytest.mark.parametrize("name", PROFILES)
def test_profile_options_are_known_to_snakemake(name, dry_run):
    """An option that Snakemake (with the SLURM plugin installed) does not
    know stops the dry run with `unrecognized arguments`."""
    result = dry_run(name)
    output = result.stdout + result.stderr
    assert result.returncode == 0 and "unrecognized arguments" not in output, output
    assert "This was a dry-run" in output


def test_slurm_profile_resources_are_known_and_reach_the_jobs(dry_run, rule_names):
    spec = profile("slurm")
    assert spec["executor"] == "slurm"
    assert spec["slurm-status-command"] == "squeue"
    known = STANDARD_RESOURCES | plugin_resource_names()
    assert {"slurm_partition", "slurm_account", "gpu", "cpus_per_task"} <= known
    for rule, resources in [
        ("default", spec["default-resources"]),
        *spec["set-resources"].items(),
    ]:
        assert rule == "default" or rule in rule_names, (
            f"set-resources names unknown rule {rule}"
        )
        unknown = set(resources) - known
        assert not unknown, (
            f"{rule}: resources {unknown} are read neither by Snakemake nor by the SLURM plugin"
        )
    assert set(spec["set-threads"]) <= rule_names
    assert {"slurm_partition", "slurm_account"} <= set(spec["default-resources"])

    result = dry_run("slurm")
    jobs = dry_run_jobs(result.stdout + result.stderr)
    assert {
        "prepare",
        "train_split",
        "evaluation_split",
        "train",
        "embed",
        "evaluate",
    } <= set(jobs), result.stdout
    for rule, job in jobs.items():
        wanted = (
            spec["set-resources"]
            .get(rule, {})
            .get("slurm_partition", spec["default-resources"]["slurm_partition"])
        )
        assert job["slurm_partition"] == wanted, (rule, job)
        assert job["slurm_account"] == spec["default-resources"]["slurm_account"], (
            rule,
            job,
        )
        # Expressions (by backbone, scaled by attempt) evaluated to minutes / MB.
        assert job["runtime"].isdigit() and job["mem_mb"].isdigit(), (rule, job)
        assert job["threads"] == str(spec["set-threads"].get(rule, job["threads"])), (
            rule,
            job,
        )
    for rule in ("train", "embed"):
        assert jobs[rule]["gpu"] == "1", jobs[rule]  # the plugin's `--gpus=1`
    assert jobs["train"]["runtime"] == "60"  # small_cnn's entry in the profile


def test_every_shipped_backbone_has_a_slurm_time_limit_of_its_own():
    """The train time limits are looked up by backbone name: each backbone
    of a shipped config is listed (none falls to the default), and the LM
    Table 1 cells (about 11 H100 hours each, docs "GPU time") get more."""
    runtime = profile("slurm")["set-resources"]["train"]["runtime"]
    limits = eval(re.search(r"dict\([^)]*\)", runtime).group(0))
    for path in [REPO / "config.yaml", *sorted((REPO / "config").glob("*.yaml"))]:
        for backbone in yaml.safe_load(path.read_text())["backbones"]:
            assert backbone in limits, (
                f"{path.name}: backbone {backbone} has no time limit in profiles/slurm"
            )
    assert min(limits["r18_scratch"], limits["r18_frozen"]) >= 11 * 60


def test_selection_trials_get_the_resources_of_the_cells(profile_workspace):
    """train_trial, embed_trial and evaluate_trial (rules/select.smk) are
    rules of their own names: the profile gives them their cells' GPU
    partition, time, memory and threads."""
    from conftest import TINY_CONFIG

    config = copy.deepcopy(TINY_CONFIG)
    config["losses"] = {"ce": {"impl": "ce", "training": {"lr": [0.01, 0.001]}}}
    config["selection"] = {"budget": 2}
    config["tables"] = {}
    (profile_workspace / "selection.yaml").write_text(
        yaml.safe_dump(config, sort_keys=False)
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "--workflow-profile",
            "profiles/slurm",
            "-n",
            "--cores",
            "64",
            "--configfile",
            "selection.yaml",
            "--replace-workflow-config",
        ],
        cwd=profile_workspace,
        capture_output=True,
        text=True,
    )
    jobs = dry_run_jobs(result.stdout + result.stderr)
    assert result.returncode == 0 and {
        "train_trial",
        "embed_trial",
        "evaluate_trial",
    } <= set(jobs), result.stdout
    for rule in ("train", "embed", "evaluate"):
        assert jobs[f"{rule}_trial"] == jobs[rule], (
            rule,
            jobs[f"{rule}_trial"],
            jobs[rule],
        )


def test_snakemake_lint_is_clean():
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "--lint"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0 and "good condition" in output, output


def test_rule_files_are_snakefmt_formatted():
    files = [
        "Snakefile",
        *sorted(str(p.relative_to(REPO)) for p in (REPO / "rules").glob("*.smk")),
    ]
    result = subprocess.run(
        [sys.executable, "-m", "snakefmt", "--check", *files],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_cell_path_pattern_is_written_once():
    """Issue 22: every cell or trial path (results/cells, results/trials,
    their logs, benchmarks and checkpoints) is made from
    workflow.config.CELL_PATTERN (in rules/ through common.smk's cell_path)."""
    cell_folder = re.compile(r"(\{[^{}]*\}/){4}seed\{")
    files = [
        *(REPO / "rules").glob("*.smk"),
        REPO / "Snakefile",
        *(REPO / "workflow").rglob("*.py"),
    ]
    places = [
        f"{path.relative_to(REPO)}:{number}"
        for path in files
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if cell_folder.search(line)
    ]
    assert len(places) == 1 and places[0].startswith("workflow/config.py:"), places


def schema_keys(schema: dict, prefix: str = "") -> list[str]:
    """Dotted paths of every documented key, `<name>` for user-chosen names."""
    keys = []
    for name, sub in schema.get("properties", {}).items():
        path = f"{prefix}{name}"
        keys.append(path)
        if "additionalProperties" in sub and isinstance(
            sub["additionalProperties"], dict
        ):
            keys += schema_keys(sub["additionalProperties"], f"{path}.<name>.")
        keys += schema_keys(sub, f"{path}.")
    return keys


def test_every_config_key_has_a_description_and_is_in_the_reference():
    """The configuration reference (docs/configuration.md, generated from the
    schema when the site is built) has a row for every key."""
    from workflow.reference import config_reference, expand

    schema = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
    page = (REPO / "docs/configuration.md").read_text()
    assert page.count("<!-- generated: config-reference -->") == 1
    reference = expand(page)
    assert config_reference(schema) in reference + "\n"
    fields = schema["$defs"]["training_fields"]["properties"]
    keys = schema_keys(schema)
    assert "losses.<name>.impl" in keys and "training.epochs" in keys
    for key in keys:
        assert f"| `{key}` |" in reference, f"the configuration reference lacks {key}"
    for key, sub in fields.items():
        assert sub.get("description"), f"training.{key} has no description"


def test_the_docs_give_the_size_of_the_default_grid(tmp_path):
    """The performance page's "N cells, M jobs" for the default grid is what
    `snakemake -n` plans for the shipped config.yaml (cells: its train jobs)."""
    from conftest import make_workspace

    workdir = make_workspace(tmp_path, {})
    shutil.copy2(REPO / "config.yaml", workdir / "config.yaml")
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--nolock"],
        cwd=workdir,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    stats = result.stdout.split("Job stats:")[1].split("\n\n")[0]
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", stats, flags=re.M))
    page = (REPO / "docs/performance.md").read_text()
    cells, jobs = re.search(
        r"the default grid\s+\(every loss on digits[^)]*: (\d+) cells, (\d+) jobs\)",
        page,
    ).groups()
    assert (int(cells), int(jobs)) == (int(counts["train"]), int(counts["total"])), (
        stats
    )


@pytest.mark.parametrize(
    "command", [["check"], ["format", "--check"]], ids=["lint", "format"]
)
def test_python_is_ruff_clean(command):
    """Issue 28: ruff's lint and format, as configured in pyproject.toml
    (Snakemake's injected `snakemake` declared as a builtin)."""
    result = subprocess.run(
        [sys.executable, "-m", "ruff", *command, "."],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr

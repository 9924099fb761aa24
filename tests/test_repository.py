"""Repository-level checks: pinned envs agree with the pip pins, the
workflow lints clean and its rule files are snakefmt-formatted."""

from __future__ import annotations

import re
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
    lines = [l for l in (REPO / "requirements.txt").read_text().splitlines() if l.strip() and not l.startswith("#")]
    assert lines and len(pins(lines)) == len(lines), "every requirement must be pinned with =="


@pytest.mark.parametrize("env", env_files(), ids=lambda p: p.name)
def test_conda_env_pins_agree_with_pip_pins(env):
    requirements = pins((REPO / "requirements.txt").read_text().splitlines())
    spec = yaml.safe_load(env.read_text())
    pip_lists = [d["pip"] for d in spec["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert pip_lists, f"{env.name} has no pip section"
    env_pins = pins(pip_lists[0])
    assert len(env_pins) == len(pip_lists[0]), f"{env.name}: every pip entry must be pinned"
    for name, version in env_pins.items():
        assert requirements.get(name) == version, f"{env.name}: {name}=={version} but requirements.txt has {requirements.get(name)}"
    assert "python=3.11" in spec["dependencies"]


def test_every_rule_uses_a_conda_env_that_exists():
    for smk in (REPO / "rules").glob("*.smk"):
        for env in re.findall(r'conda:\s*"\.\./(envs/[^"]+)"', smk.read_text()):
            assert (REPO / env).exists(), f"{smk.name} names missing {env}"


def test_snakemake_lint_is_clean():
    result = subprocess.run([sys.executable, "-m", "snakemake", "--lint"], cwd=REPO, capture_output=True, text=True)
    output = result.stdout + result.stderr
    assert result.returncode == 0 and "good condition" in output, output


def test_rule_files_are_snakefmt_formatted():
    files = ["Snakefile", *sorted(str(p.relative_to(REPO)) for p in (REPO / "rules").glob("*.smk"))]
    result = subprocess.run([sys.executable, "-m", "snakefmt", "--check", *files], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def schema_keys(schema: dict, prefix: str = "") -> list[str]:
    """Dotted paths of every documented key, `<name>` for user-chosen names."""
    keys = []
    for name, sub in schema.get("properties", {}).items():
        path = f"{prefix}{name}"
        keys.append(path)
        if "additionalProperties" in sub and isinstance(sub["additionalProperties"], dict):
            keys += schema_keys(sub["additionalProperties"], f"{path}.<name>.")
        keys += schema_keys(sub, f"{path}.")
    return keys


def test_every_config_key_has_a_description_and_is_in_the_readme():
    schema = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
    readme = (REPO / "README.md").read_text()
    fields = schema["$defs"]["training_fields"]["properties"]
    keys = schema_keys(schema)
    assert "losses.<name>.impl" in keys and "training.epochs" in keys
    for key in keys:
        assert f"| `{key}` |" in readme, f"README's configuration table lacks {key}"
    for key, sub in fields.items():
        assert sub.get("description"), f"training.{key} has no description"

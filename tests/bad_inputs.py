"""Helpers of the bad-input catalogue (``tests/test_bad_inputs*.py``): the
base config of its cases, the check that nothing partial was left, the
dry runs of config cases and the two error assertions, and the count of
every case (docs "Bad inputs and guards" gives it)."""

from __future__ import annotations

import copy
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import read_test_config, snakemake
from official_formats import (
    make_imagefolder,
)

BASE = read_test_config("bad_inputs_base")


def leftovers(results: Path) -> list[str]:
    """Temporary or partial files and folders anywhere under ``results``."""
    if not results.exists():
        return []
    return [
        str(p)
        for p in results.rglob("*")
        if p.name.endswith((".tmp", ".part"))
        or ".partial-" in p.name
        or ".compact" in p.name
    ]


def changed(path: tuple, value) -> dict:
    config = copy.deepcopy(BASE)
    node = config
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value
    return config


TABLE = {"metrics": ["map"], "rows": ["loss"]}

CIFAR_META_MD5 = "7973b15100ade9c7d40fb424638fde48"


class _Planted:
    """A pickle that would create ``marker`` if it were ever unpickled."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def dry_runs(workdir: Path, cases: list, workers: int = 3) -> dict:
    """``snakemake -n`` for every config case (a dict, or YAML text), a few
    at a time, in one workspace: ``{"workdir": ..., "results": {name: result}}``
    (the catalogue's files per kind use it too)."""

    def run(case):
        name, config, targets, _ = case
        path = workdir / f"{name}.yaml"
        path.write_text(
            config
            if isinstance(config, str)
            else yaml.safe_dump(config, sort_keys=False)
        )
        return snakemake(
            workdir,
            "-n",
            "--nolock",
            "--configfile",
            path.name,
            "--replace-workflow-config",
            *targets,
            check=False,
        )

    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = dict(zip([c[0] for c in cases], pool.map(run, cases)))
    return {"workdir": workdir, "results": results}


def assert_config_error(runs: dict, name: str, fragments: list[str]) -> None:
    """Case ``name`` of :func:`dry_runs` stopped (exit 1) with every
    fragment in its message, and wrote no results/."""
    result = runs["results"][name]
    message = result.stdout + result.stderr
    assert result.returncode == 1, message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in:\n{message}"
    assert not (runs["workdir"] / "results").exists()


def assert_config_error_in_process(config, fragments: list[str]) -> None:
    """``check_config(load_config(config))``, the code ``snakemake -n``
    runs, raises a ConfigError holding every fragment."""
    from workflow.config import ConfigError
    from workflow.config_loader import load_config
    from workflow.guards import check_config

    with pytest.raises(ConfigError) as error:
        check_config(load_config(config))
    for fragment in fragments:
        assert fragment in str(error.value), f"{fragment!r} not in {error.value}"


def assert_prepare_error(tmp_path: Path, case) -> None:
    """``prepare`` of a PREPARE_CASES case stops with every fragment in its
    message and writes none of its outputs (no temporary file either)."""
    from workflow.prepare import prepare

    _, make, fragments = case
    name, spec = make(tmp_path)
    out = tmp_path / "results" / "data" / name
    out.mkdir(parents=True)
    with pytest.raises((ValueError, OSError)) as error:
        prepare(
            spec,
            out / "images.npy",
            out / "labels.parquet",
            out / "classes.json",
            name=name,
        )
    for fragment in fragments:
        assert fragment in str(error.value), f"{fragment!r} not in {error.value}"
    assert list(out.iterdir()) == []


def catalogue_size() -> int:
    """Every case of the catalogue (docs "Bad inputs and guards" gives
    this number): the ``CATALOGUE`` lists of the catalogue's files
    (``tests/test_bad_inputs.py`` and ``tests/test_bad_inputs_*.py``, one per
    stage or kind)."""
    import importlib

    return sum(
        len(cases)
        for path in sorted(Path(__file__).parent.glob("test_bad_inputs*.py"))
        for cases in importlib.import_module(path.stem).CATALOGUE
    )


def _npz(
    path: Path,
    labels,
    class_names,
    dtype=np.uint8,
    shape=(4, 4, 1),
    n_images=None,
    **extra,
) -> Path:
    labels = np.asarray(labels)
    images = np.zeros(
        (len(labels) if n_images is None else n_images, *shape), dtype=dtype
    )
    np.savez(
        path,
        images=images,
        labels=labels,
        class_names=np.asarray(class_names, dtype=str),
        **extra,
    )
    return path


def _npz_case(tmp: Path, name: str, write) -> tuple[str, dict]:
    """Dataset ``name``: the npz file ``write`` makes at ``tmp/<name>.npz``."""
    path = tmp / f"{name}.npz"
    write(path)
    return name, {"source": "npz", "params": {"path": str(path)}}


def _folder_case(tmp: Path, name: str, damage) -> tuple[str, dict]:
    """Dataset ``name``: a generated image folder, then ``damage(root)``."""
    make_imagefolder(tmp / name, n_train=2, n_test=1)
    damage(tmp / name)
    return name, {
        "source": "imagefolder",
        "params": {"path": str(tmp / name)},
        "image_size": 8,
    }


def alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie has ended)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def wait_for(condition, seconds=120, what=""):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"not within {seconds} s: {what}"
        time.sleep(0.1)


def _fetch(source: str, tmp: Path, checksums=None, mirror: bool = True) -> None:
    from workflow.download import OfficialFile, fetch_files, plan_downloads

    keys, files = plan_downloads(
        {"d": {"source": source, "checksums": checksums or {}}}
    )
    (tmp / "mirror").mkdir(exist_ok=True)
    fetch_files(
        [OfficialFile.from_dict(f) for f in files[keys["d"]]],
        tmp / "raw" / keys["d"],
        mirror=tmp / "mirror" if mirror else None,
        cache=tmp / "cache",
    )


def _cub_archive(tmp: Path) -> Path:
    from official_formats import make_cub200, tar_gz

    make_cub200(tmp / "src")
    (tmp / "mirror").mkdir(exist_ok=True)
    return tar_gz(
        tmp / "src" / "CUB_200_2011",
        tmp / "mirror" / "CUB_200_2011.tgz",
        "CUB_200_2011",
    )


def _md5_of(path: Path) -> str:
    from official_formats import md5

    return md5(path)

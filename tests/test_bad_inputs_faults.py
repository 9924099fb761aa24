"""Catalogue cases of faults (issue 30): a full disk, a Snakemake process
killed under its jobs, and a folder or file where an output belongs.

- **full disk**: real writes onto a small tmpfs (``mount -t tmpfs``, which
  needs root: CI runs as root; elsewhere these cases are skipped, and
  ``free_space_check_without_a_small_disk`` checks the same message by
  asking for more bytes than the disk has free). Each write stops with a
  message naming the folder, the bytes needed and free and what to do, and
  leaves nothing behind, neither an output nor a temporary. ``prepare``
  runs in a child process: on the old code its memory-mapped write died of
  SIGBUS, which would take pytest with it.
- **Snakemake killed**: ``kill -9`` of Snakemake alone during a job of
  another rule than train; the job stops within seconds, says why in its
  log, and writes nothing more (``tests/test_resume.py`` has the train job).
- **results paths**: a folder where a rule writes a file stops
  ``snakemake -n``; a file where ``results/tensorboard`` or a cell's folder
  under it belongs stops before any job (``results/tensorboard`` itself)
  or at the start of the train job, before its first epoch.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from bad_inputs import BASE, alive, changed, leftovers, wait_for
from conftest import REPO, make_workspace, snakemake
from official_formats import make_imagefolder

# ---------------------------------------------------------------- full disk


@contextlib.contextmanager
def small_disk(folder: Path, size: str = "2m"):
    """``folder`` as a tmpfs of ``size``: a real file system that fills up."""
    folder.mkdir(parents=True)
    mount = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
    )
    if mount.returncode:
        pytest.skip(
            f"a small tmpfs needs root to mount (CI runs as root): {mount.stderr.strip()}"
        )
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True)


PREPARE = """
import sys, json
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from workflow.prepare import prepare
spec, out = json.loads(sys.argv[2]), Path(sys.argv[3])
images = out / ("images.jpegs" if spec.get("storage") == "jpeg" else "images.npy")
try:
    prepare(spec, images, out / "labels.parquet", out / "classes.json", name="folder")
except Exception as error:
    sys.exit(f"{type(error).__name__}: {error}")
"""


def _prepare_on_small_disk(
    tmp_path, spec: dict, size: str = "2m"
) -> tuple[subprocess.CompletedProcess, list]:
    """``prepare`` of ``spec`` into a folder on a tmpfs of ``size``, in a
    child process; its result and what it left in that folder."""
    with small_disk(tmp_path / "disk", size) as disk:
        out = disk / "data" / "folder"
        out.mkdir(parents=True)
        result = subprocess.run(
            [sys.executable, "-c", PREPARE, str(REPO), json.dumps(spec), str(out)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        return result, sorted(p.name for p in out.iterdir())


def _big_jpegs(root: Path, per_class: int = 4, side: int = 300) -> Path:
    """Class folders of noise JPEGs of about 100 KB each."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for name in ["a", "b"]:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.jpg", quality=95)
    return root


def _assert_stopped(result, files, fragments):
    assert result.returncode == 1, (
        f"exit status {result.returncode} (-7 is SIGBUS):\n{result.stderr[-2000:]}"
    )
    for fragment in fragments:
        assert fragment in result.stderr, (
            f"{fragment!r} not in:\n{result.stderr[-2000:]}"
        )
    assert files == [], f"left behind: {files}"


NO_ROOM = [
    "data/folder: no room for the images of dataset folder: writing it needs",
    "MiB) free. Nothing was written. Free space on that file system",
]
RAN_OUT = [
    "data/folder: its file system ran out of space while this job wrote there (No space left on device).",
    "The partial files were removed. Free space on that file system",
]


def decoded_images_larger_than_the_disk(tmp_path):
    """An image folder decoded into images.npy (a memory map): stopped
    before the first row is written, not killed by SIGBUS with 25 MB of
    temporaries left."""
    make_imagefolder(tmp_path / "src", n_train=6, n_test=4)
    spec = {
        "source": "imagefolder",
        "params": {"path": str(tmp_path / "src")},
        "image_size": 256,
    }
    _assert_stopped(*_prepare_on_small_disk(tmp_path, spec), NO_ROOM)


def arrays_larger_than_the_disk(tmp_path):
    """An in-memory dataset (sklearn digits) resized and saved as
    images.npy: its size is known, checked before writing."""
    spec = {"source": "sklearn_digits", "image_size": 64}
    _assert_stopped(*_prepare_on_small_disk(tmp_path, spec), NO_ROOM)


def jpeg_store_larger_than_the_disk(tmp_path):
    """A JPEG store, whose size is known only once written, meets the
    full disk while it writes: named, its temporaries removed."""
    spec = {
        "source": "imagefolder",
        "params": {"path": str(_big_jpegs(tmp_path / "src"))},
        "storage": "jpeg",
    }
    _assert_stopped(*_prepare_on_small_disk(tmp_path, spec, size="400k"), RAN_OUT)


def skipped_images_compacted_on_a_full_disk(tmp_path):
    """Skipped undecodable images make prepare copy the decoded rows into
    a shorter file: that second file is checked too."""
    root = tmp_path / "src"
    make_imagefolder(root, n_train=6, n_test=4)
    (root / "train" / "cat" / "img00.jpg").write_bytes(b"not an image")
    # 30 rows of 144 x 144 x 3 (1.9 MB) fit the 2 MB disk; a second file of the 29 decoded rows does not.
    spec = {
        "source": "imagefolder",
        "params": {"path": str(root)},
        "image_size": 144,
        "skip_undecodable": True,
    }
    _assert_stopped(*_prepare_on_small_disk(tmp_path, spec), NO_ROOM)


def _write_on_small_disk(tmp_path, write, size="2m") -> tuple[str, list]:
    with small_disk(tmp_path / "disk", size) as disk:
        with pytest.raises(Exception) as error:
            write(disk / "cell")
        return str(error.value), sorted(p.name for p in (disk / "cell").iterdir())


def checkpoint_larger_than_the_disk(tmp_path):
    """A model.pt (or resume checkpoint) larger than the free space."""
    import torch

    from workflow.checkpoints import save_torch

    message, files = _write_on_small_disk(
        tmp_path,
        lambda cell: save_torch(cell / "model.pt", {"w": torch.zeros(1_000_000)}),
    )
    assert (
        "cell: no room for model.pt: writing it needs" in message
        and "Free space on that file system" in message
    )
    assert files == []


def embeddings_larger_than_the_disk(tmp_path):
    """An embeddings.parquet larger than the free space."""
    import pyarrow as pa

    from workflow.io import save_parquet

    table = pa.table(
        {"embedding": np.random.default_rng(0).random(600_000, dtype=np.float32)}
    )
    message, files = _write_on_small_disk(
        tmp_path, lambda cell: save_parquet(cell / "embeddings.parquet", table)
    )
    # 2,400,000 bytes of floats, a margin of 64 KiB and 1 %
    assert (
        "cell: no room for embeddings.parquet: writing it needs 2,489,536 bytes"
        in message
    ), message
    assert files == []


def download_extracted_onto_a_full_disk(tmp_path):
    """A dataset archive (a CUB subset, its checksum pinned) extracted into
    results/raw/ on a disk that fills up: named, the partial folder removed."""
    from bad_inputs import _cub_archive, _fetch, _md5_of

    _cub_archive(tmp_path)
    with small_disk(tmp_path / "raw", size="64k") as raw:
        with pytest.raises(Exception) as error:
            _fetch(
                "cub200",
                tmp_path,
                checksums={
                    "CUB_200_2011.tgz": _md5_of(tmp_path / "mirror/CUB_200_2011.tgz")
                },
            )
        assert sorted(raw.iterdir()) == []
    assert (
        f"{tmp_path}/raw: its file system ran out of space while this job wrote there (No space left on device). "
        "The partial files were removed. Free space on that file system"
    ) in str(error.value)


def free_space_check_without_a_small_disk(tmp_path):
    """The check itself, on any disk: ask for one byte more than is free."""
    import shutil

    from workflow.io import OutputPathError, check_free_space

    free = shutil.disk_usage(tmp_path).free
    with pytest.raises(OutputPathError) as error:
        check_free_space(tmp_path / "images.npy", free + 1)
    assert f"{tmp_path}: no room for images.npy: writing it needs" in str(error.value)
    assert "MiB) free. Nothing was written." in str(error.value)


# (id, function(tmp_path)): writes onto a full disk.
DISK_CASES = [
    ("decoded_images_larger_than_the_disk", decoded_images_larger_than_the_disk),
    ("arrays_larger_than_the_disk", arrays_larger_than_the_disk),
    ("jpeg_store_larger_than_the_disk", jpeg_store_larger_than_the_disk),
    (
        "skipped_images_compacted_on_a_full_disk",
        skipped_images_compacted_on_a_full_disk,
    ),
    ("checkpoint_larger_than_the_disk", checkpoint_larger_than_the_disk),
    ("embeddings_larger_than_the_disk", embeddings_larger_than_the_disk),
    ("download_extracted_onto_a_full_disk", download_extracted_onto_a_full_disk),
    ("free_space_check_without_a_small_disk", free_space_check_without_a_small_disk),
]


@pytest.mark.parametrize("case", DISK_CASES, ids=[c[0] for c in DISK_CASES])
def test_disk_case(tmp_path, case):
    case[1](tmp_path)


def test_a_memory_map_past_the_free_space_fails_with_enospc_not_sigbus(tmp_path):
    """Behind the free-space check (which another writer can outrun), the
    memory map's bytes are allocated before any is written: a full disk
    gives an OSError, not a SIGBUS."""
    script = (
        f"import sys; sys.path.insert(0, {str(REPO)!r}); from pathlib import Path\n"
        "import workflow.prepare as p; p.check_free_space = lambda *a: None\n"
        "p._memmap(Path(sys.argv[1]), (3, 1024, 1024), 'big')[:] = 1\n"
    )
    with small_disk(tmp_path / "disk") as disk:
        result = subprocess.run(
            [sys.executable, "-c", script, str(disk / "images.npy")],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert result.returncode == 1 and "No space left on device" in result.stderr, result


# ---------------------------------------------------------------- Snakemake killed under its jobs


def _job(snakemake_pid: int, script: str) -> int:
    """The PID of Snakemake's job running ``script`` (a child or grandchild), or 0."""
    from test_resume import children, command_line

    for child in children(snakemake_pid):
        for pid in [child, *children(child)]:
            if script in command_line(pid):
                return pid
    return 0


def _kill_snakemake_during(tmp_path, config, target, script, log, ready, outputs):
    """Run Snakemake for ``target``; once the job running ``script`` has
    written ``ready`` to its ``log``, kill -9 Snakemake alone. The job must
    stop within 10 s, say why, and leave none of ``outputs`` and no
    temporary."""
    workdir = make_workspace(tmp_path / "run", config)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    process = subprocess.Popen(
        [sys.executable, "-m", "snakemake", "--cores", "1", target],
        cwd=workdir,
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    log = workdir / log
    try:
        wait_for(
            lambda: log.exists() and ready in log.read_text(),
            seconds=300,
            what=f"{ready!r} in {log}",
        )
        job = _job(process.pid, script)
        assert job, f"no job running {script}"
        os.kill(process.pid, signal.SIGKILL)  # Snakemake only, as `kill -9 <its PID>`
        process.wait()
        wait_for(
            lambda: not alive(job),
            seconds=10,
            what=f"the orphaned {script} job {job} to stop",
        )
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    text = log.read_text()
    assert (
        f"stopping: the Snakemake process that started this job (PID {process.pid}) has ended"
        in text
    ), text
    assert [path for path in outputs if (workdir / path).exists()] == []
    assert leftovers(workdir / "results") == []


def _slow_folder(root: Path, per_class: int = 100) -> Path:
    """Class folders of 1500 x 1500 PNGs (5 KB each, a gradient): each
    takes tens of milliseconds to decode, the folder seconds."""
    import shutil

    from PIL import Image

    first = root / "a" / "0.png"
    first.parent.mkdir(parents=True)
    Image.fromarray(
        (np.add.outer(np.arange(1500), np.arange(1500)) % 256).astype(np.uint8)
    ).save(first)
    for name in ["a", "b"]:
        (root / name).mkdir(exist_ok=True)
        for i in range(per_class):
            if not (root / name / f"{i}.png").exists():
                shutil.copyfile(first, root / name / f"{i}.png")
    return root


def _prepare_job_whose_snakemake_is_killed(tmp_path, storage: str):
    """A prepare job decoding 200 large images, Snakemake killed as it starts."""
    config = changed(
        ("datasets",),
        {
            "slow": {
                "source": "imagefolder",
                "image_size": 16,
                "storage": storage,
                "params": {"path": str(_slow_folder(tmp_path / "slow"))},
            }
        },
    )
    images = "images.jpegs" if storage == "jpeg" else "images.npy"
    outputs = [
        f"results/data/slow/{name}"
        for name in [images, "labels.parquet", "classes.json"]
    ]
    _kill_snakemake_during(
        tmp_path,
        config,
        outputs[1],
        "prepare.py",
        "results/logs/prepare/slow.log",
        "dataset slow: 200 images",
        outputs,
    )


def prepare_job_whose_snakemake_is_killed(tmp_path):
    """Decoding into a memory-mapped images.npy."""
    _prepare_job_whose_snakemake_is_killed(tmp_path, "array")


def jpeg_prepare_job_whose_snakemake_is_killed(tmp_path):
    """Encoding into a JPEG store, written sequentially."""
    _prepare_job_whose_snakemake_is_killed(tmp_path, "jpeg")


def embed_job_whose_snakemake_is_killed(tmp_path):
    """An embed job of 1,747 digits at 160 x 160 pixels (seconds on a CPU),
    Snakemake killed as it opens its log: the model trained on 50 images."""
    config = changed(
        ("datasets", "digits"),
        {"source": "sklearn_digits", "query_per_class": 5, "image_size": 160},
    )
    config.update(
        regimes={"few": {"train_per_class": 5}},
        losses={"ce": {"impl": "ce"}},
        training={"epochs": 1, "batch_size": 50},
    )
    cell = "results/cells/digits/few/small_cnn/ce/seed0"
    _kill_snakemake_during(
        tmp_path,
        config,
        f"{cell}/embeddings.parquet",
        "embed.py",
        "results/logs/embed/digits/few/small_cnn/ce/seed0.log",
        "",
        [f"{cell}/embeddings.parquet", f"{cell}/anchors.parquet"],
    )


WRITER = """
import sys, time
sys.path.insert(0, sys.argv[1])
from workflow.job_guard import watch_parent
from workflow.io import atomic_path
watch_parent()
with atomic_path(sys.argv[2]) as tmp:
    tmp.write_text("partial")
    print("writing", flush=True)
    time.sleep(60)
"""


def writer_whose_parent_is_killed(tmp_path):
    """Any job's write (atomic_path) under a parent that is killed: the job
    stops, the temporary is removed and the output never appears."""
    target = tmp_path / "out" / "metrics.csv"
    log = tmp_path / "job.log"
    shell = subprocess.Popen(
        [
            "sh",
            "-c",
            '"$@" >"$0" 2>&1; exit',
            str(log),
            sys.executable,
            "-c",
            WRITER,
            str(REPO),
            str(target),
        ],
        start_new_session=True,
    )
    try:
        wait_for(
            lambda: log.exists() and "writing" in log.read_text(),
            seconds=60,
            what="the write to start",
        )
        from test_resume import children

        job = children(shell.pid)[0]
        os.kill(shell.pid, signal.SIGKILL)
        shell.wait()
        wait_for(
            lambda: not alive(job),
            seconds=10,
            what=f"the orphaned writer {job} to stop",
        )
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(shell.pid, signal.SIGKILL)
    assert "stopping: the Snakemake process that started this job" in log.read_text()
    assert list(target.parent.iterdir()) == []


def every_rule_script_watches_its_parent(tmp_path):
    """The watch starts in _repo_path, so every rule script must import it
    first: a script that did not would run unwatched."""
    scripts = sorted((REPO / "workflow" / "scripts").glob("*.py"))
    late = [
        s.name
        for s in scripts
        if s.name != "_repo_path.py"
        and not s.read_text().startswith("import _repo_path")
    ]
    assert len(scripts) > 10 and late == []
    assert (
        "watch_parent()"
        in (REPO / "workflow" / "scripts" / "_repo_path.py").read_text()
    )


# (id, function(tmp_path)): jobs of other rules than train as real processes.
PARENT_CASES = [
    ("prepare_job_whose_snakemake_is_killed", prepare_job_whose_snakemake_is_killed),
    (
        "jpeg_prepare_job_whose_snakemake_is_killed",
        jpeg_prepare_job_whose_snakemake_is_killed,
    ),
    ("embed_job_whose_snakemake_is_killed", embed_job_whose_snakemake_is_killed),
    ("writer_whose_parent_is_killed", writer_whose_parent_is_killed),
    ("every_rule_script_watches_its_parent", every_rule_script_watches_its_parent),
]


@pytest.mark.parametrize("case", PARENT_CASES, ids=[c[0] for c in PARENT_CASES])
def test_parent_case(tmp_path, case):
    case[1](tmp_path)


# ---------------------------------------------------------------- folders and files where outputs belong

CELL = "results/cells/digits/full/small_cnn/ce/seed0"


def _folder(relative: str):
    def plant(workdir: Path):
        (workdir / relative).mkdir(parents=True)
        (workdir / relative / "notes.txt").write_text("a folder where a file belongs")

    return plant


def _file(relative: str):
    def plant(workdir: Path):
        (workdir / relative).parent.mkdir(parents=True, exist_ok=True)
        (workdir / relative).write_text("a file where a folder belongs")

    return plant


# (id, plant(workdir), message fragments): snakemake -n stops, naming the path.
RESULT_PATH_CASES = [
    (
        "cell_metrics_is_a_folder",
        _folder(f"{CELL}/metrics.csv"),
        [
            f"{CELL}/metrics.csv: a folder where rule evaluate writes a file",
            f"(rm -r {CELL}/metrics.csv)",
        ],
    ),
    (
        "labels_is_a_folder",
        _folder("results/data/digits/labels.parquet"),
        [
            "results/data/digits/labels.parquet: a folder where rule prepare writes a file"
        ],
    ),
    (
        "model_is_a_folder",
        _folder(f"{CELL}/model.pt"),
        [f"{CELL}/model.pt: a folder where rule train writes a file"],
    ),
    (
        "job_log_is_a_folder",
        _folder("results/logs/prepare/digits.log"),
        ["results/logs/prepare/digits.log: a folder where rule prepare writes a file"],
    ),
    (
        "final_table_is_a_folder",
        _folder("results/metrics.csv"),
        ["results/metrics.csv: a folder where rule aggregate writes a file"],
    ),
    (
        "tensorboard_is_a_file",
        _file("results/tensorboard"),
        [
            "results/tensorboard: a file where the pipeline writes a folder. Move it away or delete it"
        ],
    ),
]


@pytest.fixture(scope="module")
def result_path_runs(tmp_path_factory) -> dict:
    def run(case):
        name, plant, _ = case
        workdir = make_workspace(tmp_path_factory.mktemp(name), BASE)
        plant(workdir)
        return name, snakemake(workdir, "-n", check=False)

    with ThreadPoolExecutor(max_workers=3) as pool:
        return dict(pool.map(run, RESULT_PATH_CASES))


@pytest.mark.parametrize(
    "case", RESULT_PATH_CASES, ids=[c[0] for c in RESULT_PATH_CASES]
)
def test_result_path_error(result_path_runs, case):
    name, _, fragments = case
    result = result_path_runs[name]
    assert result.returncode == 1, result.stdout[-2000:]
    for fragment in fragments:
        assert fragment in result.stdout + result.stderr, (
            f"{fragment!r} not in:\n{result.stdout[-3000:]}"
        )


def test_a_tensorboard_file_passes_with_tensorboard_off(tmp_path):
    workdir = make_workspace(tmp_path, {**BASE, "tensorboard": False})
    _file("results/tensorboard")(workdir)
    snakemake(workdir, "-n")


# (id, path planted as a file under results/tensorboard, fragment): a train
# job of a real run stops before its first epoch (the old code stopped
# after the last, with a bare FileExistsError or NotADirectoryError).
TENSORBOARD_CASES = [
    (
        "tensorboard_cell_folder_is_a_file",
        "results/tensorboard/digits/full/small_cnn/ce/seed0",
        "results/tensorboard/digits/full/small_cnn/ce/seed0: a file where the pipeline writes a folder",
    ),
    (
        "tensorboard_loss_folder_is_a_file",
        "results/tensorboard/digits/full/small_cnn/cam",
        "results/tensorboard/digits/full/small_cnn/cam: a file where the pipeline needs a folder (to write "
        "results/tensorboard/digits/full/small_cnn/cam/seed0)",
    ),
]


@pytest.fixture(scope="module")
def tensorboard_run(tmp_path_factory) -> Path:
    """One ``snakemake -k`` run of both cells, their tensorboard folders
    planted as files; 200 epochs, so a check after training would show."""
    workdir = make_workspace(
        tmp_path_factory.mktemp("tensorboard"),
        changed(("training",), {"epochs": 200, "batch_size": 64}),
    )
    for _, path, _ in TENSORBOARD_CASES:
        _file(path)(workdir)
    snakemake(
        workdir,
        "-k",
        "--cores",
        "2",
        *[
            f"results/cells/digits/full/small_cnn/{loss}/seed0/model.pt"
            for loss in ["ce", "cam"]
        ],
        check=False,
    )
    return workdir


@pytest.mark.parametrize(
    "case", TENSORBOARD_CASES, ids=[c[0] for c in TENSORBOARD_CASES]
)
def test_tensorboard_path_error(tensorboard_run, case):
    _, path, fragment = case
    loss = "ce" if path.endswith("seed0") else "cam"
    log = (
        tensorboard_run / f"results/logs/train/digits/full/small_cnn/{loss}/seed0.log"
    ).read_text()
    assert fragment in log, log[-3000:]
    assert (
        "per epoch" not in log
        and not (
            tensorboard_run / f"results/checkpoints/digits/full/small_cnn/{loss}"
            "/seed0/last.pt"
        ).exists()
    )
    assert not (
        tensorboard_run / f"results/cells/digits/full/small_cnn/{loss}/seed0/model.pt"
    ).exists()
    assert (tensorboard_run / path).is_file()  # the user's file is left alone


def output_path_is_a_folder(tmp_path):
    from workflow.io import save_csv

    (tmp_path / "metrics.csv").mkdir()
    with pytest.raises(Exception) as error:
        save_csv(tmp_path / "metrics.csv", __import__("pandas").DataFrame({"a": [1]}))
    assert f"{tmp_path}/metrics.csv: a folder where the pipeline writes a file" in str(
        error.value
    )


def output_folder_is_under_a_file(tmp_path):
    from workflow.io import save_json

    (tmp_path / "cells").write_text("")
    with pytest.raises(Exception) as error:
        save_json(tmp_path / "cells" / "seed0" / "stats.json", {})
    assert (
        f"{tmp_path}/cells: a file where the pipeline needs a folder (to write"
        in str(error.value)
    )


# (id, function(tmp_path)): the writers themselves (atomic_path), in process.
WRITER_PATH_CASES = [
    ("output_path_is_a_folder", output_path_is_a_folder),
    ("output_folder_is_under_a_file", output_folder_is_under_a_file),
]


@pytest.mark.parametrize(
    "case", WRITER_PATH_CASES, ids=[c[0] for c in WRITER_PATH_CASES]
)
def test_writer_path_case(tmp_path, case):
    case[1](tmp_path)


CATALOGUE = [
    DISK_CASES,
    PARENT_CASES,
    RESULT_PATH_CASES,
    TENSORBOARD_CASES,
    WRITER_PATH_CASES,
]

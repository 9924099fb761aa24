"""The catalogue of bad inputs (see tests/test_bad_inputs.py), the inputs of
training, embedding, evaluation and aggregation jobs: planted files (files
that a real run would have written, broken on purpose: an unreadable
Parquet file, anchors of another size, a changed CIFAR-100 pickle, given to
the rules that read them with ``--allowed-rules``), result files,
checkpoints and models, train jobs as real processes, JPEG stores and
evaluation settings."""

from __future__ import annotations

import contextlib
import copy
import json
import os
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from bad_inputs import (
    BASE,
    CIFAR_META_MD5,
    _Planted,
    alive,
    changed,
    leftovers,
    wait_for,
)
from conftest import REPO, make_workspace, read_test_config, snakemake
from official_formats import (
    SHARED_DATASETS,
    make_imagefolder,
)

# ---------------------------------------------------------------- planted files

PLANTED_CONFIG = read_test_config("planted_files")


CELL = "results/cells/digits/full/small_cnn/{}/seed0"


# (id, target, the job log, fragments)
PLANTED_CASES = [
    (
        "unreadable_parquet",
        f"{CELL.format('ce')}/metrics.csv",
        "evaluate/digits/full/small_cnn/ce/seed0.log",
        [
            f"{CELL.format('ce')}/embeddings.parquet: not a readable Parquet file",
            "Delete it and run Snakemake again",
        ],
    ),
    (
        "anchors_of_another_size",
        f"{CELL.format('cam')}/metrics.csv",
        "evaluate/digits/full/small_cnn/cam/seed0.log",
        [
            f"{CELL.format('cam')}/anchors.parquet: anchors of size 8, but the embeddings in "
            f"{CELL.format('cam')}/embeddings.parquet have size 16",
            "Delete both and run Snakemake again",
        ],
    ),
    (
        "cutoff_beyond_the_database",
        f"{CELL.format('lm')}/metrics.csv",
        "evaluate/digits/full/small_cnn/lm/seed0.log",
        [
            "config key evaluation.precision_at: cutoff 1000 exceeds the database of this cell (40 images)"
        ],
    ),
    (
        "changed_cifar_pickle",
        "results/data/c100/images.npy",
        "prepare/c100.log",
        [
            "results/raw/cifar100/cifar-100-python/meta: md5 is",
            f"expected {CIFAR_META_MD5}",
            "not the official CIFAR-100 file, so it is not unpickled",
        ],
    ),
]


def plant(workdir: Path) -> None:
    from workflow.embedding import write_embeddings

    rng = np.random.default_rng(0)
    split = pd.DataFrame(
        {"index": np.arange(50), "split": ["query"] * 10 + ["database"] * 40}
    )
    labels = np.arange(50) % 5

    def cell(loss, size, anchor_size):
        folder = workdir / CELL.format(loss)
        write_embeddings(
            folder / "embeddings.parquet",
            folder / "anchors.parquet",
            split,
            labels,
            rng.normal(size=(50, size)).astype(np.float32),
            np.full(50, -1),
            rng.normal(size=(5, anchor_size)).astype(np.float32),
            {"loss": loss},
        )

    cell("ce", 16, 16)
    (workdir / CELL.format("ce") / "embeddings.parquet").write_bytes(
        b"PAR1 not really parquet"
    )
    cell("cam", 16, 8)
    cell("lm", 16, 16)
    raw = workdir / "results" / "raw" / "cifar100" / "cifar-100-python"
    raw.mkdir(parents=True)
    for name in ["train", "test"]:
        (raw / name).symlink_to(SHARED_DATASETS / "cifar-100-python" / name)
    meta = (SHARED_DATASETS / "cifar-100-python" / "meta").read_bytes()
    (raw / "meta").write_bytes(meta[:-1] + bytes([meta[-1] ^ 0x01]))


@pytest.fixture(scope="module")
def planted_run(tmp_path_factory) -> dict:
    workdir = make_workspace(tmp_path_factory.mktemp("planted_cases"), PLANTED_CONFIG)
    plant(workdir)
    targets = [case[1] for case in PLANTED_CASES]
    result = snakemake(
        workdir,
        "--cores",
        "2",
        "--keep-going",
        *targets,
        "--allowed-rules",
        "evaluate",
        "prepare",
        check=False,
    )
    return {"workdir": workdir, "result": result}


@pytest.mark.parametrize("case", PLANTED_CASES, ids=[c[0] for c in PLANTED_CASES])
def test_planted_file_error(planted_run, case):
    name, target, log, fragments = case
    workdir, result = planted_run["workdir"], planted_run["result"]
    assert result.returncode == 1, result.stderr
    text = (workdir / "results" / "logs" / log).read_text()
    for fragment in fragments:
        assert fragment in text, f"{fragment!r} not in {log}:\n{text}"
    assert not (workdir / target).exists()
    folder = (workdir / target).parent
    assert (
        not (folder / "pr_curve.parquet").exists()
        and not (folder / "labels.parquet").exists()
    )
    assert leftovers(workdir / "results") == []


METRICS_CSV = (
    "geometry,distance,retrieval,metric,value\neuclidean,euclidean,exact,map,0.5\n"
)


# (id, text of a cell's metrics.csv, fragments): given to aggregate, which
# must name the file (pandas' own errors name none) and write nothing.
RESULT_FILE_CASES = [
    (
        "emptied_cell_metrics",
        "",
        [
            "metrics.csv: empty file, not a complete CSV; delete it and run Snakemake again"
        ],
    ),
    (
        "cell_metrics_without_rows",
        METRICS_CSV.splitlines()[0] + "\n",
        ["metrics.csv: a header but no rows, not a complete file; delete it"],
    ),
    (
        "cell_metrics_cut_short",
        METRICS_CSV[:22],
        [
            "metrics.csv: no column retrieval, metric, value (has geometry, "
            "distance, retr)"
        ],
    ),
]


@pytest.fixture(scope="module")
def result_file_runs(tmp_path_factory) -> dict:
    """``snakemake results/metrics.csv --allowed-rules aggregate`` per case:
    ce's metrics.csv planted broken, cam's complete."""

    def run(case):
        name, text, _ = case
        workdir = make_workspace(tmp_path_factory.mktemp(name), BASE)
        for loss, content in [("ce", text), ("cam", METRICS_CSV)]:
            path = workdir / CELL.format(loss) / "metrics.csv"
            path.parent.mkdir(parents=True)
            path.write_text(content)
        result = snakemake(
            workdir,
            "--cores",
            "1",
            "results/metrics.csv",
            "--allowed-rules",
            "aggregate",
            check=False,
        )
        return name, {"workdir": workdir, "result": result}

    with ThreadPoolExecutor(max_workers=3) as pool:
        return dict(pool.map(run, RESULT_FILE_CASES))


@pytest.mark.parametrize(
    "case", RESULT_FILE_CASES, ids=[c[0] for c in RESULT_FILE_CASES]
)
def test_result_file_error(result_file_runs, case):
    name, _, fragments = case
    workdir, result = (
        result_file_runs[name]["workdir"],
        result_file_runs[name]["result"],
    )
    assert result.returncode == 1, result.stderr
    text = (workdir / "results" / "logs" / "aggregate.log").read_text()
    for fragment in [f"{CELL.format('ce')}/{fragments[0]}", *fragments[1:]]:
        assert fragment in text, f"{fragment!r} not in aggregate.log:\n{text}"
    assert not (workdir / "results" / "metrics.csv").exists()
    assert leftovers(workdir / "results") == []


# ---------------------------------------------------------------- checkpoints and train jobs


def _tiny_cell(epochs=2, **training):
    """Settings of a small digits CE cell and its 60 training images (in-process cases)."""
    from workflow.config import cell_settings
    from workflow.config_loader import load_config
    from workflow.datasets import load_dataset

    config = changed(("training",), {"epochs": epochs, "batch_size": 20, **training})
    data = load_dataset("sklearn_digits")
    train = np.concatenate([np.flatnonzero(data.labels == c)[:6] for c in range(10)])
    return cell_settings(load_config(config), _cell()), data, train


def _cell():
    from workflow.config import Cell

    return Cell("digits", "full", "small_cnn", "ce", 0)


def _random_bytes(path):
    path.write_bytes(np.random.default_rng(0).bytes(4096))


def _resume_from(make, reason):
    """A case: a last.pt made by ``make(path, tmp_path)`` is ignored with a
    log line naming it and ``reason``, and training starts afresh: the same
    model as a run without it."""

    def case(tmp_path):
        import io

        import torch

        from workflow.training.loop import train_cell

        settings, data, train = _tiny_cell()
        path = tmp_path / "last.pt"
        make(path, tmp_path)
        log = io.StringIO()
        with contextlib.redirect_stderr(log):
            model = train_cell(
                data.images,
                data.labels,
                train,
                10,
                settings,
                progress=False,
                checkpoint_path=path,
            )
        text = log.getvalue()
        assert (
            f"ignoring checkpoint {path}: {reason}" in text
            and "training from the start" in text
        ), text
        assert "weights_only=False" not in text
        assert model["stats"]["resumed_from_epoch"] == 0
        fresh = train_cell(
            data.images, data.labels, train, 10, settings, progress=False
        )
        for key, value in fresh["backbone"].items():
            assert torch.equal(value, model["backbone"][key]), key
        assert fresh["history"] == model["history"]
        assert not (tmp_path / "unpickled").exists()  # no planted pickle ever runs

    return case


def _checkpoint_that_does_not_fit(path, tmp_path):
    """A checkpoint of this cell's settings (hash) whose backbone weights are
    another network's (another version of the code, a file copied over)."""
    import torch

    from workflow.checkpoints import save_torch
    from workflow.training.loop import train_cell

    settings, data, train = _tiny_cell()
    train_cell(
        data.images,
        data.labels,
        train,
        10,
        settings,
        progress=False,
        checkpoint_path=path,
        stop_after_epoch=1,
    )
    save_torch(
        path,
        {
            **torch.load(path, weights_only=True),
            "backbone": {"conv.weight": torch.zeros(2)},
        },
    )


def corrupt_pretrained_file(tmp_path):
    """A corrupt ``pretrained:`` file of your own (its checksum pinned, so it
    passes the checksum check) is named, without torch's advice to load it
    with weights_only=False."""
    import hashlib

    from workflow.backbones import build_backbone
    from workflow.backbones.weights import WeightsFileError

    path = tmp_path / "mine.pth"
    _random_bytes(path)
    spec = {
        "file": str(path),
        "checksum": "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest(),
        "mean": [0.5, 0.5, 0.5],
        "std": [0.2, 0.2, 0.2],
    }
    with pytest.raises(WeightsFileError) as error:
        build_backbone(
            "resnet18", in_channels=3, image_size=32, embedding_size=8, pretrained=spec
        )
    message = str(error.value)
    assert (
        f"{path}: not a valid state dict: torch.load(weights_only=True) cannot read it ("
        in message
    )
    assert "or replace the file" in message and "weights_only=False" not in message


# (id, function(tmp_path)): .pt files read in-process.
CHECKPOINT_CASES = [
    (
        "corrupt_last_pt_is_ignored",
        _resume_from(
            lambda path, tmp: _random_bytes(path),
            "not a valid resume checkpoint: torch.load(weights_only=True) cannot read it (",
        ),
    ),
    (
        "foreign_last_pt_is_ignored",
        _resume_from(
            lambda path, tmp: __import__("torch").save(
                {"conv.weight": __import__("torch").zeros(2)}, path
            ),
            "not a valid resume checkpoint: it lacks settings_hash, epoch, history",
        ),
    ),
    (
        "planted_pickle_as_last_pt_never_runs",
        _resume_from(
            lambda path, tmp: path.write_bytes(
                __import__("pickle").dumps(_Planted(tmp / "unpickled"))
            ),
            "not a valid resume checkpoint: torch.load(weights_only=True) cannot read it (",
        ),
    ),
    # (a last.pt of other settings: tests/test_resume.py)
    (
        "last_pt_that_does_not_fit_is_ignored",
        _resume_from(
            _checkpoint_that_does_not_fit,
            "its state does not fit this cell's training (RuntimeError: Error(s) in",
        ),
    ),
    ("corrupt_pretrained_file", corrupt_pretrained_file),
]


@pytest.mark.parametrize("case", CHECKPOINT_CASES, ids=[c[0] for c in CHECKPOINT_CASES])
def test_checkpoint_case(tmp_path, case):
    case[1](tmp_path)


# model.pt planted for the embed rule, in a real run of its own (the
# planted embeddings above must not be embedded again).
MODEL_CONFIG = {
    **BASE,
    "losses": {
        name: {"impl": name} for name in ["ce", "cam", "lm", "triplet", "supcon"]
    },
}


# (id, loss of the cell, message fragments)
MODEL_CASES = [
    (
        "corrupt_model_pt",
        "ce",
        [
            f"{CELL.format('ce')}/model.pt: not a valid model.pt of the train rule: torch.load(weights_only=True) "
            "cannot read it (",
            "Delete it and run Snakemake again: the train rule writes it anew",
        ],
    ),
    (
        "planted_pickle_as_model_pt",
        "cam",
        [
            f"{CELL.format('cam')}/model.pt: not a valid model.pt of the train rule",
            "Delete it",
        ],
    ),
    (
        "foreign_model_pt",
        "lm",
        [
            f"{CELL.format('lm')}/model.pt: not a valid model.pt of the train rule: it lacks backbone, loss, mean",
            "(it holds conv.weight)",
            "Delete it",
        ],
    ),
    (
        "model_pt_of_other_settings",
        "triplet",
        [
            f"{CELL.format('triplet')}/model.pt: a model trained for other settings (hash",
            "Delete it",
        ],
    ),
    (
        "model_pt_whose_weights_do_not_fit",
        "supcon",
        [
            f"{CELL.format('supcon')}/model.pt: its backbone weights do not fit backbone 'small_cnn' of this cell",
            "Missing key(s)",
            "Delete it",
        ],
    ),
]


def plant_models(workdir: Path) -> None:
    import torch

    from workflow.checkpoints import save_torch
    from workflow.config import Cell, cell_settings, settings_hash
    from workflow.config_loader import load_config

    def cell(loss):
        folder = workdir / CELL.format(loss)
        folder.mkdir(parents=True)
        return folder / "model.pt"

    _random_bytes(cell("ce"))
    cell("cam").write_bytes(__import__("pickle").dumps(_Planted(workdir / "unpickled")))
    torch.save({"conv.weight": torch.zeros(2)}, cell("lm"))
    config = load_config(MODEL_CONFIG)
    settings = cell_settings(config, Cell("digits", "full", "small_cnn", "supcon", 0))
    model = {
        "backbone": {"conv.weight": torch.zeros(2)},
        "loss": {},
        "mean": torch.zeros(1),
        "std": torch.ones(1),
        "in_channels": 1,
        "image_size": 8,
        "num_classes": 10,
        "history": [],
    }
    save_torch(
        cell("triplet"), {**model, "settings_hash": settings_hash(settings)}
    )  # supcon's
    save_torch(cell("supcon"), {**model, "settings_hash": settings_hash(settings)})


@pytest.fixture(scope="module")
def model_run(tmp_path_factory) -> dict:
    workdir = make_workspace(tmp_path_factory.mktemp("model_cases"), MODEL_CONFIG)
    plant_models(workdir)
    targets = [f"{CELL.format(case[1])}/embeddings.parquet" for case in MODEL_CASES]
    result = snakemake(
        workdir,
        "--cores",
        "2",
        "--keep-going",
        *targets,
        "--allowed-rules",
        "embed",
        "prepare",
        "download",
        "evaluation_split",
        check=False,
    )
    return {"workdir": workdir, "result": result}


@pytest.mark.parametrize("case", MODEL_CASES, ids=[c[0] for c in MODEL_CASES])
def test_planted_model_error(model_run, case):
    name, loss, fragments = case
    workdir, result = model_run["workdir"], model_run["result"]
    assert result.returncode == 1, result.stderr
    log = f"embed/digits/full/small_cnn/{loss}/seed0.log"
    text = (workdir / "results" / "logs" / log).read_text()
    for fragment in fragments:
        assert fragment in text, f"{fragment!r} not in {log}:\n{text}"
    assert "weights_only=False" not in text
    folder = workdir / CELL.format(loss)
    assert (
        not (folder / "embeddings.parquet").exists()
        and not (folder / "anchors.parquet").exists()
    )
    assert not (workdir / "unpickled").exists()  # no planted pickle ever runs
    assert leftovers(workdir / "results") == []


# A train job of a digits cell, run as a process of its own: python JOB CONFIG FOLDER.
JOB = """
import json, sys
import numpy as np
sys.path.insert(0, sys.argv[3])
from workflow.config import Cell, cell_settings
from workflow.config_loader import load_config
from workflow.datasets import load_dataset
from workflow.training.loop import train_job
config, folder = json.loads(sys.argv[1]), sys.argv[2]
settings = cell_settings(load_config(config), Cell("digits", "full", "small_cnn", "ce", 0))
data = load_dataset("sklearn_digits")
train = np.concatenate([np.flatnonzero(data.labels == c)[:20] for c in range(10)])
train_job(data.images, data.labels, train, 10, settings,
          f"{folder}/model.pt", f"{folder}/train_stats.json", f"{folder}/last.pt")
"""


LONG_JOB = changed(
    ("training",), {"epochs": 5000, "batch_size": 50}
)  # minutes: killed long before its end


def start_job(tmp_path, config, parent_shell=False):
    script = tmp_path / "job.py"
    script.write_text(JOB)
    command = [
        sys.executable,
        str(script),
        json.dumps(config),
        str(tmp_path / "cell"),
        str(REPO),
    ]
    if (
        parent_shell
    ):  # the job is a child of a shell, as a rule's job is a child of Snakemake
        command = ["sh", "-c", '"$@" 2>"$0"; exit', str(tmp_path / "job.log"), *command]
        return subprocess.Popen(command, start_new_session=True)
    return subprocess.Popen(
        command, stderr=open(tmp_path / "job.log", "w"), start_new_session=True
    )


def job_pid(shell) -> int:
    """The PID of the job that ``shell`` started (its only child)."""
    children = [
        int(p.name)
        for p in Path("/proc").iterdir()
        if p.name.isdigit() and alive(int(p.name)) and _ppid(int(p.name)) == shell.pid
    ]
    return children[0] if children else 0


def _ppid(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (FileNotFoundError, IndexError):
        return 0


def second_job_of_a_cell(tmp_path):
    """While one job trains a cell, a second job of that cell (here with
    other settings, as after a changed config) stops at once naming the
    cell and the PID of the first, and writes nothing; once the first is
    killed, its lock no longer blocks."""
    first = start_job(tmp_path, LONG_JOB)
    folder = tmp_path / "cell"
    try:
        wait_for(
            lambda: (folder / "last.pt").exists(), what="the first job's checkpoint"
        )
        before = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
        script = tmp_path / "job.py"
        short = changed(("training",), {"epochs": 1, "batch_size": 50})
        second = subprocess.run(
            [sys.executable, str(script), json.dumps(short), str(folder), str(REPO)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert second.returncode == 1
        assert (
            f"cell digits/full/small_cnn/ce/seed0: another train job is training it (PID {first.pid} on host"
            in second.stderr
        ), second.stderr[-2000:]
        assert (
            f"holds the lock {folder}/last.pt.lock" in second.stderr
            and f"kill {first.pid}" in second.stderr
        )
        assert (
            not (folder / "model.pt").exists()
            and not (folder / "train_stats.json").exists()
        )
        assert (folder / "last.pt.lock").read_text().split()[0] == str(first.pid)
        assert set(before) <= {p.name for p in folder.iterdir()}
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    again = subprocess.run(
        [sys.executable, str(script), json.dumps(short), str(folder), str(REPO)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert again.returncode == 0, again.stderr[-2000:]
    assert (
        "ignoring checkpoint" in again.stderr
    )  # the killed job's, written for other settings
    assert (folder / "model.pt").exists() and not (folder / "last.pt").exists()
    assert not (folder / "last.pt.lock").exists()


def job_whose_parent_is_killed(tmp_path):
    """A train job whose parent process is killed (as Snakemake by kill -9)
    stops within seconds without writing model.pt, saying why."""
    shell = start_job(tmp_path, LONG_JOB, parent_shell=True)
    folder = tmp_path / "cell"
    try:
        wait_for(lambda: (folder / "last.pt").exists(), what="the job's checkpoint")
        pid = job_pid(shell)
        assert pid and alive(pid)
        os.kill(shell.pid, signal.SIGKILL)  # the parent only
        shell.wait()
        wait_for(
            lambda: not alive(pid), seconds=30, what=f"the orphaned job {pid} to stop"
        )
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(shell.pid, signal.SIGKILL)  # the job too, should it still run
    assert (
        not (folder / "model.pt").exists()
        and not (folder / "train_stats.json").exists()
    )
    log = (tmp_path / "job.log").read_text()
    assert (
        f"stopping: the Snakemake process that started this job (PID {shell.pid}) has ended"
        in log
    ), log[-2000:]
    assert leftovers(folder) == []


# (id, function(tmp_path)): train jobs as real processes.
JOB_CASES = [
    ("second_job_of_a_cell", second_job_of_a_cell),
    ("job_whose_parent_is_killed", job_whose_parent_is_killed),
]


@pytest.mark.parametrize("case", JOB_CASES, ids=[c[0] for c in JOB_CASES])
def test_train_job_case(tmp_path, case):
    case[1](tmp_path)


# ---------------------------------------------------------------- JPEG stores (storage: jpeg)


def _jpeg_store(tmp: Path, image_size=24):
    """A generated image folder prepared as dataset ``pics``'s JPEG store;
    -> (store path, labels)."""
    from workflow.datasets import load_dataset
    from workflow.prepare import write_prepared

    make_imagefolder(tmp / "img", n_train=4, n_test=2)
    out = tmp / "data" / "pics"
    write_prepared(
        load_dataset("imagefolder", path=str(tmp / "img")),
        out / "images.jpegs",
        out / "labels.parquet",
        out / "classes.json",
        image_size=image_size,
        name="pics",
        storage="jpeg",
    )
    return out / "images.jpegs", pd.read_parquet(out / "labels.parquet")[
        "label"
    ].to_numpy()


def _train_from_store(tmp: Path, damage=None, image_size=24, **training):
    from workflow.config import Cell, cell_settings
    from workflow.config_loader import load_config
    from workflow.jpeg_store import JpegStore
    from workflow.training.loop import train_cell

    path, labels = _jpeg_store(tmp, image_size)
    if damage:
        damage(path)
    config = copy.deepcopy(BASE)
    config["datasets"]["digits"]["storage"] = "jpeg"
    config["training"] = {
        **config.get("training", {}),
        "epochs": 1,
        "batch_size": 8,
        "loader_workers": 2,
        **training,
    }
    settings = cell_settings(
        load_config(config), Cell("digits", "full", "small_cnn", "ce", 0)
    )
    train_cell(
        JpegStore(path), labels, np.arange(len(labels)), 3, settings, progress=False
    )


def _flip_byte_of_image(index: int):
    def damage(path: Path):
        from workflow.jpeg_store import JpegStore

        at = int(JpegStore(path).offsets[index]) + 40
        data = bytearray(path.read_bytes())
        data[at] ^= 0xFF
        path.write_bytes(bytes(data))

    return damage


def _undecodable_image(tmp: Path):
    """A store whose image 1 has a right checksum but is no JPEG the
    decoder takes (what a JPEG Pillow reads but libjpeg-turbo refuses
    would give)."""
    from workflow.jpeg_store import JpegStore, StoreWriter

    path, labels = _jpeg_store(tmp)
    store = JpegStore(path)
    writer = StoreWriter(tmp / "bad.jpegs", 24)
    for i in range(len(store)):
        data = store.read([i])[0].numpy().tobytes()
        writer.add(
            b"\xff\xd8" + bytes(300) if i == 1 else data,
            int(store.heights[i]),
            int(store.widths[i]),
        )
    writer.close()
    (tmp / "bad.jpegs").replace(path)
    JpegStore(path).decode(np.arange(len(labels)))


# (id, what fails, fragments): a damaged store stops the job naming the
# image (index and original file), the dataset and what to do.
JPEG_STORE_CASES = [
    (
        "flipped_byte_in_a_stored_jpeg",
        lambda tmp: _train_from_store(tmp, _flip_byte_of_image(3)),
        [
            "data/pics/images.jpegs: image 3 (file train/cat/img03.png) of dataset pics is corrupt "
            "(its bytes do not match the checksum written by prepare)",
            "Delete it and run Snakemake again",
        ],
    ),
    (
        "jpeg_store_cut_short",
        lambda tmp: _train_from_store(
            tmp, lambda p: p.write_bytes(p.read_bytes()[:-100])
        ),
        [
            "data/pics/images.jpegs: the JPEG store of dataset pics is cut short or is no JPEG store",
            "Delete it and run Snakemake again",
        ],
    ),
    (
        "stored_image_that_does_not_decode",
        _undecodable_image,
        [
            "data/pics/images.jpegs: image 1 (file train/cat/img01.png) of dataset pics does not decode "
            "(Image is incomplete or truncated)"
        ],
    ),
    (
        "jpeg_store_of_own_sizes_without_an_input_size",
        lambda tmp: _train_from_store(tmp, image_size=None),
        [
            "dataset pics is stored as JPEGs of their own sizes (storage: jpeg without image_size)",
            "needs training.input_size: set it (e.g. 224), or set the dataset's image_size",
        ],
    ),
]


@pytest.mark.parametrize("case", JPEG_STORE_CASES, ids=[c[0] for c in JPEG_STORE_CASES])
def test_jpeg_store_error(tmp_path, case):
    _, fail, fragments = case
    with pytest.raises(Exception) as error:
        fail(tmp_path)
    for fragment in fragments:
        assert fragment in str(error.value), f"{fragment!r} not in {error.value}"


# ---------------------------------------------------------------- evaluation (all against all)


def _cell_embeddings(split, n=20, classes=4):
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "index": np.arange(n),
            "split": split,
            "label": np.arange(n) % classes,
            "prediction": np.full(n, -1),
            "embedding": list(rng.normal(size=(n, 4))),
        }
    )


def _evaluate(embeddings, evaluation):
    from workflow.evaluate import evaluate_cell

    return evaluate_cell(
        embeddings, pd.DataFrame({"label": [], "anchor": []}), evaluation
    )


# (id, what fails, fragments of its message)
EVALUATION_CASES = [
    (
        "all_against_all_rows_mixed_with_queries",
        lambda tmp: _evaluate(_cell_embeddings(["all"] * 15 + ["query"] * 5), {}),
        [
            "embeddings mix split 'all' (all against all) with query",
            "delete results/splits/<dataset>/",
        ],
    ),
    (
        "recall_cutoff_beyond_the_other_test_images",
        lambda tmp: _evaluate(_cell_embeddings("all"), {"recall_at": [1, 20]}),
        [
            "config key evaluation.recall_at: cutoff 20 exceeds the database of this cell (19 images)"
        ],
    ),
    (
        "all_against_all_with_single_image_classes",
        lambda tmp: _evaluate(_cell_embeddings("all", n=4, classes=4), {}),
        ["none of the 4 queries has a class with another item"],
    ),
]


@pytest.mark.parametrize("case", EVALUATION_CASES, ids=[c[0] for c in EVALUATION_CASES])
def test_evaluation_case(tmp_path, case):
    _, fail, fragments = case
    with pytest.raises(Exception) as error:
        fail(tmp_path)
    for fragment in fragments:
        assert fragment in str(error.value), f"{fragment!r} not in {error.value}"


CATALOGUE = [
    PLANTED_CASES,
    RESULT_FILE_CASES,
    CHECKPOINT_CASES,
    MODEL_CASES,
    JOB_CASES,
    JPEG_STORE_CASES,
    EVALUATION_CASES,
]

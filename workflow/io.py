"""Atomic file output and the provenance written into every Parquet file.

Every output is written under a temporary name beside it and renamed onto
it when complete (:func:`atomic_path`), so that a failed or killed write
leaves no partial output. A write stops with a message naming the path and
what to do, before anything is written, when the output's path is a folder
or lies under a file, and when the free space of its file system is less
than the bytes it will write (:func:`check_free_space`); a full disk met
while writing (``ENOSPC``) is named the same way, and its temporary removed.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from workflow.job_guard import temporary, writing


def ordinary_mode(base: int = 0o666) -> int:
    """The mode ``open`` would give a new file (``base`` 0o666) or ``mkdir``
    a new folder (0o777) under the process's umask. ``tempfile`` makes its
    files and folders private (0600, 0700) whatever the umask; outputs
    renamed from them get this mode instead, so that on a shared cluster
    ``results/`` is as readable as the user's umask says."""
    umask = os.umask(0)
    os.umask(umask)
    return base & ~umask


class OutputPathError(RuntimeError):
    """An output cannot be written where it belongs: its path is a folder,
    a folder above it is a file, or its file system lacks the space."""


def _mib(size: int) -> str:
    return f"{size / 2**20:,.1f} MiB"


def free_space_margin(size: int) -> int:
    """Bytes kept free beyond a write of ``size`` bytes: 64 KiB and 1 %
    (file system blocks and metadata, the write's own estimate)."""
    return 2**16 + size // 100


def output_name(path) -> str:
    """The name of the output ``path`` is written for: its own name, or for
    a temporary of :func:`atomic_path` (``.<name>.<random>.tmp``) ``name``."""
    name = Path(path).name
    match = re.fullmatch(r"\.(.+)\.[^.]+\.tmp", name)
    return match.group(1) if match else name


def check_free_space(path, size: int, what: str | None = None) -> None:
    """Stop, naming the folder and the bytes, unless the file system of
    ``path``'s folder has ``size`` bytes free for it (and a small margin).
    ``what`` is written (default: the file's name)."""
    folder = Path(path).parent
    need, free = size + free_space_margin(size), shutil.disk_usage(folder).free
    if free < need:
        raise OutputPathError(
            f"{folder}: no room for {what or output_name(path)}: writing it needs {need:,} bytes ({_mib(need)}, "
            f"with a margin of {free_space_margin(size):,}) but the file system holding {folder} has {free:,} "
            f"bytes ({_mib(free)}) free. Nothing was written. Free space on that file system (or move results/ "
            "to a larger disk and link it), then run Snakemake again."
        )


@contextlib.contextmanager
def disk_full_named(folder):
    """A full disk (``ENOSPC``, ``EDQUOT``) met in the block, writing into
    ``folder``, becomes an error naming the folder and what to do; the
    caller removes its partial files."""
    try:
        yield
    except OSError as error:
        # pyarrow's IOError carries no errno, only the system's message.
        if error.errno not in (
            errno.ENOSPC,
            errno.EDQUOT,
        ) and "No space left on device" not in str(error):
            raise
        raise OutputPathError(
            f"{folder}: its file system ran out of space while this job wrote there ({error.strerror or error}). "
            "The partial files were removed. Free space on that file system (or move results/ to a larger disk "
            "and link it), then run Snakemake again."
        ) from None


def check_output_path(path, folder: bool = False) -> None:
    """Stop, naming the path and what to do, when ``path`` (an output file;
    with ``folder``, an output folder) is a folder (a file), or a folder
    above it is a file: writing there would fail with a bare
    ``IsADirectoryError``, ``NotADirectoryError`` or ``FileExistsError``."""
    path = Path(path)
    if not folder and path.is_dir():
        raise OutputPathError(
            f"{path}: a folder where the pipeline writes a file. Move it away or delete it "
            f"(rm -r {path}), then run Snakemake again."
        )
    if folder and (path.exists() or path.is_symlink()) and not path.is_dir():
        raise OutputPathError(
            f"{path}: a file where the pipeline writes a folder. Move it away or delete it, "
            "then run Snakemake again."
        )
    for above in path.parents:
        if above.exists() or above.is_symlink():
            if not above.is_dir():
                raise OutputPathError(
                    f"{above}: a file where the pipeline needs a folder (to write {path}). Move it away or "
                    f"delete it, then run Snakemake again."
                )
            break


@contextlib.contextmanager
def atomic_path(path, size: int | None = None):
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if
    the block finishes, so no reader ever sees a partial file. Temporaries
    of ``path`` left by a killed writer are removed first. With ``size``
    (the bytes the block will write), the free space is checked first
    (:func:`check_free_space`)."""
    path = Path(path)
    check_output_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # One job writes each path (Snakemake gives every output one job), so
    # another temporary of this path was left by a writer that was killed.
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        stale.unlink(missing_ok=True)
    if size is not None:
        check_free_space(path, size)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    os.chmod(tmp, ordinary_mode())
    try:
        with disk_full_named(path.parent), temporary(tmp):
            yield Path(tmp)
            with writing():  # no output appears once the job's Snakemake has ended
                os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def reserve(file, size: int) -> None:
    """Allocate ``size`` bytes of the open ``file`` on disk now, so that
    writes through a memory map of it never meet a full disk (a memory map
    gets SIGBUS there, which kills the process naming nothing); a full disk
    raises ``OSError`` (``ENOSPC``) here instead."""
    try:
        os.posix_fallocate(file.fileno(), 0, size)
    except OSError as error:
        if error.errno in (errno.EINVAL, errno.EOPNOTSUPP):
            return  # a file system without it: the free-space check must do
        raise


def save_npy(path, array: np.ndarray) -> None:
    with atomic_path(path, size=array.nbytes) as tmp, open(tmp, "wb") as f:
        np.save(f, array)


def save_json(path, obj) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def save_csv(path, frame: pd.DataFrame) -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def save_text(path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def save_parquet(
    path, table: pa.Table | pd.DataFrame, metadata: dict | None = None
) -> None:
    """Write Parquet atomically; ``metadata`` goes to the file's key-value
    metadata under ``cbir`` as JSON."""
    if isinstance(table, pd.DataFrame):
        table = pa.Table.from_pandas(table, preserve_index=False)
    if metadata is not None:
        existing = table.schema.metadata or {}
        table = table.replace_schema_metadata(
            {**existing, b"cbir": json.dumps(metadata, sort_keys=True).encode()}
        )
    with atomic_path(path, size=table.nbytes) as tmp:
        pq.write_table(table, tmp)


def read_metadata(path) -> dict:
    """The ``cbir`` metadata written by :func:`save_parquet`."""
    raw = pq.read_schema(path).metadata or {}
    return json.loads(raw.get(b"cbir", b"{}"))


def read_csv(path, columns: list[str]) -> pd.DataFrame:
    """A CSV file another rule wrote (a cell's ``metrics.csv``), naming the
    file and what to do when it is empty, unreadable, lacks a column or
    holds no rows: pandas' own errors name no file."""
    try:
        frame = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise ValueError(
            f"{path}: empty file, not a complete CSV; delete it and run Snakemake again"
        ) from None
    except (pd.errors.ParserError, UnicodeDecodeError) as error:
        raise ValueError(
            f"{path}: not a readable CSV file ({error}); delete it and run Snakemake again"
        ) from None
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(
            f"{path}: no column {', '.join(missing)} (has {', '.join(map(str, frame.columns))}); it was not "
            "written by this version of the pipeline, or is cut short. Delete it and run Snakemake again"
        )
    if frame.empty:
        raise ValueError(
            f"{path}: a header but no rows, not a complete file; delete it and run Snakemake again"
        )
    return frame


def save_figure(fig, png_path, pdf_path) -> None:
    """Save a matplotlib figure as PNG and PDF, atomically, and close it."""
    import matplotlib.pyplot as plt

    for path, kind in [(png_path, "png"), (pdf_path, "pdf")]:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=kind, bbox_inches="tight")
    plt.close(fig)


def git_commit() -> str:
    """The commit of the code that runs, with ``-dirty`` if it has local changes."""
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("-dirty" if dirty else "")


def check_result_paths(rules, root: str = "results", folders=()) -> None:
    """Before any job (called at the end of the Snakefile): stop, naming the
    path, the rule and what to do, when a folder under ``root`` stands where
    a rule writes a file (output, log or benchmark), or a file where the
    pipeline writes one of ``folders``. Snakemake takes such a folder for a
    finished output, and the rules that read it fail with a bare
    ``IsADirectoryError``. The folders of ``directory()`` outputs
    (extracted downloads, thousands of files) are not searched."""
    for folder in folders:
        check_output_path(folder, folder=True)
    files, outputs = [], []
    for rule in rules:
        paths = [*rule.output, *rule.log, *([rule.benchmark] if rule.benchmark else [])]
        for path in paths:
            (outputs if path.is_directory else files).append((path.regex(), rule.name))
    for top, dirs, _ in os.walk(root):
        for name in list(dirs):
            path = os.path.join(top, name)
            if any(regex.fullmatch(path) for regex, _ in outputs):
                dirs.remove(name)
                continue
            for regex, rule in files:
                if regex.fullmatch(path):
                    raise OutputPathError(
                        f"{path}: a folder where rule {rule} writes a file. Move it away or delete it "
                        f"(rm -r {path}), then run Snakemake again."
                    )

"""Atomic file output and the provenance written into every Parquet file."""

from __future__ import annotations

import contextlib
import glob
import json
import os
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq


def ordinary_mode(base: int = 0o666) -> int:
    """The mode ``open`` would give a new file (``base`` 0o666) or ``mkdir``
    a new folder (0o777) under the process's umask. ``tempfile`` makes its
    files and folders private (0600, 0700) whatever the umask; outputs
    renamed from them get this mode instead, so that on a shared cluster
    ``results/`` is as readable as the user's umask says."""
    umask = os.umask(0)
    os.umask(umask)
    return base & ~umask


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if
    the block finishes, so no reader ever sees a partial file. Temporaries
    of ``path`` left by a killed writer are removed first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # One job writes each path (Snakemake gives every output one job), so
    # another temporary of this path was left by a writer that was killed.
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        stale.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    os.chmod(tmp, ordinary_mode())
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def save_npy(path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
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


def save_parquet(path, table: pa.Table | pd.DataFrame, metadata: dict | None = None) -> None:
    """Write Parquet atomically; ``metadata`` goes to the file's key-value
    metadata under ``cbir`` as JSON."""
    if isinstance(table, pd.DataFrame):
        table = pa.Table.from_pandas(table, preserve_index=False)
    if metadata is not None:
        existing = table.schema.metadata or {}
        table = table.replace_schema_metadata(
            {**existing, b"cbir": json.dumps(metadata, sort_keys=True).encode()}
        )
    with atomic_path(path) as tmp:
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
        raise ValueError(f"{path}: empty file, not a complete CSV; delete it and run Snakemake again") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: not a readable CSV file ({error}); delete it and run Snakemake again") from None
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(
            f"{path}: no column {', '.join(missing)} (has {', '.join(map(str, frame.columns))}); it was not "
            "written by this version of the pipeline, or is cut short. Delete it and run Snakemake again"
        )
    if frame.empty:
        raise ValueError(f"{path}: a header but no rows, not a complete file; delete it and run Snakemake again")
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
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root, capture_output=True, text=True, check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("-dirty" if dirty else "")

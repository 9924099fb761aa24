"""A train job is alone with its cell, and no job outlives the Snakemake
process that started it.

- :func:`cell_lock`: an exclusive ``flock`` on a lock file beside the cell's
  resume checkpoint, held for the whole job. The operating system releases
  it when the process ends, however it ends, so a lock left by a killed job
  never blocks the next one. A second job of the same cell (a job left
  running after its Snakemake was killed, a second Snakemake started with
  ``--nolock``, a SLURM job not cancelled) stops at once with
  :class:`CellBusyError`, naming the cell and the PID and host holding the
  lock, before it reads or writes anything: otherwise the two would
  overwrite each other's checkpoint, and the last to finish would write
  ``model.pt``.
- :class:`ParentWatch`: every job (started by ``workflow/scripts/_repo_path.py``,
  which each rule script imports first: :func:`watch_parent`) watches its
  parent process (the Snakemake process that runs it). When that ends
  (``kill -9`` of Snakemake leaves its jobs running, now children of
  init), the job stops within a second, exit status 1, without writing
  anything more: no output appears after its parent has ended (an output
  appears by a rename, done inside :func:`writing`), a rename in progress is
  finished first, and the temporaries of unfinished writes are removed.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import socket
import sys
import threading
import time
from pathlib import Path


class CellBusyError(RuntimeError):
    """Another live job holds the cell's lock."""


def lock_path(checkpoint_path) -> Path:
    """The lock file of the cell whose resume checkpoint is ``checkpoint_path``."""
    checkpoint_path = Path(checkpoint_path)
    return checkpoint_path.with_name(checkpoint_path.name + ".lock")


@contextlib.contextmanager
def cell_lock(path, cell: str):
    """Hold the exclusive lock ``path`` for the block; it holds this
    process's PID and host. The lock file is removed on leaving, while still
    held (a job that opened the old file then finds it gone and tries again,
    so two jobs never hold two files of one name)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        # os.open: the lock file is not an output (nothing reads its bytes
        # but the busy message), so it needs no temporary name.
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode(errors="replace").split() or [
                "unknown",
                "unknown",
            ]
            os.close(fd)
            pid, host = (holder + ["unknown"])[:2]
            raise CellBusyError(
                f"cell {cell}: another train job is training it (PID {pid} on host {host} holds the lock {path}). "
                "Two jobs of one cell would overwrite each other's checkpoint and model. Wait for that job to "
                f"end, or stop it (kill {pid} on {host}, or scancel its SLURM job), then run Snakemake again."
            ) from None
        try:
            same_file = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same_file = False
        if same_file:
            break
        os.close(fd)  # the holder removed the file as we opened it: take the new one
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
        yield path
    finally:
        path.unlink(missing_ok=True)
        os.close(fd)


class ParentWatch:
    """Stops this process (exit status 1, a line on stderr) once its parent
    process has ended, checking every ``interval`` seconds in a daemon
    thread. Writes go inside :meth:`writing`: none starts after the parent
    ended, and a stop waits for the one in progress (writes may nest). The
    paths in :attr:`temporaries` (files or folders) are removed on a stop."""

    def __init__(self, interval: float = 0.5):
        self.parent = os.getppid()
        self.interval = interval
        self.temporaries: set[str] = set()
        self._writing = threading.RLock()
        threading.Thread(target=self._watch, name="parent-watch", daemon=True).start()

    def orphaned(self) -> bool:
        # A process whose parent ended is handed to init (or a subreaper).
        return os.getppid() != self.parent

    def _watch(self) -> None:
        while not self.orphaned():
            time.sleep(self.interval)
        with self._writing:
            self._stop()

    @contextlib.contextmanager
    def writing(self):
        with self._writing:
            if self.orphaned():
                self._stop()
            yield

    def _stop(self) -> None:
        for path in list(self.temporaries):
            if os.path.isdir(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    os.unlink(path)
        print(
            f"stopping: the Snakemake process that started this job (PID {self.parent}) has ended, so this "
            "job writes nothing more. Run Snakemake again (after snakemake --unlock, with --rerun-incomplete).",
            file=sys.stderr,
            flush=True,
        )
        os._exit(1)  # from any thread, at once; the lock goes with the process


_watch: ParentWatch | None = None


def watch_parent() -> ParentWatch:
    """This process's :class:`ParentWatch`, started on the first call."""
    global _watch
    if _watch is None:
        _watch = ParentWatch()
    return _watch


@contextlib.contextmanager
def writing():
    """Around a rename that makes an output appear: within a job, it never
    happens once the parent has ended (:meth:`ParentWatch.writing`); outside
    one (tests, notebooks) nothing is watched."""
    if _watch is None:
        yield
    else:
        with _watch.writing():
            yield


@contextlib.contextmanager
def temporary(path):
    """Within a job, ``path`` (a temporary file or folder) is removed should
    the job stop because its parent ended."""
    if _watch is not None:
        _watch.temporaries.add(str(path))
    try:
        yield
    finally:
        if _watch is not None:
            _watch.temporaries.discard(str(path))

"""One GPU per job: which device a train or embed job runs on.

Snakemake counts the ``gpu`` resource but never tells a local job which GPU
it holds (snakemake/snakemake#281): every job asking for plain ``cuda``
would land on device 0. So a job that may use a GPU claims one for its
whole run (:func:`claim_device`): an exclusive ``flock`` on a lock file per
(device, slot) in :func:`lock_dir`, among the devices the job may see
(``CUDA_VISIBLE_DEVICES`` if set, else all), with ``jobs_per_gpu`` slots per
device. The operating system releases the lock however the job ends, so a
killed job's device is free at once. Slots are tried slot by slot across
the devices, so jobs spread over the GPUs before they share one. When
every slot is held the job waits, saying so in its log.

- ``training.device: cpu`` or a pinned ``cuda:N`` claims nothing.
- Under SLURM (``SLURM_JOB_ID`` set) with ``CUDA_VISIBLE_DEVICES`` set, the
  scheduler has given the job its GPU: it uses the first it sees, unlocked.
- ``CBIR_SIMULATED_GPUS=n`` (tests on a machine without a GPU) makes the
  claim see ``n`` devices and hold their locks, while the job computes on
  the CPU; the claimed index is recorded as it would be on a GPU.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

SIMULATED = "CBIR_SIMULATED_GPUS"
LOCK_DIR = "CBIR_GPU_LOCK_DIR"
# How often a job waiting for a free GPU tries again.
RETRY_SECONDS = 0.5


@dataclass(frozen=True)
class Claim:
    """The device a job runs on; ``index`` is the device's id as the
    machine names it (an entry of CUDA_VISIBLE_DEVICES, or its position
    when that is unset), None on the CPU; ``slot`` the share of it held."""

    device: torch.device
    index: str | None = None
    slot: int | None = None

    def record(self) -> dict:
        """What ``train_stats.json`` keeps of the claim."""
        return {"device_index": self.index, "device_slot": self.slot}


def lock_dir() -> Path:
    """Where the per-device locks live: one folder per machine and user
    (``CBIR_GPU_LOCK_DIR`` overrides it), shared by every job of every
    Snakemake run there."""
    return Path(os.environ.get(LOCK_DIR) or f"/tmp/cbir-bench-gpu-locks-{os.getuid()}")


def visible_devices() -> list[str]:
    """The ids of the GPUs this job may use: the entries of
    ``CUDA_VISIBLE_DEVICES`` when set (numbers or UUIDs), else 0 .. n-1."""
    count = (
        int(os.environ[SIMULATED])
        if os.environ.get(SIMULATED)
        else torch.cuda.device_count()
    )
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        ids = [entry.strip() for entry in listed.split(",") if entry.strip()]
        return ids[:count] if count < len(ids) else ids
    return [str(i) for i in range(count)]


def _try_lock(path: Path, note: str) -> int | None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    os.ftruncate(fd, 0)
    os.write(fd, note.encode())
    return fd


@contextlib.contextmanager
def claim_device(requested: str, jobs_per_gpu: int = 1, job: str = "job", log=None):
    """Hold a device for the block (see the module docstring) and yield its
    :class:`Claim`. ``requested`` is ``training.device``: ``auto`` (a GPU
    when there is one, else the CPU), ``cuda`` (a GPU, an error without
    one), ``cuda:N`` (that GPU, pinned) or ``cpu``."""
    log = log or (lambda line: print(line, file=sys.stderr))
    if requested == "cpu" or re.fullmatch(r"cuda:\d+", requested):
        device = torch.device(requested)
        if device.type == "cuda" and (
            not torch.cuda.is_available() or device.index >= torch.cuda.device_count()
        ):
            raise RuntimeError(
                f"training.device is {requested!r} but this machine has {torch.cuda.device_count()} CUDA "
                "device(s); pin one that exists, or use auto"
            )
        yield Claim(device, None if device.type == "cpu" else str(device.index))
        return
    devices = visible_devices()
    simulated = bool(os.environ.get(SIMULATED))
    if not devices:
        if requested == "cuda":
            raise RuntimeError(
                "training.device is 'cuda' but no CUDA device is available"
            )
        yield Claim(torch.device("cpu"))
        return
    if (
        os.environ.get("SLURM_JOB_ID")
        and os.environ.get("CUDA_VISIBLE_DEVICES") is not None
    ):
        log(f"device: GPU {devices[0]}, given to this SLURM job by the scheduler")
        yield Claim(torch.device("cpu" if simulated else "cuda:0"), devices[0])
        return
    folder = lock_dir()
    folder.mkdir(parents=True, exist_ok=True)
    note = f"{os.getpid()} {socket.gethostname()} {job}\n"
    waited = False
    while True:
        for slot in range(jobs_per_gpu):
            for position, device_id in enumerate(devices):
                safe = re.sub(r"[^A-Za-z0-9_.-]", "_", device_id)
                fd = _try_lock(folder / f"gpu-{safe}.slot{slot}.lock", note)
                if fd is None:
                    continue
                try:
                    log(
                        f"device: GPU {device_id} (slot {slot + 1} of {jobs_per_gpu}"
                        + (", simulated: computing on the CPU" if simulated else "")
                        + ")"
                    )
                    yield Claim(
                        torch.device("cpu" if simulated else f"cuda:{position}"),
                        device_id,
                        slot,
                    )
                finally:
                    os.close(fd)  # releases the lock
                return
        if not waited:
            log(
                f"device: all {len(devices)} GPU(s) x {jobs_per_gpu} job(s) per GPU are held by other jobs "
                f"(locks in {folder}); waiting for one to end"
            )
            waited = True
        time.sleep(RETRY_SECONDS)

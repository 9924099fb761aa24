"""TensorBoard event files of a train job (config key ``tensorboard``).

Each epoch's history record (:func:`workflow.training.loop.train_epoch`) becomes
scalars at step = epoch (1, 2, ...): ``loss``, ``accuracy``, ``lr``, and
``terms/<name>`` and ``diagnostics/<name>`` (e.g. CAM's attractor, repeller,
min_norm and its fractions ``pairs_within_margin`` and
``anchors_below_min_norm``).

Two places, so that no half-written log is ever taken for a finished one:

- **live**, while the job trains: ``live/`` beside the cell's resume
  checkpoint (``results/checkpoints/{cell}/tensorboard/``, not a Snakemake
  output, deleted with the checkpoint); a resumed job purges the steps after
  the checkpoint's epoch (``purge_step``) so that its curves continue
  without the epochs the killed job had logged past it;
- **final**, when the job ends: the whole history written once into a
  temporary folder and renamed onto ``results/tensorboard/{cell}/``
  (:func:`write_history`), before ``model.pt``, so it holds exactly the
  history in ``model.pt``.

``tensorboard --logdir results/tensorboard`` shows every finished cell (one
run per cell folder); ``--logdir results/checkpoints`` the running ones.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from workflow.io import check_output_path, ordinary_mode


def final_folder(checkpoint_path) -> Path:
    """``results/tensorboard/...`` for the resume checkpoint
    ``results/checkpoints/.../last.pt``: the same cell folder (a trial's
    under ``trials/``, as its checkpoint), so that the train rule needs no
    further parameter (a new parameter would rerun every finished cell)."""
    parts = Path(checkpoint_path).parent.parts
    if "checkpoints" not in parts:
        raise ValueError(f"{checkpoint_path} is not under a checkpoints folder")
    i = parts.index("checkpoints")
    return Path(*parts[:i], "tensorboard", *parts[i + 1 :])


def scalars(record: dict) -> dict[str, float]:
    """Tag -> value of one epoch's history record (bookkeeping left out)."""
    out = {
        name: float(record[name])
        for name in ("loss", "accuracy", "lr")
        if name in record
    }
    for part in ("terms", "diagnostics"):
        for name, value in (record.get(part) or {}).items():
            out[f"{part}/{name}"] = float(value)
    return out


def _writer(folder, purge_step=None):
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir=str(folder), purge_step=purge_step, flush_secs=30)


def add_epoch(writer, epoch: int, record: dict) -> None:
    """Log one epoch's record at step ``epoch`` (1-based)."""
    for tag, value in scalars(record).items():
        writer.add_scalar(tag, value, epoch)


class LiveLog:
    """The live event files of a running job in ``folder``: a fresh start
    (``first_epoch`` 0) clears what an earlier run left; a resume from a
    checkpoint after epoch E purges the steps above E."""

    def __init__(self, folder, first_epoch: int):
        self.folder = Path(folder)
        if first_epoch == 0:
            shutil.rmtree(self.folder, ignore_errors=True)
        self.writer = _writer(
            self.folder, purge_step=first_epoch + 1 if first_epoch else None
        )

    def add(self, epoch: int, record: dict) -> None:
        add_epoch(self.writer, epoch, record)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def write_history(folder, history: list[dict]) -> None:
    """The whole ``history`` as event files in ``folder``, written into a
    temporary folder beside it and renamed onto it when complete (an
    existing ``folder``, from an earlier run of the cell, is replaced)."""
    folder = Path(folder)
    check_output_path(folder, folder=True)
    folder.parent.mkdir(parents=True, exist_ok=True)
    # Temporaries left by a killed writer of this folder.
    for stale in folder.parent.glob(f".{folder.name}.*.tmp"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(
        tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.", suffix=".tmp")
    )
    try:
        writer = _writer(tmp)
        for epoch, record in enumerate(history, start=1):
            add_epoch(writer, epoch, record)
        writer.close()
        os.chmod(tmp, ordinary_mode(0o777))
        if folder.exists():
            old = folder.with_name(f".{folder.name}.old.tmp")
            os.replace(folder, old)
            shutil.rmtree(old)
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

"""Resuming a cell's training: what its resume checkpoint holds
(:meth:`Training.state_dict`, :data:`RESUME_KEYS`) and when a checkpoint
found on disk is trusted (:func:`load_resume_checkpoint`). The file is
written with :func:`workflow.checkpoints.save_torch` and read with
:func:`workflow.checkpoints.load_checkpoint`."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from workflow.checkpoints import CheckpointError, load_checkpoint
from workflow.training.step import TrainStep


@dataclass
class Training:
    """Everything one cell's training holds; ``state_dict`` is the resume
    checkpoint (plain data and tensors, so ``torch.load(weights_only=True)``
    reads it)."""

    backbone: torch.nn.Module
    loss_fn: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: object
    batches: object
    batch_generator: torch.Generator
    augment_generator: torch.Generator
    step: TrainStep
    mean: torch.Tensor
    std: torch.Tensor
    device: torch.device
    speed: dict
    in_channels: int
    image_size: int
    # The dataset label of each class the loss sees
    # (:func:`workflow.training.inputs.training_classes`).
    class_ids: np.ndarray
    history: list = field(default_factory=list)

    def state_dict(self) -> dict:
        numpy_state = np.random.get_state()
        return {
            "epoch": len(self.history),
            "history": self.history,
            "backbone": self.backbone.state_dict(),
            "loss": self.loss_fn.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "sampler": self.batches.state_dict(),
            "rng": {
                "batches": self.batch_generator.get_state(),
                "augment": self.augment_generator.get_state(),
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all()
                if self.device.type == "cuda"
                else [],
                "python": random.getstate(),
                "numpy": [numpy_state[0], numpy_state[1].tolist(), *numpy_state[2:]],
            },
        }

    def load_state_dict(self, state: dict) -> None:
        self.history[:] = state["history"]
        self.backbone.load_state_dict(state["backbone"])
        self.loss_fn.load_state_dict(state["loss"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.batches.load_state_dict(state["sampler"])
        rng = state["rng"]
        self.batch_generator.set_state(rng["batches"])
        self.augment_generator.set_state(rng["augment"])
        torch.set_rng_state(rng["torch"])
        if rng["cuda"]:
            torch.cuda.set_rng_state_all(rng["cuda"])
        random.setstate(rng["python"])
        name, keys, *rest = rng["numpy"]
        np.random.set_state((name, np.asarray(keys, dtype=np.uint32), *rest))


# What a resume checkpoint holds (Training.state_dict and the settings hash).
RESUME_KEYS = (
    "settings_hash",
    "epoch",
    "history",
    "backbone",
    "loss",
    "optimizer",
    "scheduler",
    "sampler",
    "rng",
)


def load_resume_checkpoint(path, expected_hash: str, log=print) -> dict | None:
    """The resume checkpoint at ``path`` if it exists and was written for
    settings with hash ``expected_hash``; otherwise None (with a log line).
    A file that is no resume checkpoint (corrupt, foreign) is ignored the
    same way: it is never trusted, and it never stops a rerun."""
    if path is None or not Path(path).exists():
        return None
    try:
        state = load_checkpoint(path, "resume checkpoint", keys=RESUME_KEYS, advice="")
    except CheckpointError as error:
        log(
            f"ignoring checkpoint {str(error).strip().rstrip('.')}; training from the start"
        )
        return None
    if state.get("settings_hash") != expected_hash:
        log(
            f"ignoring checkpoint {path}: written for settings {state.get('settings_hash')}, "
            f"these are {expected_hash}; training from the start"
        )
        return None
    log(f"resuming from {path} after epoch {state['epoch']}")
    return state

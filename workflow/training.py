"""train: one cell = one backbone trained with one loss on one split.

Deterministic on the CPU for a given seed (same settings, same bits), also
when the job is killed and resumed from its last checkpoint.

Input pipeline: the training images are held on the device once, as uint8
(N, C, H, W) (a quarter of float32's memory); each batch is gathered by
indexing, augmented on the device (``workflow.augment``) and normalised
there, so there is no DataLoader, no per-image Python and no host-to-device
copy per step. This fits every dataset of this benchmark at its configured
size (CIFAR-100 at 32x32: 150 MB). Larger ones (Places365 train-standard at
64x64 would be 22 GB) stay in host memory with ``training.data_on_device:
false`` (:class:`HostImages`: DataLoader workers read each epoch's batches
ahead into pinned memory).

Speed settings (``training.precision``, ``channels_last``, ``compile``, see
:func:`resolve_speed`) change the arithmetic, not the algorithm: bf16
autocast runs the backbone in bfloat16 and the loss in float32.
"""

from __future__ import annotations

import functools
import io
import json
import os
import random
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.profiler import record_function
from tqdm.auto import tqdm

from workflow.augment import (
    RRC_CROP_FRACTION,
    RRC_RATIO,
    RRC_SCALE,
    augment,
    augment_padded,
)
from workflow.backbones import build_backbone
from workflow.backbones.weights import input_normalisation
from workflow.checkpoints import CheckpointError, load_checkpoint
from workflow.config import CELL_PATTERN, ConfigError, settings_hash
from workflow.devices import claim_device
from workflow.io import atomic_path, check_output_path, save_json
from workflow.job_guard import cell_lock, lock_path, watch_parent
from workflow.jpeg_store import JpegImages, JpegStore
from workflow.losses import build_loss, loss_classifies
from workflow.memory import check_fits
from workflow.samplers import make_batches
from workflow.seeds import stream_seed
from workflow.splits import MIN_CLASSES
from workflow.training_log import LiveLog, write_history

# Training keys added after the first schema; settings built by hand (tests,
# benchmarks) may omit them and get these values, the schema's defaults.
SPEED_DEFAULTS = {
    "augment": "none",
    "augment_padding": 4,
    "input_size": None,
    "augment_scale": {"min": RRC_SCALE[0], "max": RRC_SCALE[1]},
    "augment_ratio": {"min": RRC_RATIO[0], "max": RRC_RATIO[1]},
    "eval_crop_fraction": None,
    "precision": "auto",
    "channels_last": "auto",
    "compile": False,
    "checkpoint_every": 1,
    "data_on_device": True,
    "loader_workers": 4,
}


def select_device(requested: str = "auto") -> torch.device:
    """The device of ``training.device`` outside a job (tests, benchmarks);
    jobs claim theirs with :func:`workflow.devices.claim_device`."""
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("training.device is 'cuda' but no CUDA device is available")
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(requested)


def training_option(cfg: dict, key: str):
    return cfg.get(key, SPEED_DEFAULTS[key])


def bounds(cfg: dict, key: str) -> tuple[float, float]:
    """(min, max) of a range setting (``training.augment_scale``, ``augment_ratio``)."""
    value = training_option(cfg, key)
    return value["min"], value["max"]


def input_view(cfg: dict, height: int, width: int) -> tuple[int | None, float]:
    """The backbone's input side and the evaluation crop fraction of
    training settings ``cfg`` for images stored at ``height`` x ``width``:
    ``training.input_size``, or with ``augment: rrc*`` the stored shorter
    side, or None (the stored images as they are: the default);
    ``training.eval_crop_fraction``, or 0.875 with ``rrc*`` (torchvision's
    224 of 256), else 1 (the whole image)."""
    rrc = training_option(cfg, "augment") in ("rrc", "rrc_flip")
    size = training_option(cfg, "input_size")
    if size is None and rrc:
        size = min(height, width)
    fraction = training_option(cfg, "eval_crop_fraction")
    if fraction is None:
        fraction = RRC_CROP_FRACTION if rrc else 1.0
    return size, fraction


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes in bfloat16 natively (AVX512-BF16 or AMX),
    where oneDNN's bf16 kernels beat fp32; without them PyTorch emulates
    bf16, usually slower than fp32."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, probe, lambda: False)() for probe in probes)


def resolve_speed(cfg: dict, device: torch.device) -> dict:
    """The effective speed settings of a cell on ``device``: ``auto`` is
    the fastest measured setting (benchmarks/throughput.py) that keeps the
    CPU's numbers the same on every CPU.

    - ``precision``: ``auto`` is ``fp32`` on the CPU, so that the default
      config gives the same numbers on every CPU (with ``bf16`` they would
      depend on whether the CPU computes bfloat16 natively), and ``bf16`` on
      a CUDA device that supports bfloat16 (there results depend on the GPU
      model and library versions anyway; ``fp32`` pins them closer). ``bf16``
      stays available on the CPU: 1.6-1.9x fp32's training speed on a 2-core
      AMD EPYC with AVX512-BF16 (:func:`cpu_has_native_bf16`;
      benchmarks/throughput.py), emulated and slower on CPUs without it.
    - ``channels_last``: ``auto`` is on (tensor cores want NHWC; on the
      CPU it trained convolutional backbones 1.1-1.5x faster in fp32 and up
      to 1.4x in bf16, and left Swin-T unchanged).
    - ``compile``: ``torch.compile`` of backbone and loss (``True`` is the
      ``default`` mode; a mode name is passed on), only when asked: it
      costs tens of seconds per job before the first step, which the short
      cells of this benchmark do not win back, and it needs a C++ compiler.
    """
    precision = training_option(cfg, "precision")
    if precision == "auto":
        precision = (
            "bf16"
            if device.type == "cuda" and torch.cuda.is_bf16_supported()
            else "fp32"
        )
    if precision not in ("fp32", "bf16"):
        raise ValueError(
            f"training.precision: unknown precision {precision!r}; use auto, fp32 or bf16"
        )
    channels_last = training_option(cfg, "channels_last")
    compile = training_option(cfg, "compile")
    return {
        "precision": precision,
        "channels_last": True if channels_last == "auto" else bool(channels_last),
        "compile": "default"
        if compile is True
        else compile,  # False or a torch.compile mode
    }


def seed_everything(seed: int) -> None:
    """Seed the global Python, NumPy and torch generators from the cell's
    ``init`` stream (:mod:`workflow.seeds`): weight initialisation."""
    init = stream_seed(seed, "init")
    random.seed(init)
    np.random.seed(init % 2**32)
    torch.manual_seed(init)


def to_tensor(
    images: np.ndarray, mean: torch.Tensor, std: torch.Tensor, device
) -> torch.Tensor:
    """uint8 (N, H, W, C) -> normalised float (N, C, H, W) on ``device``."""
    x = torch.as_tensor(np.ascontiguousarray(images), device=device)
    return normalise(x.permute(0, 3, 1, 2), mean, std)


def normalise(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 (B, C, H, W) -> float (x / 255 - mean) / std, per channel."""
    x = x.float().div_(255.0)
    return (x - mean.to(x.device).view(1, -1, 1, 1)) / std.to(x.device).view(
        1, -1, 1, 1
    )


def build_models(settings: dict, in_channels: int, image_size: int, num_classes: int):
    backbone = build_backbone(
        settings["arch"],
        in_channels=in_channels,
        image_size=image_size,
        embedding_size=settings["embedding_size"],
        **settings["backbone_params"],
    )
    loss = build_loss(
        settings["loss_impl"],
        num_classes=num_classes,
        embedding_size=settings["embedding_size"],
        **settings["loss_params"],
    )
    return backbone, loss


def parameter_groups(
    backbone, loss_fn, lr: float, lr_multiplier: float = 1.0
) -> list[dict]:
    """Optimiser parameter groups: the backbone at ``lr``, the loss's own
    parameters (anchors, centres, proxies, class weights) at
    ``lr * lr_multiplier`` (``losses.<name>.lr_multiplier``). Schedules scale
    both groups alike."""
    groups = [{"params": list(backbone.parameters()), "lr": lr}]
    loss_params = list(loss_fn.parameters())
    if loss_params:  # contrastive, triplet, supcon have none
        groups.append({"params": loss_params, "lr": lr * lr_multiplier})
    return groups


def make_optimizer(params, cfg: dict) -> torch.optim.Optimizer:
    """The optimiser of ``training.optimizer``, with PyTorch's fused kernel
    (one multi-tensor update per parameter group, on the CPU and on CUDA,
    instead of a loop over the parameter tensors): Adam's step for a CIFAR
    ResNet-18 took 8 ms fused against 47 ms unfused on one CPU thread here
    (16 ms through ``torch.compile``). The update is the same; its rounding
    may differ from the unfused loop's in the last bits."""
    name = cfg["optimizer"]
    if name == "adam":
        return torch.optim.Adam(
            params, lr=cfg["lr"], weight_decay=cfg["weight_decay"], fused=True
        )
    if name == "adamw":
        return torch.optim.AdamW(
            params, lr=cfg["lr"], weight_decay=cfg["weight_decay"], fused=True
        )
    if name == "sgd":
        return torch.optim.SGD(
            params,
            lr=cfg["lr"],
            momentum=cfg["momentum"],
            weight_decay=cfg["weight_decay"],
            fused=True,
        )
    raise ValueError(f"training.optimizer: unknown optimiser {name!r}")


def _constant(epoch: int) -> float:
    return 1.0


def make_scheduler(optimizer, cfg: dict):
    schedule = cfg["lr_schedule"]
    if schedule == "step":
        return torch.optim.lr_scheduler.StepLR(
            optimizer, step_size=cfg["lr_step_epochs"], gamma=cfg["lr_gamma"]
        )
    if schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=cfg["epochs"]
        )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, _constant)


# TrainStep's phases, each a ``step/<phase>`` range in a torch.profiler trace.
STEP_PHASES = ("inputs", "forward", "backward", "optimizer", "bookkeeping")


def _no_range(name: str) -> nullcontext:
    return nullcontext()


class TrainStep:
    """One optimisation step on a batch of indices into the training set.

    ``images`` are the training images on the device as uint8 (N, C, H, W);
    a step gathers the batch, augments it (``augment``, from ``generator``),
    normalises it, runs the backbone (under bf16 autocast when
    ``precision == "bf16"``), the loss in float32, backward and the
    optimiser. It returns device tensors and never synchronises with the
    device, so GPU steps queue up back to back. The training loop and
    ``benchmarks/throughput.py`` both call it; under ``torch.profiler`` its
    phases (``STEP_PHASES``) are named ``step/*`` ranges (the benchmark's
    breakdown of the step time). ``classifies``: the loss's registration
    says it has ``predict`` (:func:`workflow.losses.loss_classifies`), so a
    step counts its right predictions.
    """

    def __init__(
        self,
        backbone,
        loss_fn,
        optimizer,
        images,
        labels,
        mean,
        std,
        *,
        augment_mode="none",
        padding=4,
        generator=None,
        input_size=None,
        scale=RRC_SCALE,
        ratio=RRC_RATIO,
        precision="fp32",
        channels_last=False,
        compile=False,
        classifies: bool,
    ):
        self.backbone, self.loss_fn, self.optimizer = backbone, loss_fn, optimizer
        self.images, self.labels = images, labels
        self.mean = mean.to(images.device).view(1, -1, 1, 1)
        self.std = std.to(images.device).view(1, -1, 1, 1)
        self.augment_mode, self.padding, self.generator = (
            augment_mode,
            padding,
            generator,
        )
        self.input_size, self.scale, self.ratio = input_size, tuple(scale), tuple(ratio)
        if isinstance(
            images, JpegImages
        ):  # a plain function of the settings: it travels to the workers
            images.transform = functools.partial(
                augment_padded,
                mode=augment_mode,
                padding=padding,
                size=input_size,
                scale=self.scale,
                ratio=self.ratio,
            )
            images.generator = generator
        self.autocast = precision == "bf16"
        self.memory_format = (
            torch.channels_last if channels_last else torch.contiguous_format
        )
        # Compiled as one region, backbone and loss: their kernels fuse, and
        # with CUDA graphs (reduce-overhead) the loss's many small kernels
        # and its backward are replayed too, not launched one by one.
        self.compiled = bool(compile)
        self.embed_and_loss = (
            torch.compile(self._embed_and_loss, mode=compile)
            if compile
            else self._embed_and_loss
        )
        self.can_classify = (
            classifies  # the loss's declaration (workflow.losses.loss_classifies)
        )

    def inputs(self, batch: torch.Tensor) -> torch.Tensor:
        if isinstance(
            self.images, JpegImages
        ):  # augmented as it is decoded (seeded per batch)
            x = self.images[batch]
        else:
            x = augment(
                self.images[batch],
                self.augment_mode,
                self.padding,
                self.generator,
                self.input_size,
                self.scale,
                self.ratio,
            )
        x = (x.float().div_(255.0) - self.mean) / self.std
        # The crop's gather leaves NHWC strides; without this the layout
        # would depend on the augmentation (NHWC trains a ResNet-18 about
        # 20% slower on the CPU) instead of on training.channels_last.
        return x.contiguous(memory_format=self.memory_format)

    def __call__(self, batch: torch.Tensor, x: torch.Tensor | None = None) -> dict:
        """-> ``loss`` (0-d), ``correct`` (0-d, number of right predictions,
        or None), ``terms`` (the loss's ``last_terms``, or None) and
        ``diagnostics`` (its ``last_diagnostics``, e.g. CAM's fractions of
        active anchor pairs and short anchors, or None).
        ``x``: the batch's inputs when already prepared (``steps``)."""
        # Named ranges only under a profiler: a range costs about 10 us of
        # host time to open and close, which a host-bound GPU step would pay.
        phase = record_function if torch.autograd._profiler_enabled() else _no_range
        with phase("step/inputs"):
            x = self.inputs(batch) if x is None else x
            y = self.labels[batch.to(self.labels.device)]
        with phase("step/forward"):
            if (
                self.compiled
            ):  # a new step: CUDA graphs may reuse the last step's output memory
                torch.compiler.cudagraph_mark_step_begin()
            embeddings, loss = self.embed_and_loss(x, y)
        with phase("step/backward"):
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
        with phase("step/optimizer"):
            self.optimizer.step()
        with phase("step/bookkeeping"):
            correct = None
            if self.can_classify:
                with torch.no_grad():
                    correct = (self.loss_fn.predict(embeddings).argmax(1) == y).sum()
            terms = getattr(self.loss_fn, "last_terms", None)
            diagnostics = getattr(self.loss_fn, "last_diagnostics", None)
        return {
            "loss": loss.detach(),
            "correct": correct,
            "terms": terms or None,
            "diagnostics": diagnostics or None,
        }

    def _embed_and_loss(
        self, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            embeddings = self.backbone(x)
        embeddings = embeddings.float()  # losses (norms, margins) stay in float32
        return embeddings, self.loss_fn(embeddings, y)

    def steps(self, batches: list[torch.Tensor]):
        """One step per batch, yielding each step's outputs. When the images
        are a CPU tensor, the next batch's inputs (gather, augmentation,
        normalisation) are prepared in a second thread while the current
        batch trains, as a DataLoader worker would: the same random draws in
        the same order, so the same bits. On a GPU the host only queues that
        work, so the steps run one after the other."""
        on_cpu = (
            isinstance(self.images, torch.Tensor) and self.images.device.type == "cpu"
        )
        if not on_cpu or len(batches) < 2:
            for batch in batches:
                yield self(batch)
            return
        with ThreadPoolExecutor(max_workers=1) as pool:
            upcoming = pool.submit(self.inputs, batches[0])
            for i, batch in enumerate(batches):
                x = upcoming.result()
                if i + 1 < len(batches):
                    upcoming = pool.submit(self.inputs, batches[i + 1])
                yield self(batch, x)


def read_rows(images: np.ndarray, rows: np.ndarray) -> torch.Tensor:
    """``images[rows]`` as a contiguous uint8 (B, C, H, W) tensor, read in
    file order (which a memory map reads fastest)."""
    by_file = np.argsort(rows, kind="stable")
    block = np.empty((len(rows), *images.shape[1:]), dtype=np.uint8)
    block[by_file] = images[rows[by_file]]
    return torch.from_numpy(block).permute(0, 3, 1, 2).contiguous()


class BatchReader(torch.utils.data.Dataset):
    """A DataLoader dataset whose items are whole batches: item ``positions``
    is ``read_rows(images, order[positions])``. A memory-mapped ``images``
    travels to the worker processes as its file name and is opened there
    again (pickling the map would copy the whole array)."""

    def __init__(self, images: np.ndarray, order: np.ndarray):
        self.path = getattr(images, "filename", None)
        self.images = None if self.path else images
        self.order = order

    def __getitem__(self, positions: np.ndarray) -> torch.Tensor:
        if self.images is None:
            self.images = np.load(self.path, mmap_mode="r")
        return read_rows(self.images, self.order[positions])

    def __len__(self) -> int:
        return len(self.order)


class HostImages:
    """Training images left in host memory (``training.data_on_device:
    false``), for datasets larger than the device's memory: ``images`` is
    the memory-mapped ``images.npy``; indexing with a batch of positions
    gives those images on the device, what indexing the on-device uint8
    (N, C, H, W) tensor gives. With ``workers > 0``, ``prefetch`` hands an
    epoch's batches to a DataLoader whose worker processes read them ahead
    into pinned memory while the GPU trains; indexing then takes them in
    order (and checks that the positions match). With ``workers == 0`` each
    batch is read in the training process when its step asks for it."""

    def __init__(
        self,
        images: np.ndarray,
        order: np.ndarray,
        device: torch.device,
        workers: int = 0,
    ):
        self.images, self.order, self.device, self.workers = (
            images,
            order,
            device,
            workers,
        )
        n, height, width, channels = len(order), *images.shape[1:]
        self.shape = (n, channels, height, width)
        self.pending = None  # (positions, images) of the epoch, read ahead

    def prefetch(self, batches: list[torch.Tensor]) -> None:
        if self.workers == 0:
            return
        loader = torch.utils.data.DataLoader(
            BatchReader(self.images, self.order),
            batch_size=None,
            sampler=[b.numpy() for b in batches],
            num_workers=min(self.workers, len(os.sched_getaffinity(0))),
            pin_memory=self.device.type == "cuda",
        )
        self.pending = zip(batches, loader)

    def __getitem__(self, batch: torch.Tensor) -> torch.Tensor:
        positions = batch.cpu()
        if self.pending is not None:
            expected, x = next(self.pending)
            if not torch.equal(expected, positions):
                raise RuntimeError(
                    "HostImages: batches asked for out of the prefetched order"
                )
        else:
            x = read_rows(self.images, self.order[positions.numpy()])
        if self.device.type == "cuda":
            return (x if x.is_pinned() else x.pin_memory()).to(
                self.device, non_blocking=True
            )
        return x

    def channel_statistics(
        self, chunk: int = 4096
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel mean and std (ddof 1) of the pixels in [0, 1], in
        float64 over chunks of images (the whole set never in memory)."""
        total = np.zeros(self.shape[1])
        squares = np.zeros(self.shape[1])
        for start in range(0, len(self.order), chunk):
            pixels = (
                self.images[self.order[start : start + chunk]].reshape(
                    -1, self.shape[1]
                )
                / 255.0
            )
            total += pixels.sum(axis=0)
            squares += (pixels * pixels).sum(axis=0)
        count = len(self.order) * self.shape[2] * self.shape[3]
        mean = total / count
        var = (squares - count * mean * mean) / (count - 1)
        std = np.sqrt(np.maximum(var, 0.0))
        return torch.from_numpy(mean).float(), torch.from_numpy(std).clamp_min(
            1e-3
        ).float()


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
    class_ids: (
        np.ndarray
    )  # dataset label of each class the loss sees (:func:`training_classes`)
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


def training_classes(
    train_labels: np.ndarray, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """The classes a loss sees and its labels: ``(class_ids, remapped)``.

    A loss learns one classifier row, anchor or proxy per class it trains
    on, and only those: ``class_ids`` are the dataset labels present among
    ``train_labels`` (sorted), ``remapped`` the training labels as indices
    0..K-1 into them. Under the class-disjoint protocol (and class-disjoint
    validation) the test or held-out classes are never trained, so the loss
    has no state for them; in the closed set every class trains and the
    mapping is the identity. ``num_classes``: the dataset's class count
    (labels lie in 0..num_classes-1)."""
    class_ids = np.unique(train_labels)
    if len(class_ids) and (class_ids[0] < 0 or class_ids[-1] >= num_classes):
        raise ValueError(
            f"training labels {class_ids[0]}..{class_ids[-1]} lie outside the dataset's "
            f"{num_classes} classes 0..{num_classes - 1}"
        )
    if (
        len(class_ids) < MIN_CLASSES
    ):  # the split jobs refuse such splits; a planted one stops here
        raise ConfigError(
            f"the training images hold {len(class_ids)} class{'' if len(class_ids) == 1 else 'es'}; training "
            f"needs at least {MIN_CLASSES} (with one, a classifier has nothing to tell apart and a pair loss no "
            "negatives): check config keys datasets.<name>.train_classes and validation.class_fraction, and "
            "delete the split files under results/splits/ made by an older version"
        )
    return class_ids, np.searchsorted(class_ids, train_labels)


def check_images_fit(
    shape: tuple, n: int, settings: dict, device: torch.device
) -> None:
    """With ``data_on_device``: the ``n`` training images (``shape``: height,
    width, channels) fit where they are copied: on the host a uint8 copy
    (two on the CPU device, which gets a channels-first copy), and, unless
    pretrained weights give the normalisation, the float64 pixels of the
    channel statistics; on a CUDA device the uint8 copy
    (:func:`workflow.memory.check_fits`)."""
    dataset = settings["dataset"]
    pixels = n * int(np.prod(shape))
    pretrained = (
        input_normalisation(settings["backbone_params"], int(shape[-1])) is not None
    )
    host = pixels * (1 if device.type == "cuda" else 2) + (
        0 if pretrained else pixels * 8
    )
    what = (
        f"config key training.data_on_device: true copies the {n} training images of {dataset} "
        f"({' x '.join(map(str, shape))} bytes each)"
        + ("" if pretrained else " and their float64 pixels")
    )
    advice = (
        f"set training.data_on_device: false (batches are read from the memory-mapped images.npy), "
        f"datasets.{dataset}.storage: jpeg, or a smaller datasets.{dataset}.image_size"
    )
    check_fits(host, what + " into host memory", advice)
    if device.type == "cuda":
        check_fits(pixels, what + " onto the device", advice, device)


def build_training(
    images: np.ndarray,
    labels: np.ndarray,
    train_index: np.ndarray,
    num_classes: int,
    settings: dict,
    device: torch.device | None = None,
) -> Training:
    """Models, optimiser, batch source and step of one cell, freshly seeded."""
    cfg = settings["training"]
    device = device or select_device(cfg["device"])
    speed = resolve_speed(cfg, device)
    seed_everything(settings["seed"])

    order = np.sort(train_index)
    class_ids, train_labels = training_classes(labels[order], num_classes)
    y = torch.as_tensor(train_labels, dtype=torch.long, device=device)
    if isinstance(
        images, JpegStore
    ):  # decoded batch by batch, whatever data_on_device says
        x = JpegImages(
            images,
            order,
            device,
            training_option(cfg, "loader_workers"),
            size=training_option(cfg, "input_size"),
        )
        if x.shape[2] is None:
            raise ConfigError(
                f"dataset {images.dataset} is stored as JPEGs of their own sizes (storage: jpeg without "
                f"image_size), so cell {CELL_PATTERN.format(**settings)} needs training.input_size: set it "
                "(e.g. 224), or set the dataset's image_size"
            )
        statistics = x.channel_statistics
    elif training_option(cfg, "data_on_device"):
        check_images_fit(images.shape[1:], len(order), settings, device)
        train_images = np.asarray(images[order])

        def statistics():
            # Per-channel statistics in NumPy: torch splits large reductions across
            # threads, so its float64 mean would depend on the thread count.
            pixels = (
                train_images.reshape(-1, train_images.shape[-1]).astype(np.float64)
                / 255.0
            )
            return (
                torch.from_numpy(pixels.mean(axis=0)).float(),
                torch.from_numpy(pixels.std(axis=0, ddof=1)).clamp_min(1e-3).float(),
            )

        x = (
            torch.as_tensor(np.ascontiguousarray(train_images), device=device)
            .permute(0, 3, 1, 2)
            .contiguous()
        )
    else:
        x = HostImages(
            images, order, device, workers=training_option(cfg, "loader_workers")
        )
        statistics = x.channel_statistics
    # A pretrained trunk gets the inputs it was trained on: its weights' mean
    # and std (the data's own are then not computed).
    mean, std = (
        input_normalisation(settings["backbone_params"], int(x.shape[1]))
        or statistics()
    )

    input_size, _ = input_view(cfg, int(x.shape[2]), int(x.shape[3]))
    if isinstance(
        x, JpegImages
    ):  # images of their own sizes: always brought to one size
        input_size = input_size or int(x.shape[2])
    image_size = input_size or int(x.shape[2])
    size_key = (
        "training.input_size"
        if input_size
        else f"datasets.{settings['dataset']}.image_size"
    )
    check_fits(
        cfg["batch_size"] * int(x.shape[1]) * image_size**2 * 4,
        f"config key {size_key}: one batch of {cfg['batch_size']} images at {image_size} x {image_size} x "
        f"{int(x.shape[1])} (float32)",
        "lower it (or training.batch_size)",
        device,
    )
    backbone, loss_fn = build_models(settings, x.shape[1], image_size, len(class_ids))
    backbone.to(device)
    loss_fn.to(device)
    if speed["channels_last"]:
        backbone.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(
        parameter_groups(backbone, loss_fn, cfg["lr"], settings["loss_lr_multiplier"]),
        cfg,
    )
    scheduler = make_scheduler(optimizer, cfg)
    batch_generator = torch.Generator().manual_seed(
        stream_seed(settings["seed"], "batches")
    )
    augment_generator = torch.Generator(device=device).manual_seed(
        stream_seed(settings["seed"], "augment")
    )
    batches = make_batches(
        y.cpu(),
        cfg["batch_size"],
        settings["sampler"],
        batch_generator,
        key=f"losses.{settings['loss']}.sampler",
    )
    step = TrainStep(
        backbone,
        loss_fn,
        optimizer,
        x,
        y,
        mean,
        std,
        augment_mode=training_option(cfg, "augment"),
        padding=training_option(cfg, "augment_padding"),
        generator=augment_generator,
        input_size=input_size,
        scale=bounds(cfg, "augment_scale"),
        ratio=bounds(cfg, "augment_ratio"),
        precision=speed["precision"],
        channels_last=speed["channels_last"],
        compile=speed["compile"],
        classifies=loss_classifies(settings["loss_impl"]),
    )
    return Training(
        backbone,
        loss_fn,
        optimizer,
        scheduler,
        batches,
        batch_generator,
        augment_generator,
        step,
        mean,
        std,
        device,
        speed,
        in_channels=int(x.shape[1]),
        image_size=image_size,
        class_ids=class_ids,
    )


def save_torch(path, obj) -> None:
    """``torch.save`` atomically and byte-reproducibly: torch names the
    archive inside the file after the file, so saving straight to a
    temporary name would make every file differ; a buffer gives the fixed
    name ``archive``."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    with atomic_path(path, size=buffer.tell()) as tmp:
        tmp.write_bytes(buffer.getvalue())


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


def train_cell(
    images: np.ndarray,
    labels: np.ndarray,
    train_index: np.ndarray,
    num_classes: int,
    settings: dict,
    threads: int = 1,
    progress: bool = True,
    checkpoint_path=None,
    stop_after_epoch: int | None = None,
    writing=nullcontext,
    live_log=None,
    device: torch.device | None = None,
) -> dict:
    """Train one cell; return its model dict (state dicts and plain data
    only, so it loads with ``torch.load(weights_only=True)``, and the same
    bits for the same settings on the CPU).

    The dict's ``stats`` entry (device, speed settings, images seen and
    seconds in the loop, epoch resumed from) is the one part that is not
    deterministic: ``scripts/train.py`` writes it to ``train_stats.json``
    and saves the rest as ``model.pt``.

    With ``checkpoint_path``, a resume checkpoint is written there
    atomically every ``training.checkpoint_every`` epochs, and training
    starts from it when it holds a run of the same settings (hash). With
    ``stop_after_epoch`` training stops after that epoch (a test hook that
    simulates a kill) and returns None. ``writing``: a context manager
    around each checkpoint write (:meth:`workflow.job_guard.ParentWatch.writing`).
    ``live_log``: a folder for TensorBoard event files written each epoch
    (:class:`workflow.training_log.LiveLog`).
    """
    cfg = settings["training"]
    torch.set_num_threads(max(1, threads))
    device = device or select_device(cfg["device"])
    deterministic = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(device.type == "cpu")  # restored on return
    try:
        return _train(
            images,
            labels,
            train_index,
            num_classes,
            settings,
            device,
            progress,
            checkpoint_path,
            stop_after_epoch,
            writing,
            live_log,
        )
    finally:
        torch.use_deterministic_algorithms(deterministic)


def train_job(
    images,
    labels,
    train_index,
    num_classes,
    settings,
    model_path,
    stats_path,
    checkpoint_path,
    threads: int = 1,
    tensorboard_dir=None,
    jobs_per_gpu: int = 1,
) -> None:
    """What the train rule runs: :func:`train_cell` with a resume checkpoint,
    then ``model.pt`` (``model_path``) and its timing stats (``stats_path``),
    then the checkpoint is removed. The job holds the cell's lock
    (:func:`workflow.job_guard.cell_lock`, beside the checkpoint) throughout,
    so a second job of the cell stops at once naming the holder, and it
    stops without writing once the Snakemake process that started it has
    ended (:class:`workflow.job_guard.ParentWatch`). With ``tensorboard_dir``,
    TensorBoard event files of the history go live beside the checkpoint
    while training, and to ``tensorboard_dir`` (through a temporary folder)
    before ``model.pt`` is written (:mod:`workflow.training_log`). The job
    runs on the device it claims (:func:`workflow.devices.claim_device`,
    ``jobs_per_gpu`` jobs per GPU), held until it ends."""
    checkpoint_path = Path(checkpoint_path)
    live_log = checkpoint_path.parent / "tensorboard" if tensorboard_dir else None
    if tensorboard_dir:  # before training, not after the last epoch
        check_output_path(tensorboard_dir, folder=True)
    watch = watch_parent()
    cell = CELL_PATTERN.format(**settings)
    with (
        cell_lock(lock_path(checkpoint_path), cell),
        claim_device(settings["training"]["device"], jobs_per_gpu, cell) as claim,
    ):
        model = train_cell(
            images,
            labels,
            train_index,
            num_classes,
            settings,
            threads=threads,
            checkpoint_path=checkpoint_path,
            writing=watch.writing,
            live_log=live_log,
            device=claim.device,
        )
        # Timing and device are not reproducible: they go to train_stats.json
        # and the log, so model.pt has the same bits on every CPU run.
        stats = {**model.pop("stats"), **claim.record()}
        print(f"trained: {json.dumps(stats, sort_keys=True)}")
        print(f"per epoch: {model['history']}")
        with watch.writing():
            if tensorboard_dir:
                write_history(tensorboard_dir, model["history"])
            save_json(stats_path, stats)
            save_torch(model_path, model)
            # model.pt is complete: the resume checkpoint is no longer needed.
            checkpoint_path.unlink(missing_ok=True)
            if live_log:
                shutil.rmtree(live_log, ignore_errors=True)


def _train(
    images,
    labels,
    train_index,
    num_classes,
    settings,
    device,
    progress,
    checkpoint_path,
    stop_after_epoch,
    writing,
    live_log=None,
) -> dict | None:
    cfg = settings["training"]
    run = build_training(images, labels, train_index, num_classes, settings, device)
    expected_hash = settings_hash(settings)
    log = lambda line: print(line, file=sys.stderr)  # noqa: E731
    state = load_resume_checkpoint(checkpoint_path, expected_hash, log=log)
    if state is not None:
        try:
            run.load_state_dict(state)
        except (KeyError, IndexError, TypeError, ValueError, RuntimeError) as error:
            # Same settings hash, but parts that do not fit (another version
            # of the code wrote it): a fresh start, as for any foreign file.
            log(
                f"ignoring checkpoint {checkpoint_path}: its state does not fit this cell's training "
                f"({type(error).__name__}: {str(error).splitlines()[0][:200]}); training from the start"
            )
            run = build_training(
                images, labels, train_index, num_classes, settings, device
            )
    first_epoch = len(run.history)
    every = training_option(cfg, "checkpoint_every")

    cell = CELL_PATTERN.format(**settings)
    bar = tqdm(
        range(first_epoch, cfg["epochs"]),
        desc=f"train {cell}",
        file=sys.stderr,
        disable=not progress,
        initial=first_epoch,
        total=cfg["epochs"],
    )
    images_seen, start = 0, time.perf_counter()
    live = LiveLog(live_log, first_epoch) if live_log else None
    for epoch in bar:
        run.backbone.train()
        run.loss_fn.train()
        record = train_epoch(run, cell, epoch)
        record["lr"] = run.optimizer.param_groups[0][
            "lr"
        ]  # the backbone's, during this epoch
        run.scheduler.step()
        images_seen += record.pop("images")
        run.history.append(record)
        if live:
            live.add(epoch + 1, record)
        bar.set_postfix(loss=f"{record['loss']:.4f}")
        done = epoch + 1
        if checkpoint_path is not None and (done % every == 0) and done < cfg["epochs"]:
            with writing():
                save_torch(
                    checkpoint_path,
                    {"settings_hash": expected_hash, **run.state_dict()},
                )
        if (
            stop_after_epoch is not None
            and done >= stop_after_epoch
            and done < cfg["epochs"]
        ):
            if live:
                live.close()
            return None
    train_seconds = time.perf_counter() - start
    if live:
        live.close()

    return {
        "backbone": {k: v.cpu() for k, v in run.backbone.state_dict().items()},
        "loss": {k: v.cpu() for k, v in run.loss_fn.state_dict().items()},
        "mean": run.mean,
        "std": run.std,
        "in_channels": run.in_channels,
        "image_size": run.image_size,
        # The loss's classes: their number, and the dataset label of each
        # (embed maps predictions and anchors back through it).
        "num_classes": len(run.class_ids),
        "class_ids": run.class_ids.tolist(),
        # A JSON round trip gives the history one object graph however it
        # was built (a resumed run mixes unpickled and new key strings, which
        # pickle would write differently): the same bytes in model.pt.
        "history": json.loads(json.dumps(run.history)),
        "settings_hash": expected_hash,
        "stats": {
            "device": str(device),
            "device_name": torch.cuda.get_device_name(device)
            if device.type == "cuda"
            else "cpu",
            **run.speed,
            "threads": torch.get_num_threads(),
            "images_seen": images_seen,
            "train_seconds": train_seconds,
            "resumed_from_epoch": first_epoch,
        },
    }


def epoch_batches(run: Training) -> list[torch.Tensor]:
    """The epoch's batches of indices, on the device in one copy. Copying
    each batch from pageable host memory as its step starts would make the
    host wait for the device every step (CUDA synchronises the stream
    before such a copy), and the GPU would idle while the host queues the
    next step. With ``data_on_device: false`` the indices stay on the host,
    and ``HostImages`` starts reading the epoch's images ahead."""
    batches = run.batches.epoch()
    if isinstance(run.step.images, (HostImages, JpegImages)):
        run.step.images.prefetch(batches)
        return batches
    if run.device.type == "cpu":
        return batches
    flat = torch.cat(batches)
    if run.device.type == "cuda":
        flat = flat.pin_memory()
    return list(flat.to(run.device, non_blocking=True).split([len(b) for b in batches]))


def train_epoch(run: Training, cell: str, epoch: int) -> dict:
    """One pass of the batch source. Sums stay on the device (float64) and
    are read once at the end, so GPU steps are not synchronised one by one.
    -> mean ``loss``, ``accuracy`` (losses that classify), ``terms`` (mean
    of each loss term, for losses that expose ``last_terms``),
    ``diagnostics`` (mean of each of ``last_diagnostics``), ``images``."""
    total = torch.zeros((), dtype=torch.float64, device=run.device)
    correct = torch.zeros((), dtype=torch.long, device=run.device)
    sums: dict[str, dict[str, torch.Tensor]] = {"terms": {}, "diagnostics": {}}
    count = 0
    batches = epoch_batches(run)
    for batch, out in zip(batches, run.step.steps(batches)):
        total += out["loss"].double() * len(batch)
        if out["correct"] is not None:
            correct += out["correct"]
        for part, values in sums.items():
            for name, value in (out[part] or {}).items():
                values[name] = values.get(name, 0) + value.detach().double() * len(
                    batch
                )
        count += len(batch)
    loss = total.item() / count
    if not np.isfinite(loss):
        raise FloatingPointError(
            f"cell {cell}: mean loss is {loss} in epoch {epoch + 1}; "
            "lower training.lr or check the loss parameters"
        )
    record = {"loss": loss}
    if run.step.can_classify:
        record["accuracy"] = int(correct.item()) / count
    for part, values in sums.items():
        if values:
            record[part] = {
                name: value.item() / count for name, value in values.items()
            }
    record["images"] = count
    return record

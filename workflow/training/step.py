"""The models, the optimiser and its schedule, and one optimisation step
(:class:`TrainStep`) of a cell's training."""

from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext

import torch
from torch.profiler import record_function

from workflow.augment import RRC_RATIO, RRC_SCALE, augment, augment_padded
from workflow.backbones import build_backbone
from workflow.jpeg_store import JpegImages
from workflow.losses import build_loss


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
        or None), ``terms`` (the loss's ``last_terms``, or None when it
        has none) and ``diagnostics`` (its ``last_diagnostics``, e.g. CAM's
        fractions of active anchor pairs and short anchors, or None).
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
            terms = self.loss_fn.last_terms  # workflow.losses.base.Loss
            diagnostics = self.loss_fn.last_diagnostics
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

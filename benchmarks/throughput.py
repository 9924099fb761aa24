"""Training and embedding throughput (images/second) of the project's loop
against a plain PyTorch reference loop, side by side in one run.

- **project**: ``workflow.training.loop.build_training`` and its ``TrainStep``,
  the step ``train_cell`` runs: uint8 images held on the device, random
  crop (padding 4) and horizontal flip and normalisation on the device per
  batch, ``training.precision``/``channels_last`` at ``auto`` (channels-last;
  bf16 on CUDA and on CPUs with native bf16, else fp32; ``--precision`` and
  ``--channels-last`` set them), no DataLoader. Embedding is
  ``workflow.embedding.embed_images``, the loop of the `embed` rule
  (host uint8 batches normalised on the device), after one warm-up batch.
- **plain**: the torchvision recipe: a dataset of PIL images,
  ``RandomCrop(size, padding=4)``, ``RandomHorizontalFlip``, ``ToTensor``,
  ``Normalize`` in a ``torch.utils.data.DataLoader`` (``--workers``,
  pinned memory on CUDA), fp32, contiguous; embedding with ``ToTensor`` and
  ``Normalize`` in a DataLoader.

Both train the same backbone with the same loss (``--loss``, default
cross-entropy) and Adam on the same synthetic images (random pixels, 100
classes: throughput does not depend on what the pixels show).
``gpu_busy`` is the GPU's kernel time per step (from the PyTorch
profiler, over 10 more steps) over the step time measured without the
profiler (n/a on the CPU). The same profiled steps give a second table:
the share of the project step's host time in each of its phases (inputs,
forward, backward, optimizer, bookkeeping), which says where a host-bound
step (a GPU busy well under 100%) loses its time. Each loop pulls its
batches as it steps: the plain loop's DataLoader loading counts.

    python benchmarks/throughput.py                       # GPU: batch 128
    python benchmarks/throughput.py --batch-size 16 --steps 3 --warmup 1 \\
        --models cifar_resnet18:32 resnet50:64 swin_t:224:4   # a small CPU run

Each model is ``arch:image_size[:batch_size]``. Writes
``benchmarks/results/throughput_<device>.md`` (Markdown table and CSV).
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from workflow.embedding import embed_images, load_models  # noqa: E402
from workflow.losses import loss_classifies  # noqa: E402
from workflow.training.loop import build_training  # noqa: E402
from workflow.training.settings import select_device  # noqa: E402
from workflow.training.step import STEP_PHASES, build_models  # noqa: E402

NUM_CLASSES = 100


def settings_for(
    arch: str, batch_size: int, device: str, speed: dict | None = None, loss: str = "ce"
) -> dict:
    """A cell's settings; ``speed``: training.precision/channels_last/compile
    of the project loop (default auto, auto, off); ``loss``: a registered
    loss, at its default parameters."""
    training = {
        "epochs": 1,
        "batch_size": batch_size,
        "optimizer": "adam",
        "lr": 1e-3,
        "weight_decay": 0.0,
        "momentum": 0.9,
        "lr_schedule": "constant",
        "lr_step_epochs": 30,
        "lr_gamma": 0.1,
        "device": device,
        "augment": "crop_flip",
        "augment_padding": 4,
        "precision": "auto",
        "channels_last": "auto",
        "compile": False,
        **(speed or {}),
    }
    return {
        "dataset": "synthetic",
        "regime": "full",
        "backbone": arch,
        "loss": loss,
        "seed": 0,
        "arch": arch,
        "embedding_size": 128,
        "backbone_params": {},
        "loss_impl": loss,
        "loss_params": {},
        "loss_lr_multiplier": 1.0,
        "sampler": None,
        "training": training,
    }


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_steps(
    step_fn, batches, warmup: int, steps: int, device: torch.device
) -> float:
    """Seconds per step over ``steps`` steps after ``warmup`` steps, pulling
    each batch from ``batches`` as the step needs it (a DataLoader's loading
    counts), with nothing else running (no profiler)."""
    iterator = iter(batches)
    for _ in range(warmup):
        step_fn(next(iterator))
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step_fn(next(iterator))
    sync(device)
    return (time.perf_counter() - start) / steps


def profile_steps(step_fn, batches: list, device: torch.device) -> dict:
    """One profiled pass over ``batches`` (already in memory), per step:
    ``kernel_s``, the GPU kernel time (sum of the CUDA kernels' times; None
    on the CPU), and ``phases``, the host's wall time in each of
    ``TrainStep``'s ``step/*`` ranges (empty for a step without them). The
    profiler slows the host, not the kernels: the GPU-busy fraction is
    ``kernel_s`` over the unprofiled step time, and the phases are the
    host's shares of a step, not its unprofiled times."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    activities = [ProfilerActivity.CPU] + (
        [ProfilerActivity.CUDA] if device.type == "cuda" else []
    )
    with torch_profile(activities=activities) as profiler:
        for batch in batches:
            step_fn(batch)
        sync(device)
    events = profiler.key_averages()
    kernel_us = sum(
        event.self_device_time_total
        for event in events
        if event.device_type == torch.autograd.DeviceType.CUDA
    )
    phases = {
        event.key.removeprefix("step/"): event.cpu_time_total / 1e6 / len(batches)
        for event in events
        if event.key.startswith("step/")
        and event.device_type == torch.autograd.DeviceType.CPU
    }
    return {
        "kernel_s": kernel_us / 1e6 / len(batches) if device.type == "cuda" else None,
        "phases": phases,
    }


def busy_fraction(kernel_seconds: float | None, step_seconds: float) -> float | None:
    return None if kernel_seconds is None else min(1.0, kernel_seconds / step_seconds)


PROFILED_STEPS = 10


def project_train(
    images, labels, arch, batch_size, steps, warmup, device, speed=None, loss="ce"
):
    settings = settings_for(arch, batch_size, device.type, speed, loss)
    run = build_training(
        images, labels, np.arange(len(labels)), NUM_CLASSES, settings, device
    )
    run.backbone.train()
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    batches = [
        order[i * batch_size : (i + 1) * batch_size].to(device)
        for i in range(warmup + steps)
    ]
    # The loop of train_epoch: TrainStep.steps (on the CPU it prepares the
    # next batch's inputs in a second thread while the current one trains).
    per_step = timed_steps(
        lambda out: None, run.step.steps(batches), warmup, steps, device
    )
    profiled = profile_steps(run.step, batches[:PROFILED_STEPS], device)
    busy = busy_fraction(profiled["kernel_s"], per_step)
    checkpoint = {
        "backbone": run.backbone.state_dict(),
        "loss": run.loss_fn.state_dict(),
        "mean": run.mean,
        "std": run.std,
        "in_channels": run.in_channels,
        "image_size": run.image_size,
        "num_classes": len(run.class_ids),
    }
    return per_step, busy, profiled["phases"], checkpoint, settings, run.speed


class PILDataset(torch.utils.data.Dataset):
    """torchvision-style: PIL images and labels, a transform per item."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform):
        from PIL import Image

        self.images = [Image.fromarray(image) for image in images]
        self.labels, self.transform = labels, transform

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.transform(self.images[i]), int(self.labels[i])


def plain_loader(images, labels, size, batch_size, workers, device, train: bool):
    from torchvision import transforms as T

    mean = tuple((images.reshape(-1, 3) / 255.0).mean(0))
    std = tuple((images.reshape(-1, 3) / 255.0).std(0))
    steps = [T.RandomCrop(size, padding=4), T.RandomHorizontalFlip()] if train else []
    transform = T.Compose([*steps, T.ToTensor(), T.Normalize(mean, std)])
    return torch.utils.data.DataLoader(
        PILDataset(images, labels, transform),
        batch_size=batch_size,
        shuffle=train,
        drop_last=train,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
        generator=torch.Generator().manual_seed(0),
    )


def plain_train(
    images, labels, arch, size, batch_size, steps, warmup, device, workers, loss="ce"
):
    settings = settings_for(arch, batch_size, device.type, loss=loss)
    torch.manual_seed(0)
    backbone, loss_fn = build_models(settings, 3, size, NUM_CLASSES)
    backbone.to(device).train()
    loss_fn.to(device)
    optimizer = torch.optim.Adam(
        [*backbone.parameters(), *loss_fn.parameters()], lr=1e-3
    )

    def step(batch):
        x, y = (t.to(device, non_blocking=True) for t in batch)
        loss = loss_fn(backbone(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    loader = plain_loader(images, labels, size, batch_size, workers, device, train=True)
    per_step = timed_steps(step, loader, warmup, steps, device)
    profiled = list(itertools.islice(loader, PROFILED_STEPS))
    return per_step, busy_fraction(
        profile_steps(step, profiled, device)["kernel_s"], per_step
    )


@torch.no_grad()
def plain_embed(images, labels, arch, size, batch_size, device, workers):
    settings = settings_for(arch, batch_size, device.type)
    backbone, _ = build_models(settings, 3, size, NUM_CLASSES)
    backbone.to(device).eval()
    loader = plain_loader(
        images, labels, size, batch_size, workers, device, train=False
    )
    for x, _ in loader:  # warm-up: one batch
        backbone(x.to(device, non_blocking=True))
        break
    start = time.perf_counter()
    for x, _ in loader:
        backbone(x.to(device, non_blocking=True)).float().cpu()
    sync(device)
    return len(labels) / (time.perf_counter() - start)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({torch.get_num_threads()} threads)"
    except OSError:
        pass
    return f"{platform.processor() or 'cpu'} ({torch.get_num_threads()} threads)"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--models",
        nargs="+",
        default=["cifar_resnet18:32", "resnet50:64", "swin_t:224"],
    )
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument(
        "--steps", type=int, default=50, help="timed training steps per loop"
    )
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument(
        "--repeats",
        type=int,
        default=2,
        help="alternating timed runs per loop; the best counts",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=min(8, os.cpu_count() or 1),
        help="DataLoader workers of the plain loop",
    )
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument(
        "--compile",
        nargs="?",
        const="default",
        default=False,
        help="the project loop with training.compile set to this torch.compile mode "
        "(default, reduce-overhead, max-autotune; the compilation happens in the warm-up steps)",
    )
    parser.add_argument(
        "--precision",
        default="auto",
        choices=["auto", "fp32", "bf16"],
        help="training.precision of the project loop",
    )
    parser.add_argument(
        "--channels-last",
        default="auto",
        choices=["auto", "true", "false"],
        help="training.channels_last of the project loop",
    )
    parser.add_argument(
        "--loss",
        default="ce",
        help="the loss both loops train with (a registered loss name)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help="Markdown file (default benchmarks/results/throughput_<device>.md)",
    )
    args = parser.parse_args()
    channels_last = {"true": True, "false": False}.get(args.channels_last, "auto")
    project_speed = {
        "precision": args.precision,
        "channels_last": channels_last,
        "compile": args.compile,
    }

    torch.set_num_threads(args.threads)
    device = select_device(args.device)
    name = device_name(device)
    print(
        f"device: {name}; torch {torch.__version__}; load average {os.getloadavg()[0]:.1f}; "
        f"{args.steps} timed steps after {args.warmup}; plain DataLoader workers: {args.workers}"
    )
    rows, phase_rows = [], []
    for spec in args.models:
        arch, size, *batch = spec.split(":")
        size, batch_size = int(size), int(batch[0]) if batch else args.batch_size
        n = batch_size * (args.steps + args.warmup)
        rng = np.random.default_rng(0)
        images = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
        labels = rng.integers(0, NUM_CLASSES, n)

        # The two loops alternate, --repeats times each, and the fastest
        # repeat of each counts (on a shared machine other load only slows).
        p_step = r_step = float("inf")
        p_embed = r_embed = 0.0
        embed_n = batch_size * args.steps
        for _ in range(args.repeats):
            step, gpu_busy, phases, checkpoint, settings, speed = project_train(
                images,
                labels,
                arch,
                batch_size,
                args.steps,
                args.warmup,
                device,
                project_speed,
                args.loss,
            )
            if (
                step < p_step
            ):  # the busy fraction and the phases of the repeat that counts
                p_step, p_busy, p_phases = step, gpu_busy, phases
            step, gpu_busy = plain_train(
                images,
                labels,
                arch,
                size,
                batch_size,
                args.steps,
                args.warmup,
                device,
                args.workers,
                args.loss,
            )
            if step < r_step:
                r_step, r_busy = step, gpu_busy

            backbone, loss_fn = load_models(checkpoint, settings, device, speed)
            classifies = loss_classifies(settings["loss_impl"])
            embed_images(
                backbone,
                loss_fn,
                checkpoint,
                speed,
                images,
                np.arange(batch_size),
                batch_size,
                classifies=classifies,
            )  # warm-up
            sync(device)
            start = time.perf_counter()
            embed_images(
                backbone,
                loss_fn,
                checkpoint,
                speed,
                images,
                np.arange(embed_n),
                batch_size,
                classifies=classifies,
            )
            sync(device)
            p_embed = max(p_embed, embed_n / (time.perf_counter() - start))
            r_embed = max(
                r_embed,
                plain_embed(
                    images[:embed_n],
                    labels[:embed_n],
                    arch,
                    size,
                    batch_size,
                    device,
                    args.workers,
                ),
            )

        def busy(value):
            return "n/a" if value is None else f"{value:.0%}"

        rows.append(
            {
                "model": f"{arch} {size}x{size}",
                "loss": args.loss,
                "batch": batch_size,
                "project_settings": f"{speed['precision']}, {'channels-last' if speed['channels_last'] else 'NCHW'}"
                + (f", compiled ({speed['compile']})" if speed["compile"] else ""),
                "train_img_s_project": batch_size / p_step,
                "train_img_s_plain": batch_size / r_step,
                "train_speedup": r_step / p_step,
                "gpu_busy_project": busy(p_busy),
                "gpu_busy_plain": busy(r_busy),
                "embed_img_s_project": p_embed,
                "embed_img_s_plain": r_embed,
                "embed_speedup": p_embed / r_embed,
            }
        )
        print(
            pd.DataFrame(rows[-1:]).to_string(
                index=False, float_format=lambda v: f"{v:.1f}"
            ),
            flush=True,
        )
        profiled_ms = sum(p_phases.values()) * 1e3
        phase_rows.append(
            {
                "model": rows[-1]["model"],
                "step_ms": p_step * 1e3,
                "profiled_step_ms": profiled_ms,
                **{
                    f"{name}_%": 100 * p_phases.get(name, 0.0) * 1e3 / profiled_ms
                    for name in STEP_PHASES
                },
            }
        )

    table = pd.DataFrame(rows)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    phase_table = pd.DataFrame(phase_rows)
    print("host time per phase of the project step (profiled):")
    print(phase_table.to_string(index=False, float_format=lambda v: f"{v:.1f}"))
    slug = "cuda_" + name.replace(" ", "_") if device.type == "cuda" else "cpu"
    if args.precision != "auto":
        slug += f"_{args.precision}"
    if args.channels_last != "auto":
        slug += f"_channels_last_{args.channels_last}"
    if args.compile:
        slug += f"_compile_{args.compile}"
    if args.loss != "ce":
        slug += f"_{args.loss}"
    path = (
        args.output or REPO / "benchmarks" / "results" / f"throughput_{slug}.md"
    ).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"# Training and embedding throughput\n\n"
        f"Device: {name}; torch {torch.__version__}; load average {os.getloadavg()[0]:.1f}; "
        f"{args.steps} timed steps after {args.warmup} warm-up steps, best of {args.repeats} alternating repeats; plain loop with "
        f"{args.workers} DataLoader workers. Command: `python benchmarks/throughput.py {' '.join(sys.argv[1:])}`\n\n"
        + table.to_markdown(index=False, floatfmt=".2f")
        + "\n\n```csv\n"
        + table.to_csv(index=False)
        + "```\n\n"
        "## Where the project step's host time goes\n\n"
        f"One profiled pass of {PROFILED_STEPS} steps (of the repeat that counts): `step_ms`, the unprofiled "
        "step time; `profiled_step_ms`, the host's time in the step under the profiler (which slows the host); "
        "the share of it in each phase of `TrainStep` (`inputs`: gather, augment, normalise; `forward`: backbone "
        "and loss; `backward`: zero_grad and backward; `optimizer`; `bookkeeping`: accuracy). On a GPU the host "
        "only queues kernels, so these are launch and Python costs.\n\n"
        + phase_table.to_markdown(index=False, floatfmt=".1f")
        + "\n"
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

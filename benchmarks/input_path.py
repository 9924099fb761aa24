"""Images per second of the project's JPEG input path against a plain
torchvision loop, on the same JPEGs with the same number of workers, side
by side in one run (issue 20's benchmark).

- **project**: the images prepared with ``storage: jpeg``
  (``workflow.prepare.write_prepared``: one ``images.jpegs``), read by
  ``workflow.jpeg_store.JpegImages`` as ``train_cell`` reads them: a
  DataLoader whose workers decode each batch with ``decode_jpeg`` (its
  batched list form) on the CPU, or on a CUDA device only read the bytes,
  which the training process decodes with nvJPEG
  (``decode_jpeg(..., device="cuda")``); then ``TrainStep.inputs``: the
  batched random-resized-crop to 224 and flip on the device
  (``workflow.augment``), normalisation, channels-last.
- **plain**: ``torchvision.datasets.ImageFolder`` of the same JPEG files
  (Pillow) with ``transforms.v2`` (``RandomResizedCrop(224)``,
  ``RandomHorizontalFlip``, ``ToImage``, ``ToDtype(float32, scale=True)``,
  ``Normalize``) in a ``DataLoader`` (pinned memory on CUDA), batches
  copied to the device.

Both feed the same ``resnet18`` training step at 224 (the project's
``TrainStep``: cross-entropy, Adam, channels-last, fp32 on the CPU and bf16
on CUDA), and both are measured without the model too (the input path
alone: batches made and on the device). The images are generated 256x256
JPEGs (quality 90) of smooth random content, 10 classes. Also the bytes on
disk of the same images as files, as ``images.npy`` (``storage: array``)
and as ``images.jpegs`` (``storage: jpeg``). ``gpu_busy``: the fraction of
the timed training steps' wall time the GPU spent in kernels (profiler;
n/a on the CPU).

    python benchmarks/input_path.py | tee benchmarks/results/input_path_<device>.txt
    python benchmarks/input_path.py --quick      # seconds: the test's run
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from workflow.backbones import build_backbone  # noqa: E402
from workflow.datasets import load_dataset  # noqa: E402
from workflow.jpeg_store import JpegImages, JpegStore  # noqa: E402
from workflow.losses import build_loss  # noqa: E402
from workflow.prepare import write_prepared  # noqa: E402
from workflow.training.step import TrainStep, make_optimizer  # noqa: E402

MEAN, STD = (
    (0.485, 0.456, 0.406),
    (0.229, 0.224, 0.225),
)  # ImageNet's: both loops normalise alike
CLASSES = 10


def make_jpegs(root: Path, n: int, side: int = 256, seed: int = 0) -> None:
    """``n`` JPEGs of ``side`` x ``side`` (quality 90) in ``CLASSES`` class
    folders: random 16x16 colours upsampled (bicubic) plus mild noise, so
    the files compress like photos rather than like noise."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        folder = root / f"class{i % CLASSES}"
        folder.mkdir(parents=True, exist_ok=True)
        small = Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
        pixels = np.asarray(small.resize((side, side), Image.BICUBIC), dtype=np.int16)
        pixels = np.clip(pixels + rng.integers(-8, 9, pixels.shape), 0, 255).astype(
            np.uint8
        )
        Image.fromarray(pixels).save(folder / f"{i:05d}.jpg", quality=90)


def folder_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def model_and_step(device, images, labels, size: int, generator, precision: str):
    backbone = build_backbone(
        "resnet18", in_channels=3, image_size=size, embedding_size=128
    )
    loss = build_loss("ce", num_classes=CLASSES, embedding_size=128)
    backbone.to(device).to(memory_format=torch.channels_last)
    loss.to(device)
    optimizer = make_optimizer(
        list(backbone.parameters()) + list(loss.parameters()),
        {"optimizer": "adam", "lr": 1e-3, "weight_decay": 0.0},
    )
    return TrainStep(
        backbone,
        loss,
        optimizer,
        images,
        labels,
        torch.tensor(MEAN),
        torch.tensor(STD),
        augment_mode="rrc_flip",
        generator=generator,
        input_size=size,
        precision=precision,
        channels_last=True,
        classifies=True,
    )


def synchronise(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_batches(
    make_batch, train, n_batches: int, batch_size: int, device, profile: bool = False
):
    """images/s over ``n_batches`` after one warm-up batch; with ``profile``
    also the GPU's busy fraction (kernel time over wall time)."""
    make_batch_iter = iter(make_batch())
    train(*next(make_batch_iter))
    synchronise(device)
    busy = None
    context = (
        torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA])
        if profile
        else None
    )
    start = time.perf_counter()
    if context:
        context.__enter__()
    for _ in range(n_batches):
        train(*next(make_batch_iter))
    synchronise(device)
    seconds = time.perf_counter() - start
    if context:
        context.__exit__(None, None, None)
        kernels = sum(
            e.device_time_total
            for e in context.key_averages()
            if e.device_type.name == "CUDA"
        )
        busy = kernels / 1e6 / seconds
    return n_batches * batch_size / seconds, busy


def measure(args, work: Path) -> None:
    device = torch.device(
        args.device
        if args.device != "auto"
        else ("cuda" if torch.cuda.is_available() else "cpu")
    )
    torch.set_num_threads(args.threads)
    precision = "bf16" if device.type == "cuda" else "fp32"
    folder = work / "jpegs"
    make_jpegs(folder, args.images)
    data = load_dataset("imagefolder", path=str(folder))
    sizes = {"files": folder_bytes(folder)}
    for storage, name in [("array", "images.npy"), ("jpeg", "images.jpegs")]:
        out = work / storage
        write_prepared(
            data,
            out / name,
            out / "labels.parquet",
            out / "classes.json",
            image_size=256,
            threads=args.threads,
            name="bench",
            storage=storage,
        )
        sizes[storage] = (out / name).stat().st_size
    store = JpegStore(work / "jpeg" / "images.jpegs")
    labels = torch.as_tensor(data.labels, device=device)
    n_batches = (
        args.images // args.batch_size - 1
    )  # one warm-up batch, then whole batches

    # ---- project: JPEG store, workers decode (nvJPEG on CUDA), transforms on the device
    generator = torch.Generator(device=device).manual_seed(0)
    host = JpegImages(store, np.arange(len(store)), device, workers=args.workers)
    step = model_and_step(device, host, labels, args.size, generator, precision)

    def project_batches():
        order = torch.randperm(len(store), generator=torch.Generator().manual_seed(1))
        batches = list(
            order[: (n_batches + 1) * args.batch_size].split(args.batch_size)
        )
        host.prefetch(batches)
        for batch in batches:
            yield batch, step.inputs(batch)

    # ---- plain: ImageFolder + DataLoader + transforms.v2
    from torchvision.datasets import ImageFolder
    from torchvision.transforms import v2

    recipe = v2.Compose(
        [
            v2.RandomResizedCrop(args.size, antialias=True),
            v2.RandomHorizontalFlip(),
            v2.ToImage(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(MEAN, STD),
        ]
    )
    plain_set = ImageFolder(str(folder), transform=recipe)
    plain_step = model_and_step(device, host, labels, args.size, generator, precision)

    def plain_batches():
        loader = torch.utils.data.DataLoader(
            plain_set,
            batch_size=args.batch_size,
            shuffle=True,
            num_workers=args.workers,
            drop_last=True,
            pin_memory=device.type == "cuda",
            generator=torch.Generator().manual_seed(1),
        )
        for x, y in loader:
            x = x.to(device, non_blocking=True).contiguous(
                memory_format=torch.channels_last
            )
            yield y.to(device, non_blocking=True), x

    def plain_train(y, x):
        plain_step.labels = y  # the step indexes its labels: this batch's, in order
        plain_step(torch.arange(len(y), device=device), x)

    def nothing(*batch):
        pass

    rows = []
    for label, batches, train in [
        ("project", project_batches, lambda b, x: step(b, x)),
        ("plain", plain_batches, plain_train),
    ]:
        alone, _ = timed_batches(batches, nothing, n_batches, args.batch_size, device)
        steps = min(n_batches, args.train_steps)
        trained, busy = timed_batches(
            batches,
            train,
            steps,
            args.batch_size,
            device,
            profile=device.type == "cuda",
        )
        rows.append((label, alone, trained, busy))

    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"cpu ({platform.processor() or 'x86_64'})"
    )
    print(
        f"Device: {name}; torch {torch.__version__}; {args.threads} threads, {args.workers} DataLoader workers; "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    print(
        f"{args.images} generated 256x256 JPEGs (quality 90), batch {args.batch_size}, input {args.size}, "
        f"resnet18 ({precision}, channels-last), {min(n_batches, args.train_steps)} timed training steps, "
        f"{n_batches} batches for the input path alone; decoding on "
        f"{'the GPU (nvJPEG)' if device.type == 'cuda' else 'the CPU (DataLoader workers)'}\n"
    )
    print(
        "| loop | input path alone (img/s) | resnet18 training step at 224 (img/s) | gpu_busy |"
    )
    print("|---|---|---|---|")
    for label, alone, trained, busy in rows:
        print(
            f"| {label} | {alone:.1f} | {trained:.2f} | {'n/a' if busy is None else f'{busy:.0%}'} |"
        )
    (_, p_alone, p_trained, _), (_, q_alone, q_trained, _) = rows
    print(
        f"\nproject / plain: input path alone {p_alone / q_alone:.2f}x; training {p_trained / q_trained:.2f}x\n"
    )
    print("| storage | bytes on disk | per image | vs the files |")
    print("|---|---|---|---|")
    for key, title in [
        ("files", "JPEG files (ImageFolder)"),
        ("array", "storage: array (images.npy, 256)"),
        ("jpeg", "storage: jpeg (images.jpegs, 256)"),
    ]:
        print(
            f"| {title} | {sizes[key]:,} | {sizes[key] / args.images:,.0f} | {sizes[key] / sizes['files']:.2f}x |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=384)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--train-steps",
        type=int,
        default=4,
        help="timed training steps (after one warm-up)",
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument(
        "--quick", action="store_true", help="48 images, batch 8, 1 timed training step"
    )
    args = parser.parse_args()
    if args.quick:
        args.images, args.batch_size, args.train_steps = 48, 8, 1
    work = Path(tempfile.mkdtemp(prefix="bench-input-path-"))
    try:
        measure(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Time of each registered loss next to a ResNet-18 training step, one run.

For every loss in the registry: forward + backward of the loss alone on a
batch of 128 random 512-d embeddings from 100 classes (32 classes x 4
images, so pair, triplet and SupCon losses find positives), including its
own parameters' gradients. Next to it: one training step of torchvision's
``resnet18`` (512-d output as the embedding, ``ce`` loss with 100 classes,
Adam) on 128 images of 32x32 on the same device (CUDA when available, else
the CPU with torch's default thread count). Medians of timings interleaved
in rounds, so that load changes on a shared machine hit all alike.

The LM paper reports its loss adding about 2.5 ms per batch of 128 on a
GTX 1080; the target here is CAM and LM each under 2% of the step (wall
time); the exit status is 1 when one misses it.

    python benchmarks/loss_overhead.py | tee benchmarks/results/loss_overhead_<device>.txt
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torchvision

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from workflow.losses import LOSSES, build_loss  # noqa: E402

BATCH, DIM, CLASSES, IMAGE = 128, 512, 100, 32
TARGET = {"cam": 0.02, "lm": 0.02}


def interleaved_medians(fns: dict, device, rounds: int, repeats: dict) -> dict:
    """Median (wall ms, CPU ms) of each function. Every round runs each
    function ``repeats[name]`` times, so a change in machine load during the
    run hits the step and the losses alike. CPU time (all threads of this
    process) does not count time spent waiting for a core, so on a shared
    CPU its ratios are the steadier ones."""

    def once(fn):
        if device.type == "cuda":
            torch.cuda.synchronize()
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return (time.perf_counter() - wall) * 1000, (time.process_time() - cpu) * 1000

    for fn in fns.values():  # warm-up
        for _ in range(3):
            fn()
    times = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            times[name] += [once(fn) for _ in range(repeats[name])]
    return {
        name: (statistics.median(w for w, _ in t), statistics.median(c for _, c in t))
        for name, t in times.items()
    }


def resnet_step(device, labels):
    model = torchvision.models.resnet18(num_classes=DIM).to(device)
    loss_fn = build_loss("ce", num_classes=CLASSES, embedding_size=DIM).to(device)
    optimizer = torch.optim.Adam([*model.parameters(), *loss_fn.parameters()], lr=1e-3)
    images = torch.randn(BATCH, 3, IMAGE, IMAGE, device=device)

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(images), labels).backward()
        optimizer.step()

    return step


def loss_pass(name, device, labels):
    loss_fn = build_loss(name, num_classes=CLASSES, embedding_size=DIM).to(device)
    embeddings = torch.randn(BATCH, DIM, device=device, requires_grad=True)
    params = [embeddings, *loss_fn.parameters()]

    def run():
        for p in params:
            p.grad = None
        loss_fn(embeddings, labels).backward()

    return run


def device_description(device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"cpu ({cpu}, {torch.get_num_threads()} threads)"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument(
        "--rounds",
        type=int,
        default=10,
        help="rounds of one step and 5 passes of each loss",
    )
    args = parser.parse_args(argv)
    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu")
        if args.device == "auto"
        else args.device
    )
    torch.manual_seed(0)
    labels = torch.arange(32, device=device).repeat_interleave(
        4
    )  # 32 classes x 4 images

    load_before = os.getloadavg()[0]
    fns = {"step": resnet_step(device, labels)}
    fns.update({name: loss_pass(name, device, labels) for name in LOSSES.names()})
    repeats = {name: 1 if name == "step" else 5 for name in fns}
    medians = interleaved_medians(fns, device, args.rounds, repeats)
    step_wall, step_cpu = medians.pop("step")
    rows = list(medians.items())

    print(f"device: {device_description(device)}")
    print(
        f"torch {torch.__version__}, torchvision {torchvision.__version__}, python {platform.python_version()}"
    )
    print(
        f"batch {BATCH}, embedding {DIM}-d, {CLASSES} classes; medians over {args.rounds} interleaved rounds "
        f"(1 step and 5 passes of each loss per round)"
    )
    print(
        f"1-minute load average: {load_before:.2f} before, {os.getloadavg()[0]:.2f} after"
    )
    print(
        f"resnet18 training step (32x32, Adam, ce): {step_wall:.1f} ms wall, {step_cpu:.1f} ms CPU\n"
    )
    print("| loss | wall (ms) | % of step (wall) | CPU (ms) | % of step (CPU) |")
    print("|---|---:|---:|---:|---:|")
    for name, (wall, cpu) in rows:
        print(
            f"| {name} | {wall:.3f} | {100 * wall / step_wall:.2f}% | {cpu:.3f} | {100 * cpu / step_cpu:.2f}% |"
        )
    failed = []
    print()
    for name, limit in TARGET.items():
        wall, cpu = dict(rows)[name]
        ratio = wall / step_wall
        verdict = "meets" if ratio < limit else "MISSES"
        print(
            f"{name}: {100 * ratio:.2f}% of the step (wall; CPU {100 * cpu / step_cpu:.2f}%), "
            f"{verdict} the target of < {100 * limit:.0f}%"
        )
        if ratio >= limit:
            failed.append(name)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

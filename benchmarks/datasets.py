"""Time of the data steps on the real offline datasets, and the estimate of
config/cifar100_fewshot.yaml's run time, measured in one run.

1. CIFAR-100 from ../shared/datasets: download step (copy + md5 of the
   extracted files) and prepare (60,000 images to images.npy);
2. the Tiny ImageNet subset: download step (md5 + unzip) and prepare
   (30,000 JPEG decodes, 2 threads);
3. one training cell of config/cifar100_fewshot.yaml (fewshot10, ``ce``,
   one thread as in the `train` rule) for a few epochs, and inference of
   the 10,000 test images; from these rates, the estimated wall time of the
   whole grid with ``snakemake --cores 2`` (two jobs at a time), plus a
   measured per-job start-up cost.

The load average is printed: on a shared machine, wall times grow with it.

    python benchmarks/datasets.py | tee benchmarks/results/datasets_<device>.txt
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from workflow.download import fetch_files, official_files  # noqa: E402
from workflow.embedding import compute_embeddings  # noqa: E402
from workflow.prepare import prepare  # noqa: E402
from workflow.splits import make_split  # noqa: E402
from workflow.training.loop import train_cell  # noqa: E402

MIRROR = REPO.parent / "shared" / "datasets"
EPOCHS_MEASURED = 3


def timed(fn):
    start, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - start, time.process_time() - cpu


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-datasets-"))
    try:
        measure(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def measure(work: Path) -> None:
    print(
        f"device: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__}, load average before: {os.getloadavg()[0]:.1f}"
    )
    rows = []
    for name, source, params, threads in [
        ("c100", "cifar100", {}, 1),
        ("tiny", "tiny_imagenet", {"subset": True}, 2),
    ]:
        raw = work / "raw" / name
        _, wall, cpu = timed(
            partial(fetch_files, official_files(source, params), raw, mirror=MIRROR)
        )
        rows.append((f"{name} download (mirror)", wall, cpu))
        out = work / "data" / name
        _, wall, cpu = timed(
            partial(
                prepare,
                {"source": source, "params": params},
                out / "images.npy",
                out / "labels.parquet",
                out / "classes.json",
                root=raw,
                threads=threads,
                name=name,
            )
        )
        n = len(np.load(out / "images.npy", mmap_mode="r"))
        rows.append((f"{name} prepare ({n} images, {threads} thread(s))", wall, cpu))
    for label, wall, cpu in rows:
        print(f"{label:45s} wall {wall:6.1f} s  cpu {cpu:6.1f} s")

    config = yaml.safe_load((REPO / "config" / "cifar100_fewshot.yaml").read_text())
    images = np.load(work / "data" / "c100" / "images.npy", mmap_mode="r")
    labels_frame = pd.read_parquet(work / "data" / "c100" / "labels.parquet")
    labels = labels_frame["label"].to_numpy()
    spec = config["datasets"]["cifar100"]
    split = make_split(
        labels,
        labels_frame["official_split"].to_numpy(),
        seed=0,
        query_per_class=spec["query_per_class"],
        database_per_class=spec["database_per_class"],
        train_per_class=10,
    )
    train_index = split.loc[split["split"] == "train", "index"].to_numpy()
    eval_index = split.loc[split["split"] != "train", "index"].to_numpy()
    training = {
        "epochs": EPOCHS_MEASURED,
        "batch_size": 64,
        "optimizer": "adam",
        "lr": 1e-3,
        "weight_decay": 0.0,
        "momentum": 0.9,
        "lr_schedule": "constant",
        "lr_step_epochs": 30,
        "lr_gamma": 0.1,
        "device": "cpu",
        **{k: v for k, v in config["training"].items() if k != "epochs"},
    }
    backbone = config["backbones"]["small_cnn"]
    settings = {
        "dataset": "cifar100",
        "regime": "fewshot10",
        "backbone": "small_cnn",
        "loss": "ce",
        "seed": 0,
        "arch": backbone["arch"],
        "embedding_size": backbone["embedding_size"],
        "backbone_params": backbone.get("params", {}),
        "loss_impl": "ce",
        "loss_params": {},
        "loss_lr_multiplier": 1.0,
        "sampler": None,
        "training": training,
    }
    checkpoint, wall, _ = timed(
        lambda: train_cell(
            images, labels, train_index, 100, settings, threads=1, progress=False
        )
    )
    train_rate = len(train_index) * EPOCHS_MEASURED / wall
    torch.set_num_threads(1)
    _, embed_wall, _ = timed(
        lambda: compute_embeddings(checkpoint, settings, images, eval_index)
    )
    embed_rate = len(eval_index) / embed_wall
    startup = min(
        timed(
            lambda: subprocess.run(
                [
                    sys.executable,
                    "-c",
                    "import workflow.training.loop, workflow.embedding",
                ],
                cwd=REPO,
                check=True,
            )
        )[1]
        for _ in range(2)
    )
    print(
        f"train (1 thread): {train_rate:.0f} img/s; embed (1 thread): {embed_rate:.0f} img/s; "
        f"job start-up: {startup:.1f} s"
    )

    # The grid: every (regime, loss, seed) trains, embeds the evaluation images
    # and evaluates (counted as one more start-up); two jobs run at a time.
    cells = [
        (k["train_per_class"], loss, seed)
        for k in config["regimes"].values()
        for loss in config["losses"]
        for seed in config["seeds"]
    ]
    per_cell = [
        100 * k * config["training"]["epochs"] / train_rate
        + len(eval_index) / embed_rate
        + 3 * startup
        for k, _, _ in cells
    ]
    estimate = sum(per_cell) / 2
    print(
        f"config/cifar100_fewshot.yaml: {len(cells)} cells, estimated {estimate / 60:.0f} min with "
        f"--cores 2 (target: under 60 min); load average after: {os.getloadavg()[0]:.1f}"
    )
    if estimate >= 3600:
        sys.exit(1)


if __name__ == "__main__":
    main()

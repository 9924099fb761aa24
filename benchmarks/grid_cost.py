"""Training cost of a config's grid in image passes, before running it.

    python benchmarks/grid_cost.py config/cam_grid.yaml [more configs ...]

A cell's cost is its number of training images times its epochs (one image
pass = one image through forward and backward once). Summed over the grid
and divided by a measured training throughput (images per second of the
backbone at its input size, e.g. from ``results/cost.csv`` or a
throughput benchmark, on the target GPU) this gives the GPU time:

    GPU hours = sum over backbones (image passes of the backbone / its images per second) / 3600

Training images per cell come from the official split sizes below (no data
is read): the regime's ``train_per_class`` times the number of classes, or
the whole training pool (minus the database when ``database_from: train``). The input size is the side the
backbone sees: ``training.input_size`` where a backbone (or the config)
sets one, else the stored ``image_size``.
Embedding and evaluation are not counted (one forward pass of the query and
database images per cell, small next to training). A backbone with
``freeze_trunk`` still passes every image forward through the trunk but
back-propagates through its head only: about a third of the time per image
(its own throughput should be measured).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from workflow.config import ConfigError, cells, load_config, training_settings  # noqa: E402

# Official training-side sizes: images, classes and (for a `classes`
# subset) the most images any one class has.
TRAIN_SIZES = {
    "cifar100": {"images": 50_000, "classes": 100, "per_class_max": 500},
    "svhn": {"images": 73_257, "classes": 10, "per_class_max": 13_861},
    "tiny_imagenet": {"images": 100_000, "classes": 200, "per_class_max": 500},
    "food101": {"images": 75_750, "classes": 101, "per_class_max": 750},
    "places365": {"images": 1_803_460, "classes": 365, "per_class_max": 5_000},
    "sklearn_digits": {"images": 1_797, "classes": 10, "per_class_max": 183},
}
# Native image side where the dataset has one size (image_size: null).
NATIVE_SIZE = {"cifar100": 32, "svhn": 32, "tiny_imagenet": 64, "places365": 256, "sklearn_digits": 8}
SVHN_EXTRA = 531_131
TINY_SUBSET_PER_CLASS = 100


def training_pool(name: str, spec: dict) -> tuple[int, int, bool]:
    """(training images, classes, is_upper_bound) of a dataset entry."""
    source = spec["source"]
    if source not in TRAIN_SIZES:
        raise ConfigError(
            f"config key datasets.{name}.source: grid_cost.py does not know the size of {source!r}; "
            f"add it to TRAIN_SIZES in {Path(__file__).name}"
        )
    size = TRAIN_SIZES[source]
    images, classes, bound = size["images"], size["classes"], False
    params = spec.get("params", {})
    if source == "svhn" and params.get("extra"):
        images += SVHN_EXTRA
    if source == "tiny_imagenet" and params.get("subset"):
        images = TINY_SUBSET_PER_CLASS * classes
    if source == "cifar100" and params.get("coarse"):
        classes = 20
    if source == "sklearn_digits":
        images = round(images * (1 - spec["test_fraction"]))
    if spec.get("classes"):
        classes = len(spec["classes"])
        images, bound = classes * size["per_class_max"], True  # per-class sizes are not listed here
    if spec.get("database_from") == "train":
        images -= classes * spec["database_per_class"]
    return images, classes, bound


def grid_cost(config: dict) -> pd.DataFrame:
    """One row per cell: dataset, regime, backbone, loss, seed, image_size
    (stored), input_size (what the backbone sees), train_images, epochs,
    image_passes, upper_bound."""
    config = load_config(config)
    rows = []
    for cell in cells(config):
        pool, classes, bound = training_pool(cell.dataset, config["datasets"][cell.dataset])
        k = config["regimes"][cell.regime]["train_per_class"]
        train_images = pool if k is None else min(pool, k * classes)
        settings = training_settings(config, cell.backbone, cell.loss)
        epochs = settings["epochs"]
        spec = config["datasets"][cell.dataset]
        image_size = spec["image_size"] or NATIVE_SIZE.get(spec["source"])
        rows.append({
            "dataset": cell.dataset, "regime": cell.regime, "backbone": cell.backbone, "loss": cell.loss,
            "seed": cell.seed, "image_size": image_size, "input_size": settings.get("input_size") or image_size,
            "train_images": train_images, "epochs": epochs,
            "image_passes": train_images * epochs, "upper_bound": bound and k is None,
        })
    return pd.DataFrame(rows)


def summary(cost: pd.DataFrame) -> str:
    lines = [
        f"cells: {len(cost)}; training image passes: {cost['image_passes'].sum():,}"
        + (" (upper bound: a `classes` subset on its full training pool)" if cost["upper_bound"].any() else ""),
        "per backbone and input size (divide each by that backbone's images per second at that size):",
    ]
    per_backbone = cost.groupby(["backbone", "input_size"], sort=False, dropna=False)["image_passes"].sum()
    for (backbone, size), passes in per_backbone.items():
        lines.append(f"  {backbone} at {size}x{size}: {passes:,}")
    lines.append("per dataset and regime (images per cell x epochs x cells):")
    per = cost.groupby(["dataset", "regime"], sort=False).agg(
        cells=("image_passes", "size"), train_images=("train_images", "first"),
        epochs=("epochs", "max"), image_passes=("image_passes", "sum"),
    )
    for (dataset, regime), r in per.iterrows():
        lines.append(
            f"  {dataset}/{regime}: {r['train_images']:,} x {r['epochs']} x {r['cells']} cells = {r['image_passes']:,}"
        )
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("configs", nargs="+", type=Path)
    args = parser.parse_args(argv)
    for path in args.configs:
        print(f"== {path}")
        print(summary(grid_cost(yaml.safe_load(path.read_text()))))


if __name__ == "__main__":
    main()

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
With ``selection``, every trial is counted too, on the training pool less
its validation images (:func:`trial_images`).
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

from workflow.config import (  # noqa: E402
    ConfigError,
    cells,
    training_settings,
    trial_cells,
    trial_settings,
)
from workflow.config_loader import load_config  # noqa: E402

# Official training-side sizes: images, classes and (for a `classes`
# subset) the most images any one class has.
TRAIN_SIZES = {
    "cifar100": {"images": 50_000, "classes": 100, "per_class_max": 500},
    "svhn": {"images": 73_257, "classes": 10, "per_class_max": 13_861},
    "tiny_imagenet": {"images": 100_000, "classes": 200, "per_class_max": 500},
    "food101": {"images": 75_750, "classes": 101, "per_class_max": 750},
    "places365": {"images": 1_803_460, "classes": 365, "per_class_max": 5_000},
    "sklearn_digits": {"images": 1_797, "classes": 10, "per_class_max": 183},
    "cub200": {"images": 5_994, "classes": 200, "per_class_max": 30},
    "cars196": {"images": 8_144, "classes": 196},
    "sop": {"images": 59_551, "classes": 11_318},
    "inshop": {"images": 25_882, "classes": 3_997},
}
# The training pool of protocol class_disjoint at the registered boundary
# or official sides (docs "Datasets"): CUB classes 1-100, Cars196 1-98,
# SOP Ebay_train, In-Shop train; and every image and class, for another
# `train_classes` (estimated at the dataset's mean images per class).
CLASS_DISJOINT_SIZES = {
    "cub200": {
        "images": 5_864,
        "classes": 100,
        "all_images": 11_788,
        "all_classes": 200,
    },
    "cars196": {
        "images": 8_054,
        "classes": 98,
        "all_images": 16_185,
        "all_classes": 196,
    },
    "sop": {"images": 59_551, "classes": 11_318},
    "inshop": {"images": 25_882, "classes": 3_997},
}
# Native image side where the dataset has one size (image_size: null).
NATIVE_SIZE = {
    "cifar100": 32,
    "svhn": 32,
    "tiny_imagenet": 64,
    "places365": 256,
    "sklearn_digits": 8,
}
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
    if spec.get("protocol") == "class_disjoint":
        size = CLASS_DISJOINT_SIZES[source]
        images, classes = size["images"], size["classes"]
        if spec.get("train_classes") not in (None, classes):
            classes = spec["train_classes"]
            images = round(size["all_images"] * classes / size["all_classes"])
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
        if "per_class_max" not in size:
            raise ConfigError(
                f"config key datasets.{name}.classes: grid_cost.py does not know the largest class of "
                f"{source!r}; add per_class_max to TRAIN_SIZES in {Path(__file__).name}"
            )
        classes = len(spec["classes"])
        images, bound = (
            classes * size["per_class_max"],
            True,
        )  # per-class sizes are not listed here
    if spec.get("database_from") == "train":
        images -= classes * spec["database_per_class"]
    return images, classes, bound


def trial_images(config: dict, spec: dict, train_images: int, classes: int, k) -> int:
    """Training images of a selection trial (docs "Selection"): the
    cell's less the validation images. Class-disjoint validation (protocol
    class_disjoint, or validation.class_disjoint) holds out whole classes,
    a ``class_fraction`` of them; otherwise the full regime gives up
    ``query_per_class + database_per_class`` images per class, and a
    few-shot regime none (its validation images are ones it leaves unused)."""
    validation = config["validation"]
    if spec.get("protocol") == "class_disjoint" or validation["class_disjoint"]:
        held = round(validation["class_fraction"] * classes)
        return round(train_images * (classes - held) / classes)
    if k is None:
        return train_images - classes * (
            validation["query_per_class"] + validation["database_per_class"]
        )
    return train_images


def grid_cost(config: dict) -> pd.DataFrame:
    """One row per trained cell: kind (``cell``, or ``trial`` for a
    selection trial), dataset, regime, backbone, loss, seed, image_size
    (stored), input_size (what the backbone sees), train_images, epochs,
    image_passes, upper_bound."""
    config = load_config(config)
    rows = []
    for kind, cell in [("cell", c) for c in cells(config)] + [
        ("trial", c) for c in trial_cells(config)
    ]:
        spec = config["datasets"][cell.dataset]
        pool, classes, bound = training_pool(cell.dataset, spec)
        k = config["regimes"][cell.regime]["train_per_class"]
        train_images = pool if k is None else min(pool, k * classes)
        if kind == "trial":
            train_images = trial_images(config, spec, train_images, classes, k)
            settings = trial_settings(config, cell)["training"]
        else:
            settings = training_settings(config, cell.backbone, cell.loss)
        epochs = settings["epochs"]
        image_size = spec["image_size"] or NATIVE_SIZE.get(spec["source"])
        rows.append(
            {
                "kind": kind,
                "dataset": cell.dataset,
                "regime": cell.regime,
                "backbone": cell.backbone,
                "loss": cell.loss,
                "seed": cell.seed,
                "image_size": image_size,
                "input_size": settings.get("input_size") or image_size,
                "train_images": train_images,
                "epochs": epochs,
                "image_passes": train_images * epochs,
                "upper_bound": bound and k is None,
            }
        )
    return pd.DataFrame(rows)


def summary(cost: pd.DataFrame) -> str:
    trials = cost["kind"] == "trial"
    lines = [
        f"cells: {int((~trials).sum())}"
        + (
            f", selection trials: {int(trials.sum())} ({cost.loc[trials, 'image_passes'].sum():,} image passes)"
            if trials.any()
            else ""
        )
        + f"; training image passes: {cost['image_passes'].sum():,}"
        + (
            " (upper bound: a `classes` subset on its full training pool)"
            if cost["upper_bound"].any()
            else ""
        ),
        "per backbone and input size (divide each by that backbone's images per second at that size):",
    ]
    per_backbone = cost.groupby(["backbone", "input_size"], sort=False, dropna=False)[
        "image_passes"
    ].sum()
    for (backbone, size), passes in per_backbone.items():
        lines.append(f"  {backbone} at {size}x{size}: {passes:,}")
    lines.append("per dataset and regime (images per cell x epochs x cells):")
    per = cost.groupby(["kind", "dataset", "regime"], sort=False).agg(
        cells=("image_passes", "size"),
        train_images=("train_images", "first"),
        epochs=("epochs", "max"),
        image_passes=("image_passes", "sum"),
    )
    for (kind, dataset, regime), r in per.iterrows():
        lines.append(
            f"  {dataset}/{regime}{' trials' if kind == 'trial' else ''}: {r['train_images']:,} x {r['epochs']} "
            f"x {r['cells']} {'trials' if kind == 'trial' else 'cells'} = {r['image_passes']:,}"
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

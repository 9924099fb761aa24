"""`python -m workflow.export SOURCE --out FILE.npz`: write a registered
dataset that loads as arrays, or its first N training images per class and
its whole test side, to an ``.npz`` file that the ``npz`` dataset source
reads (``workflow/datasets/arrays.py``). For example, the CIFAR-100 pool
that travels to a GPU machine without internet::

    python -m workflow.export cifar100 --root ../shared/datasets \\
        --train-per-class 50 --out gpu_data/cifar100_pool50.npz
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from workflow.datasets import RawDataset, load_dataset
from workflow.datasets.arrays import save_npz


def first_per_class(labels: np.ndarray, side: np.ndarray, per_class: int) -> np.ndarray:
    """Rows of the official training side: the first ``per_class`` of each
    class in file order; every other row (the test side) is kept whole."""
    keep = side != "train"
    for label in np.unique(labels):
        rows = np.flatnonzero((labels == label) & (side == "train"))
        keep[rows[:per_class]] = True
    return np.flatnonzero(keep)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description="Export a registered dataset (or part of it) to an .npz file."
    )
    parser.add_argument(
        "source",
        help="a registered dataset that loads as arrays (cifar100, svhn, sklearn_digits)",
    )
    parser.add_argument(
        "--root", help="the folder holding the dataset's downloaded files"
    )
    parser.add_argument(
        "--train-per-class",
        type=int,
        default=None,
        help="keep only the first N official training images of each class (default: all)",
    )
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args(argv)
    dataset = load_dataset(args.source, **({"root": args.root} if args.root else {}))
    if not isinstance(dataset, RawDataset):
        parser.error(
            f"{args.source} is a dataset of image files, not arrays; use imagefolder instead"
        )
    keep = None
    if args.train_per_class is not None:
        if dataset.official_split is None:
            parser.error(
                f"{args.source} has no official train/test division for --train-per-class"
            )
        keep = first_per_class(
            dataset.labels, dataset.official_split, args.train_per_class
        )
    save_npz(dataset, args.out, keep)
    n = len(dataset.labels) if keep is None else len(keep)
    print(f"wrote {args.out}: {n} images, {args.out.stat().st_size / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()

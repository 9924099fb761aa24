"""Dataset loaders, one file each, registered by name.

A loader is a function ``load(**params) -> RawDataset`` returning every image
of the dataset as uint8 (N, H, W, C), integer labels 0..C-1, class names and,
when the dataset has an official train/test division, which side each image
is on. ``prepare`` writes that to ``results/data/<dataset>/``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from workflow.registry import Registry

DATASETS = Registry("dataset", __name__)
register_dataset = DATASETS.register


@dataclass
class RawDataset:
    images: np.ndarray  # uint8, (N, H, W, C)
    labels: np.ndarray  # int64, (N,), values 0..C-1
    class_names: list[str]
    official_split: np.ndarray | None = None  # "train"/"test" per image, or None

    def __post_init__(self):
        if self.images.dtype != np.uint8 or self.images.ndim != 4:
            raise ValueError("images must be uint8 with shape (N, H, W, C)")
        if len(self.labels) != len(self.images):
            raise ValueError("one label per image is required")
        present = np.unique(self.labels)
        if present.min() < 0 or present.max() >= len(self.class_names):
            raise ValueError("labels must lie in 0..len(class_names)-1")


def load_dataset(source: str, **params) -> RawDataset:
    return DATASETS.get(source)(**params)

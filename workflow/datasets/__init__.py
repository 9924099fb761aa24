"""Dataset loaders, one file each, registered by name.

A loader is a function ``load(**params)`` returning either

- a :class:`RawDataset`: every image already decoded, uint8 (N, H, W, C)
  (small datasets stored as arrays: digits, CIFAR-100, SVHN); or
- an :class:`ImageFiles`: the image files to decode (JPEG/PNG datasets:
  Tiny ImageNet, Food-101, Places365, image folders), which ``prepare``
  decodes once, resized to the configured ``image_size``;

with integer labels 0..C-1, class names, the official train/test side of
each image when the dataset has one ("test" stands for the official
evaluation split, test or validation) and the original file ids.
``prepare`` writes that to ``results/data/<dataset>/``.

A loader that reads downloaded files takes their folder as ``root`` and
registers its official files with :func:`register_files`; the ``download``
rule fetches and verifies them (see ``workflow/download.py``).
"""

from __future__ import annotations

import difflib
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from workflow.registry import Registry

DATASETS = Registry("dataset", __name__)
register_dataset = DATASETS.register
_FILES: dict[str, Callable] = {}


def register_files(name: str):
    """Register the function giving the official files of dataset ``name``
    (a list of ``workflow.download.OfficialFile``); it takes the loader's
    download-relevant params."""

    def decorator(fn):
        _FILES[name] = fn
        return fn

    return decorator


def _check_labels(labels: np.ndarray, class_names: list[str], n: int) -> None:
    if len(labels) != n:
        raise ValueError("one label per image is required")
    if n and (labels.min() < 0 or labels.max() >= len(class_names)):
        raise ValueError("labels must lie in 0..len(class_names)-1")


@dataclass
class RawDataset:
    images: np.ndarray  # uint8, (N, H, W, C)
    labels: np.ndarray  # int64, (N,), values 0..C-1
    class_names: list[str]
    official_split: np.ndarray | None = None  # "train"/"test" per image, or None
    file_ids: np.ndarray | None = None  # original file name (or id) per image, or None

    def __post_init__(self):
        if self.images.dtype != np.uint8 or self.images.ndim != 4:
            raise ValueError("images must be uint8 with shape (N, H, W, C)")
        _check_labels(self.labels, self.class_names, len(self.images))


@dataclass
class ImageFiles:
    """Image files still to decode, one per row; ``file_ids`` are the
    dataset's own names for them (relative paths as published)."""

    paths: list[Path]
    labels: np.ndarray
    class_names: list[str]
    official_split: np.ndarray | None
    file_ids: np.ndarray

    def __post_init__(self):
        _check_labels(self.labels, self.class_names, len(self.paths))
        if len(self.file_ids) != len(self.paths):
            raise ValueError("one file id per image is required")


def load_dataset(source: str, **params) -> RawDataset | ImageFiles:
    return DATASETS.get(source)(**params)


def check_params(source: str, params: dict) -> None:
    """Raise TypeError naming an unknown or missing loader parameter
    (``root`` is the download folder, given by the pipeline, not by the config)."""
    signature = inspect.signature(DATASETS.get(source)).parameters
    accepted = [p for p in signature if p != "root"]
    for key in accepted:
        if signature[key].default is inspect.Parameter.empty and key not in params:
            raise TypeError(f"dataset {source!r} needs the parameter {key!r}")
    for key in params:
        if key not in accepted:
            close = difflib.get_close_matches(key, accepted, n=1)
            raise TypeError(
                f"dataset {source!r} has no parameter {key!r}"
                + (f" (did you mean {close[0]!r}?)" if close else "")
                + f"; it accepts: {', '.join(accepted) or 'none'}"
            )


def dataset_files(source: str, params: dict) -> list:
    """The official files that dataset ``source`` with ``params`` reads
    (``[]`` for datasets that download nothing)."""
    check_params(source, params)
    fn = _FILES.get(source)
    if fn is None:
        return []
    accepted = inspect.signature(fn).parameters
    return fn(**{k: v for k, v in params.items() if k in accepted})


def needs_download(source: str) -> bool:
    DATASETS.names()  # imports every loader module, so their files are registered
    return source in _FILES

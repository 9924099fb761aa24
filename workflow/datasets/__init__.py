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
rule fetches and verifies them (see ``workflow/download.py``). It reads
the publisher's listings through :mod:`workflow.datasets.listings`, which
checks them as they are read.

Registry metadata (given to :func:`register_dataset`, read with
``DATASETS.metadata``, never probed from the signature):

- ``user_files``: the loader parameter naming the user's own file or
  folder (``npz``, ``imagefolder``: ``user_files="path"``); the dataset is
  prepared again whenever its listing changes (:func:`input_fingerprint`);
- ``train_classes``: the official boundary of the class-disjoint protocol
  (the first N classes train: CUB-200-2011 100, Cars196 98), the default of
  the dataset key ``train_classes`` (``workflow/splits.py``);
- ``recall_at``: the Recall@k cutoffs the literature reports for the
  dataset (CUB and Cars 1, 2, 4, 8; SOP 1, 10, 100, 1000; In-Shop 1, 10,
  20, 30, 50), written by default under the class-disjoint protocol
  (``workflow.config.dataset_evaluation``);
- ``query_database``: its official evaluation side is divided into query
  and database images (In-Shop's query and gallery), so the class-disjoint
  protocol keeps a database apart from the queries (two-stage retrieval
  can run; ``workflow.guards``);
- ``classes``: the number of classes, only where the loader fixes it
  (scikit-learn's digits: 10), never for datasets read from files, whose
  copy may be a subset; the class-count checks before any job use it
  (``workflow.guards.counts.check_class_counts``).
"""

from __future__ import annotations

import hashlib
import inspect
import stat
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from workflow.datasets.listings import describe_twins, unicode_twins
from workflow.registry import Registry, unknown_parameter

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
    """One whole-number label per image, each a class number; the errors
    give what was found (a loader that reads a user's file adds its name)."""
    labels = np.asarray(labels)
    twice = sorted(name for name, count in Counter(class_names).items() if count > 1)
    if twice:
        raise ValueError(
            f"class_names holds {', '.join(map(repr, twice))} more than once; class names must differ"
        )
    twins = unicode_twins(class_names)
    if twins:
        raise ValueError(
            f"class_names: {describe_twins(*twins)}; class names must differ visibly: rename one"
        )
    if labels.ndim != 1 or len(labels) != n:
        raise ValueError(
            f"labels has shape {labels.shape} for {n} images; one label per image is required "
            f"(a one-dimensional array of length {n})"
        )
    if labels.dtype.kind not in "iu":
        raise ValueError(
            f"labels must be integers (class numbers 0..C-1), found dtype {labels.dtype}"
        )
    bad = np.flatnonzero((labels < 0) | (labels >= len(class_names)))
    if bad.size:
        raise ValueError(
            f"label {labels[bad[0]]} at position {bad[0]} ({bad.size} such labels) is no class number: "
            f"there are {len(class_names)} class names, so labels must lie in 0..{len(class_names) - 1}"
        )


OFFICIAL_SIDES = ("train", "test", "query", "database")


def _check_per_image(values, key: str, n: int) -> None:
    if values is not None and np.shape(values) != (n,):
        raise ValueError(
            f"{key} has shape {np.shape(values)} for {n} images; one value per image is required"
        )


def _check_official_split(official_split, n: int) -> None:
    """The official side of each image: "train" or "test" ("test" stands for
    the official evaluation split; "query" and "database" for an official
    division of it, In-Shop's query and gallery); any other value would
    silently drop its images from both sides."""
    if official_split is None:
        return
    _check_per_image(official_split, "official_split", n)
    values = np.asarray(official_split)
    other = sorted({str(v) for v in np.unique(values)} - set(OFFICIAL_SIDES))
    if other:
        raise ValueError(
            f"official_split holds {', '.join(map(repr, other))}; each image's value must be 'train' or 'test' "
            "('test' for the official evaluation or validation side; 'query' and 'database' where the "
            "publisher divides it so); leave official_split out if the dataset has no division"
        )


@dataclass
class RawDataset:
    images: np.ndarray  # uint8, (N, H, W, C)
    labels: np.ndarray  # int64, (N,), values 0..C-1
    class_names: list[str]
    official_split: np.ndarray | None = None  # "train"/"test" per image, or None
    file_ids: np.ndarray | None = None  # original file name (or id) per image, or None

    def __post_init__(self):
        images = self.images
        if images.dtype != np.uint8 or images.ndim != 4:
            raise ValueError(
                f"images must be uint8 with shape (N, H, W, C), found dtype {images.dtype} and shape "
                f"{images.shape}"
                + (
                    "; store 8-bit pixel values 0..255 as uint8"
                    if images.dtype != np.uint8
                    else ""
                )
                + (
                    "; add the channel axis (images[..., None])"
                    if images.ndim == 3
                    else ""
                )
            )
        _check_labels(self.labels, self.class_names, len(images))
        _check_official_split(self.official_split, len(images))
        _check_per_image(self.file_ids, "file_ids", len(images))


@dataclass
class ImageFiles:
    """Image files still to decode, one per row; ``file_ids`` are the
    dataset's own names for them (relative paths as published).
    ``boxes``: optionally a region per image, (N, 4) pixel coordinates
    left, top, right, bottom of the file as stored, that prepare crops
    before resizing (the bounding boxes of CUB-200-2011 and Cars196)."""

    paths: list[Path]
    labels: np.ndarray
    class_names: list[str]
    official_split: np.ndarray | None
    file_ids: np.ndarray
    boxes: np.ndarray | None = None

    def __post_init__(self):
        _check_labels(self.labels, self.class_names, len(self.paths))
        _check_official_split(self.official_split, len(self.paths))
        _check_per_image(self.file_ids, "file_ids", len(self.paths))
        if self.boxes is not None and np.shape(self.boxes) != (len(self.paths), 4):
            raise ValueError(
                f"boxes has shape {np.shape(self.boxes)} for {len(self.paths)} images; (N, 4) is required"
            )


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
            raise TypeError(f"dataset {source!r} {unknown_parameter(key, accepted)}")


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


def _listing(top: Path):
    """(path relative to ``top``, size, modification time in ns) of ``top``
    and of every file and folder under it, symbolic links followed (each
    folder once, so a loop ends), names starting with ``.`` left out; an
    entry that cannot be read is listed as such (its error is prepare's to
    report)."""
    seen = set()
    stack = [top]
    while stack:
        path = stack.pop()
        try:
            info = path.stat()
        except OSError as error:
            yield path.relative_to(top).as_posix(), "unreadable", error.errno
            continue
        yield path.relative_to(top).as_posix(), info.st_size, info.st_mtime_ns
        if stat.S_ISDIR(info.st_mode) and (info.st_dev, info.st_ino) not in seen:
            seen.add((info.st_dev, info.st_ino))
            try:
                stack += sorted(
                    (p for p in path.iterdir() if not p.name.startswith(".")),
                    reverse=True,
                )
            except OSError as error:
                yield path.relative_to(top).as_posix(), "unlistable", error.errno


def input_fingerprint(source: str, params: dict) -> str:
    """A hash of the listing (relative paths, sizes, modification times) of
    the user's own files that dataset ``source`` reads: the loader
    parameter its registration names in ``user_files`` (an image folder, an
    .npz file); "" for datasets without one. The prepare rule takes it as a parameter, so adding,
    removing, replacing or editing such a file prepares the dataset again.
    A listing, not the bytes: Snakemake computes it on every start, and
    reading a large folder or file each time would cost as much as
    preparing it."""
    param = DATASETS.metadata(source).get("user_files")
    if param is None or param not in params:
        return ""
    digest = hashlib.sha256()
    for entry in _listing(Path(params[param])):
        digest.update(repr(entry).encode() + b"\n")
    return digest.hexdigest()

"""Images already decoded into arrays, in one NumPy ``.npz`` file: a
dataset exported from elsewhere, or a subset of a registered one that has
to travel (a GPU machine without internet, a cluster node).

The file holds ``images`` (uint8, (N, H, W, C)), ``labels`` (integers
0..C-1) and ``class_names`` (C strings), and optionally ``official_split``
("train"/"test" per image) and ``file_ids`` (a name per image). It is read
with ``allow_pickle=False``: string arrays only, no code runs on loading.
The path is relative to the folder Snakemake runs in.

Export a subset of a registered dataset, for example CIFAR-100's first 50
training images of each class and all 10,000 test images::

    python -m workflow.export cifar100 --root ../shared/datasets \\
        --train-per-class 50 --out gpu_data/cifar100_pool50.npz
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from workflow.datasets import RawDataset, register_dataset
from workflow.io import atomic_path

REQUIRED = ("images", "labels", "class_names")
OPTIONAL = ("official_split", "file_ids")


def integer_labels(labels: np.ndarray, path) -> np.ndarray:
    """``labels`` as int64, if every value is a whole number; a fractional,
    NaN or non-numeric label raises ValueError naming the file and the
    value found (a cast would silently truncate 0.7 to class 0)."""
    labels = np.asarray(labels)
    if labels.dtype.kind in "iu":
        return labels.astype(np.int64)
    if labels.dtype.kind != "f":
        raise ValueError(
            f"{path}: labels must be integers (class numbers 0..C-1), found dtype {labels.dtype}"
            + (f" (first value {labels.flat[0].item()!r})" if labels.size else "")
            + "; save them as an integer array"
        )
    bad = np.flatnonzero(~np.isfinite(labels) | (labels != np.round(labels)))
    if bad.size:
        raise ValueError(
            f"{path}: labels must be integers (class numbers 0..C-1), found {float(labels.flat[bad[0]])!r} at "
            f"position {bad[0]} ({bad.size} such labels); a cast would truncate them. Save the class "
            "numbers as an integer array"
        )
    return labels.astype(np.int64)


@register_dataset("npz")
def npz(path) -> RawDataset:
    """``path``: the ``.npz`` file (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"npz path {path}: no such file; set the dataset's params.path to an .npz file "
            "(relative to the folder Snakemake runs in)"
        )
    with np.load(path) as arrays:  # allow_pickle is False by default: no object arrays
        missing = [key for key in REQUIRED if key not in arrays.files]
        if missing:
            raise ValueError(
                f"{path}: missing the array(s) {', '.join(missing)}; an npz dataset holds "
                f"{', '.join(REQUIRED)} and optionally {', '.join(OPTIONAL)}"
            )
        try:
            loaded = {key: arrays[key] for key in (*REQUIRED, *OPTIONAL) if key in arrays.files}
        except ValueError as error:  # numpy refuses object arrays without allow_pickle
            raise ValueError(
                f"{path}: holds an object array, which is not loaded (unpickling can run code); "
                "save class names, splits and file ids as string arrays (dtype str)"
            ) from error
    return RawDataset(
        images=loaded["images"],
        labels=integer_labels(loaded["labels"], path),
        class_names=[str(name) for name in loaded["class_names"]],
        official_split=loaded.get("official_split"),
        file_ids=loaded.get("file_ids"),
    )


def save_npz(dataset: RawDataset, path, keep: np.ndarray | None = None) -> None:
    """Write ``dataset`` (the rows ``keep``, all by default) to ``path``,
    compressed, atomically (a temporary file renamed into place)."""
    keep = np.arange(len(dataset.labels)) if keep is None else np.asarray(keep)
    arrays = {"images": dataset.images[keep], "labels": dataset.labels[keep],
              "class_names": np.asarray(dataset.class_names, dtype=str)}
    if dataset.official_split is not None:
        arrays["official_split"] = np.asarray(dataset.official_split[keep], dtype=str)
    if dataset.file_ids is not None:
        arrays["file_ids"] = np.asarray(dataset.file_ids[keep], dtype=str)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:  # a file object: savez would append ".npz"
        np.savez_compressed(f, **arrays)

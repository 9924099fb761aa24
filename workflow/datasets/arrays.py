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

import zipfile
import zlib
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


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    """The arrays of the npz file at ``path``; anything that is not an npz
    archive of plain arrays raises ValueError naming the file and what it
    holds. Never unpickles (numpy's default ``allow_pickle=False``)."""
    expected = (
        "save the arrays with numpy.savez or numpy.savez_compressed (or python -m workflow.export); an npz "
        f"dataset holds {', '.join(REQUIRED)} and optionally {', '.join(OPTIONAL)}"
    )
    try:
        opened = np.load(
            path
        )  # allow_pickle is False by default: no object arrays, no pickles
    except ValueError as error:  # numpy takes what is neither zip nor .npy for a pickle
        with open(path, "rb") as f:
            start = f.read(8)
        raise ValueError(
            f"{path}: not an npz archive: it starts with {start!r}, not the zip signature b'PK\\x03\\x04' "
            f"(numpy would read it as pickled data, which is never loaded: unpickling can run code); {expected}"
        ) from error
    except (OSError, EOFError, zipfile.BadZipFile) as error:
        raise ValueError(
            f"{path}: not a readable npz archive ({error}); {expected}"
        ) from error
    if isinstance(opened, np.ndarray):
        raise ValueError(
            f"{path}: a single .npy array (dtype {opened.dtype}, shape {opened.shape}), not an npz archive; "
            f"{expected}"
        )
    with opened as arrays:
        missing = [key for key in REQUIRED if key not in arrays.files]
        if missing:
            raise ValueError(
                f"{path}: missing the array(s) {', '.join(missing)} (it holds "
                f"{', '.join(arrays.files) or 'none'}); an npz dataset holds {', '.join(REQUIRED)} and "
                f"optionally {', '.join(OPTIONAL)}"
            )
        loaded = {}
        for key in (*REQUIRED, *OPTIONAL):
            if key not in arrays.files:
                continue
            try:
                loaded[key] = arrays[key]
            except (
                ValueError,
                OSError,
                EOFError,
                zipfile.BadZipFile,
                zlib.error,
            ) as error:
                if "allow_pickle" in str(
                    error
                ):  # numpy refuses object arrays without allow_pickle
                    raise ValueError(
                        f"{path}: holds an object array ({key}), which is not loaded (unpickling can run "
                        "code); save class names, splits and file ids as string arrays (dtype str)"
                    ) from error
                raise ValueError(
                    f"{path}: its array {key} cannot be read ({error}); {expected}"
                ) from error
    return loaded


@register_dataset("npz", user_files="path")
def npz(path) -> RawDataset:
    """``path``: the ``.npz`` file (see the module docstring). Every error
    names the file and the value found."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"npz path {path}: no such file; set the dataset's params.path to an .npz file "
            "(relative to the folder Snakemake runs in)"
        )
    loaded = _read_arrays(path)
    class_names = loaded["class_names"]
    if class_names.ndim != 1:
        raise ValueError(
            f"{path}: class_names has shape {class_names.shape}; it must be a one-dimensional array of "
            "the C class names (position = label)"
        )
    if loaded["images"].shape[:1] == (0,):
        raise ValueError(
            f"{path}: holds no images (images has shape {loaded['images'].shape})"
        )
    labels = integer_labels(loaded["labels"], path)
    try:
        return RawDataset(
            images=loaded["images"],
            labels=labels,
            class_names=[str(name) for name in class_names],
            official_split=loaded.get("official_split"),
            file_ids=loaded.get("file_ids"),
        )
    except (
        ValueError
    ) as error:  # the dataset's checks give the value found; name the file too
        raise ValueError(f"{path}: {error}") from error


def save_npz(dataset: RawDataset, path, keep: np.ndarray | None = None) -> None:
    """Write ``dataset`` (the rows ``keep``, all by default) to ``path``,
    compressed, atomically (a temporary file renamed into place)."""
    keep = np.arange(len(dataset.labels)) if keep is None else np.asarray(keep)
    arrays = {
        "images": dataset.images[keep],
        "labels": dataset.labels[keep],
        "class_names": np.asarray(dataset.class_names, dtype=str),
    }
    if dataset.official_split is not None:
        arrays["official_split"] = np.asarray(dataset.official_split[keep], dtype=str)
    if dataset.file_ids is not None:
        arrays["file_ids"] = np.asarray(dataset.file_ids[keep], dtype=str)
    with (
        atomic_path(path) as tmp,
        open(tmp, "wb") as f,
    ):  # a file object: savez would append ".npz"
        np.savez_compressed(f, **arrays)

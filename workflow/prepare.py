"""prepare: a dataset -> compact arrays in ``results/data/<dataset>/``.

- ``images.npy``: uint8 (N, H, W, C), readable with ``np.load(mmap_mode="r")``;
- ``labels.parquet``: ``label``, ``official_split`` (train/test/none) and
  ``file_id`` (the image's original file name or id; null if the dataset has
  none) per image;
- ``classes.json``: the class names, position = label;
- with ``storage: jpeg``, ``images.jpegs`` instead of ``images.npy``: each
  image's JPEG bytes, re-encoded only when larger than ``image_size``
  (:mod:`workflow.jpeg_store`), decoded batch by batch in training.

Image files are decoded once, here, so training never decodes an image.
With ``image_size`` S set, every image is resized so that its shorter side
is S (bilinear with antialiasing, ``torchvision.transforms.functional.resize``)
and centre-cropped to S x S; JPEGs are first decoded at the smallest DCT
scale that still gives both sides >= S (Pillow's draft mode, several times
faster on large photos). File images are converted to RGB. Decoded rows
stream into a memory-mapped file, so a dataset larger than memory can be
prepared. ``classes`` keeps only the named classes (labels renumbered in
the order given) before anything is decoded.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
from PIL import Image
from tqdm.auto import tqdm

from workflow.config import ConfigError, prepare_settings
from workflow.datasets import ImageFiles, RawDataset, load_dataset, needs_download
from workflow.images import (
    UndecodableImageError,
    check_image_file,
    decode_image,
    resize_square,
)
from workflow.io import atomic_path, check_free_space, reserve, save_json, save_parquet
from workflow.job_guard import temporary, writing
from workflow.jpeg_store import StoreWriter, array_jpeg, file_jpeg, open_images
from workflow.memory import check_fits
from workflow.splits import check_classes

BLOCK = 256  # images decoded per batch of thread-pool work


# ---------------------------------------------------------------- images


def _resize_array(images: np.ndarray, size: int) -> np.ndarray:
    """In-memory images (N, H, W, C) -> (N, size, size, C)."""
    out = np.empty((len(images), size, size, images.shape[3]), dtype=np.uint8)
    for i in tqdm(range(len(images)), desc="resize", file=sys.stderr, mininterval=5):
        pixels = images[i, :, :, 0] if images.shape[3] == 1 else images[i]
        resized = np.asarray(resize_square(Image.fromarray(pixels), size))
        out[i] = resized.reshape(size, size, -1)
    return out


# ---------------------------------------------------------------- classes


def select_classes(data, classes: list[str] | None, name: str):
    """Keep only the images of ``classes`` (labels renumbered in that order)."""
    if classes is None:
        return data
    index = {c: i for i, c in enumerate(data.class_names)}
    for c in classes:
        if c not in index:
            close = difflib.get_close_matches(c, data.class_names, n=3)
            raise ConfigError(
                f"config key datasets.{name}.classes: no class {c!r} in this dataset"
                + (f"; close: {', '.join(close)}" if close else "")
                + f" ({len(data.class_names)} classes, see a prepared classes.json)"
            )
    if len(set(classes)) != len(classes):
        raise ConfigError(f"config key datasets.{name}.classes: a class is named twice")
    remap = np.full(len(data.class_names), -1, dtype=np.int64)
    remap[[index[c] for c in classes]] = np.arange(len(classes))
    keep = np.flatnonzero(remap[data.labels] >= 0)

    def pick(values):
        return None if values is None else np.asarray(values)[keep]

    common = dict(
        labels=remap[data.labels[keep]],
        class_names=list(classes),
        official_split=pick(data.official_split),
        file_ids=pick(data.file_ids),
    )
    if isinstance(data, RawDataset):
        return RawDataset(images=data.images[keep], **common)
    return ImageFiles(
        paths=[data.paths[i] for i in keep], boxes=pick(data.boxes), **common
    )


# ---------------------------------------------------------------- writing


def _labels_table(labels, official_split, file_ids) -> pa.Table:
    n = len(labels)
    official = (
        np.full(n, "none", dtype=object)
        if official_split is None
        else np.asarray(official_split, dtype=object)
    )
    ids = [None] * n if file_ids is None else [str(f) for f in file_ids]
    return pa.table(
        {
            "label": pa.array(np.asarray(labels, dtype=np.int64)),
            "official_split": pa.array(official, type=pa.string()),
            "file_id": pa.array(ids, type=pa.string()),
        }
    )


def _skipped(result, skip: bool, name: str) -> bool:
    """Whether ``result`` (an image or an
    :class:`workflow.images.UndecodableImageError`) is an undecodable image
    to skip, said on stderr; without ``skip`` it is raised, saying how to
    skip such images."""
    if not isinstance(result, UndecodableImageError):
        return False
    if not skip:
        raise UndecodableImageError(
            f"{result} Replace or delete the file, or set "
            f"datasets.{name}.skip_undecodable: true to skip such images."
        )
    print(f"skipped: {result}", file=sys.stderr)
    return True


def _memmap(tmp: Path, shape: tuple, name: str) -> np.memmap:
    """A uint8 .npy memory map of ``shape`` at ``tmp`` for the images of
    dataset ``name``, its bytes allocated on disk before any is written
    (:func:`workflow.io.reserve`): a memory-mapped write to a full disk
    kills the job with SIGBUS, naming nothing and leaving its temporary."""
    check_free_space(tmp, int(np.prod(shape)), f"the images of dataset {name}")
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
    with open(tmp, "r+b") as f:
        reserve(f, os.path.getsize(tmp))
    return out


def _decode_into(
    files: ImageFiles, images_tmp: Path, image_size, skip: bool, threads: int, name: str
) -> np.ndarray:
    """Decode every file into a .npy memmap at ``images_tmp``; return the
    boolean mask of the rows kept (all, unless ``skip`` dropped some)."""
    n = len(files.paths)
    kept = np.zeros(n, dtype=bool)
    out, row, shape_from = None, 0, None

    boxes = [None] * n if files.boxes is None else files.boxes

    def work(i):
        try:
            return decode_image(files.paths[i], image_size, boxes[i])
        except UndecodableImageError as error:
            return error

    bar = tqdm(
        total=n, desc=f"decode {name}", unit="img", file=sys.stderr, mininterval=5
    )
    with bar, ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        for start in range(0, n, BLOCK):
            block = files.paths[start : start + BLOCK]
            for offset, result in enumerate(
                pool.map(work, range(start, start + len(block)))
            ):
                i = start + offset
                if _skipped(result, skip, name):
                    continue
                if out is None:
                    out = _memmap(images_tmp, (n, *result.shape), name)
                    shape_from = files.paths[i]
                elif result.shape != out.shape[1:]:
                    raise ValueError(
                        f"{files.paths[i]}: {result.shape[1]}x{result.shape[0]} pixels, but {shape_from} has "
                        f"{out.shape[2]}x{out.shape[1]}; set datasets.{name}.image_size to bring all images "
                        "to one size"
                    )
                out[row] = result
                row += 1
                kept[i] = True
            bar.update(len(block))
    if out is None:
        raise UndecodableImageError(
            f"dataset {name}: none of its {n} images could be decoded"
        )
    out.flush()
    del out
    if row < n:  # skipped images: copy the decoded rows into a file of the right length
        full = np.load(images_tmp, mmap_mode="r")
        compact_tmp = images_tmp.with_name(images_tmp.name + ".compact")
        with temporary(compact_tmp):
            try:
                compact = _memmap(compact_tmp, (row, *full.shape[1:]), name)
                for start in range(0, row, 4096):
                    compact[start : start + 4096] = full[start : min(row, start + 4096)]
                compact.flush()
                del compact, full
                compact_tmp.replace(images_tmp)
            finally:
                compact_tmp.unlink(missing_ok=True)
    return kept


def _encode_into(
    files: ImageFiles, images_tmp: Path, image_size, skip: bool, threads: int, name: str
) -> np.ndarray:
    """Write every file's JPEG bytes (:func:`workflow.jpeg_store.file_jpeg`)
    into a JPEG store at ``images_tmp``; return the mask of the rows kept."""
    n = len(files.paths)
    kept = np.zeros(n, dtype=bool)

    boxes = [None] * n if files.boxes is None else files.boxes

    def work(i):
        path = files.paths[i]
        check_image_file(Path(path))
        try:
            return file_jpeg(path, image_size, boxes[i])
        except (
            OSError,
            ValueError,
            SyntaxError,
            Image.DecompressionBombError,
        ) as error:
            return UndecodableImageError(f"{path}: cannot decode the image ({error})")

    writer = StoreWriter(images_tmp, image_size)
    bar = tqdm(
        total=n, desc=f"encode {name}", unit="img", file=sys.stderr, mininterval=5
    )
    with bar, ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        for start in range(0, n, BLOCK):
            block = files.paths[start : start + BLOCK]
            for offset, result in enumerate(
                pool.map(work, range(start, start + len(block)))
            ):
                if _skipped(result, skip, name):
                    continue
                writer.add(*result)
                kept[start + offset] = True
            bar.update(len(block))
    writer.close()
    if not kept.any():
        raise UndecodableImageError(
            f"dataset {name}: none of its {n} images could be decoded"
        )
    return kept


def write_prepared(
    data: RawDataset | ImageFiles,
    images_path,
    labels_path,
    classes_path,
    image_size: int | None = None,
    skip_undecodable: bool = False,
    threads: int = 1,
    name: str = "dataset",
    storage: str = "array",
) -> None:
    """Write the three prepared files; all appear together or none does.
    A dataset with fewer than two classes stops before anything is decoded
    (and again if skipped images leave fewer), naming it
    (:func:`workflow.splits.check_classes`). ``storage``: ``array`` (a
    decoded uint8 ``images.npy``) or ``jpeg`` (a JPEG store,
    :mod:`workflow.jpeg_store`)."""
    check_classes(data.labels, data.class_names, name)
    if (
        image_size is not None
    ):  # every path decodes or resizes images one by one at this size
        check_fits(
            threads * image_size**2 * 3,
            f"config key datasets.{name}.image_size: {threads} image(s) in "
            f"flight at {image_size} x {image_size} x 3 (uint8)",
            f"lower datasets.{name}.image_size",
        )
    with contextlib.ExitStack() as stack:
        # Renamed in reverse order on success (classes, labels, images); after
        # an error no temporary file survives and no output appears.
        images_tmp = stack.enter_context(atomic_path(images_path))
        labels_tmp = stack.enter_context(atomic_path(labels_path))
        classes_tmp = stack.enter_context(atomic_path(classes_path))
        if storage == "jpeg" and isinstance(data, RawDataset):
            writer = StoreWriter(images_tmp, image_size)
            for pixels in tqdm(
                data.images, desc=f"encode {name}", file=sys.stderr, mininterval=5
            ):
                writer.add(*array_jpeg(np.asarray(pixels), image_size))
            writer.close()
            table = _labels_table(data.labels, data.official_split, data.file_ids)
        elif isinstance(data, RawDataset):
            images = data.images
            if image_size is not None and images.shape[1:3] != (image_size, image_size):
                channels = images.shape[3]
                check_fits(
                    len(images) * image_size**2 * channels,
                    f"config key datasets.{name}.image_size: {len(images)} images resized in memory to "
                    f"{image_size} x {image_size} x {channels} (uint8)",
                    f"lower datasets.{name}.image_size, or set datasets.{name}.storage: jpeg (the images "
                    "are then encoded one by one)",
                )
                images = _resize_array(images, image_size)
            check_free_space(images_tmp, images.nbytes, f"the images of dataset {name}")
            with open(images_tmp, "wb") as f:
                np.save(f, images)
            table = _labels_table(data.labels, data.official_split, data.file_ids)
        else:
            write = _encode_into if storage == "jpeg" else _decode_into
            kept = write(data, images_tmp, image_size, skip_undecodable, threads, name)
            skipped = int((~kept).sum())
            if skipped:
                print(
                    f"dataset {name}: skipped {skipped} undecodable image(s) of {len(kept)}",
                    file=sys.stderr,
                )
            check_classes(data.labels[kept], data.class_names, name)
            official = (
                None if data.official_split is None else data.official_split[kept]
            )
            table = _labels_table(
                data.labels[kept], official, np.asarray(data.file_ids)[kept]
            )
        save_parquet(labels_tmp, table)
        save_json(classes_tmp, list(data.class_names))
        with writing():  # the three renames: none once the job's Snakemake has ended
            stack.close()


def prepare(
    spec: dict,
    images_path,
    labels_path,
    classes_path,
    root=None,
    threads: int = 1,
    name: str = "dataset",
) -> None:
    """Load the dataset of a config entry (``prepare_settings``) and write it."""
    spec = prepare_settings(spec)
    params = dict(spec["params"])
    if needs_download(spec["source"]):
        if root is None:
            raise ValueError(
                f"dataset {name}: source {spec['source']} needs its downloaded folder (root)"
            )
        params["root"] = root
    data = select_classes(load_dataset(spec["source"], **params), spec["classes"], name)
    print(
        f"dataset {name}: {len(data.labels)} images, {len(data.class_names)} classes",
        file=sys.stderr,
    )
    write_prepared(
        data,
        images_path,
        labels_path,
        classes_path,
        image_size=spec["image_size"],
        skip_undecodable=spec["skip_undecodable"],
        threads=threads,
        name=name,
        storage=spec.get("storage", "array"),
    )


def load_prepared(folder) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Images (a memory map of ``images.npy`` or a JPEG store), labels and
    class names of a prepared dataset folder."""
    folder = Path(folder)
    store = folder / "images.jpegs"
    images = open_images(store if store.exists() else folder / "images.npy")
    labels = pd.read_parquet(folder / "labels.parquet")["label"].to_numpy()
    classes = json.loads((folder / "classes.json").read_text())
    return images, labels, classes

"""Tiny datasets written in the official on-disk formats, for the tests of
the loaders and the download step (SVHN .mat, Food-101, Places365, image
folders). Pixel values are random but seeded; every function returns what
the loader should find, so tests compare against it."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image

SHARED_DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def md5(path) -> str:
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


def write_image(path: Path, size: tuple[int, int], rng: np.random.Generator, fmt: str | None = None) -> None:
    """A random RGB image of ``size`` = (width, height)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format=fmt)


def make_svhn(root: Path, n_train: int = 30, n_test: int = 20, seed: int = 0) -> dict:
    """``train_32x32.mat`` and ``test_32x32.mat``: X (32, 32, 3, N) uint8,
    y (N, 1) with labels 1..10 (10 is the digit 0)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    out = {}
    for part, n in [("train", n_train), ("test", n_test)]:
        x = rng.integers(0, 256, size=(32, 32, 3, n), dtype=np.uint8)
        y = rng.integers(1, 11, size=(n, 1)).astype(np.uint8)
        scipy.io.savemat(root / f"{part}_32x32.mat", {"X": x, "y": y})
        out[part] = (x, y)
    return out


FOOD_CLASSES = ["apple_pie", "baby_back_ribs", "waffles"]


def make_food101(root: Path, n_train: int = 4, n_test: int = 2, seed: int = 0) -> dict:
    """``food-101/images/<class>/<id>.jpg`` (mixed sizes) with
    ``food-101/meta/{train,test}.txt`` listing ``<class>/<id>``."""
    rng = np.random.default_rng(seed)
    folder = root / "food-101"
    lists = {"train": [], "test": []}
    image_id = 1000
    for c in FOOD_CLASSES:
        for side, n in [("train", n_train), ("test", n_test)]:
            for _ in range(n):
                image_id += 1
                size = (int(rng.integers(20, 60)), int(rng.integers(20, 60)))
                write_image(folder / "images" / c / f"{image_id}.jpg", size, rng)
                lists[side].append(f"{c}/{image_id}")
    (folder / "meta").mkdir(parents=True, exist_ok=True)
    for side, entries in lists.items():
        (folder / "meta" / f"{side}.txt").write_text("\n".join(entries) + "\n")
    (folder / "meta" / "classes.txt").write_text("\n".join(FOOD_CLASSES) + "\n")
    return lists


# Official category names; the last five are the LM paper's hard subset.
PLACES_CATEGORIES = [
    "/a/airfield",
    "/b/bazaar/indoor",
    "/r/roof_garden",
    "/t/tree_farm",
    "/v/vegetable_garden",
    "/y/yard",
    "/z/zen_garden",
]
HARD5 = ["roof_garden", "tree_farm", "vegetable_garden", "yard", "zen_garden"]


def make_places365(root: Path, n_train: int = 12, n_val: int = 6, seed: int = 0, size: int = 24) -> dict:
    """torchvision's Places365 layout (small images): the devkit text files
    at the top, ``data_256_standard/<letter>/<class>/<n>.jpg`` and
    ``val_256/Places365_val_<n>.jpg``."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    (root / "categories_places365.txt").write_text(
        "".join(f"{name} {i}\n" for i, name in enumerate(PLACES_CATEGORIES))
    )
    train_lines, val_lines = [], []
    for i, name in enumerate(PLACES_CATEGORIES):
        for n in range(1, n_train + 1):
            entry = f"{name}/{n:08d}.jpg"
            write_image(root / "data_256_standard" / entry.lstrip("/"), (size, size), rng)
            train_lines.append(f"{entry} {i}")
    val_labels = np.repeat(np.arange(len(PLACES_CATEGORIES)), n_val)
    rng.shuffle(val_labels)  # the official list is not ordered by class
    for n, label in enumerate(val_labels, start=1):
        entry = f"Places365_val_{n:08d}.jpg"
        write_image(root / "val_256" / entry, (size, size), rng)
        val_lines.append(f"{entry} {label}")
    (root / "places365_train_standard.txt").write_text("\n".join(train_lines) + "\n")
    (root / "places365_val.txt").write_text("\n".join(val_lines) + "\n")
    return {"train": train_lines, "val": val_lines}


def make_imagefolder(root: Path, classes=("cat", "dog", "owl"), n_train: int = 6, n_test: int = 4, seed: int = 0,
                     divided: bool = True) -> list[str]:
    """``root/{train,test}/<class>/`` (or ``root/<class>/``) of PNG and JPEG
    files of mixed sizes; returns the relative paths, in loader order."""
    rng = np.random.default_rng(seed)
    files = []
    sides = [("train", n_train), ("test", n_test)] if divided else [("", n_train + n_test)]
    for side, n in sides:
        for c in classes:
            for k in range(n):
                ext = "png" if k % 2 else "jpg"
                rel = f"{side}/{c}/img{k:02d}.{ext}".lstrip("/")
                write_image(root / rel, (int(rng.integers(10, 40)), int(rng.integers(10, 40))), rng)
                files.append(rel)
    return files


def tar_gz(folder: Path, archive: Path, arcname: str) -> Path:
    """``folder`` packed as ``arcname`` into a .tar.gz."""
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=arcname)
    return archive


def jpeg_bytes(size=(8, 8)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (10, 20, 30)).save(buffer, format="JPEG")
    return buffer.getvalue()

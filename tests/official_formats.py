"""Tiny datasets written in the official on-disk formats, for the tests of
the loaders and the download step (SVHN .mat, Food-101, Places365, image
folders). Pixel values are random but seeded; every function returns what
the loader should find, so tests compare against it."""

from __future__ import annotations

import base64
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


def write_image(
    path: Path, size: tuple[int, int], rng: np.random.Generator, fmt: str | None = None
) -> None:
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


def make_places365(
    root: Path, n_train: int = 12, n_val: int = 6, seed: int = 0, size: int = 24
) -> dict:
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
            write_image(
                root / "data_256_standard" / entry.lstrip("/"), (size, size), rng
            )
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


def make_imagefolder(
    root: Path,
    classes=("cat", "dog", "owl"),
    n_train: int = 6,
    n_test: int = 4,
    seed: int = 0,
    divided: bool = True,
) -> list[str]:
    """``root/{train,test}/<class>/`` (or ``root/<class>/``) of PNG and JPEG
    files of mixed sizes; returns the relative paths, in loader order."""
    rng = np.random.default_rng(seed)
    files = []
    sides = (
        [("train", n_train), ("test", n_test)] if divided else [("", n_train + n_test)]
    )
    for side, n in sides:
        for c in classes:
            for k in range(n):
                ext = "png" if k % 2 else "jpg"
                rel = f"{side}/{c}/img{k:02d}.{ext}".lstrip("/")
                write_image(
                    root / rel,
                    (int(rng.integers(10, 40)), int(rng.integers(10, 40))),
                    rng,
                )
                files.append(rel)
    return files


def tar_gz(folder: Path, archive: Path, arcname: str) -> Path:
    """``folder`` packed as ``arcname`` into a .tar.gz."""
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=arcname)
    return archive


# A 16x12 gradient JPEG (Pillow, quality 90) made arithmetic-coded (frame
# marker 0xC9) by `jpegtran -arithmetic -copy none`: Pillow and torchvision's
# libjpeg-turbo read it, nvJPEG does not.
ARITHMETIC_JPEG = base64.b64decode(
    "/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDAAMCAgMCAgMDAwMEAwMEBQgFBQQEBQoHBwYIDAoMDAsKCwsNDhIQDQ4RDgsLEBYQERMUFRUVDA8X"
    "GBYUGBIUFRT/2wBDAQMEBAUEBQkFBQkUDQsNFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBT/yQAR"
    "CAAMABADASIAAhEBAxEB/8wACgAQEAUBEBEF/9oADAMBAAIRAxEAPwD/AN4mq3iesl8KFRA3ZezmH939+GRFZCdttEz9KqvWbua3LotRNVsM"
    "gyXNwc2M/9k="
)


def jpeg_bytes(size=(8, 8)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (10, 20, 30)).save(buffer, format="JPEG")
    return buffer.getvalue()


def zip_folder(folder: Path, archive: Path, arcname: str) -> Path:
    """``folder`` packed as ``arcname`` into a .zip."""
    import zipfile

    with zipfile.ZipFile(archive, "w") as z:
        for path in sorted(folder.rglob("*")):
            z.write(path, f"{arcname}/{path.relative_to(folder).as_posix()}")
    return archive


def write_grey_image(
    path: Path, size: tuple[int, int], rng: np.random.Generator
) -> None:
    """A single-channel (Pillow mode L) JPEG, as a few official CUB images are."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(
        rng.integers(0, 256, size=(size[1], size[0]), dtype=np.uint8), mode="L"
    ).save(path)


CUB_CLASSES = [
    "001.Black_footed_Albatross",
    "002.Laysan_Albatross",
    "003.Sooty_Albatross",
    "004.Groove_billed_Ani",
]


def make_cub200(root: Path, per_class: int = 6, seed: int = 0) -> dict:
    """``CUB_200_2011/`` with ``images/<class>/<file>.jpg`` (mixed sizes, the
    first image single-channel) and the five official listings; half of
    each class on each official side. Returns the image files (loader
    order), their labels, sides and boxes (left, top, right, bottom)."""
    rng = np.random.default_rng(seed)
    folder = root / "CUB_200_2011"
    images, labels, sides, boxes = [], [], [], []
    lines = {
        name: []
        for name in [
            "images",
            "image_class_labels",
            "train_test_split",
            "bounding_boxes",
        ]
    }
    for c, name in enumerate(CUB_CLASSES):
        for k in range(per_class):
            image_id = len(images) + 1
            file_id = f"{name}/{name.split('.')[1]}_{k:04d}_{image_id}.jpg"
            size = (int(rng.integers(30, 60)), int(rng.integers(30, 60)))
            (write_grey_image if image_id == 1 else write_image)(
                folder / "images" / file_id, size, rng
            )
            x, y, w, h = 2.0, 3.0, size[0] - 6.0, size[1] - 8.0
            train = k % 2
            lines["images"].append(f"{image_id} {file_id}")
            lines["image_class_labels"].append(f"{image_id} {c + 1}")
            lines["train_test_split"].append(f"{image_id} {train}")
            lines["bounding_boxes"].append(f"{image_id} {x} {y} {w} {h}")
            images.append(file_id)
            labels.append(c)
            sides.append("train" if train else "test")
            boxes.append((x, y, x + w, y + h))
    for name, text in lines.items():
        (folder / f"{name}.txt").write_text("\n".join(text) + "\n")
    (folder / "classes.txt").write_text(
        "".join(f"{i + 1} {name}\n" for i, name in enumerate(CUB_CLASSES))
    )
    return {"files": images, "labels": labels, "sides": sides, "boxes": boxes}


CARS_CLASSES = [
    "AM General Hummer SUV 2000",
    "Acura RL Sedan 2012",
    "Acura TL Sedan 2012",
    "Audi R8 Coupe 2012",
]


def make_cars196(root: Path, per_class: int = 6, seed: int = 0) -> dict:
    """``car_ims/<000001>.jpg`` (one single-channel) and ``cars_annos.mat``
    as MATLAB writes it: a 1 x N struct array ``annotations`` and a 1 x C
    cell array ``class_names``."""
    rng = np.random.default_rng(seed)
    fields = [
        ("relative_im_path", "O"),
        ("bbox_x1", "O"),
        ("bbox_y1", "O"),
        ("bbox_x2", "O"),
        ("bbox_y2", "O"),
        ("class", "O"),
        ("test", "O"),
    ]
    n = len(CARS_CLASSES) * per_class
    annotations = np.zeros((1, n), dtype=fields)
    out = {"files": [], "labels": [], "sides": [], "boxes": []}
    for i in range(n):
        c, k = divmod(i, per_class)
        file_id = f"car_ims/{i + 1:06d}.jpg"
        size = (int(rng.integers(30, 60)), int(rng.integers(30, 60)))
        (write_grey_image if i == 1 else write_image)(root / file_id, size, rng)
        x1, y1, x2, y2 = 3, 2, size[0] - 4, size[1] - 3
        annotations[0, i] = (file_id, x1, y1, x2, y2, c + 1, k % 2)
        out["files"].append(file_id)
        out["labels"].append(c)
        out["sides"].append("test" if k % 2 else "train")
        out["boxes"].append((x1 - 1.0, y1 - 1.0, float(x2), float(y2)))
    class_names = np.empty((1, len(CARS_CLASSES)), dtype=object)
    class_names[0, :] = CARS_CLASSES
    scipy.io.savemat(
        root / "cars_annos.mat",
        {"annotations": annotations, "class_names": class_names},
    )
    return out


def make_sop(
    root: Path,
    train_classes=(1, 2, 3),
    test_classes=(4, 5, 6),
    per_class: int = 3,
    seed: int = 0,
) -> dict:
    """``Stanford_Online_Products/`` with ``<category>_final/<file>.JPG`` and
    ``Ebay_train.txt`` / ``Ebay_test.txt`` (header, then image id, class
    id, super-class id, path)."""
    rng = np.random.default_rng(seed)
    folder = root / "Stanford_Online_Products"
    out = {"files": [], "classes": []}
    image_id = 0
    for side, classes in [("train", train_classes), ("test", test_classes)]:
        lines = ["image_id class_id super_class_id path"]
        for class_id in classes:
            category = ["bicycle", "chair"][class_id % 2]
            for k in range(per_class):
                image_id += 1
                path = f"{category}_final/{100000 + class_id}_{k}.JPG"
                write_image(folder / path, (24, 20), rng, fmt="JPEG")
                lines.append(f"{image_id} {class_id} {class_id % 2 + 1} {path}")
                out["files"].append(path)
                out["classes"].append(class_id)
        (folder / f"Ebay_{side}.txt").write_text("\n".join(lines) + "\n")
    return out


def make_inshop(root: Path, per_item: int = 4, seed: int = 0) -> dict:
    """``img/<WOMEN|MEN>/<category>/<item>/<n>_front.jpg`` and
    ``list_eval_partition.txt`` (count, header, then path, item id, status):
    three training items interleaved with three test items whose images
    are split into query and gallery."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for n in range(1, 7):
        item = f"id_{n:08d}"
        for k in range(per_item):
            path = f"img/{'WOMEN' if n % 2 else 'MEN'}/Dresses/{item}/{k + 1:02d}_{k + 1}_front.jpg"
            write_image(root / path, (20, 28), rng)
            status = "train" if n % 2 else ("query" if k % 2 else "gallery")
            rows.append((path, item, status))
    (root / "list_eval_partition.txt").write_text(
        f"{len(rows)}\nimage_name item_id evaluation_status\n"
        + "".join(f"{p}  {i} {s}\n" for p, i, s in rows)
    )
    return {"rows": rows}


TINY_WNIDS = ["n01443537", "n01629819", "n01641577"]


def make_tiny_imagenet(
    root: Path, n_train: int = 3, n_val: int = 2, seed: int = 0
) -> dict:
    """``tiny-imagenet-200/`` with ``wnids.txt``,
    ``train/<wnid>/images/<wnid>_<n>.JPEG`` (and ``<wnid>_boxes.txt``) and
    ``val/images/val_<n>.JPEG`` listed in ``val/val_annotations.txt``
    (tab-separated: file, wnid, box x1 y1 x2 y2), 64x64 JPEGs."""
    rng = np.random.default_rng(seed)
    folder = root / "tiny-imagenet-200"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "wnids.txt").write_text("".join(f"{w}\n" for w in TINY_WNIDS))
    for wnid in TINY_WNIDS:
        boxes = []
        for n in range(n_train):
            write_image(
                folder / "train" / wnid / "images" / f"{wnid}_{n}.JPEG",
                (64, 64),
                rng,
                fmt="JPEG",
            )
            boxes.append(f"{wnid}_{n}.JPEG\t0\t2\t60\t63\n")
        (folder / "train" / wnid / f"{wnid}_boxes.txt").write_text("".join(boxes))
    lines = []
    for n in range(n_val * len(TINY_WNIDS)):
        write_image(
            folder / "val" / "images" / f"val_{n}.JPEG", (64, 64), rng, fmt="JPEG"
        )
        lines.append(f"val_{n}.JPEG\t{TINY_WNIDS[n % len(TINY_WNIDS)]}\t3\t3\t63\t63\n")
    (folder / "val" / "val_annotations.txt").write_text("".join(lines))
    return {"val": lines}

"""CUB-200-2011 (Wah et al. 2011): 11,788 photos of 200 bird species, about
60 per class; the deep-metric-learning benchmark. Official file
``CUB_200_2011.tgz`` (CaltechDATA, md5 97eceeb196236b17998738112f37df78),
unpacking to ``CUB_200_2011/`` with ``images/<class>/<file>.jpg`` and the
listings ``images.txt`` (``<image id> <class>/<file>``),
``image_class_labels.txt`` (``<image id> <class 1..200>``),
``train_test_split.txt`` (``<image id> <1 train | 0 test>``),
``classes.txt`` (``<class 1..200> <name>``) and ``bounding_boxes.txt``
(``<image id> <x> <y> <width> <height>``).

Classes in the order of their numbers (label = number - 1 for the full
set; a re-packed subset's ``classes.txt`` may list fewer). The official
side of each image is ``train_test_split.txt`` (the closed-set division,
every class on both sides); the class-disjoint protocol's boundary is the
registered ``train_classes=100`` (classes 1-100 train, 101-200 test).
A few images are single-channel: prepare converts every image to RGB.
``bounding_boxes: true`` crops each image to its box before resizing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from workflow.datasets import ImageFiles, read_rows, register_dataset, register_files
from workflow.download import OfficialFile

ARCHIVE = OfficialFile(
    name="CUB_200_2011.tgz",
    url="https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz",
    md5="97eceeb196236b17998738112f37df78",
    extract=True,
)


@register_files("cub200")
def cub200_files() -> list[OfficialFile]:
    return [ARCHIVE]


@register_dataset("cub200", train_classes=100, recall_at=[1, 2, 4, 8])
def cub200(root, bounding_boxes: bool = False) -> ImageFiles:
    """``bounding_boxes``: crop each image to its published box."""
    folder = Path(root) / "CUB_200_2011"

    def listing(name, fields):
        return read_rows(folder / name, fields, ARCHIVE.name)

    classes = sorted((int(number), name) for number, name in listing("classes.txt", 2))
    index = {number: i for i, (number, _) in enumerate(classes)}
    images = listing("images.txt", 2)
    label_of = dict(listing("image_class_labels.txt", 2))
    train_of = dict(listing("train_test_split.txt", 2))
    box_of = {row[0]: row[1:] for row in listing("bounding_boxes.txt", 5)} if bounding_boxes else {}
    labels, sides, boxes = [], [], []
    for image_id, file_id in images:
        for table, listed in [(label_of, "image_class_labels.txt"), (train_of, "train_test_split.txt")] + (
            [(box_of, "bounding_boxes.txt")] if bounding_boxes else []
        ):
            if image_id not in table:
                raise ValueError(f"{folder / listed}: image {image_id} ({file_id}) of images.txt is not listed")
        number = int(label_of[image_id])
        if number not in index:
            raise ValueError(f"{folder / 'image_class_labels.txt'}: image {image_id} has class {number}, "
                             "which classes.txt does not list")
        labels.append(index[number])
        sides.append("train" if train_of[image_id] == "1" else "test")
        if bounding_boxes:
            x, y, w, h = map(float, box_of[image_id])
            boxes.append((x, y, x + w, y + h))
    return ImageFiles(
        paths=[folder / "images" / file_id for _, file_id in images],
        labels=np.asarray(labels, dtype=np.int64),
        class_names=[name for _, name in classes],
        official_split=np.asarray(sides),
        file_ids=np.asarray([file_id for _, file_id in images], dtype=object),
        boxes=np.asarray(boxes, dtype=np.float64) if bounding_boxes else None,
    )

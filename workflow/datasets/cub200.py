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

from workflow.datasets import ImageFiles, register_dataset, register_files
from workflow.datasets.listings import ListingError, advice, read_listing
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
        return read_listing(folder / name, fields, ARCHIVE.name, root)

    classes = listing("classes.txt", 2)
    numbers = classes.integers(0, "class number", 1)
    classes.unique(0, "class number")
    classes.unique(1, "class name")
    index = {number: i for i, number in enumerate(sorted(numbers))}
    names = dict(zip(numbers, classes.column(1)))
    images = listing("images.txt", 2)
    image_ids = images.unique(0, "image id")
    paths = images.files(1, folder / "images")

    def per_image(name, fields, read):
        """The values of listing ``name`` (``read(listing)``) in the order of images.txt."""
        table = listing(name, fields)
        position = {
            image_id: i for i, image_id in enumerate(table.unique(0, "image id"))
        }
        for i, image_id in enumerate(table.column(0)):
            if image_id not in listed:
                table.fail(i, f"image id {image_id!r} is not in images.txt")
        for image_id, file_id in zip(image_ids, images.column(1)):
            if image_id not in position:
                raise ListingError(
                    f"{folder / name}: image {image_id} ({file_id}) of images.txt is not listed. "
                    f"{advice(ARCHIVE.name, Path(root))}"
                )
        values = read(table)
        return [values[position[image_id]] for image_id in image_ids]

    listed = set(image_ids)
    numbers_of = per_image(
        "image_class_labels.txt",
        2,
        lambda t: t.choice(
            1,
            "class number",
            {str(n) for n in numbers},
            among="a class number of classes.txt",
        ),
    )
    sides = per_image(
        "train_test_split.txt",
        2,
        lambda t: t.choice(1, "is_training_image", ["0", "1"]),
    )
    boxes = None
    if bounding_boxes:
        listed_boxes = per_image(
            "bounding_boxes.txt",
            5,
            lambda t: t.numbers([1, 2, 3, 4], "box x y width height"),
        )
        boxes = np.asarray(
            [(x, y, x + w, y + h) for x, y, w, h in listed_boxes], dtype=np.float64
        )
    return ImageFiles(
        paths=paths,
        labels=np.asarray([index[int(n)] for n in numbers_of], dtype=np.int64),
        class_names=[names[n] for n in sorted(numbers)],
        official_split=np.asarray(
            ["train" if side == "1" else "test" for side in sides]
        ),
        file_ids=np.asarray(images.column(1), dtype=object),
        boxes=boxes,
    )

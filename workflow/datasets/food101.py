"""Food-101 (Bossard, Guillaumin & Van Gool 2014): 101,000 food photos of
101 classes (JPEG, at most 512 px a side), 750 train and 250 test images per
class as listed in ``meta/train.txt`` and ``meta/test.txt`` (lines
``<class>/<id>``, image ``images/<class>/<id>.jpg``; each class one of
``meta/classes.txt``). Classes are sorted by
name, as torchvision's ``Food101`` does. URL and md5 of
``food-101.tar.gz`` are torchvision's. Images have mixed sizes, so the
dataset needs ``image_size`` in its config.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from workflow.datasets import ImageFiles, register_dataset, register_files
from workflow.datasets.listings import read_listing
from workflow.download import OfficialFile


@register_files("food101")
def food101_files() -> list[OfficialFile]:
    from torchvision.datasets import (
        Food101,  # here: importing torchvision takes seconds
    )

    return [
        OfficialFile(
            name="food-101.tar.gz", url=Food101._URL, md5=Food101._MD5, extract=True
        )
    ]


@register_dataset("food101")
def food101(root) -> ImageFiles:
    folder = Path(root) / "food-101"
    source = "food-101.tar.gz"
    listed = read_listing(folder / "meta" / "classes.txt", 1, source, root)
    listed.unique(0, "class")
    listing, sides = None, []
    for side in ["train", "test"]:
        part = read_listing(
            folder / "meta" / f"{side}.txt", 1, source, root
        )  # <class>/<id>
        listing = part if listing is None else listing + part
        sides += [side] * len(part.rows)
    for i, row in enumerate(listing.rows):
        if row[0].count("/") != 1:
            listing.fail(i, f"{row[0]!r} is not <class>/<image id>")
        row += [row[0].split("/")[0], f"{row[0]}.jpg"]
    listing.choice(
        1, "class", set(listed.column(0)), among="a class of meta/classes.txt"
    )
    paths = listing.files(2, folder / "images")
    classes = sorted(set(listing.column(1)))
    index = {name: i for i, name in enumerate(classes)}
    return ImageFiles(
        paths=paths,
        labels=np.asarray([index[name] for name in listing.column(1)], dtype=np.int64),
        class_names=classes,
        official_split=np.asarray(sides),
        file_ids=np.asarray(listing.column(2), dtype=object),
    )

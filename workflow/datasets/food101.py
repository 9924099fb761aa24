"""Food-101 (Bossard, Guillaumin & Van Gool 2014): 101,000 food photos of
101 classes (JPEG, at most 512 px a side), 750 train and 250 test images per
class as listed in ``meta/train.txt`` and ``meta/test.txt`` (lines
``<class>/<id>``, image ``images/<class>/<id>.jpg``). Classes are sorted by
name, as torchvision's ``Food101`` does. URL and md5 of
``food-101.tar.gz`` are torchvision's. Images have mixed sizes, so the
dataset needs ``image_size`` in its config.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from workflow.datasets import ImageFiles, register_dataset, register_files
from workflow.download import OfficialFile


@register_files("food101")
def food101_files() -> list[OfficialFile]:
    from torchvision.datasets import Food101  # here: importing torchvision takes seconds

    return [OfficialFile(name="food-101.tar.gz", url=Food101._URL, md5=Food101._MD5, extract=True)]


@register_dataset("food101")
def food101(root) -> ImageFiles:
    folder = Path(root) / "food-101"
    entries = {}
    for side in ["train", "test"]:
        listing = folder / "meta" / f"{side}.txt"
        entries[side] = [line.strip() for line in listing.read_text().splitlines() if line.strip()]
        if not entries[side]:
            raise ValueError(f"{listing} lists no images")
    classes = sorted({entry.split("/")[0] for side in entries.values() for entry in side})
    index = {name: i for i, name in enumerate(classes)}
    file_ids = [f"{entry}.jpg" for side in ["train", "test"] for entry in entries[side]]
    return ImageFiles(
        paths=[folder / "images" / f for f in file_ids],
        labels=np.asarray([index[f.split("/")[0]] for f in file_ids], dtype=np.int64),
        class_names=classes,
        official_split=np.asarray(["train"] * len(entries["train"]) + ["test"] * len(entries["test"])),
        file_ids=np.asarray(file_ids, dtype=object),
    )

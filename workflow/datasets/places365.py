"""Places365-Standard (Zhou et al. 2017): 365 scene classes; train-standard
(1.8 million images, 3,068 to 5,000 per class) and validation (100 per
class, the test side here). Files, URLs and checksums are torchvision's
(``torchvision.datasets.Places365``), in its layout:

- ``categories_places365.txt`` (lines ``/a/airfield 0``),
  ``places365_train_standard.txt`` (``/a/airfield/00000001.jpg 0``) and
  ``places365_val.txt`` (``Places365_val_00000001.jpg 165``), from the
  devkit ``filelist_places365-standard.tar`` (a mirror may hold these three
  files extracted: they have published checksums);
- images under ``data_256_standard/`` (torchvision's name; ``data_256/`` as
  the archive unpacks is accepted too) and ``val_256/``; with
  ``small: false`` the high-resolution ``data_large_standard/`` and
  ``val_large/``.

Class names drop the index letter: ``/a/apartment_building/outdoor`` is
``apartment_building/outdoor``. The LM paper's protocols are config
settings (README, "Datasets").
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from workflow.datasets import ImageFiles, register_dataset, register_files
from workflow.datasets.listings import read_listing
from workflow.download import Member, OfficialFile

# torchvision.datasets.Places365's file names, as read here without importing
# torchvision (which takes seconds); the download uses its checksums.
DEVKIT = "filelist_places365-standard.tar"
CATEGORIES = "categories_places365.txt"
FILE_LISTS = {
    "train-standard": "places365_train_standard.txt",
    "val": "places365_val.txt",
}


@register_files("places365")
def places365_files(small: bool = True) -> list[OfficialFile]:
    from torchvision.datasets import Places365

    base_url = Places365._BASE_URL
    devkit, devkit_md5 = Places365._DEVKIT_META["standard"]
    listed = [
        Places365._CATEGORIES_META,
        Places365._FILE_LIST_META["train-standard"],
        Places365._FILE_LIST_META["val"],
    ]
    files = [
        OfficialFile(
            name=devkit,
            url=base_url + devkit,
            md5=devkit_md5,
            extract=True,
            members=tuple(Member(name, md5) for name, md5 in listed),
        )
    ]
    for split in ["train-standard", "val"]:
        name, md5 = Places365._IMAGES_META[(split, small)]
        files.append(
            OfficialFile(name=name, url=base_url + name, md5=md5, extract=True)
        )
    return files


def _image_folder(root: Path, split: str, small: bool) -> Path:
    size = "256" if small else "large"
    if split == "val":
        return root / f"val_{size}"
    for name in [f"data_{size}_standard", f"data_{size}"]:
        if (root / name).is_dir():
            return root / name
    return root / f"data_{size}_standard"


@register_dataset("places365")
def places365(root, small: bool = True) -> ImageFiles:
    """``small``: the 256x256 images (default) or the high-resolution ones."""
    root = Path(root)
    categories = read_listing(root / CATEGORIES, 2, DEVKIT, root)
    categories.unique(0, "category")
    indices = categories.integers(1, "class index", 0, len(categories.rows) - 1)
    categories.unique(1, "class index")
    names = dict(zip(indices, categories.column(0)))
    # "/a/airfield" -> "airfield": the letter only groups the names alphabetically.
    class_names = [
        names[i].split("/", 2)[2] if names[i].count("/") >= 2 else names[i].strip("/")
        for i in range(len(names))
    ]

    paths, labels, sides, file_ids = [], [], [], []
    for split, side in [("train-standard", "train"), ("val", "test")]:
        listing = read_listing(root / FILE_LISTS[split], 2, DEVKIT, root)
        for row in (
            listing.rows
        ):  # the training list's "/a/airfield/00000001.jpg" lies in the images' folder
            row.append(row[0].lstrip("/"))
        paths += listing.files(2, _image_folder(root, split, small))
        labels += listing.integers(1, "class index", 0, len(class_names) - 1)
        file_ids += listing.column(0)
        sides += [side] * len(listing.rows)
    return ImageFiles(
        paths=paths,
        labels=np.asarray(labels, dtype=np.int64),
        class_names=class_names,
        official_split=np.asarray(sides),
        file_ids=np.asarray(file_ids, dtype=object),
    )

"""Tiny ImageNet (Stanford CS231n): 200 ImageNet classes, 64x64 JPEG,
500 train and 50 validation images per class (the test images carry no
labels and are not used). The validation set serves as the test side.

Official file: ``tiny-imagenet-200.zip`` from cs231n.stanford.edu, md5
90528d7ca1a48142e341f4ef8d21d0de (the value every public loader checks),
layout ``tiny-imagenet-200/{wnids.txt, words.txt, train/<wnid>/images/*.JPEG,
val/images/*.JPEG, val/val_annotations.txt}``.

``subset: true`` accepts instead ``tiny-imagenet-200-subset.zip`` (the first
100 of the 500 training images of each class, all validation images; kept
as an offline copy, md5 3720c701c700f824f268e9d6974d016b): only when asked
explicitly, never in place of the official zip.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from workflow.datasets import ImageFiles, register_dataset, register_files
from workflow.datasets.listings import read_listing
from workflow.download import OfficialFile

OFFICIAL = OfficialFile(
    name="tiny-imagenet-200.zip",
    url="http://cs231n.stanford.edu/tiny-imagenet-200.zip",
    md5="90528d7ca1a48142e341f4ef8d21d0de",
    extract=True,
    hint=(
        "(A reduced copy, tiny-imagenet-200-subset.zip, is accepted only when the "
        "dataset's config says so: params: {subset: true}.)"
    ),
)
SUBSET = OfficialFile(
    name="tiny-imagenet-200-subset.zip",
    url=None,
    md5="3720c701c700f824f268e9d6974d016b",
    sha256="d40fa4c1002409b45fbb398d80e860bf792dd12e9dec39f6f4eefc44ef650fa5",
    extract=True,
    hint="(This subset has no public address; params: {subset: true} asks for it.)",
)


@register_files("tiny_imagenet")
def tiny_imagenet_files(subset: bool = False) -> list[OfficialFile]:
    return [SUBSET if subset else OFFICIAL]


@register_dataset("tiny_imagenet")
def tiny_imagenet(root, subset: bool = False) -> ImageFiles:
    """``subset``: read the reduced offline copy (see the module docstring)."""
    folder = Path(root) / "tiny-imagenet-200"
    source = (SUBSET if subset else OFFICIAL).name
    classes = read_listing(folder / "wnids.txt", 1, source, root)
    classes.files(0, folder / "train", what="class folder")
    wnids = sorted(classes.column(0))
    index = {wnid: i for i, wnid in enumerate(wnids)}
    file_ids, labels, sides = [], [], []
    for wnid in wnids:
        images = sorted(
            (folder / "train" / wnid / "images").glob("*.JPEG"), key=lambda p: p.name
        )
        if not images:
            raise FileNotFoundError(
                f"{folder / 'train' / wnid / 'images'}: no training images of class {wnid}"
            )
        file_ids += [f"train/{wnid}/images/{p.name}" for p in images]
        labels += [index[wnid]] * len(images)
        sides += ["train"] * len(images)
    # <file> <wnid> <box x1 y1 x2 y2> (the boxes are not read)
    validation = read_listing(folder / "val" / "val_annotations.txt", 6, source, root)
    validation.files(0, folder / "val" / "images")
    validation.choice(1, "wnid", index, among="a wnid of wnids.txt")
    file_ids += [f"val/images/{name}" for name in validation.column(0)]
    labels += [index[wnid] for wnid in validation.column(1)]
    sides += ["test"] * len(validation.rows)
    return ImageFiles(
        paths=[folder / f for f in file_ids],
        labels=np.asarray(labels, dtype=np.int64),
        class_names=wnids,
        official_split=np.asarray(sides),
        file_ids=np.asarray(file_ids, dtype=object),
    )

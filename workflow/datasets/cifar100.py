"""CIFAR-100 (Krizhevsky 2009): 60,000 32x32 RGB images of 100 classes,
50,000 train and 10,000 test (500 and 100 per class), the "python version"
of the official distribution. URL and checksums are torchvision's
(``torchvision.datasets.CIFAR100``); a mirror may hold the archive
``cifar-100-python.tar.gz`` or its extracted folder ``cifar-100-python/``,
whose three files have published checksums too.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from workflow.datasets import RawDataset, register_dataset, register_files
from workflow.download import Member, OfficialFile


@register_files("cifar100")
def cifar100_files() -> list[OfficialFile]:
    from torchvision.datasets import (
        CIFAR100,  # here: importing torchvision takes seconds
    )

    folder = CIFAR100.base_folder
    members = [
        *CIFAR100.train_list,
        *CIFAR100.test_list,
        [CIFAR100.meta["filename"], CIFAR100.meta["md5"]],
    ]
    return [
        OfficialFile(
            name=CIFAR100.filename,
            url=CIFAR100.url,
            md5=CIFAR100.tgz_md5,
            extract=True,
            members=tuple(Member(f"{folder}/{name}", md5) for name, md5 in members),
        )
    ]


def _unpickle(path: Path) -> dict:
    """The official files are Python pickles, which can run code when
    loaded: each is checked against its official checksum right before
    loading (the download rule checked it too; this also covers a file
    changed since), and a mismatch stops before anything is unpickled."""
    from workflow.checksums import file_mismatch

    expected = {Path(m.path).name: m.md5 for m in cifar100_files()[0].members}
    problem = file_mismatch(path, expected[path.name])
    if problem:
        raise ValueError(
            f"{path}: {problem}; not the official CIFAR-100 file, so it is not unpickled. "
            "Delete the folder results/raw/cifar100 and run Snakemake again to fetch it anew."
        )
    with open(path, "rb") as f:
        return pickle.load(f, encoding="latin1")


@register_dataset("cifar100")
def cifar100(root, coarse: bool = False) -> RawDataset:
    """``coarse``: label by the 20 superclasses instead of the 100 classes."""
    folder = Path(root) / "cifar-100-python"
    key = "coarse" if coarse else "fine"
    names = _unpickle(folder / "meta")[f"{key}_label_names"]
    images, labels, sides, file_ids = [], [], [], []
    for side in ["train", "test"]:
        entry = _unpickle(folder / side)
        # Rows are 3,072 bytes: the red, green, then blue 32x32 planes.
        images.append(entry["data"].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.append(np.asarray(entry[f"{key}_labels"], dtype=np.int64))
        sides.append(np.full(len(labels[-1]), side))
        file_ids.append(np.asarray(entry["filenames"], dtype=object))
    return RawDataset(
        images=np.ascontiguousarray(np.concatenate(images), dtype=np.uint8),
        labels=np.concatenate(labels),
        class_names=list(names),
        official_split=np.concatenate(sides),
        file_ids=np.concatenate(file_ids),
    )

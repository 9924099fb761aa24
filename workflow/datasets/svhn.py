"""SVHN (Netzer et al. 2011), cropped digits: 32x32 RGB house-number digits,
10 classes; 73,257 train and 26,032 test images (and 531,131 "extra" train
images, optional). Files, URLs and checksums are torchvision's
(``torchvision.datasets.SVHN``): MATLAB files with ``X`` (32, 32, 3, N)
uint8 and ``y`` (N, 1) labels 1..10, where 10 is the digit 0.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from workflow.datasets import RawDataset, register_dataset, register_files
from workflow.datasets.listings import ListingError, advice
from workflow.download import OfficialFile


def _parts(extra: bool) -> list[tuple[str, str]]:
    """(file split, official side) in the order the images are stored."""
    return [
        ("train", "train"),
        *([("extra", "train")] if extra else []),
        ("test", "test"),
    ]


@register_files("svhn")
def svhn_files(extra: bool = False) -> list[OfficialFile]:
    from torchvision.datasets import SVHN  # here: importing torchvision takes seconds

    return [
        OfficialFile(
            name=SVHN.split_list[part][1],
            url=SVHN.split_list[part][0],
            md5=SVHN.split_list[part][2],
        )
        for part, _ in _parts(extra)
    ]


@register_dataset("svhn")
def svhn(root, extra: bool = False) -> RawDataset:
    """``extra``: add the 531,131 "extra" images to the training side."""
    import scipy.io

    images, labels, sides, file_ids = [], [], [], []
    for part, side in _parts(extra):
        name = f"{part}_32x32.mat"
        path = Path(root) / name
        mat = scipy.io.loadmat(path)
        if "X" not in mat or "y" not in mat:
            raise ListingError(
                f"{path}: holds {', '.join(k for k in mat if not k.startswith('__'))}, not X and y. "
                f"{advice(name, root)}"
            )
        x = np.asarray(mat["X"])
        y = np.asarray(mat["y"]).reshape(-1)
        if (
            x.dtype != np.uint8
            or x.shape[:3] != (32, 32, 3)
            or x.ndim != 4
            or len(y) != x.shape[3]
        ):
            raise ListingError(
                f"{path}: X has dtype {x.dtype} and shape {x.shape} and y has {len(y)} labels; "
                f"the official file holds X uint8 (32, 32, 3, N) and N labels. {advice(name, root)}"
            )
        bad = np.flatnonzero((y < 1) | (y > 10) | (y != np.round(y)))
        if bad.size:
            raise ListingError(
                f"{path}: label {y[bad[0]]} of image {bad[0]} (y, {bad.size} such labels) is not "
                f"one of 1..10. {advice(name, root)}"
            )
        x = x.transpose(3, 0, 1, 2)  # -> (N, H, W, C)
        y = y.astype(np.int64)
        y[y == 10] = 0  # SVHN labels the digit 0 as 10 (torchvision does the same)
        images.append(x)
        labels.append(y)
        sides.append(np.full(len(y), side))
        file_ids.append(np.array([f"{name}:{i}" for i in range(len(y))], dtype=object))
    return RawDataset(
        images=np.ascontiguousarray(np.concatenate(images)),
        labels=np.concatenate(labels),
        class_names=[str(d) for d in range(10)],
        official_split=np.concatenate(sides),
        file_ids=np.concatenate(file_ids),
    )

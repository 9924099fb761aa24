"""A user's own images, one folder per class (torchvision ``ImageFolder``
layout), JPEG or PNG of any size:

- ``path/train/<class>/<images>`` and ``path/test/<class>/<images>``: the
  official train/test division is kept; or
- ``path/<class>/<images>``: no division; the pipeline holds out
  ``test_fraction`` of each class as the evaluation pool.

Class names are the folder names, sorted; labels follow that order. Paths
are relative to the folder Snakemake runs in. Images of different sizes
need ``image_size`` in the dataset's config.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from workflow.datasets import ImageFiles, register_dataset

EXTENSIONS = {".jpg", ".jpeg", ".png"}


def _classes(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.name)


def _images(folder: Path) -> list[Path]:
    return sorted(
        (p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in EXTENSIONS), key=lambda p: p.name
    )


@register_dataset("imagefolder")
def imagefolder(path) -> ImageFiles:
    """``path``: the folder (see the module docstring)."""
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(
            f"imagefolder path {root}: no such folder; set the dataset's params.path to your image "
            "folder (relative to the folder Snakemake runs in)"
        )
    divided = (root / "train").is_dir() and (root / "test").is_dir()
    sides = ["train", "test"] if divided else [None]
    class_sets = {side: [c.name for c in _classes(root / side if side else root)] for side in sides}
    if divided and class_sets["train"] != class_sets["test"]:
        only = set(class_sets["train"]) ^ set(class_sets["test"])
        raise ValueError(
            f"imagefolder {root}: train/ and test/ must hold the same class folders; "
            f"only in one of them: {', '.join(sorted(only))}"
        )
    classes = class_sets[sides[0]]
    if not classes:
        raise ValueError(
            f"imagefolder {root}: no class folders found; expected {root}/train/<class>/ and "
            f"{root}/test/<class>/, or {root}/<class>/, holding .jpg/.jpeg/.png images"
        )
    paths, labels, split = [], [], []
    for side in sides:
        base = root / side if side else root
        for label, name in enumerate(classes):
            images = _images(base / name)
            if not images:
                raise ValueError(
                    f"imagefolder {root}: class folder {base / name} holds no .jpg/.jpeg/.png images; "
                    "add images to it or remove it"
                )
            paths += images
            labels += [label] * len(images)
            split += [side or "none"] * len(images)
    return ImageFiles(
        paths=paths,
        labels=np.asarray(labels, dtype=np.int64),
        class_names=classes,
        official_split=np.asarray(split) if divided else None,
        file_ids=np.asarray([p.relative_to(root).as_posix() for p in paths], dtype=object),
    )

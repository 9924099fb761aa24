"""A user's own images, one folder per class (torchvision ``ImageFolder``
layout), in any format Pillow reads, of any size:

- ``path/train/<class>/<images>`` and ``path/test/<class>/<images>``: the
  official train/test division is kept; or
- ``path/<class>/<images>``: no division; the pipeline holds out
  ``test_fraction`` of each class as the evaluation pool.

Class names are the folder names, sorted; labels follow that order. As in
torchvision, a class folder's subfolders are read too. Paths are relative
to the folder Snakemake runs in. Images of different sizes need
``image_size`` in the dataset's config.

Which files are read: every file whose extension is one of a format Pillow
can open (:func:`image_extensions`: ``.jpg``, ``.png``, ``.bmp``, ``.gif``,
``.tif``, ``.webp``, ...). Names starting with ``.`` (``.DS_Store``,
``.ipynb_checkpoints``) and files with other extensions (``README.txt``)
are ignored. Nothing else is skipped: a symbolic link whose target is
missing or that loops, an image file outside a class folder, a folder
beside ``train/`` and ``test/``, two class folders whose names differ only
in Unicode normalisation (``café`` typed as one character or as ``e`` and
an accent), and (in ``prepare``) an image file that does not decode or is
no regular file (a named pipe) stop the run, naming it.
"""

from __future__ import annotations

import stat
from functools import cache
from pathlib import Path

import numpy as np

from workflow.datasets import ImageFiles, register_dataset
from workflow.datasets.listings import describe_twins, unicode_twins


@cache
def image_extensions() -> frozenset[str]:
    """The file extensions (lower case, with the dot) of the formats Pillow
    can open here: ``Image.registered_extensions()`` less the formats it
    can only save (PDF) and the stubs that need a decoder Pillow lacks
    (HDF5, GRIB, BUFR, WMF)."""
    from PIL import Image, ImageFile

    def opens(fmt):
        factory = Image.OPEN.get(fmt, (None,))[0]
        return factory is not None and not (
            isinstance(factory, type) and issubclass(factory, ImageFile.StubImageFile)
        )

    return frozenset(
        ext.lower() for ext, fmt in Image.registered_extensions().items() if opens(fmt)
    )


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in image_extensions()


def _entries(folder: Path) -> list[tuple[Path, bool]]:
    """The entries of ``folder`` whose names do not start with ``.``,
    sorted, each with whether it is a folder (symbolic links followed); a
    link that leads nowhere raises ValueError naming it."""
    entries = []
    for path in sorted(folder.iterdir(), key=lambda p: p.name):
        if path.name.startswith("."):
            continue
        try:
            is_dir = stat.S_ISDIR(path.stat().st_mode)  # follows symbolic links
        except OSError as error:
            raise ValueError(
                f"{path}: a symbolic link whose target is missing or that loops ({error.strerror}); "
                "point it at an existing file or folder, or remove it"
            ) from error
        entries.append((path, is_dir))
    return entries


def _class_images(folder: Path, chain: tuple[Path, ...] = ()) -> list[Path]:
    """The image files under ``folder`` (its subfolders too), sorted; a
    subfolder that links to a folder it lies in (``chain``: the folders
    walked to get here, resolved) raises ValueError naming it: it would be
    read forever."""
    chain = (*chain, folder.resolve())
    images = []
    for path, is_dir in _entries(folder):
        if is_dir:
            target = path.resolve()
            if any(walked.is_relative_to(target) for walked in chain):
                raise ValueError(
                    f"{path}: a symbolic link to {target}, a folder it lies in (a loop); remove it or point "
                    "it elsewhere"
                )
            images += _class_images(path, chain)
        elif _is_image(path):
            images.append(path)
    return images


def _class_folders(folder: Path, root: Path, layout: str) -> list[Path]:
    """The class folders in ``folder``; an image file lying beside them
    (in no class) raises ValueError naming it."""
    classes = []
    for path, is_dir in _entries(folder):
        if is_dir:
            classes.append(path)
        elif _is_image(path):
            raise ValueError(
                f"imagefolder {root}: {path} is an image outside any class folder; move it into its class "
                f"folder ({layout}) or remove it"
            )
    return classes


@register_dataset("imagefolder", user_files="path")
def imagefolder(path) -> ImageFiles:
    """``path``: the folder (see the module docstring)."""
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(
            f"imagefolder path {root}: no such folder; set the dataset's params.path to your image "
            "folder (relative to the folder Snakemake runs in)"
        )
    divided = (root / "train").is_dir() and (root / "test").is_dir()
    if divided:
        layout = f"{root}/train/<class>/ and {root}/test/<class>/"
        others = [
            p.name
            for p in _class_folders(root, root, layout)
            if p.name not in ("train", "test")
        ]
        if others:
            raise ValueError(
                f"imagefolder {root}: beside train/ and test/ it holds {', '.join(others)}/, which would not "
                f"be read; move its class folders into train/ or test/, or move it out of {root}"
            )
    else:
        layout = f"{root}/<class>/"
    sides = ["train", "test"] if divided else [None]
    class_sets = {
        side: _class_folders(root / side if side else root, root, layout)
        for side in sides
    }
    names = {side: [c.name for c in folders] for side, folders in class_sets.items()}
    folders = {folder.name: folder for side in sides for folder in class_sets[side]}
    twins = unicode_twins(folders)
    if twins:
        raise ValueError(
            f"imagefolder {root}: the class folders {folders[twins[0]]} and {folders[twins[1]]} look alike: "
            f"{describe_twins(*twins)}, so they would be two classes of one name; rename one to the other"
        )
    if divided and names["train"] != names["test"]:
        only = set(names["train"]) ^ set(names["test"])
        raise ValueError(
            f"imagefolder {root}: train/ and test/ must hold the same class folders; "
            f"only in one of them: {', '.join(sorted(only))}"
        )
    classes = names[sides[0]]
    if not classes:
        raise ValueError(
            f"imagefolder {root}: no class folders found; expected {root}/train/<class>/ and "
            f"{root}/test/<class>/, or {root}/<class>/, holding image files (.jpg, .png, .bmp, ...)"
        )
    paths, labels, split = [], [], []
    for side in sides:
        for label, folder in enumerate(class_sets[side]):
            images = _class_images(folder)
            if not images:
                raise ValueError(
                    f"imagefolder {root}: class folder {folder} holds no image files (none with an extension "
                    "Pillow reads: .jpg, .png, .bmp, .tif, .webp, ...); add images to it or remove it"
                )
            paths += images
            labels += [label] * len(images)
            split += [side or "none"] * len(images)
    return ImageFiles(
        paths=paths,
        labels=np.asarray(labels, dtype=np.int64),
        class_names=classes,
        official_split=np.asarray(split) if divided else None,
        file_ids=np.asarray(
            [p.relative_to(root).as_posix() for p in paths], dtype=object
        ),
    )

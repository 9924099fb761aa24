"""Cars196 (Stanford Cars, Krause et al. 2013): 16,185 photos of 196 car
models; the deep-metric-learning benchmark. Official files ``car_ims.tgz``
(md5 d5c8f0aa497503f355e17dc7886c3f14, unpacking to
``car_ims/<000001>.jpg``) and ``cars_annos.mat`` (md5
b407c6086d669747186bd1d764ff9dbc, read with ``scipy.io.loadmat``: a struct
array ``annotations`` with ``relative_im_path``, ``bbox_x1``,
``bbox_y1``, ``bbox_x2``, ``bbox_y2`` (1-based pixels), ``class``
(1..196) and ``test`` (0/1) per image, and ``class_names``).

The original address (http://ai.stanford.edu/~jkrause/car196/) no longer
serves these files: a copy goes into the ``data_mirror`` folder. Classes
in the order of their numbers; the official side is ``test`` (the
closed-set division); the class-disjoint protocol's boundary is the
registered ``train_classes=98`` (classes 1-98 train, 99-196 test).
``bounding_boxes: true`` crops each image to its box before resizing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from workflow.datasets import ImageFiles, register_dataset, register_files
from workflow.datasets.listings import Listing
from workflow.download import OfficialFile

GONE = (
    "The original address (http://ai.stanford.edu/~jkrause/car196/) no longer serves car_ims.tgz and "
    "cars_annos.mat: get both from a copy and put them into the data_mirror folder."
)
IMAGES = OfficialFile(
    name="car_ims.tgz",
    url=None,
    md5="d5c8f0aa497503f355e17dc7886c3f14",
    extract=True,
    hint=GONE,
)
ANNOTATIONS = OfficialFile(
    name="cars_annos.mat", url=None, md5="b407c6086d669747186bd1d764ff9dbc", hint=GONE
)
FIELDS = (
    "relative_im_path",
    "bbox_x1",
    "bbox_y1",
    "bbox_x2",
    "bbox_y2",
    "class",
    "test",
)


@register_files("cars196")
def cars196_files() -> list[OfficialFile]:
    return [IMAGES, ANNOTATIONS]


def _text(value) -> str:
    """A MATLAB string as loadmat gives it (a str, or an array holding one)."""
    while isinstance(value, np.ndarray):
        value = value.item() if value.size == 1 else "".join(map(str, value.ravel()))
    return str(value)


def _number(value) -> str:
    """A MATLAB number as text: a whole number without its ".0" (MATLAB
    stores doubles); anything else as it is, for the checks to name."""
    text = _text(value)
    try:
        number = float(text)
    except ValueError:
        return text
    return str(int(number)) if number.is_integer() else text


@register_dataset("cars196", train_classes=98, recall_at=[1, 2, 4, 8])
def cars196(root, bounding_boxes: bool = False) -> ImageFiles:
    """``bounding_boxes``: crop each image to its published box."""
    import scipy.io  # here: the Snakefile imports the registry

    root = Path(root)
    path = root / ANNOTATIONS.name
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing ({ANNOTATIONS.checksums()}). {GONE}")
    mat = scipy.io.loadmat(path, squeeze_me=True)
    for key in ["annotations", "class_names"]:
        if key not in mat:
            raise ValueError(
                f"{path}: holds no {key!r} (it holds {', '.join(k for k in mat if not k.startswith('__'))})"
            )
    annotations = np.atleast_1d(mat["annotations"])
    missing = [f for f in FIELDS if f not in (annotations.dtype.names or ())]
    if missing:
        raise ValueError(
            f"{path}: annotations lack the field(s) {', '.join(missing)}; expected {', '.join(FIELDS)}"
        )
    class_names = [_text(name) for name in np.atleast_1d(mat["class_names"])]
    Listing(
        [[name] for name in class_names],
        list(range(1, len(class_names) + 1)),
        [(0, f"{path}, class_names entry")],
        ANNOTATIONS.name,
        root,
    ).unique(0, "class name")
    listing = Listing(
        [
            [_text(a["relative_im_path"])] + [_number(a[f]) for f in FIELDS[1:]]
            for a in annotations
        ],
        list(range(1, len(annotations) + 1)),
        [(0, f"{path}, annotation")],
        ANNOTATIONS.name,
        root,
    )
    paths = listing.files(0, root)
    numbers = np.asarray(listing.integers(5, "class", 1, len(class_names)))
    sides = listing.choice(6, "test", ["0", "1"])
    boxes = None
    if bounding_boxes:  # 1-based, inclusive corners -> left, top, right, bottom
        corners = listing.numbers([1, 2, 3, 4], "bbox_x1 bbox_y1 bbox_x2 bbox_y2")
        for i, (x1, y1, x2, y2) in enumerate(corners):
            if x2 < x1 or y2 < y1:
                listing.fail(
                    i, f"the box {x1:g} {y1:g} {x2:g} {y2:g} ends before it starts"
                )
        boxes = np.asarray([(x1 - 1, y1 - 1, x2, y2) for x1, y1, x2, y2 in corners])
    return ImageFiles(
        paths=paths,
        labels=numbers.astype(np.int64) - 1,
        class_names=class_names,
        official_split=np.asarray(
            ["test" if side == "1" else "train" for side in sides]
        ),
        file_ids=np.asarray(listing.column(0), dtype=object),
        boxes=boxes,
    )

"""In-Shop Clothes Retrieval (DeepFashion, Liu et al. 2016): 52,712 photos
of 7,982 clothing items (classes); the deep-metric-learning benchmark.
Files ``img.zip`` (unpacking to ``img/<WOMEN|MEN>/<category>/<item>/<file>.jpg``)
and ``list_eval_partition.txt`` (from ``Eval/``: the number of images, a
header, then ``<image path> <item id> <train|query|gallery>``).

The dataset is handed out through Google Drive after accepting its terms:
there is no public address and **no published checksum**, so both files
are accepted only from the ``data_mirror`` folder and only with the md5
(or sha256) of your copy pinned in the dataset's ``checksums`` key.

Its division is class-disjoint: 3,997 training items, 3,985 test items
whose images are split into query (14,218) and gallery (12,612); the
protocol ``class_disjoint`` takes the official sides and evaluates query
against gallery (official sides ``query`` and ``database``). Classes are
the item ids, training items first.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from workflow.datasets import ImageFiles, read_rows, register_dataset, register_files
from workflow.download import OfficialFile

HINT = (
    "(In-Shop has no public address and no published checksum: put your copy into the data_mirror folder and pin "
    "its md5 in the dataset's checksums key.)"
)
SIDES = {"train": "train", "query": "query", "gallery": "database"}


@register_files("inshop")
def inshop_files() -> list[OfficialFile]:
    return [
        OfficialFile(name="img.zip", url=None, md5=None, extract=True, hint=HINT),
        OfficialFile(name="list_eval_partition.txt", url=None, md5=None, hint=HINT),
    ]


@register_dataset("inshop", query_database=True)
def inshop(root) -> ImageFiles:
    root = Path(root)
    listing = root / "list_eval_partition.txt"
    rows = read_rows(listing, 3, "In-Shop files (Eval/list_eval_partition.txt)", header=2)
    for number, (_, _, status) in enumerate(rows):
        if status not in SIDES:
            raise ValueError(f"{listing}: image {number + 1} has evaluation status {status!r}, not train, query or gallery")
    train_items = sorted({item for _, item, status in rows if status == "train"})
    test_items = sorted({item for _, item, status in rows if status != "train"} - set(train_items))
    index = {item: i for i, item in enumerate(train_items + test_items)}
    return ImageFiles(
        paths=[root / path for path, _, _ in rows],
        labels=np.asarray([index[item] for _, item, _ in rows], dtype=np.int64),
        class_names=train_items + test_items,
        official_split=np.asarray([SIDES[status] for _, _, status in rows]),
        file_ids=np.asarray([path for path, _, _ in rows], dtype=object),
    )

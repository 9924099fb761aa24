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

from workflow.datasets import ImageFiles, register_dataset, register_files
from workflow.datasets.listings import ListingError, advice, check_header, read_listing
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


HEADER = ["image_name", "item_id", "evaluation_status"]


@register_dataset("inshop", recall_at=[1, 10, 20, 30, 50], query_database=True)
def inshop(root) -> ImageFiles:
    root = Path(root)
    path = root / "list_eval_partition.txt"
    source = "In-Shop files (Eval/list_eval_partition.txt)"
    listing = read_listing(path, 3, source, root, header=2)
    check_header(path, HEADER, source, root, line=2)
    count = path.read_text().splitlines()[0].strip()
    if count != str(len(listing.rows)):
        raise ListingError(
            f"{path}, line 1: the image count is {count!r}, but the file lists {len(listing.rows)} "
            f"images. {advice(source, root)}"
        )
    paths = listing.files(0, root)
    statuses = listing.choice(2, "evaluation status", list(SIDES))
    side_of = {}
    for i, (item, status) in enumerate(zip(listing.column(1), statuses)):
        if (side_of.setdefault(item, status) == "train") != (status == "train"):
            listing.fail(
                i,
                f"item {item} is listed as {status} here and as {side_of[item]} before; the published "
                "division is class-disjoint (an item trains, or it is a query and gallery item)",
            )
    train_items = sorted(item for item, status in side_of.items() if status == "train")
    test_items = sorted(item for item, status in side_of.items() if status != "train")
    index = {item: i for i, item in enumerate(train_items + test_items)}
    return ImageFiles(
        paths=paths,
        labels=np.asarray([index[item] for item in listing.column(1)], dtype=np.int64),
        class_names=train_items + test_items,
        official_split=np.asarray([SIDES[status] for status in statuses]),
        file_ids=np.asarray(listing.column(0), dtype=object),
    )

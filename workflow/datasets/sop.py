"""Stanford Online Products (Oh Song et al. 2016): 120,053 photos of
22,634 products (classes) from eBay, 2 to 12 each; the deep-metric-learning
benchmark. Official file ``Stanford_Online_Products.zip`` (md5
7f73d41a2f44250d4779881525aea32e), unpacking to
``Stanford_Online_Products/`` with ``<category>_final/<file>.JPG`` and the
listings ``Ebay_train.txt`` and ``Ebay_test.txt`` (a header, then
``<image id> <class id> <super-class id> <path>``).

Its division is class-disjoint: ``Ebay_train`` holds classes 1-11,318,
``Ebay_test`` 11,319-22,634, so the protocol ``class_disjoint`` takes the
official sides (the closed-set protocol has no test image of a training
class). Classes are named by their class id, in numeric order.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from workflow.datasets import ImageFiles, register_dataset, register_files
from workflow.datasets.listings import check_header, read_listing
from workflow.download import OfficialFile

ARCHIVE = OfficialFile(
    name="Stanford_Online_Products.zip",
    url="ftp://cs.stanford.edu/cs/cvgl/Stanford_Online_Products.zip",
    md5="7f73d41a2f44250d4779881525aea32e",
    extract=True,
)


@register_files("sop")
def sop_files() -> list[OfficialFile]:
    return [ARCHIVE]


HEADER = ["image_id", "class_id", "super_class_id", "path"]


@register_dataset("sop", recall_at=[1, 10, 100, 1000])
def sop(root) -> ImageFiles:
    folder = Path(root) / "Stanford_Online_Products"
    listings, sides = [], []
    for side in ["train", "test"]:
        listings.append(
            read_listing(folder / f"Ebay_{side}.txt", 4, ARCHIVE.name, root, header=1)
        )
        check_header(folder / f"Ebay_{side}.txt", HEADER, ARCHIVE.name, root)
        sides += [side] * len(listings[-1].rows)
    listing = listings[0] + listings[1]
    listing.unique(0, "image id")
    listing.integers(0, "image id", 1)
    classes = listing.integers(1, "class id", 1)
    listing.integers(2, "super-class id", 1)
    paths = listing.files(3, folder)
    side_of = {}
    for i, (class_id, side) in enumerate(zip(classes, sides)):
        if side_of.setdefault(class_id, side) != side:
            listing.fail(
                i,
                f"class id {class_id} is listed in both Ebay_train.txt and Ebay_test.txt; the published "
                "division is class-disjoint",
            )
    class_ids = sorted(side_of)
    index = {c: i for i, c in enumerate(class_ids)}
    return ImageFiles(
        paths=paths,
        labels=np.asarray([index[c] for c in classes], dtype=np.int64),
        class_names=[str(c) for c in class_ids],
        official_split=np.asarray(sides),
        file_ids=np.asarray(listing.column(3), dtype=object),
    )

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

from workflow.datasets import ImageFiles, read_rows, register_dataset, register_files
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


@register_dataset("sop", recall_at=[1, 10, 100, 1000])
def sop(root) -> ImageFiles:
    folder = Path(root) / "Stanford_Online_Products"
    rows, sides = [], []
    for side in ["train", "test"]:
        listed = read_rows(folder / f"Ebay_{side}.txt", 4, ARCHIVE.name, header=1)
        rows += listed
        sides += [side] * len(listed)
    class_ids = sorted({int(row[1]) for row in rows})
    index = {c: i for i, c in enumerate(class_ids)}
    file_ids = [row[3] for row in rows]
    return ImageFiles(
        paths=[folder / f for f in file_ids],
        labels=np.asarray([index[int(row[1])] for row in rows], dtype=np.int64),
        class_names=[str(c) for c in class_ids],
        official_split=np.asarray(sides),
        file_ids=np.asarray(file_ids, dtype=object),
    )

"""prepare: a dataset -> compact arrays in ``results/data/<dataset>/``.

- ``images.npy``: uint8 (N, H, W, C);
- ``labels.parquet``: ``label`` and ``official_split`` (train/test/none) per image;
- ``classes.json``: the class names, position = label.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from workflow.datasets import RawDataset, load_dataset
from workflow.io import save_json, save_npy, save_parquet


def write_prepared(raw: RawDataset, images_path, labels_path, classes_path) -> None:
    official = raw.official_split if raw.official_split is not None else "none"
    labels = pd.DataFrame(
        {"label": raw.labels.astype(np.int64), "official_split": official}
    )
    save_npy(images_path, raw.images)
    save_parquet(labels_path, labels)
    save_json(classes_path, list(raw.class_names))


def prepare(source: str, params: dict, images_path, labels_path, classes_path) -> None:
    write_prepared(load_dataset(source, **params), images_path, labels_path, classes_path)


def load_prepared(folder) -> tuple[np.ndarray, np.ndarray, list[str]]:
    folder = Path(folder)
    images = np.load(folder / "images.npy", mmap_mode="r")
    labels = pd.read_parquet(folder / "labels.parquet")["label"].to_numpy()
    classes = json.loads((folder / "classes.json").read_text())
    return images, labels, classes

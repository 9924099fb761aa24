"""Readers of a cell's files: its ``model.pt`` (:func:`read_model`, and the
loss's classes in it: :func:`class_ids`) and the embeddings of its
``embeddings.parquet`` (:func:`embedding_matrix`). Evaluation, figures and
tables read a cell through these, without importing training or embedding
code."""

from __future__ import annotations

import numpy as np
import pandas as pd

from workflow.checkpoints import CheckpointError, load_checkpoint
from workflow.config import settings_hash


def embedding_matrix(frame: pd.DataFrame, column: str = "embedding") -> np.ndarray:
    """The embedding column of a frame read from Parquet as a float32 matrix."""
    return np.stack(frame[column].to_numpy()).astype(np.float32, copy=False)


def class_ids(checkpoint: dict) -> np.ndarray:
    """The dataset label of each class of the checkpoint's loss (its
    anchor, classifier row or proxy i is class ``class_ids[i]``): the
    training classes (:func:`workflow.training.inputs.training_classes`). A model.pt
    written before they were recorded trained on the dataset's labels as
    they are: the identity."""
    return np.asarray(
        checkpoint.get("class_ids", range(checkpoint["num_classes"])), dtype=np.int64
    )


# What model.pt holds (scripts/train.py writes train_cell's dict without its stats).
MODEL_KEYS = (
    "backbone",
    "loss",
    "mean",
    "std",
    "in_channels",
    "image_size",
    "num_classes",
    "settings_hash",
)
MODEL_ADVICE = "Delete it and run Snakemake again: the train rule writes it anew."


def read_model(path, settings: dict) -> dict:
    """The trained model in ``path`` (a cell's ``model.pt``), checked to be
    one the train rule wrote for these settings (their hash): anything else
    is a :class:`workflow.checkpoints.CheckpointError` naming the file."""
    checkpoint = load_checkpoint(
        path, "model.pt of the train rule", keys=MODEL_KEYS, advice=MODEL_ADVICE
    )
    expected = settings_hash(settings)
    if checkpoint["settings_hash"] != expected:
        raise CheckpointError(
            f"{path}: a model trained for other settings (hash {checkpoint['settings_hash']}), "
            f"not for this cell's (hash {expected}). {MODEL_ADVICE}"
        )
    return checkpoint

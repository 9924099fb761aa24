"""embed: a trained cell -> one Parquet file of database and query embeddings.

Columns: ``index`` (row in the prepared dataset), ``split`` (database/query),
``label``, ``prediction`` (the loss's class prediction, -1 when it has
none) and ``embedding`` (fixed-size list of float32). The learned anchors or
class centres, when the loss has them, go to a second file with columns
``label`` and ``anchor`` (zero rows otherwise). Both carry the cell's
provenance in their Parquet metadata.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import torch

import workflow
from workflow.io import git_commit, save_parquet
from workflow.training import build_models, select_device, to_tensor


def _fixed_size_list(matrix: np.ndarray) -> pa.FixedSizeListArray:
    matrix = np.ascontiguousarray(matrix, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1)), matrix.shape[1])


def embedding_matrix(frame: pd.DataFrame, column: str = "embedding") -> np.ndarray:
    """The embedding column of a frame read from Parquet as a float32 matrix."""
    return np.stack(frame[column].to_numpy()).astype(np.float32, copy=False)


@torch.no_grad()
def compute_embeddings(
    checkpoint: dict, settings: dict, images: np.ndarray, index: np.ndarray, batch_size: int = 512
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Embeddings, predictions (-1 if the loss cannot classify) and anchors."""
    device = select_device(settings["training"]["device"])
    backbone, loss_fn = build_models(
        settings, checkpoint["in_channels"], checkpoint["image_size"], checkpoint["num_classes"]
    )
    backbone.load_state_dict(checkpoint["backbone"])
    loss_fn.load_state_dict(checkpoint["loss"])
    backbone.to(device).eval()
    loss_fn.to(device).eval()

    embeddings, predictions = [], []
    for start in range(0, len(index), batch_size):
        part = index[start : start + batch_size]
        x = to_tensor(np.asarray(images[part]), checkpoint["mean"], checkpoint["std"], device)
        emb = backbone(x)
        embeddings.append(emb.float().cpu())
        if hasattr(loss_fn, "predict"):
            predictions.append(loss_fn.predict(emb).argmax(dim=1).cpu())
        else:
            predictions.append(torch.full((len(part),), -1, dtype=torch.long))
    anchors = loss_fn.class_anchors().detach().float().cpu().numpy() if hasattr(loss_fn, "class_anchors") else None
    return torch.cat(embeddings).numpy(), torch.cat(predictions).numpy(), anchors


def provenance(settings: dict, config_hash: str) -> dict:
    return {
        "dataset": settings["dataset"],
        "regime": settings["regime"],
        "backbone": settings["backbone"],
        "loss": settings["loss"],
        "seed": settings["seed"],
        "embedding_size": settings["embedding_size"],
        "config_hash": config_hash,
        "git_commit": git_commit(),
        "torch_version": torch.__version__,
        "project_version": workflow.__version__,
    }


def write_embeddings(
    path, anchors_path, split: pd.DataFrame, labels: np.ndarray, embeddings: np.ndarray,
    predictions: np.ndarray, anchors: np.ndarray | None, metadata: dict,
) -> None:
    table = pa.table(
        {
            "index": pa.array(split["index"].to_numpy(), pa.int64()),
            "split": pa.array(split["split"].to_numpy(), pa.string()),
            "label": pa.array(labels, pa.int64()),
            "prediction": pa.array(predictions, pa.int64()),
            "embedding": _fixed_size_list(embeddings),
        }
    )
    save_parquet(path, table, metadata)
    if anchors is None:
        anchors = np.zeros((0, embeddings.shape[1]), dtype=np.float32)
    anchor_table = pa.table(
        {
            "label": pa.array(np.arange(len(anchors)), pa.int64()),
            "anchor": _fixed_size_list(anchors),
        }
    )
    save_parquet(anchors_path, anchor_table, metadata)

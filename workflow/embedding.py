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
from workflow.training import build_models, resolve_speed, select_device, to_tensor


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
    """Embeddings, predictions (-1 if the loss cannot classify) and anchors.

    The backbone runs with the cell's ``training.precision`` and
    ``channels_last`` (as resolved for this device), as in training; the
    embeddings are returned as float32."""
    device = select_device(settings["training"]["device"])
    speed = resolve_speed(settings["training"], device)
    backbone, loss_fn = load_models(checkpoint, settings, device, speed)
    embeddings, predictions = embed_images(backbone, loss_fn, checkpoint, speed, images, index, batch_size)
    anchors = loss_fn.class_anchors().detach().float().cpu().numpy() if hasattr(loss_fn, "class_anchors") else None
    return embeddings, predictions, anchors


def load_models(checkpoint: dict, settings: dict, device: torch.device, speed: dict):
    """The trained backbone and loss of a checkpoint, on ``device``, in eval mode.
    The checkpoint holds every weight (and the input mean and std), so
    pretrained weights are not fetched again."""
    params = {k: v for k, v in settings["backbone_params"].items() if k != "pretrained"}
    backbone, loss_fn = build_models(
        {**settings, "backbone_params": params},
        checkpoint["in_channels"], checkpoint["image_size"], checkpoint["num_classes"],
    )
    backbone.load_state_dict(checkpoint["backbone"])
    loss_fn.load_state_dict(checkpoint["loss"])
    backbone.to(device).eval()
    loss_fn.to(device).eval()
    if speed["channels_last"]:
        backbone.to(memory_format=torch.channels_last)
    return backbone, loss_fn


@torch.no_grad()
def embed_images(backbone, loss_fn, checkpoint: dict, speed: dict, images: np.ndarray, index: np.ndarray,
                 batch_size: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings (float32) and predictions of ``images[index]``, batch by batch."""
    device = next(backbone.parameters()).device
    embeddings, predictions = [], []
    for start in range(0, len(index), batch_size):
        part = index[start : start + batch_size]
        x = to_tensor(np.asarray(images[part]), checkpoint["mean"], checkpoint["std"], device)
        # to_tensor's permute leaves NHWC strides: pick the layout explicitly.
        x = x.contiguous(memory_format=torch.channels_last if speed["channels_last"] else torch.contiguous_format)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=speed["precision"] == "bf16"):
            emb = backbone(x)
        emb = emb.float()
        embeddings.append(emb.cpu())
        if hasattr(loss_fn, "predict"):
            predictions.append(loss_fn.predict(emb).argmax(dim=1).cpu())
        else:
            predictions.append(torch.full((len(part),), -1, dtype=torch.long))
    return torch.cat(embeddings).numpy(), torch.cat(predictions).numpy()


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

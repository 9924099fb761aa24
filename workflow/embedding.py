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
from workflow.augment import resize_centre_crop
from workflow.cell_files import MODEL_ADVICE, class_ids
from workflow.checkpoints import CheckpointError
from workflow.io import git_commit, save_parquet
from workflow.jpeg_store import JpegStore, pad
from workflow.losses import loss_classifies, loss_has_anchors
from workflow.training.inputs import normalise, to_tensor
from workflow.training.settings import input_view, resolve_speed, select_device
from workflow.training.step import build_models


def _fixed_size_list(matrix: np.ndarray) -> pa.FixedSizeListArray:
    matrix = np.ascontiguousarray(matrix, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(
        pa.array(matrix.reshape(-1)), matrix.shape[1]
    )


@torch.no_grad()
def compute_embeddings(
    checkpoint: dict,
    settings: dict,
    images: np.ndarray,
    index: np.ndarray,
    batch_size: int = 512,
    source: str = "the model",
    device: torch.device | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Embeddings, predictions (-1 if the loss cannot classify) and anchors.

    The backbone runs with the cell's ``training.precision`` and
    ``channels_last`` (as resolved for this device), as in training; the
    embeddings are returned as float32. ``source``: where the checkpoint
    came from, for the error when its weights do not fit. Images are
    resized and centre-cropped to the backbone's input as
    :func:`workflow.training.settings.input_view` says (not at all by default)."""
    device = device or select_device(settings["training"]["device"])
    speed = resolve_speed(settings["training"], device)
    backbone, loss_fn = load_models(checkpoint, settings, device, speed, source)
    if isinstance(
        images, JpegStore
    ):  # images of their own sizes: always to the trained input side
        side = checkpoint["image_size"]
        size, fraction = input_view(settings["training"], side, side)
        view = (size or side, fraction)
    else:
        size, fraction = input_view(
            settings["training"], images.shape[1], images.shape[2]
        )
        view = None if size is None else (size, fraction)
    impl = settings["loss_impl"]
    embeddings, predictions = embed_images(
        backbone,
        loss_fn,
        checkpoint,
        speed,
        images,
        index,
        batch_size,
        view,
        classifies=loss_classifies(impl),
    )
    # The loss predicts among its own classes: back to the dataset's labels.
    predictions = np.where(
        predictions >= 0, class_ids(checkpoint)[np.maximum(predictions, 0)], -1
    )
    anchors = (
        loss_fn.class_anchors().detach().float().cpu().numpy()
        if loss_has_anchors(impl)
        else None
    )
    return embeddings, predictions, anchors


def load_models(
    checkpoint: dict,
    settings: dict,
    device: torch.device,
    speed: dict,
    source: str = "the model",
):
    """The trained backbone and loss of a checkpoint, on ``device``, in eval mode.
    The checkpoint holds every weight (and the input mean and std), so
    pretrained weights are not fetched again."""
    params = {k: v for k, v in settings["backbone_params"].items() if k != "pretrained"}
    backbone, loss_fn = build_models(
        {**settings, "backbone_params": params},
        checkpoint["in_channels"],
        checkpoint["image_size"],
        checkpoint["num_classes"],
    )
    for part, module, name in [
        ("backbone", backbone, settings["arch"]),
        ("loss", loss_fn, settings["loss_impl"]),
    ]:
        try:
            module.load_state_dict(checkpoint[part])
        except (
            RuntimeError
        ) as error:  # torch lists missing and unexpected keys, and shapes
            detail = " ".join(str(error).split())[:500]
            raise CheckpointError(
                f"{source}: its {part} weights do not fit {part} {name!r} of this cell ({detail}). {MODEL_ADVICE}"
            ) from None
    backbone.to(device).eval()
    loss_fn.to(device).eval()
    if speed["channels_last"]:
        backbone.to(memory_format=torch.channels_last)
    return backbone, loss_fn


@torch.no_grad()
def embed_images(
    backbone,
    loss_fn,
    checkpoint: dict,
    speed: dict,
    images: np.ndarray,
    index: np.ndarray,
    batch_size: int = 512,
    view: tuple[int, float] | None = None,
    *,
    classifies: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings (float32) and predictions of ``images[index]``, batch by
    batch; predictions are -1 unless the loss ``classifies``
    (:func:`workflow.losses.loss_classifies`). ``view``: (input side, crop fraction) of
    :func:`workflow.augment.resize_centre_crop`, applied to the uint8 batch
    on the device; None embeds the stored images as they are."""
    device = next(backbone.parameters()).device
    embeddings, predictions = [], []
    for start in range(0, len(index), batch_size):
        part = index[start : start + batch_size]
        if isinstance(
            images, JpegStore
        ):  # decoded here: on the CPU, or with nvJPEG on a GPU
            x, heights, widths = pad(
                images.decode(part, device if device.type == "cuda" else "cpu")
            )
            x = resize_centre_crop(x.to(device), *view, heights=heights, widths=widths)
            x = normalise(x, checkpoint["mean"], checkpoint["std"])
        elif view is None:
            x = to_tensor(
                np.asarray(images[part]), checkpoint["mean"], checkpoint["std"], device
            )
        else:
            x = torch.as_tensor(
                np.ascontiguousarray(images[part]), device=device
            ).permute(0, 3, 1, 2)
            x = normalise(
                resize_centre_crop(x, *view), checkpoint["mean"], checkpoint["std"]
            )
        # to_tensor's permute leaves NHWC strides: pick the layout explicitly.
        x = x.contiguous(
            memory_format=torch.channels_last
            if speed["channels_last"]
            else torch.contiguous_format
        )
        with torch.autocast(
            device.type, dtype=torch.bfloat16, enabled=speed["precision"] == "bf16"
        ):
            emb = backbone(x)
        emb = emb.float()
        embeddings.append(emb.cpu())
        if classifies:
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
    path,
    anchors_path,
    split: pd.DataFrame,
    labels: np.ndarray,
    embeddings: np.ndarray,
    predictions: np.ndarray,
    anchors: np.ndarray | None,
    metadata: dict,
    anchor_labels: np.ndarray | None = None,
) -> None:
    """``anchor_labels``: the dataset label of each anchor
    (:func:`workflow.cell_files.class_ids`; default 0..len(anchors)-1)."""
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
        anchors, anchor_labels = (
            np.zeros((0, embeddings.shape[1]), dtype=np.float32),
            None,
        )
    anchor_table = pa.table(
        {
            "label": pa.array(
                np.arange(len(anchors)) if anchor_labels is None else anchor_labels,
                pa.int64(),
            ),
            "anchor": _fixed_size_list(anchors),
        }
    )
    save_parquet(anchors_path, anchor_table, metadata)

"""evaluate: one cell's embeddings -> its metrics and mean precision-recall curve."""

from __future__ import annotations

import numpy as np
import pandas as pd

from workflow.embedding import embedding_matrix
from workflow.metrics import evaluate_retrieval


def classification_accuracy(queries: pd.DataFrame, anchors: pd.DataFrame) -> float:
    """Accuracy of the query images: by the loss's own prediction (classifier
    head, or nearest anchor for CAM), else by the nearest exported anchor."""
    predictions = queries["prediction"].to_numpy()
    if np.all(predictions >= 0):
        return float(np.mean(predictions == queries["label"].to_numpy()))
    if len(anchors) == 0:
        return float("nan")
    q = embedding_matrix(queries)
    a = embedding_matrix(anchors, "anchor")
    nearest = ((q[:, None, :] - a[None, :, :]) ** 2).sum(-1).argmin(1)
    return float(np.mean(anchors["label"].to_numpy()[nearest] == queries["label"].to_numpy()))


def evaluate_cell(
    embeddings: pd.DataFrame,
    anchors: pd.DataFrame,
    precision_at=(1, 5, 10),
    top_k_error=(1, 5),
    chunk_size: int = 1024,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return (tidy metrics with columns ``metric``, ``value``; PR curve)."""
    queries = embeddings[embeddings["split"] == "query"]
    database = embeddings[embeddings["split"] == "database"]
    metrics, curve = evaluate_retrieval(
        embedding_matrix(queries),
        queries["label"].to_numpy(),
        embedding_matrix(database),
        database["label"].to_numpy(),
        precision_at=tuple(precision_at),
        top_k_error=tuple(top_k_error),
        chunk_size=chunk_size,
    )
    metrics["accuracy"] = classification_accuracy(queries, anchors)
    frame = pd.DataFrame({"metric": list(metrics), "value": list(metrics.values())})
    return frame, pd.DataFrame(curve)

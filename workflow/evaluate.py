"""evaluate: one cell's embeddings -> its metrics and mean precision-recall curve.

Exact retrieval always; two-stage retrieval with class anchors
(:mod:`workflow.retrieval.two_stage`) as well when the loss exported anchors and
``evaluation.two_stage.classes`` is not empty.

Distances. Each loss is retrieved in its own geometry (the ``geometry`` it
is registered with, :mod:`workflow.losses`): ``euclidean`` ranks by the L2
distance of the embeddings, ``cosine`` by cosine similarity, computed as the
L2 distance of the L2-normalised embeddings (``||x^ - y^||^2 = 2 - 2 cos``,
the same order). Two-stage retrieval uses the same geometry: in ``cosine``
the anchors are normalised too. ``evaluation.distances`` may ask for more
(``own``, ``euclidean``, ``cosine``); the own geometry is always evaluated,
first, and its exact retrieval gives the precision-recall curve.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from workflow.embedding import embedding_matrix
from workflow.geometry import in_geometry, resolve_distances
from workflow.retrieval.inputs import queries_without_positives
from workflow.retrieval.metrics import METRICS
from workflow.retrieval.two_stage import evaluate_retrieval_methods

EMBEDDING_COLUMNS = ["index", "split", "label", "prediction", "embedding"]
ANCHOR_COLUMNS = ["label", "anchor"]


class CellFileError(ValueError):
    """An input file of ``evaluate`` is unreadable or does not fit the other."""


def read_cell_file(path, columns: list[str]) -> pd.DataFrame:
    """Read one of a cell's Parquet files, naming the file and what to do
    when it is unreadable or lacks a column."""
    import pyarrow as pa

    try:
        frame = pd.read_parquet(path)
    except (OSError, ValueError, pa.ArrowException) as error:
        raise CellFileError(
            f"{path}: not a readable Parquet file ({error}). Delete it and run Snakemake "
            "again to rebuild it."
        ) from error
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise CellFileError(
            f"{path}: no column {', '.join(missing)} (has {', '.join(frame.columns)}); it was not "
            "written by the embed rule of this version. Delete it and run Snakemake again."
        )
    return frame


def read_cell_files(embeddings_path, anchors_path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A cell's embeddings and anchors, checked to fit each other."""
    embeddings = read_cell_file(embeddings_path, EMBEDDING_COLUMNS)
    anchors = read_cell_file(anchors_path, ANCHOR_COLUMNS)
    size = embedding_matrix(embeddings).shape[1] if len(embeddings) else None
    if len(anchors) and size is not None:
        anchor_size = embedding_matrix(anchors, "anchor").shape[1]
        if anchor_size != size:
            raise CellFileError(
                f"{anchors_path}: anchors of size {anchor_size}, but the embeddings in "
                f"{embeddings_path} have size {size}; the two files come from different "
                "runs. Delete both and run Snakemake again to embed the cell anew."
            )
    return embeddings, anchors


def check_cutoffs(precision_at, top_k_error, n_database: int) -> None:
    """Every cutoff must fit the cell's database."""
    for key, cutoffs in [("precision_at", precision_at), ("top_k_error", top_k_error)]:
        too_large = [k for k in cutoffs if k > n_database]
        if too_large:
            raise ValueError(
                f"config key evaluation.{key}: cutoff {max(too_large)} exceeds the database "
                f"of this cell ({n_database} images); use cutoffs up to {n_database} or a "
                "larger database (datasets.<name>.database_per_class)"
            )


def classification_accuracy(queries: pd.DataFrame, anchors: pd.DataFrame, distance: str = "euclidean") -> float:
    """Accuracy of the query images: by the loss's own prediction (classifier
    head, or nearest anchor for CAM), else by the nearest exported anchor in
    ``distance``."""
    predictions = queries["prediction"].to_numpy()
    if np.all(predictions >= 0):
        return float(np.mean(predictions == queries["label"].to_numpy()))
    if len(anchors) == 0:
        return float("nan")
    q = in_geometry(embedding_matrix(queries), distance)
    a = in_geometry(embedding_matrix(anchors, "anchor"), distance)
    nearest = ((q[:, None, :] - a[None, :, :]) ** 2).sum(-1).argmin(1)
    return float(np.mean(anchors["label"].to_numpy()[nearest] == queries["label"].to_numpy()))


def evaluate_cell(
    embeddings: pd.DataFrame,
    anchors: pd.DataFrame,
    precision_at=(1, 5, 10),
    top_k_error=(1, 5),
    chunk_size: int = 1024,
    two_stage: dict | None = None,
    geometry: str = "euclidean",
    distances=("own",),
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return (tidy metrics with columns ``geometry`` (the loss's),
    ``distance``, ``retrieval``, ``metric``, ``value``; the PR curve of exact
    retrieval in ``geometry``).

    ``geometry``: the loss's (``euclidean`` or ``cosine``); ``distances``:
    the distances to evaluate besides it (:func:`resolve_distances`).
    ``two_stage``: ``{"classes": [c, ...], "rest": "follow" | "cut"}``; used
    only when ``anchors`` has rows. Rows, per distance and retrieval method
    (``exact``, then each ``two_stage_c{c}``): the registered metrics
    (:data:`workflow.retrieval.metrics.METRICS`), in their order; those
    registered ``exact_only`` (``accuracy``, ``queries_without_positives``)
    for ``exact`` only.
    """
    queries = embeddings[embeddings["split"] == "query"]
    database = embeddings[embeddings["split"] == "database"]
    check_cutoffs(precision_at, top_k_error, len(database))
    two_stage = two_stage or {}
    classes = list(two_stage.get("classes", [])) if len(anchors) else []
    evaluation = {"precision_at": list(precision_at), "top_k_error": list(top_k_error)}
    rows, curve = [], None
    for distance in resolve_distances(distances, geometry):
        results = evaluate_retrieval_methods(
            in_geometry(embedding_matrix(queries), distance),
            queries["label"].to_numpy(),
            in_geometry(embedding_matrix(database), distance),
            database["label"].to_numpy(),
            anchors=in_geometry(embedding_matrix(anchors, "anchor"), distance) if classes else None,
            classes=classes,
            rest=two_stage.get("rest", "follow"),
            precision_at=tuple(precision_at),
            top_k_error=tuple(top_k_error),
            chunk_size=chunk_size,
        )
        for method, result in results.items():
            values = dict(result.metrics)
            if method == "exact":
                values["accuracy"] = classification_accuracy(queries, anchors, distance)
                values["queries_without_positives"] = float(
                    queries_without_positives(queries["label"], database["label"])
                )
            names = METRICS.names(evaluation, retrieval=method)
            if set(values) != set(names):
                raise RuntimeError(
                    f"{method} computes {sorted(set(values) - set(names))} but does not compute "
                    f"{sorted(set(names) - set(values))} of the metrics registered in "
                    "workflow/retrieval/metrics.py; register each metric there once"
                )
            rows += [(distance, method, name, values[name]) for name in names]
        if curve is None:
            curve = pd.DataFrame(results["exact"].curve)
    frame = pd.DataFrame(rows, columns=["distance", "retrieval", "metric", "value"])
    frame.insert(0, "geometry", geometry)
    return frame, curve

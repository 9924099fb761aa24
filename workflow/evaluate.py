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

from workflow.cell_files import embedding_matrix
from workflow.geometry import in_geometry, resolve_distances
from workflow.retrieval.inputs import queries_without_positives
from workflow.retrieval.metrics import METRICS
from workflow.retrieval.two_stage import evaluate_retrieval_methods
from workflow.splits import ALL_AGAINST_ALL

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


def query_and_database(
    embeddings: pd.DataFrame,
) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """The queries and the database of a cell's embeddings, by their
    ``split``: ``query`` and ``database`` rows, or, all against all,
    :data:`~workflow.splits.ALL_AGAINST_ALL` rows (every test image a query
    against all the others, itself excluded: the evaluation split of a
    class-disjoint dataset), given as (those rows, None). A mix of the two
    forms is an error."""
    splits = set(embeddings["split"])
    if ALL_AGAINST_ALL in splits:
        if splits != {ALL_AGAINST_ALL}:
            raise CellFileError(
                f"embeddings mix split '{ALL_AGAINST_ALL}' (all against all) with "
                f"{', '.join(sorted(splits - {ALL_AGAINST_ALL}))}: an evaluation split is either "
                f"'{ALL_AGAINST_ALL}' rows only or 'query' and 'database' rows. Rebuild the split "
                "(delete results/splits/<dataset>/) and run Snakemake again"
            )
        return embeddings, None
    return embeddings[embeddings["split"] == "query"], embeddings[
        embeddings["split"] == "database"
    ]


def classification_accuracy(
    queries: pd.DataFrame, anchors: pd.DataFrame, distance: str = "euclidean"
) -> float:
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
    return float(
        np.mean(anchors["label"].to_numpy()[nearest] == queries["label"].to_numpy())
    )


def evaluate_cell(
    embeddings: pd.DataFrame,
    anchors: pd.DataFrame,
    evaluation: dict | None = None,
    geometry: str = "euclidean",
    device=None,
    timing: dict | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return (tidy metrics with columns ``geometry`` (the loss's),
    ``distance``, ``retrieval``, ``metric``, ``value``; the PR curve of exact
    retrieval in ``geometry``).

    ``evaluation``: the config's evaluation mapping (the schema's defaults
    where a key is missing); this function reads ``chunk_size``,
    ``distances`` (the distances to evaluate besides the loss's
    ``geometry``, :func:`resolve_distances`) and ``two_stage``
    (``{"classes": [c, ...], "rest": "follow" | "cut"}``; used only when
    ``anchors`` has rows and the cell has a database apart from its
    queries) and hands the mapping on: the metric registry reads the
    cutoffs and switches of the metrics. Rows, per distance and retrieval
    method (``exact``, then each ``two_stage_c{c}``): the registered metrics
    (:data:`workflow.retrieval.metrics.METRICS`), in their order; those
    registered ``exact_only`` (``accuracy``, ``queries_without_positives``)
    for ``exact`` only. All against all (:func:`query_and_database`): exact
    retrieval only, ``accuracy`` NaN (the test classes are not the training
    classes). ``device``: where to rank (the CPU by default).

    ``timing``: a dict that, when given, receives the wall times of the
    search, ``{distance: {retrieval: {"seconds_per_query": s,
    "index_seconds": s}}}``. They stay out of the metrics, which are a
    function of the embeddings alone: two evaluations of one cell give
    byte-identical metrics, never identical times.
    """
    evaluation = dict(evaluation or {})
    queries, database = query_and_database(embeddings)
    two_stage = evaluation.get("two_stage") or {}
    classes = (
        list(two_stage.get("classes", []))
        if len(anchors) and database is not None
        else []
    )
    if database is None and len(anchors) and two_stage.get("classes"):
        print(
            "all against all: two-stage retrieval is not evaluated (it needs a database apart "
            "from the queries)"
        )
    rows, curve = [], None
    for distance in resolve_distances(evaluation.get("distances", ["own"]), geometry):
        results = evaluate_retrieval_methods(
            in_geometry(embedding_matrix(queries), distance),
            queries["label"].to_numpy(),
            None
            if database is None
            else in_geometry(embedding_matrix(database), distance),
            None if database is None else database["label"].to_numpy(),
            anchors=in_geometry(embedding_matrix(anchors, "anchor"), distance)
            if classes
            else None,
            classes=classes,
            rest=two_stage.get("rest", "follow"),
            evaluation=evaluation,
            chunk_size=evaluation.get("chunk_size", 1024),
            device=device,
        )
        for method, result in results.items():
            if timing is not None:
                timing.setdefault(distance, {})[method] = {
                    "seconds_per_query": result.seconds_per_query,
                    "index_seconds": result.index_seconds,
                }
            values = dict(result.metrics)
            if method == "exact":
                values["accuracy"] = (
                    float("nan")
                    if database is None
                    else classification_accuracy(queries, anchors, distance)
                )
                values["queries_without_positives"] = float(
                    queries_without_positives(
                        queries["label"],
                        None if database is None else database["label"],
                    )
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

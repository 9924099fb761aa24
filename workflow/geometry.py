"""Distances and geometries: one place.

Each loss is registered with the geometry its training shapes
(``workflow.losses``: ``euclidean`` or ``cosine``) and is retrieved in it.
``cosine`` retrieval is the L2 ranking of L2-normalised embeddings
(``||x^ - y^||^2 = 2 - 2 cos``: the order of cosine similarity), so every
retrieval runs through the same exact L2 kernel (:mod:`workflow.retrieval`).
``results/metrics.csv`` carries the loss's ``geometry`` and the ``distance``
of each row; tables, figures and selection read :func:`own_distance_rows`.

NumPy and pandas only, so the report environment can import it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

DISTANCES = ("euclidean", "cosine")


def resolve_distances(distances, geometry: str) -> list[str]:
    """The distances to evaluate: the loss's ``geometry`` first, then those of
    ``distances`` (``own`` is the geometry), each once."""
    if geometry not in DISTANCES:
        raise ValueError(
            f"unknown geometry {geometry!r}; one of {', '.join(DISTANCES)}"
        )
    resolved = [geometry]
    for name in distances:
        if name != "own" and name not in DISTANCES:
            raise ValueError(
                f"config key evaluation.distances: unknown distance {name!r}; "
                f"use own, {', '.join(DISTANCES)}"
            )
        resolved.append(geometry if name == "own" else name)
    return list(dict.fromkeys(resolved))


def in_geometry(x: np.ndarray, distance: str) -> np.ndarray:
    """Embeddings (or anchors) as the L2 ranking of ``distance`` sees them:
    as they are for ``euclidean``, L2-normalised rows for ``cosine`` (a zero
    row stays zero)."""
    x = np.asarray(x, dtype=np.float32)
    if distance == "euclidean" or x.size == 0:
        return x
    norms = np.sqrt(np.square(x, dtype=np.float64).sum(axis=1, keepdims=True))
    return (x / np.maximum(norms, 1e-12)).astype(np.float32)


def own_distance_rows(metrics: pd.DataFrame) -> pd.DataFrame:
    """The rows of each cell's own geometry (``distance == geometry``): what
    tables, figures and selection show unless asked for another distance."""
    return metrics[metrics["distance"] == metrics["geometry"]]

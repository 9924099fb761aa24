"""Exact retrieval: every query ranked against the whole database.

Queries are processed ``chunk_size`` at a time; the largest array is the
chunk's ``chunk_size x N`` distance matrix (4 bytes per entry), never a full
``Q x N`` matrix. Each chunk's positive ranks (:mod:`workflow.retrieval.kernel`)
are reduced at once by a :class:`~workflow.retrieval.accumulate.MetricAccumulator`
to per-query values (``O(Q)`` in all) and rank histograms (``O(N)``).
Conventions (distances, ties, queries without positives): :mod:`workflow.retrieval`.

All against all (no database given): query ``i`` is database item ``i``; in
each chunk its own distance is set to ``+inf`` and it is taken out of its
positives, so it comes after every other item and is never counted before
one: the ranks are those among the other ``N - 1`` items, chunk by chunk,
with the memory of the query/database form.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from workflow.retrieval.accumulate import MetricAccumulator
from workflow.retrieval.inputs import Prepared, check_chunk_size, prepare
from workflow.retrieval.kernel import (
    count_at_or_before,
    distances,
    sort_thresholds,
    squared_norms,
    sync,
)
from workflow.retrieval.metrics import METRICS

__all__ = [
    "ExactChunk",
    "distance_buffer",
    "evaluate_retrieval",
    "keep_rows",
    "positive_ranks",
    "pr_curve",
    "query_chunk",
    "rank_exact",
    "retrieval_metrics",
]


@dataclass
class ExactChunk:
    """One chunk of queries ranked exactly against the whole database."""

    start: int
    stop: int
    query: torch.Tensor  # (B, D) float32 on the device
    dist: torch.Tensor  # (B, N) distances (minus ||q||^2)
    positives: (
        torch.Tensor
    )  # (B, T) database index of each positive, sorted by (dist, index)
    valid: torch.Tensor  # (B, T) bool: a real positive (T = max R; rows padded)
    ranks: (
        torch.Tensor
    )  # (B, T) int64 1-based rank of each positive (0 where not valid)
    seconds: float  # wall time of the distances and the ranks

    def flat_ranks(self) -> np.ndarray:
        """Ranks query by query, ascending within a query (as positive_ranks)."""
        return self.ranks[self.valid].cpu().numpy()

    def rows(self, a: int, b: int) -> ExactChunk:
        """Queries ``start + a .. start + b - 1`` of this chunk."""
        return ExactChunk(
            self.start + a,
            self.start + b,
            self.query[a:b],
            self.dist[a:b],
            self.positives[a:b],
            self.valid[a:b],
            self.ranks[a:b],
            self.seconds,
        )

    def rows_with_positives(self, prep: Prepared):
        """``(ranks, valid, R)`` of the queries that have positives, for
        :meth:`MetricAccumulator.add_rows`."""
        return keep_rows(prep, self.start, self.stop, self.ranks, self.valid)


def keep_rows(
    prep: Prepared, start: int, stop: int, ranks: torch.Tensor, valid: torch.Tensor
):
    """Rows of queries ``start..stop-1`` whose class is in the database, with
    their R: the queries the metrics use."""
    keep = prep.has_positives[start:stop]
    n_pos = prep.n_pos[start:stop][keep]
    if keep.all():
        return ranks, valid, n_pos
    keep = torch.from_numpy(keep).to(ranks.device)
    return ranks[keep], valid[keep], n_pos


def query_chunk(
    prep: Prepared, start: int, stop: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Queries ``start..stop-1`` on the device (float32) and their class codes."""
    q = prep.query_emb[start:stop].to(device=prep.device, dtype=torch.float32)
    if not torch.isfinite(squared_norms(q)).all():
        raise ValueError(
            "query_emb contains NaN or infinite values (or values so large that "
            "their squared norm overflows float32)"
        )
    return q, torch.from_numpy(prep.query_codes[start:stop]).to(prep.device)


def distance_buffer(prep: Prepared, chunk_size: int) -> torch.Tensor:
    """Room for one chunk's distances, reused by every chunk (a fresh array
    per chunk would cost page faults on the CPU)."""
    return torch.empty((min(chunk_size, prep.n_queries), prep.n_db), device=prep.device)


def rank_exact(
    prep: Prepared, start: int, stop: int, buffer: torch.Tensor | None = None
) -> ExactChunk:
    """The exact ranking of queries ``start..stop-1`` (timed). With a
    ``buffer`` from :func:`distance_buffer`, the chunk's distances are
    written there (and so are valid until the next call with it)."""
    q, codes = query_chunk(prep, start, stop)
    sync(prep.device)
    began = time.perf_counter()
    dist = distances(
        q,
        prep.db_emb,
        prep.db_sq,
        out=None if buffer is None else buffer[: stop - start],
    )
    items = prep.class_items[codes]  # -1: padding
    valid = items >= 0
    if prep.all_against_all:
        # Each query is itself out: behind every other item, not a positive.
        own = torch.arange(start, stop, device=prep.device).unsqueeze(1)
        dist.scatter_(1, own, float("inf"))
        valid &= items != own
    pos_dist, items, order = sort_thresholds(
        dist.gather(1, items.clamp(min=0)), items, valid
    )
    valid = valid.gather(1, order)
    ranks = count_at_or_before(dist, pos_dist, items, valid.sum(1))
    sync(prep.device)
    return ExactChunk(
        start, stop, q, dist, items, valid, ranks, time.perf_counter() - began
    )


def positive_ranks(
    query_emb,
    query_labels,
    db_emb=None,
    db_labels=None,
    chunk_size: int = 1024,
    device=None,
) -> tuple[np.ndarray, np.ndarray]:
    """Each query's positive ranks, in compressed form.

    Returns ``(ranks, counts)``: ``counts[q]`` is ``R``, the number of database
    items of query ``q``'s class, and ``ranks`` concatenates, query by query,
    the 1-based ranks of those items in the query's L2 ranking (ascending
    within a query; ties broken by database index). Memory is ``O(sum R)``;
    :func:`evaluate_retrieval` does not keep them, it reduces each chunk.
    """
    prep = prepare(query_emb, query_labels, db_emb, db_labels, device)
    chunk_size = check_chunk_size(chunk_size)
    buffer = distance_buffer(prep, chunk_size)
    chunks = [
        rank_exact(
            prep, start, min(start + chunk_size, prep.n_queries), buffer
        ).flat_ranks()
        for start in range(0, prep.n_queries, chunk_size)
    ]
    return np.concatenate(chunks), prep.n_pos.copy()


def evaluate_retrieval(
    query_emb,
    query_labels,
    db_emb=None,
    db_labels=None,
    evaluation: Mapping | None = None,
    chunk_size: int = 1024,
    device=None,
) -> tuple[dict[str, float], pd.DataFrame]:
    """Retrieve every query against the database; metrics and PR curve, one pass.

    Arguments: query embeddings ``(Q, D)`` and labels ``(Q,)``, database
    embeddings ``(N, D)`` and labels ``(N,)`` (numpy arrays or torch tensors;
    none: all against all, each query against the other queries);
    ``evaluation``, the config's evaluation mapping, of which the metric
    registry reads the cutoffs and switches (its defaults where a key is
    missing); ``chunk_size`` queries are ranked at a time; ``device`` for
    the distance computation (default: the CPU).

    Returns ``(metrics, curve)``: ``metrics`` as :func:`retrieval_metrics`,
    ``curve`` as :func:`pr_curve`. The definitions:
    :mod:`workflow.retrieval.metrics`; the tie convention (ties broken by
    database index) and queries without positives (left out):
    :mod:`workflow.retrieval`.
    """
    prep = prepare(query_emb, query_labels, db_emb, db_labels, device)
    acc = MetricAccumulator(prep.n_ranked, METRICS.cutoffs(evaluation, prep.n_ranked))
    chunk_size = check_chunk_size(chunk_size)
    buffer = distance_buffer(prep, chunk_size)
    for start in range(0, prep.n_queries, chunk_size):
        stop = min(start + chunk_size, prep.n_queries)
        chunk = rank_exact(prep, start, stop, buffer)
        acc.add_rows(*chunk.rows_with_positives(prep))
    metrics, curve = acc.finish(prep.query_codes[prep.has_positives])
    metrics.update(METRICS.of_clusters(evaluation, *clustered_set(prep)))
    return metrics, curve


def clustered_set(prep: Prepared) -> tuple[torch.Tensor, np.ndarray]:
    """The embeddings and class codes the clustering metrics use: every
    test embedding once (all against all: the queries; else queries and
    database together)."""
    if prep.all_against_all:
        return prep.db_emb.cpu(), prep.query_codes
    emb = torch.cat([prep.query_emb.to(torch.float32).cpu(), prep.db_emb.cpu()])
    return emb, np.concatenate([prep.query_codes, prep.db_codes.cpu().numpy()])


def retrieval_metrics(*args, **kwargs) -> dict[str, float]:
    """The metrics of :func:`evaluate_retrieval` (same arguments): the
    registered metrics (:mod:`workflow.retrieval.metrics`) that the
    ``evaluation`` mapping asks for, e.g. ``precision@{k}`` for each of its
    cutoffs (class-macro, the LM paper's mAP@k), ``top{k}_error``, ``map``,
    ``map@r``, ``r_precision``, ``pr_auc``. Queries whose class is
    not in the database are left out; ValueError if that leaves none.
    """
    return evaluate_retrieval(*args, **kwargs)[0]


def pr_curve(
    query_emb,
    query_labels,
    db_emb=None,
    db_labels=None,
    chunk_size: int = 1024,
    device=None,
) -> pd.DataFrame:
    """Mean precision-recall curve over queries, one row per cutoff.

    Columns: ``cutoff`` (k = 1..N, N the database size), ``precision`` (mean
    over queries of precision@k, the fraction of the top k that is same-class),
    ``recall`` (mean over queries of the fraction of the query's R positives in
    the top k). Queries are averaged uniformly (not per class); queries
    without positives are left out.
    """
    no_cutoffs = dict.fromkeys(METRICS.cutoff_keys(), [])
    return evaluate_retrieval(
        query_emb,
        query_labels,
        db_emb,
        db_labels,
        no_cutoffs,
        chunk_size=chunk_size,
        device=device,
    )[1]

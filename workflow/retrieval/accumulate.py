"""From positive ranks to the registered metrics and the precision-recall curve.

A search (exact or two-stage) hands each chunk of queries' positive ranks to
a :class:`MetricAccumulator`; it keeps, per query, the value of every metric
registered with ``source="ranks"`` (:mod:`workflow.retrieval.metrics`) and,
per cutoff, histograms of the positive ranks (``O(N)``), from which the
curve follows: the sum over queries of ``#{i : r_i <= k}`` is the cumulative
sum over ``k`` of the histogram of all positive ranks, and the sum of
recalls is the same with each rank weighted by ``1/R`` of its query.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd
import torch

from workflow.retrieval.inputs import as_labels
from workflow.retrieval.metrics import METRICS

__all__ = ["MetricAccumulator", "QueryRanks", "metrics_from_positive_ranks"]


@dataclass
class QueryRanks:
    """One chunk of queries' positive ranks, what a ``source="ranks"``
    metric is computed from (tensors on one device)."""

    ranks: (
        torch.Tensor
    )  # (n, T) int64: 1-based ranks, ascending along the row where valid
    valid: torch.Tensor  # (n, T) bool, a prefix of each row
    n_pos: torch.Tensor  # (n,) int64: R, the number of positives of each query
    n_db: int  # N, the database size

    @cached_property
    def r(self) -> torch.Tensor:
        """(n,) float64 R."""
        return self.n_pos.to(torch.float64)

    @cached_property
    def precision(self) -> torch.Tensor:
        """(n, T) float64: precision at the rank of the i-th positive, i / r_i (0 where none)."""
        column = torch.arange(self.ranks.shape[1], device=self.ranks.device)
        return torch.where(
            self.valid, (column + 1).to(torch.float64) / self.ranks.clamp(min=1), 0.0
        )

    @cached_property
    def within_r(self) -> torch.Tensor:
        """(n, T) bool: a positive ranked within the top R."""
        return self.valid & (self.ranks <= self.n_pos.unsqueeze(1))

    @cached_property
    def first_rank(self) -> torch.Tensor:
        """(n,) the rank of the first positive (N + 1 where none was retrieved)."""
        counts = self.valid.sum(1)
        if self.ranks.shape[1]:
            return torch.where(counts > 0, self.ranks[:, 0], self.n_db + 1)
        return counts + self.n_db + 1


@dataclass
class MetricAccumulator:
    """Reduces chunks of positive ranks to per-query values and curve sums.

    ``cutoffs``: for each ``evaluation`` key of a pattern metric, the
    cutoffs to compute (:meth:`MetricRegistry.cutoffs`).
    """

    n_db: int
    cutoffs: dict[str, tuple[int, ...]]
    # (metric name, k) -> list of per-query values, one array per chunk
    values: dict = field(default_factory=dict)
    # hist[k]: positives at rank k over all queries; hist_recall: same / R.
    hist: np.ndarray = None
    hist_recall: np.ndarray = None
    n_queries: int = 0

    def __post_init__(self):
        self.values = {(metric.name, k): [] for metric, k in self.per_query()}
        self.hist = np.zeros(self.n_db + 1, dtype=np.int64)
        self.hist_recall = np.zeros(self.n_db + 1, dtype=np.float64)

    def per_query(self) -> list[tuple]:
        """``(metric, k)`` of each value kept per query (``k`` None: no pattern)."""
        return [
            (metric, k)
            for metric in METRICS.source("ranks")
            for k in (
                sorted(set(self.cutoffs.get(metric.cutoffs, ())))
                if metric.cutoffs
                else [None]
            )
        ]

    def add(
        self, ranks: np.ndarray, counts: np.ndarray, n_pos: np.ndarray | None = None
    ) -> None:
        """Add the queries of one chunk, given as flat ranks.

        ``counts[q]`` ranks of query ``q`` are given (ascending, in ``ranks``,
        query after query); ``n_pos[q]`` is its number of positives ``R``
        (default ``counts``): positives beyond ``counts[q]`` were not
        retrieved and rank at infinity.
        """
        ranks = np.asarray(ranks, dtype=np.int64)
        counts = np.asarray(counts, dtype=np.int64)
        if counts.sum() != len(ranks):
            raise ValueError("counts must sum to the number of ranks")
        width = max(int(counts.max(initial=0)), 1)
        valid = np.arange(width)[None, :] < counts[:, None]
        matrix = np.zeros(valid.shape, dtype=np.int64)
        matrix[valid] = ranks  # row-major: query after query
        self.add_rows(
            torch.from_numpy(matrix),
            torch.from_numpy(valid),
            counts if n_pos is None else n_pos,
        )

    def add_rows(self, ranks: torch.Tensor, valid: torch.Tensor, n_pos) -> None:
        """Add the queries of one chunk, one row each: ``ranks`` (n, T) int64,
        ascending along the row where ``valid`` (n, T), which must be a prefix
        of each row; ``n_pos`` (n,) the number of positives ``R`` of each
        query (valid entries beyond it rank at infinity). Computed with torch
        on the tensors' device."""
        device = ranks.device
        n, width = ranks.shape
        n_pos = torch.as_tensor(np.asarray(n_pos, dtype=np.int64)).to(device)
        counts = valid.sum(1)
        column = torch.arange(width, device=device)
        if len(n_pos) != n or (n_pos < 1).any() or (counts > n_pos).any():
            raise ValueError("every query needs 1 <= R and at most R ranks")
        if not torch.equal(valid, column.unsqueeze(0) < counts.unsqueeze(1)):
            raise ValueError("the valid ranks must come first in each row")
        # (masked_select: on the CPU many times faster than ranks[valid].)
        retrieved = torch.masked_select(ranks, valid)
        if len(retrieved) and (retrieved.min() < 1 or retrieved.max() > self.n_db):
            raise ValueError(f"ranks must lie in 1..{self.n_db}")
        if ((ranks[:, 1:] <= ranks[:, :-1]) & valid[:, 1:]).any():
            raise ValueError("ranks must be strictly increasing within a query")
        chunk = QueryRanks(ranks, valid, n_pos, self.n_db)
        for metric, k in self.per_query():
            value = metric.compute(chunk) if k is None else metric.compute(chunk, k)
            self.values[metric.name, k].append(value.cpu().numpy())
        weight = torch.masked_select(1.0 / chunk.r.unsqueeze(1), valid)
        self.hist += torch.bincount(retrieved, minlength=self.n_db + 1).cpu().numpy()
        # Weighted counts on the CPU: CUDA adds float weights in no fixed
        # order (and refuses under torch.use_deterministic_algorithms).
        self.hist_recall += torch.bincount(
            retrieved.cpu(), weight.cpu(), minlength=self.n_db + 1
        ).numpy()
        self.n_queries += n

    def curve(self) -> pd.DataFrame:
        cutoff = np.arange(1, self.n_db + 1)
        hits_sum = np.cumsum(self.hist)[1:]  # sum_q #{r_i <= k}, k = 1..N
        recall_sum = np.cumsum(self.hist_recall)[1:]  # sum_q #{r_i <= k} / R
        return pd.DataFrame(
            {
                "cutoff": cutoff,
                "precision": hits_sum / cutoff / self.n_queries,
                "recall": recall_sum / self.n_queries,
            }
        )

    def finish(self, query_codes: np.ndarray) -> tuple[dict[str, float], pd.DataFrame]:
        """The metrics of sources ``ranks`` and ``curve``, in registration
        order (a pattern's in the order of its cutoffs), and the curve;
        ``query_codes`` of the added queries, in order."""
        query_codes = np.asarray(query_codes)
        if len(query_codes) != self.n_queries:
            raise ValueError(
                f"{len(query_codes)} query codes for {self.n_queries} queries"
            )
        _, cls = np.unique(query_codes, return_inverse=True)
        cls = cls.reshape(-1)
        per_class_n = np.bincount(cls)
        metrics: dict[str, float] = {}
        curve = self.curve()
        for metric in METRICS:
            if metric.source == "curve":
                metrics[metric.name] = metric.compute(curve)
                continue
            if metric.source != "ranks":
                continue
            for k in self.cutoffs.get(metric.cutoffs, ()) if metric.cutoffs else [None]:
                value = np.concatenate(self.values[metric.name, k])
                if metric.kind == "per class":
                    value = np.bincount(cls, value) / per_class_n
                metrics[metric.name.format(k=k)] = float(np.mean(value))
        return metrics, curve


def metrics_from_positive_ranks(
    ranks,
    counts,
    query_labels,
    n_db: int,
    evaluation: Mapping | None = None,
) -> tuple[dict[str, float], pd.DataFrame]:
    """Metrics and mean precision-recall curve from precomputed positive ranks.

    ``ranks``/``counts`` as :func:`workflow.retrieval.exact.positive_ranks`
    returns them; ``query_labels`` gives the query classes for the
    class-macro ``precision@k``; ``n_db`` is the database size N. Queries
    with ``counts == 0`` are left out. Returns what
    :func:`workflow.retrieval.exact.evaluate_retrieval` returns.
    """
    cutoffs = METRICS.cutoffs(evaluation, n_db)
    ql = as_labels(query_labels, "query_labels")
    counts = np.asarray(counts, dtype=np.int64)
    if len(ql) != len(counts):
        raise ValueError(f"{len(ql)} query labels but {len(counts)} counts")
    keep = counts > 0
    if not keep.any():
        raise ValueError("no query has a positive: no retrieval metric is defined")
    acc = MetricAccumulator(n_db, cutoffs)
    acc.add(ranks, counts[keep])
    return acc.finish(ql[keep])

"""Exact L2 retrieval and the retrieval metrics of the benchmark.

Every query is ranked against a database by Euclidean (L2) distance. Queries
and database are disjoint sets: a query is never looked up in the database, so
there is no self-match to remove.

Conventions
-----------
Distances
    Computed with torch in float32 on ``device`` (default: CUDA if available,
    else CPU) as ``||b||^2 - 2 a.b``: the squared L2 distance minus the query's
    own ``||a||^2``, which is constant along a query's row and so does not
    change its ranking (leaving it out only removes a rounding step).
Ties
    Broken by database index: a query's ranking is a *stable* sort of its
    distances, so database items at the same computed distance keep their
    database order (the lower index ranks first). Every metric below follows
    from this single ranking, so all of them see the same tie-break.
Positive ranks
    For a query of class ``c``, the *positives* are the ``R`` database items of
    class ``c``; their *positive ranks* ``r_1 < ... < r_R`` are their 1-based
    positions in the query's ranking. All metrics are functions of these
    ranks (and ``N``, the database size).
Missing classes
    A query whose class has no item in the database (``R = 0``) has no defined
    average precision or recall: :class:`ValueError` is raised, naming how many
    such queries there are, instead of silently dropping them.

Metrics (keys of the dict returned by :func:`retrieval_metrics`)
----------------------------------------------------------------
``precision@{k}``
    The "mAP@k" of the LM paper (its eq. 4): per query, the fraction of the top
    ``k`` results that share the query's class, ``#{i : r_i <= k} / k``;
    averaged over the queries of each query class, then over the classes
    (macro average over query classes, so small classes weigh as much as big
    ones).
``top{k}_error``
    Fraction of queries with no positive in the top ``k`` (``r_1 > k``); so
    ``top1_error`` is 1 minus the per-query (not class-macro) mean precision@1.
``map``
    Mean over queries of the average precision over the full ranking,
    ``AP = (1/R) sum_i i / r_i``. Without ties this is
    ``sklearn.metrics.average_precision_score(is_same_class, -distance)``.
``map@r``
    As pytorch-metric-learning's ``AccuracyCalculator`` (``avg_of_avgs=False``)
    defines "mean_average_precision_at_r": per query
    ``(1/R) sum_{i : r_i <= R} i / r_i`` (i.e. ``(1/R) sum_{j<=R} P@j rel(j)``),
    averaged over queries.
``r_precision``
    As pytorch-metric-learning defines it: per query ``#{i : r_i <= R} / R``,
    averaged over queries.
``pr_auc``
    Area under the mean precision-recall curve of :func:`pr_curve` (mean
    precision@k against mean recall@k over queries, for every cutoff
    ``k = 1..N``), by the trapezoidal rule over recall
    (as ``sklearn.metrics.auc``), with the point ``(recall 0, precision of the
    first point)`` prepended so the area starts at recall 0. The curve ends at
    recall 1 (cutoff ``N`` retrieves every positive).

Memory
------
Queries are processed ``chunk_size`` at a time; the largest arrays are the
chunk's ``chunk_size x N`` distance matrix, its stable sort and the gathered
labels (about 25 bytes per entry), never a full ``Q x N`` matrix. Each chunk is
reduced at once to per-query statistics (``O(Q)`` in all) and to per-cutoff
histograms of the positive ranks (``O(N)``), from which the curve follows: the
sum over queries of ``#{i : r_i <= k}`` is the cumulative sum over ``k`` of
the histogram of all positive ranks, and the sum of recalls is the same with
each rank weighted by ``1/R`` of its query.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Sequence

import numpy as np
import pandas as pd
import torch

__all__ = [
    "evaluate_retrieval",
    "metrics_from_positive_ranks",
    "positive_ranks",
    "pr_curve",
    "retrieval_metrics",
]

# ---------------------------------------------------------------------------
# Input handling
# ---------------------------------------------------------------------------


def _default_device(device) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _labels_to_numpy(labels, name: str) -> np.ndarray:
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {labels.shape}")
    return labels


def _emb_to_tensor(emb, name: str) -> torch.Tensor:
    if isinstance(emb, torch.Tensor):
        t = emb.detach()
    else:
        t = torch.from_numpy(np.ascontiguousarray(np.asarray(emb), dtype=np.float32))
    if t.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n, dim), got shape {tuple(t.shape)}")
    return t


@dataclass
class _Prepared:
    query_emb: torch.Tensor  # (Q, D), where the caller had it; moved per chunk
    query_codes: np.ndarray  # (Q,) int64 class codes
    db_emb: torch.Tensor  # (N, D) float32 on device
    db_sq: torch.Tensor  # (N,) float32 on device, ||b||^2
    db_codes: torch.Tensor  # (N,) class codes on device
    n_pos: np.ndarray  # (Q,) int64: R, the number of positives of each query
    device: torch.device

    @property
    def n_queries(self) -> int:
        return len(self.query_codes)

    @property
    def n_db(self) -> int:
        return len(self.db_codes)


def _prepare(query_emb, query_labels, db_emb, db_labels, device) -> _Prepared:
    device = _default_device(device)
    q = _emb_to_tensor(query_emb, "query_emb")
    db = _emb_to_tensor(db_emb, "db_emb")
    ql = _labels_to_numpy(query_labels, "query_labels")
    dl = _labels_to_numpy(db_labels, "db_labels")
    if len(q) != len(ql):
        raise ValueError(f"{len(q)} query embeddings but {len(ql)} query labels")
    if len(db) != len(dl):
        raise ValueError(f"{len(db)} database embeddings but {len(dl)} database labels")
    if len(q) == 0 or len(db) == 0:
        raise ValueError("need at least one query and one database item")
    if q.shape[1] != db.shape[1]:
        raise ValueError(
            f"query and database dimensions differ: {q.shape[1]} vs {db.shape[1]}"
        )

    # Class codes 0..C-1 shared by queries and database (labels may be any
    # sortable type, strings included).
    _, codes = np.unique(np.concatenate([ql, dl]), return_inverse=True)
    codes = codes.reshape(-1).astype(np.int64)
    q_codes, d_codes = codes[: len(ql)], codes[len(ql) :]
    n_classes = int(codes.max()) + 1
    n_pos = np.bincount(d_codes, minlength=n_classes)[q_codes].astype(np.int64)
    missing = n_pos == 0
    if missing.any():
        absent = np.unique(ql[missing])
        shown = ", ".join(map(str, absent[:10])) + (", ..." if len(absent) > 10 else "")
        raise ValueError(
            f"{int(missing.sum())} of {len(ql)} queries have a class with no item "
            f"in the database ({len(absent)} such classes: {shown}); their "
            "average precision and recall are undefined"
        )

    db = db.to(device=device, dtype=torch.float32)
    if not torch.isfinite(db).all():
        raise ValueError("db_emb contains NaN or infinite values")
    code_dtype = torch.int32 if n_classes < 2**31 else torch.int64
    return _Prepared(
        query_emb=q,
        query_codes=q_codes,
        db_emb=db,
        db_sq=(db * db).sum(dim=1),
        db_codes=torch.from_numpy(d_codes).to(device=device, dtype=code_dtype),
        n_pos=n_pos,
        device=device,
    )


def _check_chunk_size(chunk_size) -> int:
    if int(chunk_size) != chunk_size or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    return int(chunk_size)


def _check_cutoffs(ks, n_db: int, name: str) -> tuple[int, ...]:
    ks = tuple(ks)
    for k in ks:
        if int(k) != k or k < 1:
            raise ValueError(f"{name}: cutoffs must be positive integers, got {k!r}")
        if k > n_db:
            raise ValueError(f"{name}: cutoff {k} exceeds the database size {n_db}")
    return tuple(int(k) for k in ks)


# ---------------------------------------------------------------------------
# Retrieval: positive ranks, one chunk of queries at a time
# ---------------------------------------------------------------------------


def _iter_positive_ranks(
    prep: _Prepared, chunk_size: int
) -> Iterator[tuple[int, int, np.ndarray]]:
    """Yield ``(start, stop, ranks)`` for each chunk of queries.

    ``ranks`` is the flat int64 array of the 1-based positive ranks of queries
    ``start..stop-1``, query by query, ascending within a query; query ``q``
    contributes ``prep.n_pos[q]`` of them.
    """
    for start in range(0, prep.n_queries, chunk_size):
        stop = min(start + chunk_size, prep.n_queries)
        q = prep.query_emb[start:stop].to(device=prep.device, dtype=torch.float32)
        if not torch.isfinite(q).all():
            raise ValueError("query_emb contains NaN or infinite values")
        q_codes = torch.from_numpy(prep.query_codes[start:stop]).to(
            device=prep.device, dtype=prep.db_codes.dtype
        )
        # Squared L2 distance minus the row constant ||q||^2: same ranking.
        dist = prep.db_sq.unsqueeze(0) - 2.0 * (q @ prep.db_emb.T)
        # Stable sort: equal distances keep database order (index tie-break).
        order = torch.sort(dist, dim=1, stable=True).indices
        del dist
        relevant = prep.db_codes[order] == q_codes.unsqueeze(1)
        del order
        # nonzero() is row-major: queries in order, ranks ascending per query.
        cols = relevant.nonzero(as_tuple=True)[1]
        ranks = (cols + 1).cpu().numpy().astype(np.int64, copy=False)
        expected = int(prep.n_pos[start:stop].sum())
        if len(ranks) != expected:  # pragma: no cover - internal consistency
            raise RuntimeError(f"found {len(ranks)} positives, expected {expected}")
        yield start, stop, ranks


def positive_ranks(
    query_emb,
    query_labels,
    db_emb,
    db_labels,
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
    prep = _prepare(query_emb, query_labels, db_emb, db_labels, device)
    chunks = [r for _, _, r in _iter_positive_ranks(prep, _check_chunk_size(chunk_size))]
    return np.concatenate(chunks), prep.n_pos.copy()


# ---------------------------------------------------------------------------
# Metrics from positive ranks
# ---------------------------------------------------------------------------


@dataclass
class _Accumulator:
    """Reduces chunks of positive ranks to per-query stats and curve sums."""

    n_db: int
    cutoffs: tuple[int, ...]
    ap: list = field(default_factory=list)
    ap_at_r: list = field(default_factory=list)
    r_prec: list = field(default_factory=list)
    first_rank: list = field(default_factory=list)
    hits: dict = field(default_factory=dict)  # k -> list of #positives in top k
    # hist[k]: positives at rank k over all queries; hist_recall: same / R.
    hist: np.ndarray = None
    hist_recall: np.ndarray = None

    def __post_init__(self):
        self.hits = {k: [] for k in self.cutoffs}
        self.hist = np.zeros(self.n_db + 1, dtype=np.int64)
        self.hist_recall = np.zeros(self.n_db + 1, dtype=np.float64)

    def add(self, ranks: np.ndarray, counts: np.ndarray) -> None:
        ranks = np.asarray(ranks, dtype=np.int64)
        counts = np.asarray(counts, dtype=np.int64)
        n = len(counts)
        if counts.sum() != len(ranks):
            raise ValueError("counts must sum to the number of ranks")
        if (counts < 1).any():
            raise ValueError("every query needs at least one positive")
        if len(ranks) and (ranks.min() < 1 or ranks.max() > self.n_db):
            raise ValueError(f"ranks must lie in 1..{self.n_db}")
        qid = np.repeat(np.arange(n), counts)  # query of each rank
        starts = np.cumsum(counts) - counts
        i = np.arange(len(ranks)) - starts[qid] + 1  # 1-based index among positives
        if (np.diff(ranks)[np.diff(qid) == 0] <= 0).any():
            raise ValueError("ranks must be strictly increasing within a query")
        r_of = counts[qid].astype(np.float64)  # R of each rank's query
        prec_at_rank = i / ranks  # precision at the rank of the i-th positive
        within_r = ranks <= r_of

        self.ap.append(np.bincount(qid, prec_at_rank, minlength=n) / counts)
        self.ap_at_r.append(
            np.bincount(qid, prec_at_rank * within_r, minlength=n) / counts
        )
        self.r_prec.append(np.bincount(qid, within_r, minlength=n) / counts)
        self.first_rank.append(ranks[starts])
        for k in self.cutoffs:
            self.hits[k].append(np.bincount(qid, ranks <= k, minlength=n))
        self.hist += np.bincount(ranks, minlength=self.n_db + 1)
        self.hist_recall += np.bincount(ranks, 1.0 / r_of, minlength=self.n_db + 1)

    def curve(self, n_queries: int) -> pd.DataFrame:
        cutoff = np.arange(1, self.n_db + 1)
        hits_sum = np.cumsum(self.hist)[1:]  # sum_q #{r_i <= k}, k = 1..N
        recall_sum = np.cumsum(self.hist_recall)[1:]  # sum_q #{r_i <= k} / R
        return pd.DataFrame(
            {
                "cutoff": cutoff,
                "precision": hits_sum / cutoff / n_queries,
                "recall": recall_sum / n_queries,
            }
        )

    def finish(
        self,
        query_codes: np.ndarray,
        precision_at: tuple[int, ...],
        top_k_error: tuple[int, ...],
    ) -> tuple[dict[str, float], pd.DataFrame]:
        query_codes = np.asarray(query_codes)
        n_queries = len(query_codes)
        _, cls = np.unique(query_codes, return_inverse=True)
        cls = cls.reshape(-1)
        per_class_n = np.bincount(cls)
        metrics: dict[str, float] = {}
        for k in precision_at:
            p = np.concatenate(self.hits[k]) / k
            metrics[f"precision@{k}"] = float(
                np.mean(np.bincount(cls, p) / per_class_n)
            )
        first = np.concatenate(self.first_rank)
        for k in top_k_error:
            metrics[f"top{k}_error"] = float(np.mean(first > k))
        metrics["map"] = float(np.mean(np.concatenate(self.ap)))
        metrics["map@r"] = float(np.mean(np.concatenate(self.ap_at_r)))
        metrics["r_precision"] = float(np.mean(np.concatenate(self.r_prec)))
        curve = self.curve(n_queries)
        metrics["pr_auc"] = _pr_auc(curve["recall"].to_numpy(), curve["precision"].to_numpy())
        return metrics, curve


def _pr_auc(recall: np.ndarray, precision: np.ndarray) -> float:
    """Trapezoidal area under (recall, precision), from (0, precision[0])."""
    x = np.concatenate([[0.0], recall])
    y = np.concatenate([[precision[0]], precision])
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2.0))


def metrics_from_positive_ranks(
    ranks,
    counts,
    query_labels,
    n_db: int,
    precision_at: Sequence[int] = (1, 5, 10),
    top_k_error: Sequence[int] = (1, 5),
) -> tuple[dict[str, float], pd.DataFrame]:
    """Metrics and mean precision-recall curve from precomputed positive ranks.

    ``ranks``/``counts`` as returned by :func:`positive_ranks`; ``query_labels``
    gives the query classes for the class-macro ``precision@k``; ``n_db`` is
    the database size N. Returns what :func:`evaluate_retrieval` returns.
    """
    precision_at = _check_cutoffs(precision_at, n_db, "precision_at")
    top_k_error = _check_cutoffs(top_k_error, n_db, "top_k_error")
    ql = _labels_to_numpy(query_labels, "query_labels")
    if len(ql) != len(counts):
        raise ValueError(f"{len(ql)} query labels but {len(counts)} counts")
    acc = _Accumulator(n_db, tuple(sorted(set(precision_at))))
    acc.add(ranks, counts)
    return acc.finish(ql, precision_at, top_k_error)


# ---------------------------------------------------------------------------
# Public entry points
# ---------------------------------------------------------------------------


def evaluate_retrieval(
    query_emb,
    query_labels,
    db_emb,
    db_labels,
    precision_at: Sequence[int] = (1, 5, 10),
    top_k_error: Sequence[int] = (1, 5),
    chunk_size: int = 1024,
    device=None,
) -> tuple[dict[str, float], pd.DataFrame]:
    """Retrieve every query against the database; metrics and PR curve, one pass.

    Arguments: query embeddings ``(Q, D)`` and labels ``(Q,)``, database
    embeddings ``(N, D)`` and labels ``(N,)`` (numpy arrays or torch tensors);
    the cutoffs for ``precision@k`` and ``top{k}_error``; ``chunk_size`` queries
    are ranked at a time; ``device`` for the distance computation (default:
    CUDA if available, else CPU).

    Returns ``(metrics, curve)``: ``metrics`` as :func:`retrieval_metrics`,
    ``curve`` as :func:`pr_curve`. See the module docstring for the
    definitions and the tie convention (ties broken by database index).
    """
    prep = _prepare(query_emb, query_labels, db_emb, db_labels, device)
    precision_at = _check_cutoffs(precision_at, prep.n_db, "precision_at")
    top_k_error = _check_cutoffs(top_k_error, prep.n_db, "top_k_error")
    acc = _Accumulator(prep.n_db, tuple(sorted(set(precision_at))))
    for start, stop, ranks in _iter_positive_ranks(prep, _check_chunk_size(chunk_size)):
        acc.add(ranks, prep.n_pos[start:stop])
    return acc.finish(prep.query_codes, precision_at, top_k_error)


def retrieval_metrics(
    query_emb,
    query_labels,
    db_emb,
    db_labels,
    precision_at: Sequence[int] = (1, 5, 10),
    top_k_error: Sequence[int] = (1, 5),
    chunk_size: int = 1024,
    device=None,
) -> dict[str, float]:
    """Retrieval metrics of L2 ranking of the queries against the database.

    Keys: ``precision@{k}`` for ``k`` in ``precision_at`` (class-macro, the LM
    paper's mAP@k), ``top{k}_error`` for ``k`` in ``top_k_error``, ``map``,
    ``map@r``, ``r_precision``, ``pr_auc``; definitions in the module
    docstring. Raises ValueError if some query's class is not in the database.
    """
    return evaluate_retrieval(
        query_emb, query_labels, db_emb, db_labels,
        precision_at, top_k_error, chunk_size, device,
    )[0]


def pr_curve(
    query_emb,
    query_labels,
    db_emb,
    db_labels,
    chunk_size: int = 1024,
    device=None,
) -> pd.DataFrame:
    """Mean precision-recall curve over queries, one row per cutoff.

    Columns: ``cutoff`` (k = 1..N, N the database size), ``precision`` (mean
    over queries of precision@k, the fraction of the top k that is same-class),
    ``recall`` (mean over queries of the fraction of the query's R positives in
    the top k). Queries are averaged uniformly (not per class).
    """
    return evaluate_retrieval(
        query_emb, query_labels, db_emb, db_labels,
        precision_at=(), top_k_error=(), chunk_size=chunk_size, device=device,
    )[1]

"""Exact L2 retrieval and the retrieval metrics of the benchmark.

Every query is ranked against a database by Euclidean (L2) distance. Queries
and database are disjoint sets: a query is never looked up in the database, so
there is no self-match to remove.

Conventions
-----------
Distances
    Computed with torch in float32 on ``device`` (default: the CPU, where the
    ``evaluate`` rule runs: it declares no GPU; pass ``device="cuda"`` to
    use one) as ``||b||^2 - 2 a.b``: the squared L2 distance minus the query's
    own ``||a||^2``, which is constant along a query's row and so does not
    change its ranking (leaving it out only removes a rounding step).
Ties
    Broken by database index: a query's ranking orders the database by
    ``(distance, database index)``, so database items at the same computed
    distance keep their database order (the lower index ranks first), exactly
    as a *stable* sort of the distances would. Every metric below follows
    from this single ranking, so all of them see the same tie-break.
Positive ranks
    For a query of class ``c``, the *positives* are the ``R`` database items of
    class ``c``; their *positive ranks* ``r_1 < ... < r_R`` are their 1-based
    positions in the query's ranking. All metrics are functions of these
    ranks (and ``N``, the database size).
Queries without positives
    A query whose class has no item in the database (``R = 0``) has no defined
    average precision or recall. Such queries are left out of every metric and
    of the curve, as pytorch-metric-learning's ``AccuracyCalculator`` leaves
    out its "lone" queries; :func:`queries_without_positives` counts them (the
    pipeline writes the count as a metric row). Only when *no* query has a
    positive is :class:`ValueError` raised.
Unretrieved positives
    A retrieval method may return only part of the database (two-stage
    retrieval with ``rest: cut``, see :mod:`workflow.two_stage`). A positive it
    does not return is ranked at infinity: it counts towards ``R`` but is never
    within a cutoff, adds 0 to the average precision, and the curve's recall
    stays below 1 (the area under the curve stops at the recall reached).

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
    first point)`` prepended so the area starts at recall 0. With exact
    retrieval the curve ends at recall 1 (cutoff ``N`` retrieves every
    positive).

How the positive ranks are computed (no sort of the database)
-------------------------------------------------------------
The rank of a positive ``p`` is ``1 +`` the number of database items before
it, i.e. with a smaller distance, or an equal distance and a lower index. So
a query's ranks are counts against its ``R`` positive distances sorted by
``(distance, index)`` (the *thresholds*), and no sort of the ``N`` database
distances is needed: with ``L_j`` the number of thresholds before item ``j``
in ``(distance, index)`` order, the ``k``-th positive (0-based) has rank
``k + 1 + #{negatives j : L_j <= k}``. :func:`count_at_or_before` finds
these counts in ``O(1)`` per item: it cuts the range of the thresholds into
``M`` equal bins (16 per threshold) by one monotone float mapping ``bin(x)``
applied alike to thresholds and items, so an item in a bin without
thresholds comes before exactly the thresholds of the higher bins (items are
only histogrammed per bin, and cumulative sums give the counts); only items
that share a bin with a threshold (about 1.5% of them on the benchmark's
data) are compared with that bin's thresholds exactly, by a binary search in
``(distance, index)`` order, which also settles every tie by index. The
result is exact, whatever the bins. Measured against faiss's top-1000
search on the same data: ``benchmarks/retrieval.py``.

Memory and threads
------------------
Queries are processed ``chunk_size`` at a time; the largest array is the
chunk's ``chunk_size x N`` distance matrix (4 bytes per entry), never a full
``Q x N`` matrix. The counting works through the chunk about 2 million
entries at a time, with temporaries of 8 bytes per entry of those, per CPU
thread: on the CPU the rows are split over parallel Python threads that each
run torch on one thread (:func:`in_parallel`; torch's own threads gain little
on these many small operations). Each chunk is reduced at once to per-query
statistics (``O(Q)`` in all) and to per-cutoff histograms of the positive
ranks (``O(N)``), from which the curve follows: the sum over queries of
``#{i : r_i <= k}`` is the cumulative sum over ``k`` of the histogram of all
positive ranks, and the sum of recalls is the same with each rank weighted
by ``1/R`` of its query.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd
import torch

__all__ = [
    "ExactChunk",
    "MetricAccumulator",
    "Prepared",
    "count_at_or_before",
    "evaluate_retrieval",
    "metrics_from_positive_ranks",
    "positive_ranks",
    "pr_curve",
    "prepare",
    "queries_without_positives",
    "query_chunk",
    "distance_buffer",
    "in_parallel",
    "keep_rows",
    "lexicographic_keys",
    "argsort_rows",
    "rank_by_sorting",
    "rank_exact",
    "retrieval_metrics",
    "sort_thresholds",
    "split_rows",
]

# ---------------------------------------------------------------------------
# Input handling
# ---------------------------------------------------------------------------


def _default_device(device) -> torch.device:
    if device is None:  # never a device the caller did not ask for
        return torch.device("cpu")
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
class Prepared:
    """Queries and database checked, coded and placed on the device."""

    query_emb: torch.Tensor  # (Q, D), where the caller had it; moved per chunk
    query_codes: np.ndarray  # (Q,) int64 class codes
    db_emb: torch.Tensor  # (N, D) float32 on device
    db_sq: torch.Tensor  # (N,) float32 on device, ||b||^2
    db_codes: torch.Tensor  # (N,) int64 class codes on device
    n_pos: np.ndarray  # (Q,) int64: R, the number of positives of each query
    # (n_classes, max R) int64 on device: each class's database indices in
    # ascending order, padded with -1.
    class_items: torch.Tensor
    device: torch.device

    @property
    def n_queries(self) -> int:
        return len(self.query_codes)

    @property
    def n_db(self) -> int:
        return len(self.db_codes)

    @property
    def has_positives(self) -> np.ndarray:
        return self.n_pos > 0


def prepare(query_emb, query_labels, db_emb, db_labels, device=None) -> Prepared:
    """Check shapes and values, code the labels, move the database to ``device``."""
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
    class_sizes = np.bincount(d_codes, minlength=n_classes)
    n_pos = class_sizes[q_codes].astype(np.int64)
    if not (n_pos > 0).any():
        raise ValueError(
            f"none of the {len(ql)} queries has a class with an item in the "
            "database: no retrieval metric is defined"
        )

    # Each class's database indices, ascending (a stable argsort by class).
    by_class = np.argsort(d_codes, kind="stable")
    width = max(int(class_sizes.max()), 1)
    class_items = np.full((n_classes, width), -1, dtype=np.int64)
    starts = np.cumsum(class_sizes) - class_sizes
    column = np.arange(len(d_codes)) - starts[d_codes[by_class]]
    class_items[d_codes[by_class], column] = by_class

    db = db.to(device=device, dtype=torch.float32)
    db_sq = _squared_norms(db)
    # (A NaN or infinity anywhere in a row makes its squared norm one.)
    if not torch.isfinite(db_sq).all():
        raise ValueError(
            "db_emb contains NaN or infinite values (or values so large that "
            "their squared norm overflows float32)"
        )
    return Prepared(
        query_emb=q,
        query_codes=q_codes,
        db_emb=db,
        db_sq=db_sq,
        db_codes=torch.from_numpy(d_codes).to(device),
        n_pos=n_pos,
        class_items=torch.from_numpy(class_items).to(device),
        device=device,
    )


def _squared_norms(x: torch.Tensor, rows: int = 1 << 15) -> torch.Tensor:
    """||x_i||^2 of each row, a block of rows at a time (no full-size temporary)."""
    return torch.cat([(x[s : s + rows] * x[s : s + rows]).sum(dim=1) for s in range(0, len(x), rows)])


def queries_without_positives(query_labels, db_labels) -> int:
    """Number of queries whose class has no item in the database (left out of
    every metric, see the module docstring)."""
    ql = _labels_to_numpy(query_labels, "query_labels")
    dl = _labels_to_numpy(db_labels, "db_labels")
    return int((~np.isin(ql, dl)).sum())


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
# Counting: how many items come at or before each threshold
# ---------------------------------------------------------------------------

# Entries of the distance matrix processed at once by count_at_or_before: on
# the CPU a few rows at a time, so the temporaries stay in the cache.
_BLOCK_ENTRIES = {"cpu": 1 << 21}
_BLOCK_ENTRIES_OTHER = 1 << 26
# Bins per threshold of count_at_or_before: more bins leave fewer items that
# share a bin with a threshold (the exact, slower path) but make the per-row
# tables larger.
_BINS_PER_THRESHOLD = 16
_MIN_BINS, _MAX_BINS = 64, 1 << 16


def count_at_or_before(
    dist: torch.Tensor,
    thresholds: torch.Tensor,
    threshold_index: torch.Tensor,
    n_thresholds: torch.Tensor,
    item_index: torch.Tensor | None = None,
    threshold_columns: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per row and threshold, the number of items at or before the threshold.

    Arguments (``b`` rows, ``K`` items per row, up to ``T`` thresholds):
    ``dist`` (b, K) float32 item distances; ``thresholds`` (b, T) distances
    and ``threshold_index`` (b, T) database indices of each row's thresholds,
    sorted by ``(distance, index)``, the first ``n_thresholds[r]`` of row
    ``r`` valid (the rest ignored); ``item_index`` (K,) or (b, K) the
    database index of each item (default ``0..K-1``); items of distance
    ``+inf`` are padding (never before a threshold). ``threshold_columns``
    (b, T): when the thresholds are themselves items of their row (as a
    query's positives are), the column of each; ``None`` when they are not.

    Returns (b, T) int64: entry ``[r, k]`` is the number of items ``j`` of row
    ``r`` with ``(dist[r, j], item_index[r, j]) <= (thresholds[r, k],
    threshold_index[r, k])`` in lexicographic order; 0 where ``k`` is not a
    valid threshold. When the thresholds are items this is the 1-based rank
    of each threshold; otherwise it is the number of items before it. Exact
    for any data (see the module docstring).
    """
    b, k_items = dist.shape
    width = thresholds.shape[1]
    out = torch.zeros((b, width), dtype=torch.int64, device=dist.device)
    if b == 0 or width == 0 or k_items == 0:
        return out
    if item_index is None:
        item_index = torch.arange(k_items, device=dist.device)
    per_block = _BLOCK_ENTRIES.get(dist.device.type, _BLOCK_ENTRIES_OTHER)
    # (No more bins than items: beyond that the per-row tables cost more than
    # the items themselves.)
    n_bins = int(min(max(_BINS_PER_THRESHOLD * width, _MIN_BINS), _MAX_BINS, max(k_items, _MIN_BINS)))
    # (Table entries, rows x (n_bins + 4) of them, are int32.)
    rows = min(b, max(1, per_block // k_items), (1 << 31) // (n_bins + 4) - 1)
    n_thresholds = n_thresholds.to(device=dist.device, dtype=torch.int64)

    def count_rows(first: int, last: int) -> None:
        # Work buffers reused by every block (fresh large arrays would cost
        # page faults each time).
        buffers = (
            torch.empty((rows, k_items), dtype=torch.float32, device=dist.device),
            torch.empty((rows, k_items), dtype=torch.int32, device=dist.device),
        )
        for start in range(first, last, rows):
            stop = min(start + rows, last)
            out[start:stop] = _count_block(
                dist[start:stop], thresholds[start:stop], threshold_index[start:stop],
                n_thresholds[start:stop],
                item_index if item_index.ndim == 1 else item_index[start:stop],
                None if threshold_columns is None else threshold_columns[start:stop],
                n_bins, buffers,
            )

    if dist.device.type != "cpu" or b <= rows:
        count_rows(0, b)
    else:
        in_parallel(count_rows, split_rows(0, b))
    return out


def split_rows(start: int, stop: int) -> list[tuple[int, int]]:
    """``start..stop`` in one contiguous part per torch CPU thread."""
    n = max(1, min(torch.get_num_threads(), stop - start))
    return [(start + (stop - start) * i // n, start + (stop - start) * (i + 1) // n) for i in range(n)]


def in_parallel(fn, parts: list[tuple]) -> list:
    """``[fn(*part) for part in parts]``, the parts in parallel Python threads
    that each run torch on one thread (torch and numpy release the GIL).

    On the CPU, the many small operations of the ranking gain little from
    torch's own threads; whole parts side by side do.
    """
    threads = torch.get_num_threads()
    if threads == 1 or len(parts) == 1:
        return [fn(*part) for part in parts]
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(min(threads, len(parts))) as pool:
            futures = [pool.submit(fn, *part) for part in parts]
            return [future.result() for future in futures]
    finally:
        torch.set_num_threads(threads)


def _count_block(dist, thr, thr_index, n_thr, item_index, thr_cols, n_bins, buffers):
    """count_at_or_before for one block of rows (see there)."""
    device = dist.device
    b, k_items = dist.shape
    width = thr.shape[1]
    valid = torch.arange(width, device=device).unsqueeze(0) < n_thr.unsqueeze(1)

    # Bins: n_bins equal bins over [lowest, highest threshold] of each row,
    # numbered -1 .. n_bins + 1 (clamped), by bin(x) = trunc(clamp(x * scale
    # + shift)): separate IEEE float operations (a multiplication by a
    # positive number, an addition, a clamp) and a truncation, each monotone
    # (non-decreasing) and computed alike for items and thresholds, so equal
    # values share a bin and an item in a lower bin than a threshold is
    # smaller than it. Bin m of row r is entry r * n_cols + m + 1 of the
    # flattened (b, n_cols) tables; the last column of a row is a sink that
    # no threshold occupies.
    n_cols = n_bins + 4
    lo = thr[:, :1]
    hi = thr.gather(1, (n_thr - 1).clamp(min=0).unsqueeze(1))
    span = hi - lo
    ok = torch.isfinite(span) & (span > 0)
    scale = torch.where(ok, n_bins / torch.where(ok, span, 1.0), 1.0)
    shift = -torch.where(torch.isfinite(lo), lo, 0.0) * scale
    first = torch.arange(b, device=device, dtype=torch.int32).unsqueeze(1) * n_cols + 1

    def table_entry(x, out_float=None, out_int=None):
        y = torch.mul(x, scale, out=out_float) if out_float is not None else x * scale
        y.add_(shift).clamp_(-1.0, n_bins + 1.0)
        y = out_int.copy_(y) if out_int is not None else y.to(torch.int32)
        return y.add_(first)

    entry = table_entry(dist, buffers[0][:b], buffers[1][:b])
    thr_entry = table_entry(thr)
    if thr_cols is not None:
        # Thresholds that are items: moved to the sink, counted apart below
        # (each threshold k has itself and thresholds 0..k-1 at or before it).
        at = (torch.arange(b, device=device).unsqueeze(1) * k_items + thr_cols)[valid]
        sink = (first + (n_cols - 2)).expand(b, width)[valid]
        entry.view(-1).index_put_((at,), sink)
    entry = entry.view(-1)
    hist = torch.bincount(entry, minlength=b * n_cols).view(b, n_cols)
    # The valid thresholds' entries, row after row: ascending overall. Each
    # occupied entry (bin with thresholds) `used[g]` holds the thresholds at
    # positions first_at[g] .. end_at[g] - 1, and in_bin[g] other items.
    thr_entries = thr_entry[valid]
    is_first = torch.ones(len(thr_entries), dtype=torch.bool, device=device)
    is_first[1:] = thr_entries[1:] != thr_entries[:-1]
    first_at = is_first.nonzero().squeeze(1)
    end_at = torch.cat([first_at[1:], first_at.new_tensor([len(thr_entries)])])
    used = thr_entries.index_select(0, first_at).long()
    in_bin = hist.view(-1).index_select(0, used)

    # An item in a bin without thresholds is at or before threshold k iff
    # its bin is at most threshold k's bin: all items in bins up to there
    # (a cumulative sum), less those in occupied bins up to there.
    thr_col = (thr_entry - first + 1).long().clamp(0, n_cols - 1)
    counts = hist.cumsum(1).gather(1, thr_col)
    # (Each occupied bin's items, at the first of its thresholds, summed
    # along the row.)
    in_occupied = torch.zeros((b, width), dtype=torch.int64, device=device)
    in_occupied[valid] = torch.zeros_like(thr_entries, dtype=torch.int64).index_put_((first_at,), in_bin)
    counts -= in_occupied.cumsum(1)
    if thr_cols is not None:
        counts += torch.arange(1, width + 1, device=device).unsqueeze(0)
    # Items in a bin with thresholds: compared with them exactly.
    row_of_bin = torch.div(used, n_cols, rounding_mode="floor")
    search = torch.zeros(b, dtype=torch.int64, device=device).index_add_(0, row_of_bin, in_bin) > 0
    if search.any():
        occupied = torch.zeros(b * n_cols, dtype=torch.bool, device=device)
        occupied[used] = True
        # Looked up only at occupied entries, so need no initial values.
        bin_first = torch.empty(b * n_cols, dtype=torch.int64, device=device)
        bin_first[used] = first_at
        bin_end = torch.empty(b * n_cols, dtype=torch.int64, device=device)
        bin_end[used] = end_at
        counts += _search_block(
            dist, entry, thr[valid], thr_index[valid], bin_first, bin_end, n_thr, item_index,
            occupied, search, width,
        )
    return counts.masked_fill(~valid, 0)


def _search_block(dist, entry, thr_v, thr_i, bin_first, bin_end, n_thr, item_index, occupied,
                  search, width):
    """For the rows flagged by ``search``: (b, width), per threshold k the
    number of items in bins with thresholds that come at or before it. Each
    such item's L (thresholds before it) is found by binary search in
    (distance, index) order among the thresholds of its bin; the count is
    the cumulative histogram of L. Arrays are flat (index_select is much
    faster than advanced indexing on the CPU); ``thr_v`` and ``thr_i`` hold
    the valid thresholds row after row, those of table entry ``e`` at
    positions ``bin_first[e] .. bin_end[e] - 1``."""
    device = dist.device
    b, k_items = dist.shape
    rows = search.nonzero().squeeze(1)
    entry = entry.view(b, k_items)
    if len(rows) < b:
        entry = entry.index_select(0, rows)
    entry = entry.reshape(-1)
    at = occupied.view(-1).index_select(0, entry).nonzero().squeeze(1)  # in (rows, K)
    cell = entry.index_select(0, at)
    row_of = at // k_items
    col = at - row_of * k_items
    row = rows.index_select(0, row_of)
    value = dist.reshape(-1).index_select(0, row * k_items + col)
    if item_index.ndim == 1:
        index = item_index.index_select(0, col)
    else:
        index = item_index.reshape(-1).index_select(0, row * k_items + col)
    low = bin_first.index_select(0, cell)
    high = bin_end.index_select(0, cell)
    # Invariant: thresholds before `low` come before the item, those from
    # `high` on come after it.
    for _ in range(int((high - low).max()).bit_length()):
        active = low < high
        mid = (low + high) // 2
        pick = mid.clamp(max=len(thr_v) - 1)
        t_v, t_i = thr_v.index_select(0, pick), thr_i.index_select(0, pick)
        before = (t_v < value) | ((t_v == value) & (t_i < index))
        low = torch.where(active & before, mid + 1, low)
        high = torch.where(active & ~before, mid, high)
    row_start = n_thr.cumsum(0) - n_thr
    before_count = low - row_start.index_select(0, row)  # L: thresholds before the item
    hist = torch.zeros(b * (width + 1), dtype=torch.int64, device=device)
    hist.index_add_(0, row * (width + 1) + before_count, torch.ones_like(before_count))
    # Item with L = l is at or before thresholds l, l + 1, ...
    return hist.view(b, width + 1).cumsum(1)[:, :width]


def sort_thresholds(values: torch.Tensor, index: torch.Tensor, valid: torch.Tensor):
    """Sort each row's thresholds by (value, index); invalid entries last.

    Returns ``(values, index, order)`` sorted (invalid values set to
    ``+inf``), ``order`` the permutation applied (the new position ``k``
    holds old entry ``order[:, k]``).
    """
    keys = lexicographic_keys(values, index).masked_fill(~valid, torch.iinfo(torch.int64).max)
    order = argsort_rows(keys)
    values = values.gather(1, order).masked_fill(~valid.gather(1, order), float("inf"))
    return values, index.gather(1, order), order


def lexicographic_keys(dist: torch.Tensor, item_index: torch.Tensor) -> torch.Tensor:
    """int64 keys that order like ``(distance, index)``: the float32 bits of
    the distance made monotone (negative floats have their magnitude bits
    flipped; -0.0 becomes +0.0 first) in the high 32 bits, the database index
    (0 <= index < 2**31) in the low 32."""
    bits = (dist + 0.0).view(torch.int32)
    monotone = bits ^ ((bits >> 31) & 0x7FFFFFFF)
    return (monotone.to(torch.int64) << 32) | item_index.clamp(min=0)


def argsort_rows(keys: torch.Tensor) -> torch.Tensor:
    """Each row's argsort of distinct int64 keys (numpy's vectorised sort on
    the CPU, several times faster there than torch's)."""
    if keys.device.type != "cpu":
        return torch.sort(keys, dim=1).indices
    array = keys.numpy()
    parts = in_parallel(lambda a, b: np.argsort(array[a:b], axis=1), split_rows(0, len(array)))
    return torch.from_numpy(np.concatenate(parts))


def rank_by_sorting(dist: torch.Tensor, item_index: torch.Tensor, is_positive: torch.Tensor):
    """Ranks of the positives by sorting each row: for short rows with many
    positives (two-stage candidates), where sorting beats counting.

    ``dist`` (b, K) float32, ``item_index`` (b, K) database indices (padding
    items: distance ``+inf``, never positive), ``is_positive`` (b, K).
    Returns ``(ranks, valid)`` (b, T): the 1-based positions of the positives
    in each row's ``(distance, index)`` order, ascending, valid where
    ``valid``.
    """
    order = argsort_rows(lexicographic_keys(dist, item_index))  # distinct keys in a row
    hit = is_positive.gather(1, order)
    n_pos = hit.sum(1)
    width = max(int(n_pos.max()) if len(n_pos) else 0, 1)
    row, col = hit.nonzero(as_tuple=True)
    at = torch.arange(len(row), device=dist.device) - (n_pos.cumsum(0) - n_pos).index_select(0, row)
    ranks = torch.zeros((len(dist), width), dtype=torch.int64, device=dist.device)
    ranks[row, at] = col + 1
    valid = torch.arange(width, device=dist.device).unsqueeze(0) < n_pos.unsqueeze(1)
    return ranks, valid


# ---------------------------------------------------------------------------
# Exact retrieval: positive ranks, one chunk of queries at a time
# ---------------------------------------------------------------------------


@dataclass
class ExactChunk:
    """One chunk of queries ranked exactly against the whole database."""

    start: int
    stop: int
    query: torch.Tensor  # (B, D) float32 on the device
    dist: torch.Tensor  # (B, N) distances (minus ||q||^2)
    positives: torch.Tensor  # (B, T) database index of each positive, sorted by (dist, index)
    valid: torch.Tensor  # (B, T) bool: a real positive (T = max R; rows padded)
    ranks: torch.Tensor  # (B, T) int64 1-based rank of each positive (0 where not valid)
    seconds: float  # wall time of the distances and the ranks

    def flat_ranks(self) -> np.ndarray:
        """Ranks query by query, ascending within a query (as positive_ranks)."""
        return self.ranks[self.valid].cpu().numpy()

    def rows(self, a: int, b: int) -> "ExactChunk":
        """Queries ``start + a .. start + b - 1`` of this chunk."""
        return ExactChunk(
            self.start + a, self.start + b, self.query[a:b], self.dist[a:b],
            self.positives[a:b], self.valid[a:b], self.ranks[a:b], self.seconds,
        )

    def rows_with_positives(self, prep: "Prepared"):
        """``(ranks, valid, R)`` of the queries that have positives, for
        :meth:`MetricAccumulator.add_rows`."""
        return keep_rows(prep, self.start, self.stop, self.ranks, self.valid)


def keep_rows(prep: Prepared, start: int, stop: int, ranks: torch.Tensor, valid: torch.Tensor):
    """Rows of queries ``start..stop-1`` whose class is in the database, with
    their R: the queries the metrics use."""
    keep = prep.has_positives[start:stop]
    n_pos = prep.n_pos[start:stop][keep]
    if keep.all():
        return ranks, valid, n_pos
    keep = torch.from_numpy(keep).to(ranks.device)
    return ranks[keep], valid[keep], n_pos


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def query_chunk(prep: Prepared, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Queries ``start..stop-1`` on the device (float32) and their class codes."""
    q = prep.query_emb[start:stop].to(device=prep.device, dtype=torch.float32)
    if not torch.isfinite(_squared_norms(q)).all():
        raise ValueError(
            "query_emb contains NaN or infinite values (or values so large that "
            "their squared norm overflows float32)"
        )
    return q, torch.from_numpy(prep.query_codes[start:stop]).to(prep.device)


def distance_buffer(prep: Prepared, chunk_size: int) -> torch.Tensor:
    """Room for one chunk's distances, reused by every chunk (a fresh array
    per chunk would cost page faults on the CPU)."""
    return torch.empty((min(chunk_size, prep.n_queries), prep.n_db), device=prep.device)


def rank_exact(prep: Prepared, start: int, stop: int, buffer: torch.Tensor | None = None) -> ExactChunk:
    """The exact ranking of queries ``start..stop-1`` (timed). With a
    ``buffer`` from :func:`distance_buffer`, the chunk's distances are
    written there (and so are valid until the next call with it)."""
    q, codes = query_chunk(prep, start, stop)
    _sync(prep.device)
    began = time.perf_counter()
    # Squared L2 distance minus the row constant ||q||^2: same ranking.
    out = None if buffer is None else buffer[: stop - start]
    dist = torch.addmm(prep.db_sq.unsqueeze(0), q, prep.db_emb.T, beta=1.0, alpha=-2.0, out=out)
    items = prep.class_items[codes]  # -1: padding
    valid = items >= 0
    pos_dist, items, order = sort_thresholds(dist.gather(1, items.clamp(min=0)), items, valid)
    valid = valid.gather(1, order)
    ranks = count_at_or_before(dist, pos_dist, items, valid.sum(1), threshold_columns=items)
    _sync(prep.device)
    return ExactChunk(start, stop, q, dist, items, valid, ranks, time.perf_counter() - began)


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
    prep = prepare(query_emb, query_labels, db_emb, db_labels, device)
    chunk_size = _check_chunk_size(chunk_size)
    buffer = distance_buffer(prep, chunk_size)
    chunks = [
        rank_exact(prep, start, min(start + chunk_size, prep.n_queries), buffer).flat_ranks()
        for start in range(0, prep.n_queries, chunk_size)
    ]
    return np.concatenate(chunks), prep.n_pos.copy()


# ---------------------------------------------------------------------------
# Metrics from positive ranks
# ---------------------------------------------------------------------------


@dataclass
class MetricAccumulator:
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
    n_queries: int = 0

    def __post_init__(self):
        self.hits = {k: [] for k in self.cutoffs}
        self.hist = np.zeros(self.n_db + 1, dtype=np.int64)
        self.hist_recall = np.zeros(self.n_db + 1, dtype=np.float64)

    def add(self, ranks: np.ndarray, counts: np.ndarray, n_pos: np.ndarray | None = None) -> None:
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
        self.add_rows(torch.from_numpy(matrix), torch.from_numpy(valid),
                      counts if n_pos is None else n_pos)

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
        if valid.any() and (ranks[valid].min() < 1 or ranks[valid].max() > self.n_db):
            raise ValueError(f"ranks must lie in 1..{self.n_db}")
        if ((ranks[:, 1:] <= ranks[:, :-1]) & valid[:, 1:]).any():
            raise ValueError("ranks must be strictly increasing within a query")
        big_r = n_pos.to(torch.float64).unsqueeze(1)
        # Precision at the rank of the i-th positive, i / r_i (0 where none).
        prec = torch.where(valid, (column + 1).to(torch.float64) / ranks.clamp(min=1), 0.0)
        within_r = valid & (ranks <= n_pos.unsqueeze(1))

        self.ap.append((prec.sum(1) / big_r[:, 0]).cpu().numpy())
        self.ap_at_r.append(((prec * within_r).sum(1) / big_r[:, 0]).cpu().numpy())
        self.r_prec.append((within_r.sum(1) / big_r[:, 0]).cpu().numpy())
        first = torch.where(counts > 0, ranks[:, 0], self.n_db + 1) if width else counts + self.n_db + 1
        self.first_rank.append(first.cpu().numpy())
        for k in self.cutoffs:
            self.hits[k].append((valid & (ranks <= k)).sum(1).cpu().numpy())
        retrieved = ranks[valid]
        weight = (1.0 / big_r).expand(n, width)[valid]
        self.hist += torch.bincount(retrieved, minlength=self.n_db + 1).cpu().numpy()
        # Weighted counts on the CPU: CUDA adds float weights in no fixed
        # order (and refuses under torch.use_deterministic_algorithms).
        self.hist_recall += torch.bincount(retrieved.cpu(), weight.cpu(), minlength=self.n_db + 1).numpy()
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

    def finish(
        self,
        query_codes: np.ndarray,
        precision_at: tuple[int, ...],
        top_k_error: tuple[int, ...],
    ) -> tuple[dict[str, float], pd.DataFrame]:
        """Metrics and curve; ``query_codes`` of the added queries, in order."""
        query_codes = np.asarray(query_codes)
        if len(query_codes) != self.n_queries:
            raise ValueError(f"{len(query_codes)} query codes for {self.n_queries} queries")
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
        curve = self.curve()
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
    the database size N. Queries with ``counts == 0`` are left out. Returns
    what :func:`evaluate_retrieval` returns.
    """
    precision_at = _check_cutoffs(precision_at, n_db, "precision_at")
    top_k_error = _check_cutoffs(top_k_error, n_db, "top_k_error")
    ql = _labels_to_numpy(query_labels, "query_labels")
    counts = np.asarray(counts, dtype=np.int64)
    if len(ql) != len(counts):
        raise ValueError(f"{len(ql)} query labels but {len(counts)} counts")
    keep = counts > 0
    if not keep.any():
        raise ValueError("no query has a positive: no retrieval metric is defined")
    acc = MetricAccumulator(n_db, tuple(sorted(set(precision_at))))
    acc.add(ranks, counts[keep])
    return acc.finish(ql[keep], precision_at, top_k_error)


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
    definitions, the tie convention (ties broken by database index) and
    queries without positives (left out).
    """
    prep = prepare(query_emb, query_labels, db_emb, db_labels, device)
    precision_at = _check_cutoffs(precision_at, prep.n_db, "precision_at")
    top_k_error = _check_cutoffs(top_k_error, prep.n_db, "top_k_error")
    acc = MetricAccumulator(prep.n_db, tuple(sorted(set(precision_at))))
    chunk_size = _check_chunk_size(chunk_size)
    buffer = distance_buffer(prep, chunk_size)
    for start in range(0, prep.n_queries, chunk_size):
        stop = min(start + chunk_size, prep.n_queries)
        chunk = rank_exact(prep, start, stop, buffer)
        acc.add_rows(*chunk.rows_with_positives(prep))
    return acc.finish(prep.query_codes[prep.has_positives], precision_at, top_k_error)


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
    docstring. Queries whose class is not in the database are left out;
    ValueError if that leaves none.
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
    the top k). Queries are averaged uniformly (not per class); queries
    without positives are left out.
    """
    return evaluate_retrieval(
        query_emb, query_labels, db_emb, db_labels,
        precision_at=(), top_k_error=(), chunk_size=chunk_size, device=device,
    )[1]

"""The ranking kernel: distances, and positive ranks by counting or sorting.

**Distances** (:func:`distances`) are computed with torch in float32 on the
tensors' device as ``||b||^2 - 2 a.b``: the squared L2 distance minus the
query's own ``||a||^2``, which is constant along a query's row and so does
not change its ranking (leaving it out only removes a rounding step). Every
search (exact, both stages of two-stage, the anchor assignment) calls it.

How the positive ranks are computed (no sort of the database)
-------------------------------------------------------------
The rank of a positive ``p`` is ``1 +`` the number of database items before
it, i.e. with a smaller distance, or an equal distance and a lower index. So
a query's ranks are counts against its ``R`` positive distances sorted by
``(distance, index)`` (the *thresholds*), and no sort of the ``N`` database
distances is needed: with ``L_j`` the number of thresholds before item ``j``
in ``(distance, index)`` order, the ``k``-th positive (0-based) has rank
``k + 1 + #{negatives j : L_j <= k}``. :func:`count_at_or_before` finds
these counts in ``O(1)`` per item. One comparison per item first keeps the
*candidates*, the items at or below the row's last threshold (about 14% of
them on the benchmark's data at N = 20,000): the others come after every
threshold and count nowhere. It then cuts the range of the thresholds into
``M`` equal bins (16 per threshold, or one per 4 candidates of a row where
that is more) by one monotone float mapping ``bin(x)`` applied alike to
thresholds and candidates, so a candidate in a bin without thresholds comes
before exactly the thresholds of the higher bins (candidates are only
histogrammed per bin, and cumulative sums give the counts); only candidates
that share a bin with a threshold are compared with that bin's thresholds
exactly, by a binary search in ``(distance, index)`` order, which also
settles every tie by index. A threshold that is itself an item (a positive)
is such a candidate: it comes after itself and the thresholds before it. The
result is exact, whatever the bins. Measured against faiss's k-NN search on
the same data: ``benchmarks/retrieval.py``, ``benchmarks/all_against_all.py``.

Memory and threads
------------------
The counting works through a chunk's distances about a million entries at
a time, with temporaries of a byte per entry of those and about 40 bytes
per candidate, per CPU thread: on the CPU the rows are split over parallel
Python threads that each run torch on one thread (:func:`in_parallel`;
torch's own threads gain little on these many small operations). The
candidates are found with numpy on the CPU (:func:`at_or_below`).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

__all__ = [
    "argsort_rows",
    "at_or_below",
    "count_at_or_before",
    "distances",
    "flat_nonzero",
    "in_parallel",
    "lexicographic_keys",
    "rank_by_sorting",
    "sort_thresholds",
    "split_rows",
    "squared_norms",
    "sync",
]


def distances(
    queries: torch.Tensor, items: torch.Tensor, items_sq: torch.Tensor, out=None
) -> torch.Tensor:
    """(n, m) ``||b||^2 - 2 a.b`` of each query ``a`` (n, D) and item ``b``
    (m, D), ``items_sq`` (m,) the items' ``||b||^2``: the squared L2
    distance minus the row constant ``||a||^2`` (the same ranking). Written
    into ``out`` when given.

    Equal items (duplicate embeddings) get equal distances, so that their
    tie is broken by index: a one-row product would take BLAS's
    matrix-vector kernel, which can round equal columns differently, so a
    single query is computed as two rows (the matrix-matrix kernel rounds
    every column alike)."""
    if len(queries) == 1:
        two = distances(torch.cat([queries, queries]), items, items_sq)[:1]
        return two if out is None else out.copy_(two)
    return torch.addmm(
        items_sq.unsqueeze(0), queries, items.T, beta=1.0, alpha=-2.0, out=out
    )


def squared_norms(x: torch.Tensor, rows: int = 1 << 15) -> torch.Tensor:
    """||x_i||^2 of each row, a block of rows at a time (no full-size temporary)."""
    return torch.cat(
        [(x[s : s + rows] * x[s : s + rows]).sum(dim=1) for s in range(0, len(x), rows)]
    )


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (for timing)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------------------
# Counting: how many items come at or before each threshold
# ---------------------------------------------------------------------------

# Entries of the distance matrix processed at once by count_at_or_before: on
# the CPU a few rows at a time, so the temporaries stay in the cache.
BLOCK_ENTRIES = {"cpu": 1 << 20}
BLOCK_ENTRIES_OTHER = 1 << 26
# Bins of count_at_or_before: BINS_PER_THRESHOLD per threshold, the
# thresholds of a row counted as at least one per CANDIDATES_PER_THRESHOLD
# candidates. More bins leave fewer candidates that share a bin with a
# threshold (the exact, slower path) but make the per-row tables larger.
BINS_PER_THRESHOLD = 16
CANDIDATES_PER_THRESHOLD = 64
MIN_BINS, MAX_BINS = 64, 1 << 16


def count_at_or_before(
    dist: torch.Tensor,
    thresholds: torch.Tensor,
    threshold_index: torch.Tensor,
    n_thresholds: torch.Tensor,
    item_index: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per row and threshold, the number of items at or before the threshold.

    Arguments (``b`` rows, ``K`` items per row, up to ``T`` thresholds):
    ``dist`` (b, K) float32 item distances; ``thresholds`` (b, T) distances
    and ``threshold_index`` (b, T) database indices of each row's thresholds,
    sorted by ``(distance, index)``, the first ``n_thresholds[r]`` of row
    ``r`` valid (the rest ignored); ``item_index`` (K,) or (b, K) the
    database index of each item (default ``0..K-1``); items of distance
    ``+inf`` (padding) come after every finite threshold.

    Returns (b, T) int64: entry ``[r, k]`` is the number of items ``j`` of row
    ``r`` with ``(dist[r, j], item_index[r, j]) <= (thresholds[r, k],
    threshold_index[r, k])`` in lexicographic order; 0 where ``k`` is not a
    valid threshold. When the thresholds are items of their row (as a
    query's positives are), this is the 1-based rank of each; otherwise the
    number of items before it. Exact for any data (see the module docstring).
    """
    b, k_items = dist.shape
    width = thresholds.shape[1]
    out = torch.zeros((b, width), dtype=torch.int64, device=dist.device)
    if b == 0 or width == 0 or k_items == 0:
        return out
    dist = dist.contiguous()
    per_block = BLOCK_ENTRIES.get(dist.device.type, BLOCK_ENTRIES_OTHER)
    # (Table entries, rows x (n_bins + 3) of them, are int32.)
    rows = min(b, max(1, per_block // k_items), (1 << 31) // (MAX_BINS + 3) - 1)
    n_thresholds = n_thresholds.to(device=dist.device, dtype=torch.int64)

    def count_rows(first: int, last: int) -> None:
        # The candidate mask, reused by every block (a fresh array each time
        # would cost page faults).
        mask = (
            np.empty((rows, k_items), dtype=bool) if dist.device.type == "cpu" else None
        )
        for start in range(first, last, rows):
            stop = min(start + rows, last)
            out[start:stop] = _count_block(
                dist[start:stop],
                thresholds[start:stop],
                threshold_index[start:stop],
                n_thresholds[start:stop],
                item_index
                if item_index is None or item_index.ndim == 1
                else item_index[start:stop],
                mask,
            )

    if dist.device.type != "cpu" or b <= rows:
        count_rows(0, b)
    else:
        in_parallel(count_rows, split_rows(0, b))
    return out


def split_rows(start: int, stop: int) -> list[tuple[int, int]]:
    """``start..stop`` in one contiguous part per torch CPU thread."""
    n = max(1, min(torch.get_num_threads(), stop - start))
    return [
        (start + (stop - start) * i // n, start + (stop - start) * (i + 1) // n)
        for i in range(n)
    ]


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


def at_or_below(
    dist: torch.Tensor, limit: torch.Tensor, mask: np.ndarray | None = None
):
    """The entries of ``dist`` (b, K) at or below their row's ``limit``
    (b, 1): ``(at, value, repeat)``, ``at`` (int64) their positions in the
    flattened ``dist``, ascending, ``value`` their distances, and ``repeat``
    a function that gives a (b,) tensor's value of each entry's row. On the
    CPU with numpy (several times faster there than torch's comparison,
    nonzero and indexing), in ``mask`` (at least b rows of K) when given."""
    if dist.device.type != "cpu":
        at = (dist <= limit).view(-1).nonzero().squeeze(1)
        row = torch.div(at, dist.shape[1], rounding_mode="floor")
        return at, dist.view(-1).index_select(0, at), lambda x: x.index_select(0, row)
    b, k_items = dist.shape
    array = dist.numpy()
    below = np.less_equal(array, limit.numpy(), out=None if mask is None else mask[:b])
    at = np.flatnonzero(below)
    per_row = np.diff(np.searchsorted(at, np.arange(b + 1) * k_items))
    return (
        torch.from_numpy(at),
        torch.from_numpy(array.reshape(-1).take(at)),
        lambda x: torch.from_numpy(np.repeat(x.numpy(), per_row)),
    )


def flat_nonzero(mask: torch.Tensor) -> torch.Tensor:
    """Positions of the true entries of a 1-d bool tensor (int64, ascending;
    numpy's on the CPU, several times faster there than torch's)."""
    if mask.device.type == "cpu":
        return torch.from_numpy(np.flatnonzero(mask.numpy()))
    return mask.nonzero().squeeze(1)


def _count_block(dist, thr, thr_index, n_thr, item_index, mask):
    """count_at_or_before for one block of rows (see there)."""
    device = dist.device
    b, k_items = dist.shape
    width = thr.shape[1]
    valid = torch.arange(width, device=device).unsqueeze(0) < n_thr.unsqueeze(1)

    # Candidates: the items at or below the row's last threshold; the others
    # come after every threshold (counted nowhere).
    lo = thr[:, :1]
    hi = thr.gather(1, (n_thr - 1).clamp(min=0).unsqueeze(1))
    at, value, repeat = at_or_below(
        dist, torch.where(valid[:, :1], hi, -torch.inf), mask
    )

    # Bins: n_bins equal bins over [lowest, highest threshold] of each row,
    # numbered -1 .. n_bins + 1 (clamped), by bin(x) = trunc(clamp(x * scale
    # + shift)): separate IEEE float operations (a multiplication by a
    # positive number, an addition, a clamp) and a truncation, each monotone
    # (non-decreasing) and computed alike for items and thresholds, so equal
    # values share a bin and an item in a lower bin than a threshold is
    # smaller than it. Bin m of row r is entry r * n_cols + m + 1 of the
    # flattened (b, n_cols) tables.
    per_row = max(width, len(value) // (b * CANDIDATES_PER_THRESHOLD))
    n_bins = int(min(max(BINS_PER_THRESHOLD * per_row, MIN_BINS), MAX_BINS))
    n_cols = n_bins + 3
    span = hi - lo
    ok = torch.isfinite(span) & (span > 0)
    scale = torch.where(ok, n_bins / torch.where(ok, span, 1.0), 1.0)
    shift = -torch.where(torch.isfinite(lo), lo, 0.0) * scale
    first = torch.arange(b, device=device, dtype=torch.int32).unsqueeze(1) * n_cols + 1

    def table_entry(x, scale, shift, first):
        y = (x * scale).add_(shift).clamp_(-1.0, n_bins + 1.0)
        return y.to(torch.int32).add_(first)

    entry = table_entry(
        value, repeat(scale.view(-1)), repeat(shift.view(-1)), repeat(first.view(-1))
    )
    thr_entry = table_entry(thr, scale, shift, first)
    hist = torch.bincount(entry, minlength=b * n_cols).view(b, n_cols)
    # The valid thresholds' entries, row after row: ascending overall. Each
    # occupied entry (bin with thresholds) `used[g]` holds the thresholds at
    # positions first_at[g] .. end_at[g] - 1, and in_bin[g] candidates.
    thr_entries = thr_entry[valid]
    is_first = torch.ones(len(thr_entries), dtype=torch.bool, device=device)
    is_first[1:] = thr_entries[1:] != thr_entries[:-1]
    first_at = is_first.nonzero().squeeze(1)
    end_at = torch.cat([first_at[1:], first_at.new_tensor([len(thr_entries)])])
    used = thr_entries.index_select(0, first_at).long()
    in_bin = hist.view(-1).index_select(0, used)

    # A candidate in a bin without thresholds is at or before threshold k iff
    # its bin is at most threshold k's bin: all candidates in bins up to
    # there (a cumulative sum), less those in occupied bins up to there.
    thr_col = (thr_entry - first + 1).long().clamp(0, n_cols - 1)
    counts = hist.cumsum(1).gather(1, thr_col)
    # (Each occupied bin's candidates, at the first of its thresholds, summed
    # along the row.)
    in_occupied = torch.zeros((b, width), dtype=torch.int64, device=device)
    in_occupied[valid] = torch.zeros_like(thr_entries, dtype=torch.int64).index_put_(
        (first_at,), in_bin
    )
    counts -= in_occupied.cumsum(1)
    # Candidates in a bin with thresholds: compared with them exactly.
    if bool((in_bin > 0).any()):
        occupied = torch.zeros(b * n_cols, dtype=torch.bool, device=device)
        occupied[used] = True
        # Looked up only at occupied entries, so need no initial values.
        bin_first = torch.empty(b * n_cols, dtype=torch.int64, device=device)
        bin_first[used] = first_at
        bin_end = torch.empty(b * n_cols, dtype=torch.int64, device=device)
        bin_end[used] = end_at
        hit = flat_nonzero(occupied.index_select(0, entry))
        at = at.index_select(0, hit)
        row = torch.div(at, k_items, rounding_mode="floor")
        if item_index is None:
            index = at - row * k_items
        elif item_index.ndim == 1:
            index = item_index.index_select(0, at - row * k_items)
        else:
            index = item_index.reshape(-1).index_select(0, at)
        counts += _search_block(
            value.index_select(0, hit),
            index,
            row,
            entry.index_select(0, hit),
            thr[valid],
            thr_index[valid],
            bin_first,
            bin_end,
            n_thr,
            width,
        )
    return counts.masked_fill(~valid, 0)


def _search_block(
    value, index, row, cell, thr_v, thr_i, bin_first, bin_end, n_thr, width
):
    """Per row and threshold k, (b, width), the number of the given items
    (``value``, ``index``, ``row`` and table entry ``cell`` each, all in
    bins with thresholds) that come at or before threshold k. Each item's L
    (thresholds before it) is found by binary search in (distance, index)
    order among the thresholds of its bin; the count is the cumulative
    histogram of L. Arrays are flat (index_select is much faster than
    advanced indexing on the CPU); ``thr_v`` and ``thr_i`` hold the valid
    thresholds row after row, those of table entry ``e`` at positions
    ``bin_first[e] .. bin_end[e] - 1``."""
    device = value.device
    b = len(n_thr)
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
    keys = lexicographic_keys(values, index).masked_fill(
        ~valid, torch.iinfo(torch.int64).max
    )
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
    parts = in_parallel(
        lambda a, b: np.argsort(array[a:b], axis=1), split_rows(0, len(array))
    )
    return torch.from_numpy(np.concatenate(parts))


def rank_by_sorting(
    dist: torch.Tensor, item_index: torch.Tensor, is_positive: torch.Tensor
):
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
    at = torch.arange(len(row), device=dist.device) - (
        n_pos.cumsum(0) - n_pos
    ).index_select(0, row)
    ranks = torch.zeros((len(dist), width), dtype=torch.int64, device=dist.device)
    ranks[row, at] = col + 1
    valid = torch.arange(width, device=dist.device).unsqueeze(0) < n_pos.unsqueeze(1)
    return ranks, valid

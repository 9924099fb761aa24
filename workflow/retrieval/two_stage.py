"""Two-stage retrieval with class anchors (CAM paper) beside exact retrieval.

Losses that learn one anchor or centre per class (``cam``; the centres of
``lm`` and ``center``; any loss with ``class_anchors()``) allow a cheaper
search (Ghita & Ionescu, 2023, "Class Anchor Margin loss"):

Indexing
    Every database embedding is assigned to its nearest anchor (ties: the
    lower anchor index). The index stores the database grouped by anchor.
Stage 1
    The query is compared with the ``C`` anchors only; the ``c`` nearest are
    kept (ties: the lower anchor index).
Stage 2
    Only the database items assigned to those ``c`` anchors (the
    *candidates*) are ranked, by the same L2 distance and tie-break (database
    index) as exact retrieval (:mod:`workflow.retrieval.exact`): one matrix product
    per kept anchor (its queries against its group), then the candidates'
    positive ranks by sorting the candidates (when there are at most 3 per
    positive) or by counting as exact retrieval does.
The rest
    ``rest="follow"``: the other database items follow the candidates, in
    exact order, so the ranking covers the whole database and every metric is
    defined as for exact retrieval. ``rest="cut"``: they are not retrieved;
    positives among them rank at infinity (they count towards ``R`` but are
    never within a cutoff and add 0 to the average precision; see
    :mod:`workflow.retrieval`, "Unretrieved positives").

Anchors that all have the same norm (the L2-normalised centres of ``lm``,
ArcFace's class weights, Proxy-Anchor's proxies) need no special case: as
``||x - a||^2 = ||x||^2 + ||a||^2 - 2 x.a``, the nearest of them by L2 is the
one of largest cosine with ``x``. ``c`` at least the number of anchors keeps
every class: the exact ranking.

Cost
    ``distance_computations_per_query`` (a row of ``results/metrics.csv``):
    embedding distances computed per query: ``N`` for exact retrieval;
    ``C + (number of candidates)`` for two-stage, averaged over queries.
    ``seconds_per_query`` (:class:`RetrievalResult`, not a metric: a wall
    time differs between any two runs, so ``evaluate`` writes it to the
    cell's benchmark records, never to ``metrics.csv``): wall time of the
    search (distances and the ordering of the returned items, computed as
    the ranks of each query's positives) divided by the number of queries;
    excluded are index building (the assignment), the metric reduction
    (shared by all methods) and, with ``rest="follow"``, the exact ordering
    of the rest, which only serves to keep the metrics defined (a deployed
    two-stage search never computes it). With ``rest="follow"`` the search
    runs on the exact chunks' queries (``chunk_size``); with ``"cut"`` on
    larger chunks whose candidate tables (about 64 bytes a candidate) stay
    within about one exact chunk's distances: more queries per anchor make
    its matrix products efficient, so ``cut`` times two-stage search closer
    to its best.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from workflow.retrieval.accumulate import MetricAccumulator
from workflow.retrieval.exact import (
    ExactChunk,
    clustered_set,
    distance_buffer,
    keep_rows,
    query_chunk,
    rank_exact,
)
from workflow.retrieval.inputs import Prepared, as_embeddings, check_chunk_size, prepare
from workflow.retrieval.kernel import (
    count_at_or_before,
    distances,
    in_parallel,
    rank_by_sorting,
    sort_thresholds,
    split_rows,
    squared_norms,
    sync,
)
from workflow.retrieval.metrics import METRICS

__all__ = [
    "AnchorIndex",
    "RESTS",
    "RetrievalResult",
    "build_anchor_index",
    "evaluate_retrieval_methods",
    "method_name",
    "nearest_anchors",
]

RESTS = ("follow", "cut")
# Stage 2 ranks the candidates by sorting them when there are at most this
# many per positive of the widest row, else by counting (workflow.retrieval.kernel).
_SORT_WIDTH_PER_POSITIVE = 3


def method_name(classes: int) -> str:
    """The ``retrieval`` value of two-stage retrieval keeping ``classes``."""
    return f"two_stage_c{classes}"


@dataclass
class AnchorIndex:
    """The database grouped by nearest anchor."""

    anchors: torch.Tensor  # (C, D) float32
    anchor_sq: torch.Tensor  # (C,) ||a||^2
    assignment: torch.Tensor  # (N,) nearest anchor of each database item
    order: torch.Tensor  # (N,) database indices grouped by anchor, ascending within
    group_start: np.ndarray  # (C,) first position in `order` of each anchor's group
    group_size: np.ndarray  # (C,) items assigned to each anchor
    emb: torch.Tensor  # (N, D) database embeddings in `order`
    sq: torch.Tensor  # (N,) their ||b||^2
    codes: torch.Tensor  # (N,) their class codes
    seconds: float  # wall time of building the index

    @property
    def n_anchors(self) -> int:
        return len(self.anchors)


def nearest_anchors(index: AnchorIndex, emb: torch.Tensor, c: int) -> torch.Tensor:
    """(n, c) the ``c`` nearest anchors of each embedding, nearest first; ties
    go to the lower anchor index (a stable sort of the C distances)."""
    dist = distances(emb, index.anchors, index.anchor_sq)
    if c == 1:  # argmin returns the first of equal minima
        return dist.argmin(dim=1, keepdim=True)
    return torch.sort(dist, dim=1, stable=True).indices[:, :c]


def build_anchor_index(prep: Prepared, anchors, chunk_size: int = 1024) -> AnchorIndex:
    """Assign every database item of ``prep`` to its nearest anchor."""
    anchors = as_embeddings(anchors, "anchors").to(
        device=prep.device, dtype=torch.float32
    )
    if len(anchors) == 0:
        raise ValueError("two-stage retrieval needs at least one anchor")
    if anchors.shape[1] != prep.db_emb.shape[1]:
        raise ValueError(
            f"anchors have dimension {anchors.shape[1]}, embeddings {prep.db_emb.shape[1]}"
        )
    if not torch.isfinite(anchors).all():
        raise ValueError("anchors contain NaN or infinite values")
    sync(prep.device)
    began = time.perf_counter()
    index = AnchorIndex(
        anchors=anchors,
        anchor_sq=squared_norms(anchors),
        assignment=None,
        order=None,
        group_start=None,
        group_size=None,
        emb=None,
        sq=None,
        codes=None,
        seconds=0.0,
    )
    assignment = torch.cat(
        [
            nearest_anchors(index, prep.db_emb[s : s + chunk_size], 1)[:, 0]
            for s in range(0, prep.n_db, chunk_size)
        ]
    )
    order = torch.sort(
        assignment, stable=True
    ).indices  # ascending index within a group
    sizes = torch.bincount(assignment, minlength=len(anchors)).cpu().numpy()
    index.assignment = assignment
    index.order = order
    index.group_size = sizes
    index.group_start = np.cumsum(sizes) - sizes
    index.emb = prep.db_emb[order]
    index.sq = prep.db_sq[order]
    index.codes = prep.db_codes[order]
    sync(prep.device)
    index.seconds = time.perf_counter() - began
    return index


@dataclass
class RetrievalResult:
    """What :func:`evaluate_retrieval_methods` returns for one method."""

    metrics: dict[str, float]  # retrieval metrics and distance_computations_per_query
    curve: (
        pd.DataFrame
    )  # mean precision-recall curve (as workflow.retrieval.exact.pr_curve)
    seconds_per_query: (
        float  # wall time of the search per query (module docstring, "Cost")
    )
    index_seconds: float  # building the anchor index (0 for exact retrieval)


@dataclass
class _Candidates:
    """Stage 2 of one chunk of queries: the candidates ranked."""

    selected: torch.Tensor  # (B, c) anchors kept by stage 1
    n_candidates: torch.Tensor  # (B,) candidates per query
    item: torch.Tensor  # (B, W) database index of each candidate, -1 = padding
    ranks: torch.Tensor  # (B, T) rank among the candidates of each candidate positive
    valid: torch.Tensor  # (B, T) bool


def _search(
    index: AnchorIndex, q: torch.Tensor, q_codes: torch.Tensor, c: int
) -> _Candidates:
    """Stages 1 and 2 for one chunk of queries ``q`` (B, D)."""
    device = q.device
    n = len(q)
    selected = nearest_anchors(index, q, c)
    group_size = torch.from_numpy(index.group_size).to(device)
    group_start = torch.from_numpy(index.group_start).to(device)
    sizes = group_size[selected]  # (B, c): the kept groups, one after the other per row
    n_cand = sizes.sum(1)
    slot_start = sizes.cumsum(1) - sizes
    width = max(int(n_cand.max()), 1)  # (at least one padding column)

    # Position in the index of each candidate column: +1 from column to
    # column, jumping at the start of each kept group to that group's start
    # (a cumulative sum of steps; empty groups' jumps add up).
    starts = group_start[selected]
    previous_end = torch.cat(
        [torch.zeros_like(starts[:, :1]), (starts + sizes)[:, :-1]], 1
    )
    jump = (
        starts
        - previous_end
        - torch.nn.functional.pad(
            torch.ones_like(starts[:, :1]), (0, starts.shape[1] - 1)
        )
    )
    step = torch.ones((n, width + 1), dtype=torch.int64, device=device)
    step.scatter_add_(1, slot_start, jump)
    position = step[:, :width].cumsum(1)
    padding = torch.arange(width, device=device).unsqueeze(0) >= n_cand.unsqueeze(1)
    position = position.masked_fill_(padding, 0).view(-1)
    item = (
        index.order.index_select(0, position).view(n, width).masked_fill_(padding, -1)
    )
    is_pos = index.codes.index_select(0, position).view(n, width) == q_codes.unsqueeze(
        1
    )
    is_pos &= ~padding

    # One matrix product per kept anchor: its queries against its group.
    dist = torch.full((n * width,), float("inf"), device=device)
    pairs = torch.sort(selected.reshape(-1), stable=True)
    per_anchor = torch.bincount(pairs.values, minlength=index.n_anchors).tolist()
    slot_of = pairs.indices  # (row * c + slot), grouped by anchor
    first = 0
    for a, count in enumerate(per_anchor):
        size = int(index.group_size[a])
        if count == 0 or size == 0:
            first += count
            continue
        pair = slot_of[first : first + count]
        first += count
        rows = pair // selected.shape[1]
        start = int(index.group_start[a])
        group = slice(start, start + size)
        block = distances(q.index_select(0, rows), index.emb[group], index.sq[group])
        at = (rows * width + slot_start.view(-1).index_select(0, pair)).unsqueeze(1)
        dist.index_put_(
            ((at + torch.arange(size, device=device)).view(-1),), block.view(-1)
        )
    dist = dist.view(n, width)

    # The ranks of the candidate positives: by sorting the candidates when
    # there are few of them per positive, else by counting (as exact
    # retrieval; see workflow.retrieval.kernel).
    n_pos = is_pos.sum(1)
    if width <= _SORT_WIDTH_PER_POSITIVE * max(int(n_pos.max()), 1):
        ranks, valid = rank_by_sorting(dist, item, is_pos)
    else:
        t = max(int(n_pos.max()), 1)
        row, col = is_pos.nonzero(as_tuple=True)
        at = torch.arange(len(row), device=device) - (n_pos.cumsum(0) - n_pos)[row]
        pos_col = torch.zeros((n, t), dtype=torch.int64, device=device)
        pos_col[row, at] = col
        valid = torch.arange(t, device=device).unsqueeze(0) < n_pos.unsqueeze(1)
        thr, thr_index, _ = sort_thresholds(
            dist.gather(1, pos_col), item.gather(1, pos_col), valid
        )
        ranks = count_at_or_before(dist, thr, thr_index, n_pos, item_index=item)
    return _Candidates(selected, n_cand, item, ranks, valid)


def _rest_ranks(index: AnchorIndex, exact: ExactChunk, cand: _Candidates):
    """Ranks of the positives outside the candidates when the rest follows in
    exact order: ``n_candidates + exact rank - (candidates before it)``, all
    from the exact chunk's distances (so the rest's order is the exact one)."""
    in_cand = (
        index.assignment[exact.positives.clamp(min=0)].unsqueeze(2)
        == cand.selected.unsqueeze(1)
    ).any(2)
    rest = exact.valid & ~in_cand
    n_rest = rest.sum(1)
    t = max(int(n_rest.max()), 1)
    # Keep the rest positives, in exact order, at the left of each row.
    row, col = rest.nonzero(as_tuple=True)
    at = torch.arange(len(row), device=rest.device) - (n_rest.cumsum(0) - n_rest)[row]
    keep = torch.zeros((len(rest), t), dtype=torch.int64, device=rest.device)
    keep[row, at] = col
    valid = torch.arange(t, device=rest.device).unsqueeze(0) < n_rest.unsqueeze(1)
    positives = exact.positives.gather(1, keep)
    exact_rank = exact.ranks.gather(1, keep)
    thr = exact.dist.gather(1, positives.clamp(min=0)).masked_fill(~valid, float("inf"))
    cand_dist = exact.dist.gather(1, cand.item.clamp(min=0)).masked_fill(
        cand.item < 0, float("inf")
    )
    before = count_at_or_before(cand_dist, thr, positives, n_rest, item_index=cand.item)
    ranks = cand.n_candidates.unsqueeze(1) + exact_rank - before
    return ranks.masked_fill(~valid, 0), valid


def evaluate_retrieval_methods(
    query_emb,
    query_labels,
    db_emb=None,
    db_labels=None,
    anchors=None,
    classes: Sequence[int] = (),
    rest: str = "follow",
    evaluation: Mapping | None = None,
    chunk_size: int = 1024,
    device=None,
    exact: bool = True,
) -> dict[str, RetrievalResult]:
    """Exact retrieval and two-stage retrieval for each ``c`` in ``classes``.

    One pass over chunks of ``chunk_size`` queries. ``anchors`` (C, D): one
    per class (needed when ``classes`` is not empty); ``rest``: ``"follow"``
    or ``"cut"`` (module docstring); ``exact=False`` leaves exact retrieval
    out of the result (it is still computed when ``rest="follow"``, which
    needs it). ``evaluation``: the config's evaluation mapping, whose
    cutoffs and switches the metric registry reads. Without ``db_emb`` and
    ``db_labels``: exact retrieval all against all (every query against the
    others, itself excluded); two-stage retrieval needs a database apart
    from the queries. Returns ``{retrieval: RetrievalResult}`` for ``"exact"`` and
    ``two_stage_c{c}``; the ``metrics`` hold the retrieval metrics of
    :mod:`workflow.retrieval.metrics` (queries without positives left out) plus
    ``distance_computations_per_query``; the wall times are fields of the
    result (``seconds_per_query``, ``index_seconds``).
    """
    if rest not in RESTS:
        raise ValueError(f"rest must be one of {', '.join(RESTS)}, got {rest!r}")
    classes = list(dict.fromkeys(int(c) for c in classes))  # unique, in order
    if any(c < 1 for c in classes):
        raise ValueError(f"classes: every c must be a positive integer, got {classes}")
    if not exact and not classes:
        raise ValueError("nothing to evaluate: exact=False and no classes")
    chunk_size = check_chunk_size(chunk_size)
    prep = prepare(query_emb, query_labels, db_emb, db_labels, device)
    cutoffs = METRICS.cutoffs(evaluation, prep.n_ranked)
    index = None
    if classes:
        if anchors is None:
            raise ValueError("two-stage retrieval (classes given) needs anchors")
        if prep.all_against_all:
            raise ValueError(
                "two-stage retrieval needs a database apart from the queries, "
                "not all against all; give no classes"
            )
        index = build_anchor_index(prep, anchors, chunk_size)
    methods = (["exact"] if exact else []) + [method_name(c) for c in classes]
    acc = {m: MetricAccumulator(prep.n_ranked, cutoffs) for m in methods}
    seconds = dict.fromkeys(methods, 0.0)
    computations = dict.fromkeys(methods, 0.0)  # distances computed

    def stage_two_rows(c: int) -> int:
        """Queries per stage-2 chunk: their candidate tables (about 64 bytes
        a candidate) stay within about the exact chunk's distances (4 bytes
        an item); more queries per anchor make its matrix products
        efficient."""
        widest = int(np.sort(index.group_size)[::-1][: min(c, index.n_anchors)].sum())
        return max(1, chunk_size * prep.n_db // (16 * max(widest, 1)))

    def add_two_stage(c, start, stop, q, codes, exact_chunk=None):
        name = method_name(c)
        # Stages 1 and 2, timed; on the CPU in parallel parts (see in_parallel).
        parts = (
            split_rows(0, stop - start)
            if prep.device.type == "cpu"
            else [(0, stop - start)]
        )
        sync(prep.device)
        began = time.perf_counter()
        found = in_parallel(
            lambda a, b: _search(index, q[a:b], codes[a:b], min(c, index.n_anchors)),
            parts,
        )
        sync(prep.device)
        seconds[name] += time.perf_counter() - began
        for (a, b), cand in zip(parts, found):
            computations[name] += float((cand.n_candidates + index.n_anchors).sum())
            ranks, valid = cand.ranks, cand.valid
            if (
                exact_chunk is not None
            ):  # rest="follow": the rest's ranks after the candidates'
                rest_ranks, rest_valid = _rest_ranks(
                    index, exact_chunk.rows(a, b), cand
                )
                n_cand_pos = valid.sum(1, keepdim=True)
                ranks = torch.cat(
                    [ranks.masked_fill(~valid, 0), torch.zeros_like(rest_ranks)], 1
                )
                at = n_cand_pos + torch.arange(rest_ranks.shape[1], device=ranks.device)
                ranks.scatter_(1, at, rest_ranks.masked_fill(~rest_valid, 0))
                n_valid = n_cand_pos + rest_valid.sum(1, keepdim=True)
                valid = (
                    torch.arange(ranks.shape[1], device=ranks.device).unsqueeze(0)
                    < n_valid
                )
            acc[name].add_rows(*keep_rows(prep, start + a, start + b, ranks, valid))

    follow = rest == "follow"
    if exact or (classes and follow):
        buffer = distance_buffer(prep, chunk_size)
        for start in range(0, prep.n_queries, chunk_size):
            stop = min(start + chunk_size, prep.n_queries)
            chunk = rank_exact(prep, start, stop, buffer)
            if exact:
                acc["exact"].add_rows(*chunk.rows_with_positives(prep))
                seconds["exact"] += chunk.seconds
                computations["exact"] += prep.n_ranked * (stop - start)
            if follow:
                codes = torch.from_numpy(prep.query_codes[start:stop]).to(prep.device)
                for c in classes:
                    rows = stage_two_rows(c)
                    for a in range(0, stop - start, rows):
                        b = min(a + rows, stop - start)
                        add_two_stage(
                            c,
                            start + a,
                            start + b,
                            chunk.query[a:b],
                            codes[a:b],
                            chunk.rows(a, b),
                        )
    if classes and not follow:
        # Without the exact ranking to follow, each c ranks its own chunks.
        for c in classes:
            rows = stage_two_rows(c)
            for start in range(0, prep.n_queries, rows):
                stop = min(start + rows, prep.n_queries)
                add_two_stage(c, start, stop, *query_chunk(prep, start, stop))

    codes = prep.query_codes[prep.has_positives]
    results = {}
    for m in methods:
        metrics, curve = acc[m].finish(codes)
        if m == "exact":
            metrics.update(METRICS.of_clusters(evaluation, *clustered_set(prep)))
        metrics["distance_computations_per_query"] = computations[m] / prep.n_queries
        index_seconds = index.seconds if m != "exact" else 0.0
        results[m] = RetrievalResult(
            metrics, curve, seconds[m] / prep.n_queries, index_seconds
        )
    return results

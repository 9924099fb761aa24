"""Tests of workflow.retrieval (exact search and the metrics) against sklearn, pytorch-metric-learning and a
brute-force numpy reference (full Q x N argsort, float64).

Test data lie on an integer grid: every intermediate of the float32 distance
computation (ours, and PML's torch.cdist) is then an integer below 2**24, so
float32 is exact and the float64 reference ranks exactly as the code under
test. "Continuous" data are a fine grid checked to have no tie between a
positive and a negative (the only ties that could change a metric); "tie" data
use a coarse grid {0, 1, 2}^3 on which most distances tie.
"""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from pytorch_metric_learning.distances import LpDistance
from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
from pytorch_metric_learning.utils.inference import CustomKNN
from sklearn.metrics import auc, average_precision_score

import workflow.retrieval.kernel as kernel
from workflow.retrieval.accumulate import MetricAccumulator, metrics_from_positive_ranks
from workflow.retrieval.exact import (
    evaluate_retrieval,
    positive_ranks,
    pr_curve,
    retrieval_metrics,
)
from workflow.retrieval.inputs import queries_without_positives
from workflow.retrieval.kernel import count_at_or_before, sort_thresholds

PML_METRICS = ("precision_at_1", "r_precision", "mean_average_precision_at_r")


# ---------------------------------------------------------------------------
# Data and references
# ---------------------------------------------------------------------------


def make_labels(rng, n_db, n_classes, query_counts):
    """Database labels with every class present; query labels with the given
    number of queries per class; both shuffled."""
    db_labels = np.concatenate(
        [np.arange(n_classes), rng.integers(0, n_classes, n_db - n_classes)]
    )
    query_labels = np.repeat(np.arange(n_classes), query_counts)
    return rng.permutation(query_labels), rng.permutation(db_labels)


def grid_data(seed, n_classes, query_counts, n_db=120, coarse=False):
    """Class-structured integer-valued float32 embeddings.

    Fine: 4-D, coordinates in [-500, 500]: squared distances are integers
    below 4 * 1000**2 < 2**22, so every float32 intermediate is exact and
    distinct squared distances keep distinct float32 square roots (PML ranks
    by the root). Coarse: 3-D, coordinates in {0, 1, 2}.
    """
    rng = np.random.default_rng(seed)
    if np.isscalar(query_counts):
        query_counts = [query_counts] * n_classes
    ql, dl = make_labels(rng, n_db, n_classes, query_counts)
    if coarse:
        dim, lo, hi, spread, noise = 3, 0, 2, 2.0, 0.7
        centres = rng.uniform(0, spread, (n_classes, dim))
    else:
        dim, lo, hi, spread, noise = 4, -500, 500, 300.0, 120.0
        centres = rng.uniform(-spread, spread, (n_classes, dim))

    def embed(labels):
        x = centres[labels] + rng.normal(0, noise, (len(labels), dim))
        return np.clip(np.rint(x), lo, hi).astype(np.float32)

    return embed(ql), ql, embed(dl), dl


def reference(q, ql, db, dl):
    """Brute force: float64 squared distances, full stable argsort (ties by
    database index), relevance of every rank position."""
    d = (
        (q[:, None, :].astype(np.float64) - db[None, :, :].astype(np.float64)) ** 2
    ).sum(-1)
    order = np.argsort(d, axis=1, kind="stable")
    relevant = dl[order] == ql[:, None]
    return d, order, relevant


def pos_neg_ties(d, ql, dl):
    """Number of queries with a positive and a negative at the same distance."""
    n = 0
    for row, label in zip(d, ql):
        pos = set(row[dl == label].tolist())
        n += bool(pos & set(row[dl != label].tolist()))
    return n


def class_macro(per_query, ql):
    return np.mean([per_query[ql == c].mean() for c in np.unique(ql)])


def ref_curve(relevant):
    hits = np.cumsum(relevant, axis=1)
    cutoff = np.arange(1, relevant.shape[1] + 1)
    precision = (hits / cutoff).mean(axis=0)
    recall = (hits / relevant.sum(axis=1, keepdims=True)).mean(axis=0)
    return precision, recall


def pml(q, ql, db, dl, avg_of_avgs=False, knn_func=None):
    calc = AccuracyCalculator(
        include=PML_METRICS,
        avg_of_avgs=avg_of_avgs,
        device=torch.device("cpu"),
        knn_func=knn_func or CustomKNN(LpDistance(normalize_embeddings=False)),
    )
    return calc.get_accuracy(q, ql, db, dl, ref_includes_query=False)


def with_index_tiebreak(q, db, reverse=False):
    """Encode a tie-break by database index into the data, for PML.

    PML's CustomKNN ranks with torch.topk, whose order among equal distances
    is unspecified, so on tied data it need not agree with our convention.
    Append one coordinate: 0 for queries, c_j = sqrt((j+1) / (2(N+1))) for
    database item j. A squared distance s (an integer on the coarse grid)
    becomes s + c_j**2 with 0 < c_j**2 < 1/2, increasing in j in steps of
    1/(2(N+1)) (far above float32 rounding at these magnitudes): items at
    different s keep their order and items tied at s are ordered by index,
    with no ties left for topk to break. ``reverse`` orders ties by
    descending index instead (to show that the tie-break matters).
    """
    n = len(db)
    j = np.arange(n)[::-1] if reverse else np.arange(n)
    extra = np.sqrt((j + 1) / (2.0 * (n + 1)))
    q_aug = np.hstack([q, np.zeros((len(q), 1))]).astype(np.float32)
    db_aug = np.hstack([db, extra[:, None]]).astype(np.float32)
    return q_aug, db_aug


class StableKNN:
    """A knn_func for PML that ranks by L2 with a stable sort (our tie-break),
    so PML's own metric code can be run on tied data unchanged."""

    def __call__(self, query, k, reference, ref_includes_query=False):
        assert not ref_includes_query
        mat = LpDistance(normalize_embeddings=False)(query, reference)
        dist, idx = torch.sort(mat, dim=1, stable=True)
        return dist[:, :k], idx[:, :k]


# ---------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("n_classes,seed", [(2, 1), (5, 1), (12, 2)])
def test_map_matches_sklearn_average_precision(n_classes, seed):
    # (Seeds are fixed; the precondition below holds for them.)
    q, ql, db, dl = grid_data(seed, n_classes, query_counts=60 // n_classes)
    d, _, _ = reference(q, ql, db, dl)
    assert pos_neg_ties(d, ql, dl) == 0  # precondition: -distance is a tie-free score
    expected = np.mean(
        [average_precision_score(dl == label, -row) for row, label in zip(d, ql)]
    )
    got = retrieval_metrics(q, ql, db, dl)
    assert got["map"] == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_map_with_ties_matches_sklearn_on_index_tiebreak_scores():
    q, ql, db, dl = grid_data(3, 4, query_counts=15, coarse=True)
    d, order, _ = reference(q, ql, db, dl)
    assert pos_neg_ties(d, ql, dl) > len(ql) // 2  # ties are everywhere
    # Scores that encode the documented convention: minus the position in the
    # stable (index tie-broken) ranking. sklearn on raw -distance would
    # instead pool tied items, so give it these tie-free scores.
    position = np.empty_like(order)
    np.put_along_axis(position, order, np.arange(len(db))[None, :], axis=1)
    expected = np.mean(
        [average_precision_score(dl == label, -pos) for pos, label in zip(position, ql)]
    )
    got = retrieval_metrics(q, ql, db, dl)
    assert got["map"] == pytest.approx(expected, rel=1e-12)
    # ...and the tie convention matters here: pooled ties give another value.
    pooled = np.mean(
        [average_precision_score(dl == label, -row) for row, label in zip(d, ql)]
    )
    assert abs(pooled - expected) > 1e-3


@pytest.mark.parametrize("n_classes,seed", [(3, 4), (8, 5)])
def test_matches_pml_accuracy_calculator(n_classes, seed):
    # Balanced query classes: PML's precision_at_1 (a per-query mean with
    # avg_of_avgs=False) then equals our class-macro precision@1.
    q, ql, db, dl = grid_data(seed, n_classes, query_counts=48 // n_classes)
    d, _, _ = reference(q, ql, db, dl)
    assert pos_neg_ties(d, ql, dl) == 0
    ref = pml(q, ql, db, dl)
    got = retrieval_metrics(q, ql, db, dl)
    assert got["precision@1"] == pytest.approx(ref["precision_at_1"], abs=1e-12)
    assert got["r_precision"] == pytest.approx(ref["r_precision"], abs=1e-12)
    assert got["map@r"] == pytest.approx(ref["mean_average_precision_at_r"], abs=1e-12)


def test_matches_pml_on_unbalanced_query_classes():
    q, ql, db, dl = grid_data(8, 4, query_counts=[30, 10, 5, 3])
    d, _, _ = reference(q, ql, db, dl)
    assert pos_neg_ties(d, ql, dl) == 0
    micro = pml(q, ql, db, dl, avg_of_avgs=False)
    macro = pml(q, ql, db, dl, avg_of_avgs=True)
    got = retrieval_metrics(q, ql, db, dl)
    # precision@k is class-macro (PML's avg_of_avgs=True) ...
    assert got["precision@1"] == pytest.approx(macro["precision_at_1"], abs=1e-12)
    assert abs(macro["precision_at_1"] - micro["precision_at_1"]) > 1e-3
    # ... while top1_error, r_precision and map@r are per-query means.
    assert 1 - got["top1_error"] == pytest.approx(micro["precision_at_1"], abs=1e-12)
    assert got["r_precision"] == pytest.approx(micro["r_precision"], abs=1e-12)
    assert got["map@r"] == pytest.approx(
        micro["mean_average_precision_at_r"], abs=1e-12
    )


def test_matches_pml_with_ties():
    # Coarse grid: most distances tie, between positives and negatives too.
    q, ql, db, dl = grid_data(7, 4, query_counts=12, coarse=True)
    d, _, _ = reference(q, ql, db, dl)
    assert pos_neg_ties(d, ql, dl) > len(ql) // 2
    got = retrieval_metrics(q, ql, db, dl)
    keys = {
        "precision@1": "precision_at_1",
        "r_precision": "r_precision",
        "map@r": "mean_average_precision_at_r",
    }

    # (a) PML's metric code, ranked by a stable sort (our tie-break).
    ref = pml(q, ql, db, dl, knn_func=StableKNN())
    for ours, theirs in keys.items():
        assert got[ours] == pytest.approx(ref[theirs], abs=1e-12), ours

    # (b) PML's stock CustomKNN (torch.topk) on the same data with the index
    # tie-break encoded into it (see with_index_tiebreak).
    ref = pml(*_interleave(with_index_tiebreak(q, db), ql, dl))
    for ours, theirs in keys.items():
        assert got[ours] == pytest.approx(ref[theirs], abs=1e-12), ours

    # The comparison is sensitive to the tie-break: ordering ties by
    # descending index changes PML's values.
    rev = pml(*_interleave(with_index_tiebreak(q, db, reverse=True), ql, dl))
    assert any(abs(got[o] - rev[t]) > 1e-3 for o, t in keys.items())


def _interleave(embs, ql, dl):
    q_aug, db_aug = embs
    return q_aug, ql, db_aug, dl


@pytest.mark.parametrize("coarse", [False, True])
def test_precision_and_topk_error_match_brute_force(coarse):
    # Unbalanced query classes, so class-macro and per-query means differ.
    q, ql, db, dl = grid_data(8, 5, query_counts=[25, 12, 6, 3, 2], coarse=coarse)
    _, _, relevant = reference(q, ql, db, dl)
    ks = (1, 3, 5, 10, 50)
    got = retrieval_metrics(q, ql, db, dl, {"precision_at": ks, "top_k_error": ks})
    assert set(got) == (
        {f"precision@{k}" for k in ks}
        | {f"top{k}_error" for k in ks}
        | {"map", "map@r", "r_precision", "pr_auc"}
    )
    macro_differs = False
    for k in ks:
        per_query = relevant[:, :k].mean(axis=1)
        expected = class_macro(per_query, ql)
        assert got[f"precision@{k}"] == pytest.approx(expected, abs=1e-12)
        macro_differs |= abs(expected - per_query.mean()) > 1e-3
        err = np.mean(~relevant[:, :k].any(axis=1))
        assert got[f"top{k}_error"] == pytest.approx(err, abs=1e-12)
    assert macro_differs


@pytest.mark.parametrize("coarse", [False, True])
def test_pr_curve_and_auc_match_brute_force(coarse):
    q, ql, db, dl = grid_data(9, 6, query_counts=[12, 9, 7, 5, 4, 3], coarse=coarse)
    _, _, relevant = reference(q, ql, db, dl)
    precision, recall = ref_curve(relevant)
    metrics, curve = evaluate_retrieval(q, ql, db, dl)
    assert list(curve.columns) == ["cutoff", "precision", "recall"]
    np.testing.assert_array_equal(curve["cutoff"], np.arange(1, len(db) + 1))
    np.testing.assert_allclose(curve["precision"], precision, rtol=0, atol=1e-12)
    np.testing.assert_allclose(curve["recall"], recall, rtol=0, atol=1e-12)
    assert curve["recall"].iloc[-1] == pytest.approx(1.0)
    expected_auc = auc(np.r_[0.0, recall], np.r_[precision[0], precision])
    assert metrics["pr_auc"] == pytest.approx(expected_auc, abs=1e-12)
    # pr_curve alone gives the same curve.
    np.testing.assert_allclose(pr_curve(q, ql, db, dl).to_numpy(), curve.to_numpy())


@pytest.mark.parametrize("coarse", [False, True])
def test_chunking_does_not_change_results(coarse):
    q, ql, db, dl = grid_data(10, 5, query_counts=[9, 8, 7, 6, 3], coarse=coarse)
    runs = [
        evaluate_retrieval(q, ql, db, dl, chunk_size=c) for c in (1, 7, len(q), 1000)
    ]
    m0, c0 = runs[0]
    for m, c in runs[1:]:
        assert m.keys() == m0.keys()
        for key in m0:
            if key == "pr_auc":
                # Built from per-cutoff float sums accumulated chunk by chunk:
                # equal up to summation order.
                assert m[key] == pytest.approx(m0[key], rel=1e-12)
            else:
                assert m[key] == m0[key], key
        np.testing.assert_allclose(c.to_numpy(), c0.to_numpy(), rtol=1e-12, atol=0)


def test_positive_ranks_and_torch_inputs():
    q, ql, db, dl = grid_data(11, 3, query_counts=5, coarse=True)
    _, _, relevant = reference(q, ql, db, dl)
    ranks, counts = positive_ranks(q, ql, db, dl, chunk_size=4)
    np.testing.assert_array_equal(counts, relevant.sum(axis=1))
    np.testing.assert_array_equal(ranks, np.nonzero(relevant)[1] + 1)
    metrics, curve = metrics_from_positive_ranks(ranks, counts, ql, len(db))
    from_numpy = retrieval_metrics(q, ql, db, dl)
    from_torch = retrieval_metrics(
        torch.from_numpy(q),
        torch.from_numpy(ql),
        torch.from_numpy(db),
        torch.from_numpy(dl),
        device="cpu",
    )
    assert from_torch == from_numpy
    assert metrics == pytest.approx(from_numpy, rel=1e-12)


def test_queries_whose_class_is_absent_from_the_database_are_left_out():
    # Documented: such queries have no defined AP or recall; they are left
    # out of every metric (as PML leaves out its "lone" queries) and counted.
    q, ql, db, dl = grid_data(12, 3, query_counts=4)
    ql = ql.copy()
    ql[[0, 5]] = 99  # class 99 has no database item
    keep = ql != 99
    assert queries_without_positives(ql, dl) == 2
    metrics, curve = evaluate_retrieval(q, ql, db, dl)
    expected, expected_curve = evaluate_retrieval(q[keep], ql[keep], db, dl)
    assert metrics == expected
    pd.testing.assert_frame_equal(curve, expected_curve)
    assert all(np.isfinite(v) for v in metrics.values())
    ref = pml(q, ql, db, dl)  # PML's own handling of the absent class
    assert metrics["r_precision"] == pytest.approx(ref["r_precision"], abs=1e-12)
    assert metrics["map@r"] == pytest.approx(
        ref["mean_average_precision_at_r"], abs=1e-12
    )
    ranks, counts = positive_ranks(q, ql, db, dl)
    assert counts[0] == counts[5] == 0 and counts.sum() == len(ranks)


def test_no_query_with_a_positive_raises():
    q, ql, db, dl = grid_data(12, 3, query_counts=4)
    with pytest.raises(ValueError, match="none of the 12 queries has a class"):
        retrieval_metrics(q, np.full(len(ql), 99), db, dl)


def test_query_class_with_a_single_database_item():
    q, ql, db, dl = grid_data(14, 4, query_counts=[5, 4, 3, 3], n_db=60)
    dl = dl.copy()
    dl[dl == 3] = 0
    dl[7] = 3  # class 3: one database item
    _, _, relevant = reference(q, ql, db, dl)
    assert (relevant[ql == 3].sum(axis=1) == 1).all()
    ranks, counts = positive_ranks(q, ql, db, dl, chunk_size=2)
    np.testing.assert_array_equal(ranks, np.nonzero(relevant)[1] + 1)
    got = retrieval_metrics(
        q, ql, db, dl, {"precision_at": (1, 5), "top_k_error": (1, 5)}
    )
    rank1 = np.argmax(relevant, axis=1) + 1  # the first (for class 3: only) positive
    # For R = 1: AP = map@r's term = 1/r, r_precision = [r == 1].
    ap = np.array(
        [np.mean(np.arange(1, r.sum() + 1) / (np.nonzero(r)[0] + 1)) for r in relevant]
    )
    assert np.allclose(ap[ql == 3], 1 / rank1[ql == 3])
    assert got["map"] == pytest.approx(ap.mean(), abs=1e-12)
    assert got["top5_error"] == pytest.approx(np.mean(rank1 > 5), abs=1e-12)
    assert all(np.isfinite(v) for v in got.values())


def brute_force_ranks(q, ql, db, dl):
    _, _, relevant = reference(q, ql, db, dl)
    return np.nonzero(relevant)[1] + 1, relevant.sum(axis=1)


@pytest.fixture
def torch_threads():
    """Restores torch's thread count after the test."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture
def small_blocks(monkeypatch):
    """Few rows per block and few bins, so that the blocks, the per-bin
    look-up and the exact search among a bin's thresholds are all used."""
    monkeypatch.setitem(kernel.BLOCK_ENTRIES, "cpu", 50)
    monkeypatch.setattr(kernel, "MIN_BINS", 2)
    monkeypatch.setattr(kernel, "BINS_PER_THRESHOLD", 0.25)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("bins", ["default", "small"])
@pytest.mark.parametrize("kind", ["fine", "coarse", "duplicates"])
def test_chunked_ranks_equal_brute_force(kind, bins, threads, request, torch_threads):
    if bins == "small":
        request.getfixturevalue("small_blocks")
    # (With 2 threads the blocks are counted in parallel Python threads.)
    torch.set_num_threads(threads)
    q, ql, db, dl = grid_data(
        15, 5, query_counts=[9, 8, 7, 6, 3], coarse=kind == "coarse"
    )
    if kind == "duplicates":  # many database items at exactly one point
        db = db.copy()
        db[::3] = db[0]
        q = q.copy()
        q[::4] = db[0]
    expected = brute_force_ranks(q, ql, db, dl)
    for chunk_size in (1, 3, 7, len(q), len(q) + 5):
        ranks, counts = positive_ranks(q, ql, db, dl, chunk_size=chunk_size)
        np.testing.assert_array_equal(ranks, expected[0])
        np.testing.assert_array_equal(counts, expected[1])
    d, _, _ = reference(q, ql, db, dl)
    if kind != "fine":
        assert pos_neg_ties(d, ql, dl) > 0  # ties between positives and negatives


def test_count_at_or_before_against_loops(small_blocks):
    rng = np.random.default_rng(16)
    b, k_items, t = 6, 40, 9
    dist = torch.from_numpy(rng.integers(0, 6, (b, k_items)).astype(np.float32))
    dist[1, ::2] = float("inf")  # padding items
    item_index = torch.from_numpy(rng.permutation(100)[:k_items])
    thr = torch.from_numpy(rng.integers(0, 6, (b, t)).astype(np.float32))
    thr_index = torch.from_numpy(rng.integers(0, 100, (b, t)))
    n_thr = torch.tensor([9, 0, 1, 5, 9, 3])
    valid = torch.arange(t) < n_thr[:, None]
    thr, thr_index, _ = sort_thresholds(thr, thr_index, valid)
    got = count_at_or_before(dist, thr, thr_index, n_thr, item_index=item_index)
    for r in range(b):
        for k in range(t):
            expected = 0
            if k < n_thr[r]:
                expected = sum(
                    (float(dist[r, j]), int(item_index[j]))
                    <= (float(thr[r, k]), int(thr_index[r, k]))
                    for j in range(k_items)
                )
            assert got[r, k] == expected, (r, k)


def test_unretrieved_positives_rank_at_infinity():
    # Two queries with R = 3 over a database of 10; the first retrieves
    # positives at ranks 2 and 5 of a 6-item list (its third positive is not
    # retrieved), the second retrieves none.
    acc = MetricAccumulator(10, {"precision_at": (1, 5), "top_k_error": (1, 5)})
    acc.add(np.array([2, 5]), np.array([2, 0]), np.array([3, 3]))
    metrics, curve = acc.finish(np.array([0, 1]))
    assert metrics["precision@5"] == pytest.approx((2 / 5 + 0) / 2)
    assert metrics["top1_error"] == 1.0 and metrics["top5_error"] == 0.5
    assert metrics["map"] == pytest.approx(((1 / 2 + 2 / 5) / 3 + 0) / 2)
    assert metrics["map@r"] == pytest.approx(
        (1 / 2 / 3 + 0) / 2
    )  # R = 3: only rank 2 counts
    assert metrics["r_precision"] == pytest.approx((1 / 3 + 0) / 2)
    assert curve["recall"].iloc[-1] == pytest.approx((2 / 3 + 0) / 2)  # never reaches 1
    assert np.isfinite(metrics["pr_auc"]) and 0 < metrics["pr_auc"] < 1


def test_cutoff_larger_than_database_raises():
    q, ql, db, dl = grid_data(13, 2, query_counts=3, n_db=20)
    with pytest.raises(
        ValueError,
        match="evaluation.precision_at: cutoff 21 exceeds the database of this cell",
    ):
        retrieval_metrics(q, ql, db, dl, {"precision_at": (21,)})


# ---------------------------------------------------------------------------
# The metric registry (workflow/retrieval/metrics.py)
# ---------------------------------------------------------------------------


def test_every_registered_metric_has_a_direction_kind_and_definition():
    from workflow.retrieval.metrics import DIRECTIONS, KINDS, METRICS

    assert len(list(METRICS)) >= 10
    for metric in METRICS:
        assert metric.direction in DIRECTIONS and metric.kind in KINDS, metric.name
        assert metric.definition.strip() and "\n" not in metric.definition, metric.name
        assert (metric.compute is None) == (metric.source == "written"), metric.name
        assert metric.compute is not None or metric.written_by, metric.name


def test_the_registry_gives_the_direction_label_and_order_of_concrete_names():
    from workflow.retrieval.metrics import METRICS

    assert not METRICS.lower_is_better("precision@7") and METRICS.lower_is_better(
        "top3_error"
    )
    assert METRICS.lower_is_better(
        "distance_computations_per_query"
    ) and not METRICS.lower_is_better("map@r")
    assert (
        METRICS.label("top5_error") == "top-5 error"
        and METRICS.label("precision@10") == "precision@10"
    )
    assert METRICS.order(
        ["map", "top5_error", "precision@10", "top1_error", "precision@5", "accuracy"]
    ) == ["precision@5", "precision@10", "top1_error", "top5_error", "map", "accuracy"]
    with pytest.raises(KeyError, match="unknown metric 'mAP'.*registered"):
        METRICS.lower_is_better("mAP")
    with pytest.raises(KeyError, match="unknown metric 'precision@0'"):
        METRICS.get("precision@0")


def test_evaluate_retrieval_writes_exactly_the_registered_metrics_in_order():
    from workflow.retrieval.metrics import METRICS

    q, ql, db, dl = grid_data(21, 4, query_counts=3, n_db=40)
    metrics = retrieval_metrics(
        q, ql, db, dl, {"precision_at": (5, 1), "top_k_error": (2,)}
    )
    expected = [
        name
        for name in METRICS.names({"precision_at": [5, 1], "top_k_error": [2]})
        if METRICS.get(name)[0].source != "written"
    ]
    assert list(metrics) == expected


def test_a_metric_is_one_registered_function(monkeypatch):
    """Registering a function of the positive ranks is all it takes for
    exact and two-stage retrieval to compute it."""
    from workflow.retrieval import metrics as registry
    from workflow.retrieval.two_stage import evaluate_retrieval_methods

    monkeypatch.setattr(registry.METRICS, "_metrics", dict(registry.METRICS._metrics))
    registry.register_metric(
        "mean_first_rank",
        direction="lower",
        kind="per query",
        definition="rank of the first positive",
    )(lambda q: q.first_rank.double())
    q, ql, db, dl = grid_data(22, 4, query_counts=3, n_db=40)
    _, _, relevant = reference(q, ql, db, dl)
    first = np.argmax(relevant, axis=1) + 1
    assert retrieval_metrics(q, ql, db, dl)["mean_first_rank"] == pytest.approx(
        first.mean()
    )
    centres = np.stack([db[dl == c].mean(0) for c in range(4)])
    results = evaluate_retrieval_methods(q, ql, db, dl, anchors=centres, classes=[4])
    assert results["two_stage_c4"].metrics["mean_first_rank"] == pytest.approx(
        first.mean()
    )


def test_readme_metric_table_is_the_registry():
    from workflow.retrieval.metrics import METRICS

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    start = "<!-- metric table: generated by python -m workflow.retrieval.metrics -->\n"
    assert start in readme, "README lost the marker of its generated metric table"
    table = readme.split(start, 1)[1].split("<!-- end of metric table -->", 1)[0]
    assert table == METRICS.markdown(), (
        "run python -m workflow.retrieval.metrics and paste its output into README"
    )


def test_retrieval_modules_import_no_private_names_and_the_registry_no_torch():
    """The retrieval package's modules use each other's public names only;
    the registry (read by the report environment) imports no torch; the
    distance expansion ||b||^2 - 2 a.b is written once (kernel.distances)."""
    import ast

    root = Path(__file__).resolve().parents[1] / "workflow"
    for path in sorted((root / "retrieval").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                "workflow"
            ):
                private = [a.name for a in node.names if a.name.startswith("_")]
                assert not private, f"{path.name} imports {private} from {node.module}"
    for path in [root / "retrieval" / "__init__.py", root / "retrieval" / "metrics.py"]:
        imported = {
            alias.name.split(".")[0]
            for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, (ast.Import, ast.ImportFrom))
            for alias in (
                node.names
                if isinstance(node, ast.Import)
                else [ast.alias(node.module or "")]
            )
        }
        # (scikit-learn, in both environments, for the clustering metrics.)
        allowed = {"__future__", "re", "collections", "dataclasses", "typing"}
        allowed |= {"numpy", "sklearn"}
        assert "torch" not in imported and not (imported - allowed), path
    expansions = [
        p.name
        for p in root.rglob("*.py")
        for _ in range(p.read_text().count("alpha=-2.0"))
    ]
    assert expansions == ["kernel.py"], expansions

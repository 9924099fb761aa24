"""Tests of workflow.retrieval.two_stage (two-stage retrieval with class anchors)
against a brute-force reference: float64 distances on integer-grid data (so
float32 is exact), the candidate list and the rest each ordered by a stable
argsort, the metrics computed from those explicit ranked lists."""

import numpy as np
import pandas as pd
import pytest
import torch

import workflow.retrieval.kernel as kernel
from workflow.evaluate import evaluate_cell
from workflow.figures import speedup_points
from workflow.retrieval.exact import evaluate_retrieval
from workflow.retrieval.inputs import prepare
from workflow.retrieval.metrics import speedup_k
from workflow.retrieval.two_stage import build_anchor_index, evaluate_retrieval_methods

QUALITY = (
    "precision@1",
    "precision@5",
    "top1_error",
    "top5_error",
    "map",
    "map@r",
    "r_precision",
    "pr_auc",
)


def grid_problem(seed, n_classes=4, n_db=90, n_queries=24, hi=3, dim=3):
    """Integer-grid data with many ties; anchors on the grid too."""
    rng = np.random.default_rng(seed)
    db = rng.integers(0, hi + 1, (n_db, dim)).astype(np.float32)
    q = rng.integers(0, hi + 1, (n_queries, dim)).astype(np.float32)
    anchors = rng.integers(0, hi + 1, (n_classes, dim)).astype(np.float32)
    dl = np.concatenate(
        [np.arange(n_classes), rng.integers(0, n_classes, n_db - n_classes)]
    )
    ql = rng.integers(0, n_classes, n_queries)
    return q, ql, db, dl, anchors


def separated_clusters(seed, n_classes=5, per_class=30, n_queries=40, dim=8):
    """Well-separated clusters on an integer grid; anchors at the centres."""
    rng = np.random.default_rng(seed)
    centres = rng.integers(-1000, 1000, (n_classes, dim)).astype(np.float32)

    def points(labels):
        return (centres[labels] + rng.integers(-20, 21, (len(labels), dim))).astype(
            np.float32
        )

    dl = rng.permutation(np.repeat(np.arange(n_classes), per_class))
    ql = rng.integers(0, n_classes, n_queries)
    return points(ql), ql, points(dl), dl, centres


def reference_lists(q, ql, db, dl, anchors, c, rest):
    """Per query: the ranked list of database indices of two-stage retrieval,
    by brute force; and the number of distances it computed."""
    sq = lambda a, b: (
        (a[:, None, :].astype(np.float64) - b[None].astype(np.float64)) ** 2
    ).sum(-1)
    assignment = np.argmin(sq(db, anchors), axis=1)  # first minimum: lower anchor index
    kept = np.argsort(sq(q, anchors), axis=1, kind="stable")[:, :c]
    d = sq(q, db)
    lists, computed = [], []
    for i in range(len(q)):
        cand = np.isin(assignment, kept[i])
        index = np.arange(len(db))
        ranked = index[cand][np.argsort(d[i, cand], kind="stable")]
        if rest == "follow":
            ranked = np.concatenate(
                [ranked, index[~cand][np.argsort(d[i, ~cand], kind="stable")]]
            )
        lists.append(ranked)
        computed.append(len(anchors) + cand.sum())
    return lists, np.array(computed, dtype=float)


def metrics_of_lists(lists, ql, dl, n_db, ks=(1, 5)):
    """The documented metrics from explicit ranked lists (unlisted positives
    rank at infinity), plain loops."""
    per = {f"precision@{k}": [] for k in ks} | {f"top{k}_error": [] for k in ks}
    per |= {"map": [], "map@r": [], "r_precision": []}
    hits_at = np.zeros(n_db)
    recall_at = np.zeros(n_db)
    labels = []
    for ranked, label in zip(lists, ql):
        big_r = int((dl == label).sum())
        if big_r == 0:
            continue
        labels.append(label)
        rel = np.zeros(n_db, dtype=bool)
        rel[: len(ranked)] = dl[ranked] == label
        ranks = np.nonzero(rel)[0] + 1
        for k in ks:
            per[f"precision@{k}"].append(rel[:k].sum() / k)
            per[f"top{k}_error"].append(float(not rel[:k].any()))
        prec = np.arange(1, len(ranks) + 1) / ranks
        per["map"].append(prec.sum() / big_r)
        per["map@r"].append(prec[ranks <= big_r].sum() / big_r)
        per["r_precision"].append(rel[:big_r].sum() / big_r)
        hits_at += np.cumsum(rel)
        recall_at += np.cumsum(rel) / big_r
    labels = np.array(labels)
    out = {}
    for name, values in per.items():
        values = np.array(values)
        if name.startswith("precision@"):  # class-macro
            out[name] = np.mean([values[labels == c].mean() for c in np.unique(labels)])
        else:
            out[name] = values.mean()
    precision = hits_at / np.arange(1, n_db + 1) / len(labels)
    recall = recall_at / len(labels)
    x, y = np.r_[0.0, recall], np.r_[precision[0], precision]
    out["pr_auc"] = np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2)
    return out


def run(q, ql, db, dl, anchors, classes, rest, **kwargs):
    return evaluate_retrieval_methods(
        q,
        ql,
        db,
        dl,
        anchors=anchors,
        classes=classes,
        rest=rest,
        evaluation={"precision_at": (1, 5), "top_k_error": (1, 5)},
        **kwargs,
    )


@pytest.mark.parametrize("rest", ["follow", "cut"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_and_costs_match_brute_force(seed, rest):
    q, ql, db, dl, anchors = grid_problem(seed)
    results = run(q, ql, db, dl, anchors, [1, 2, 3], rest, chunk_size=5)
    for c in (1, 2, 3):
        lists, computed = reference_lists(q, ql, db, dl, anchors, c, rest)
        expected = metrics_of_lists(lists, ql, dl, len(db))
        got = results[f"two_stage_c{c}"].metrics
        for name in QUALITY:
            assert got[name] == pytest.approx(expected[name], abs=1e-12), (c, name)
        assert got["distance_computations_per_query"] == pytest.approx(computed.mean())
        assert (
            "seconds_per_query" not in got
            and results[f"two_stage_c{c}"].seconds_per_query > 0
        )
    assert results["exact"].metrics["distance_computations_per_query"] == len(db)


def test_small_blocks_and_bins_change_nothing(monkeypatch):
    q, ql, db, dl, anchors = grid_problem(3, hi=2)
    before = run(q, ql, db, dl, anchors, [1, 2], "follow")
    monkeypatch.setitem(kernel.BLOCK_ENTRIES, "cpu", 30)
    monkeypatch.setattr(kernel, "MIN_BINS", 2)
    monkeypatch.setattr(kernel, "BINS_PER_THRESHOLD", 0.25)
    after = run(q, ql, db, dl, anchors, [1, 2], "follow", chunk_size=3)
    for method in before:
        for name in QUALITY:
            assert after[method].metrics[name] == pytest.approx(
                before[method].metrics[name], rel=1e-12
            )


@pytest.mark.parametrize("rest", ["follow", "cut"])
def test_all_classes_give_exactly_the_exact_ranking(rest):
    q, ql, db, dl, anchors = grid_problem(4, hi=2)  # coarse: ties everywhere
    n_classes = len(anchors)
    results = run(q, ql, db, dl, anchors, [n_classes, n_classes + 3], rest)
    exact, exact_curve = evaluate_retrieval(
        q, ql, db, dl, {"precision_at": (1, 5), "top_k_error": (1, 5)}
    )
    for c in (n_classes, n_classes + 3):
        result = results[f"two_stage_c{c}"]
        for name in QUALITY:
            assert result.metrics[name] == exact[name], name
        pd.testing.assert_frame_equal(result.curve, exact_curve)
        assert result.metrics["distance_computations_per_query"] == n_classes + len(db)
    for name in QUALITY:
        assert results["exact"].metrics[name] == exact[name]


@pytest.mark.parametrize("rest", ["follow", "cut"])
def test_one_class_on_separated_clusters_equals_exact(rest):
    q, ql, db, dl, centres = separated_clusters(5)
    results = run(q, ql, db, dl, centres, [1], rest)
    exact, two = results["exact"].metrics, results["two_stage_c1"].metrics
    for name in QUALITY:
        if name == "pr_auc":
            # Per-cutoff float sums accumulated over other chunks of
            # queries: equal up to summation order.
            assert two[name] == pytest.approx(exact[name], rel=1e-12)
        else:
            assert two[name] == exact[name], name
    assert exact["map"] == 1.0  # the clusters really are separated
    # C anchors plus the query's own class: 5 + 30 distances instead of 150.
    assert two["distance_computations_per_query"] == 5 + 30
    assert exact["distance_computations_per_query"] == 150


def test_cut_differs_from_follow_when_positives_lie_outside_the_kept_classes():
    q, ql, db, dl, anchors = grid_problem(6)
    follow = run(q, ql, db, dl, anchors, [1], "follow")["two_stage_c1"].metrics
    cut = run(q, ql, db, dl, anchors, [1], "cut")["two_stage_c1"].metrics
    assert cut["map"] < follow["map"]
    assert (
        cut["precision@1"] == follow["precision@1"]
    )  # the top of the list is the same
    assert (
        cut["distance_computations_per_query"]
        == follow["distance_computations_per_query"]
    )


def test_assignment_and_stage_one_break_ties_by_anchor_index():
    anchors = np.array([[1.0, 0.0], [-1.0, 0.0], [3.0, 0.0]], dtype=np.float32)
    db = np.array([[0.0, 0.0], [0.0, 5.0], [2.0, 0.0], [-2.0, 0.0]], dtype=np.float32)
    index = build_anchor_index(prepare(db[:1], [0], db, [0, 1, 2, 1], "cpu"), anchors)
    # [0, 0] and [0, 5] are as near to anchor 0 as to anchor 1: anchor 0;
    # [2, 0] is as near to anchor 0 as to anchor 2: anchor 0.
    np.testing.assert_array_equal(index.assignment.numpy(), [0, 0, 0, 1])
    assert list(index.group_size) == [3, 1, 0]


def test_queries_without_positives_and_empty_groups():
    q, ql, db, dl, anchors = grid_problem(7)
    ql = ql.copy()
    ql[:3] = 42  # absent from the database: left out of every metric
    far = np.full((1, anchors.shape[1]), 1000, dtype=np.float32)
    anchors = np.vstack([anchors, far])  # an anchor no database item is assigned to
    for rest in ("follow", "cut"):
        results = run(q, ql, db, dl, anchors, [1, 5], rest)
        for method, result in results.items():
            assert all(np.isfinite(v) for v in result.metrics.values()), method
        lists, _ = reference_lists(q, ql, db, dl, anchors, 1, rest)
        expected = metrics_of_lists(lists, ql, dl, len(db))
        for name in QUALITY:
            assert results["two_stage_c1"].metrics[name] == pytest.approx(
                expected[name], abs=1e-12
            )


def test_bad_arguments_are_named():
    q, ql, db, dl, anchors = grid_problem(8)
    with pytest.raises(ValueError, match="rest must be one of follow, cut"):
        run(q, ql, db, dl, anchors, [1], "drop")
    with pytest.raises(ValueError, match="needs anchors"):
        run(q, ql, db, dl, None, [1], "cut")
    with pytest.raises(ValueError, match="anchors have dimension 2"):
        run(q, ql, db, dl, anchors[:, :2], [1], "cut")


def test_evaluate_cell_rows():
    q, ql, db, dl, anchors = grid_problem(9)
    frame = pd.DataFrame(
        {
            "split": ["query"] * len(q) + ["database"] * len(db),
            "label": np.concatenate([ql, dl]),
            "prediction": -1,
            "embedding": list(np.vstack([q, db])),
        }
    )
    anchor_frame = pd.DataFrame(
        {"label": np.arange(len(anchors)), "anchor": list(anchors)}
    )
    metrics, curve = evaluate_cell(
        frame,
        anchor_frame,
        {
            "precision_at": (1, 5),
            "top_k_error": (1,),
            "two_stage": {"classes": [1, 2], "rest": "cut"},
        },
    )
    assert list(metrics.columns) == [
        "geometry",
        "distance",
        "retrieval",
        "metric",
        "value",
    ]
    assert set(metrics["distance"]) == {"euclidean"}  # the default geometry
    assert list(dict.fromkeys(metrics["retrieval"])) == [
        "exact",
        "two_stage_c1",
        "two_stage_c2",
    ]
    exact = metrics[metrics["retrieval"] == "exact"].set_index("metric")["value"]
    assert exact["distance_computations_per_query"] == len(db)
    assert exact["queries_without_positives"] == 0
    assert "accuracy" not in set(metrics.loc[metrics["retrieval"] != "exact", "metric"])
    assert not metrics["value"].isna().any()
    assert len(curve) == len(db)
    # Without anchors (e.g. ce): exact only.
    no_anchors = anchor_frame.iloc[:0]
    metrics, _ = evaluate_cell(
        frame,
        no_anchors,
        {
            "precision_at": (1,),
            "top_k_error": (1,),
            "two_stage": {"classes": [1, 2], "rest": "cut"},
        },
    )
    assert set(metrics["retrieval"]) == {"exact"}


def test_speedup_k_and_points():
    assert speedup_k({"precision_at": [1, 5, 10]}) == speedup_k({}) == 10
    assert speedup_k({"precision_at": [1, 5]}) == 1
    assert speedup_k({"precision_at": [1, 5], "speedup_precision_at": 5}) == 5
    with pytest.raises(
        ValueError, match="evaluation.speedup_precision_at: 3 is not among"
    ):
        speedup_k({"precision_at": [1, 5], "speedup_precision_at": 3})
    rows = []
    for seed, (p_exact, p_two) in enumerate([(0.8, 0.7), (0.6, 0.5)]):
        rows += [
            ("cam", seed, "exact", "precision@10", p_exact),
            ("cam", seed, "exact", "distance_computations_per_query", 1000.0),
            ("cam", seed, "two_stage_c1", "precision@10", p_two),
            (
                "cam",
                seed,
                "two_stage_c1",
                "distance_computations_per_query",
                100.0 * (seed + 1),
            ),
        ]
    metrics = pd.DataFrame(
        rows, columns=["loss", "seed", "retrieval", "metric", "value"]
    )
    metrics["backbone"] = "cnn"
    metrics["geometry"] = metrics["distance"] = "euclidean"
    points = speedup_points(metrics, 10).set_index("retrieval")
    assert points.loc["exact", "speedup"] == 1.0
    assert points.loc["two_stage_c1", "speedup"] == pytest.approx((10 + 5) / 2)
    assert points.loc["two_stage_c1", "precision"] == pytest.approx(0.6)


def test_torch_inputs_and_repeated_classes():
    q, ql, db, dl, anchors = grid_problem(10)
    a = run(q, ql, db, dl, anchors, [2, 1, 2], "follow")
    b = run(*(torch.from_numpy(x) for x in (q, ql, db, dl, anchors)), [1, 2], "follow")
    assert list(a) == ["exact", "two_stage_c2", "two_stage_c1"]
    for method in b:
        for name in QUALITY:
            assert a[method].metrics[name] == b[method].metrics[name]


@pytest.mark.parametrize("ranker", ["sort", "count"])
@pytest.mark.parametrize("rest", ["follow", "cut"])
def test_both_stage_two_rankers_match_brute_force(monkeypatch, ranker, rest):
    # Stage 2 ranks the candidates by sorting them (few candidates per
    # positive) or by counting (many): force each.
    import workflow.retrieval.two_stage as two_stage

    monkeypatch.setattr(
        two_stage, "_SORT_WIDTH_PER_POSITIVE", 10**9 if ranker == "sort" else 0
    )
    q, ql, db, dl, anchors = grid_problem(11, hi=2)  # coarse: ties everywhere
    results = run(q, ql, db, dl, anchors, [1, 2], rest)
    for c in (1, 2):
        lists, _ = reference_lists(q, ql, db, dl, anchors, c, rest)
        expected = metrics_of_lists(lists, ql, dl, len(db))
        for name in QUALITY:
            assert results[f"two_stage_c{c}"].metrics[name] == pytest.approx(
                expected[name], abs=1e-12
            )


@pytest.mark.parametrize("threads", [1, 2])
def test_parallel_parts_change_nothing(threads):
    # On the CPU, rows are split over Python threads (workflow.retrieval.kernel.in_parallel).
    q, ql, db, dl, anchors = grid_problem(12, n_db=400, n_queries=60)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        results = run(q, ql, db, dl, anchors, [1, 2], "follow", chunk_size=16)
        assert torch.get_num_threads() == threads  # restored after the parallel parts
    finally:
        torch.set_num_threads(before)
    for c in (1, 2):
        lists, _ = reference_lists(q, ql, db, dl, anchors, c, "follow")
        expected = metrics_of_lists(lists, ql, dl, len(db))
        for name in QUALITY:
            assert results[f"two_stage_c{c}"].metrics[name] == pytest.approx(
                expected[name], abs=1e-12
            )

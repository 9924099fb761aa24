"""Each loss retrieved in its own geometry (docs "Metrics"): cosine
retrieval against independent implementations on random float data, the
distance resolution and the registry's geometries."""

import numpy as np
import pandas as pd
import pytest
import torch
from pytorch_metric_learning.distances import CosineSimilarity
from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
from pytorch_metric_learning.utils.inference import CustomKNN
from sklearn.metrics import average_precision_score
from sklearn.metrics.pairwise import cosine_similarity

from workflow.evaluate import evaluate_cell
from workflow.geometry import own_distance_rows, resolve_distances
from workflow.losses import LOSSES, loss_geometry
from workflow.retrieval.two_stage import evaluate_retrieval_methods


def float_problem(seed=0, n_q=40, n_db=300, dim=8, classes=5):
    """Random float embeddings whose norms vary a lot, so that the cosine
    and the L2 rankings differ (no ties: float data)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dim))
    ql, dl = rng.integers(0, classes, n_q), rng.integers(0, classes, n_db)
    q = (centres[ql] + rng.normal(size=(n_q, dim))) * rng.uniform(0.2, 5.0, (n_q, 1))
    db = (centres[dl] + rng.normal(size=(n_db, dim))) * rng.uniform(0.2, 5.0, (n_db, 1))
    anchors = centres * rng.uniform(0.5, 3.0, (classes, 1))
    return (
        q.astype(np.float32),
        ql,
        db.astype(np.float32),
        dl,
        anchors.astype(np.float32),
    )


def frames(q, ql, db, dl, anchors):
    embeddings = pd.DataFrame(
        {
            "split": ["query"] * len(q) + ["database"] * len(db),
            "label": np.concatenate([ql, dl]),
            "prediction": -1,
            "embedding": list(np.vstack([q, db])),
        }
    )
    return embeddings, pd.DataFrame(
        {"label": np.arange(len(anchors)), "anchor": list(anchors)}
    )


def exact(metrics, distance):
    rows = metrics[
        (metrics["distance"] == distance) & (metrics["retrieval"] == "exact")
    ]
    return rows.set_index("metric")["value"]


def test_cosine_retrieval_equals_scikit_learn_and_pytorch_metric_learning():
    q, ql, db, dl, anchors = float_problem()
    embeddings, anchor_frame = frames(q, ql, db, dl, anchors)
    metrics, _ = evaluate_cell(
        embeddings,
        anchor_frame,
        {
            "precision_at": (1, 5, 10),
            "top_k_error": (1,),
            "two_stage": {"classes": []},
            "distances": ["own", "euclidean"],
        },
        geometry="cosine",
    )
    cosine = exact(metrics, "cosine")
    similarity = cosine_similarity(q.astype(np.float64), db.astype(np.float64))
    # scikit-learn: average precision of each query's cosine scores.
    expected_map = np.mean(
        [average_precision_score(dl == ql[i], similarity[i]) for i in range(len(q))]
    )
    assert cosine["map"] == pytest.approx(expected_map, abs=1e-6)
    order = np.argsort(-similarity, axis=1, kind="stable")
    hits = dl[order] == ql[:, None]
    # precision@10 is averaged within each class, then over classes (LM paper).
    per_query = hits[:, :10].mean(1)
    expected_p10 = np.mean([per_query[ql == c].mean() for c in np.unique(ql)])
    assert cosine["precision@10"] == pytest.approx(expected_p10, abs=1e-9)
    assert cosine["top1_error"] == pytest.approx(1 - hits[:, 0].mean(), abs=1e-9)
    # pytorch-metric-learning with CosineSimilarity: MAP@R and R-precision.
    calc = AccuracyCalculator(
        include=("mean_average_precision_at_r", "r_precision"),
        device=torch.device("cpu"),
        knn_func=CustomKNN(CosineSimilarity()),
        avg_of_avgs=False,
        k="max_bin_count",
    )
    pml = calc.get_accuracy(
        torch.from_numpy(q),
        torch.from_numpy(ql),
        torch.from_numpy(db),
        torch.from_numpy(dl),
        ref_includes_query=False,
    )
    assert cosine["map@r"] == pytest.approx(
        pml["mean_average_precision_at_r"], abs=1e-6
    )
    assert cosine["r_precision"] == pytest.approx(pml["r_precision"], abs=1e-6)
    # The data make the two geometries disagree, so the test can tell them apart.
    euclidean = exact(metrics, "euclidean")
    assert abs(euclidean["map"] - cosine["map"]) > 1e-3


def test_euclidean_geometry_is_the_plain_l2_ranking():
    q, ql, db, dl, anchors = float_problem(1)
    embeddings, anchor_frame = frames(q, ql, db, dl, anchors)
    metrics, _ = evaluate_cell(
        embeddings,
        anchor_frame,
        {"precision_at": (1,), "top_k_error": (1,), "two_stage": {"classes": []}},
        geometry="euclidean",
    )
    assert set(metrics["distance"]) == {"euclidean"} and set(metrics["geometry"]) == {
        "euclidean"
    }
    d2 = ((q[:, None, :].astype(np.float64) - db[None, :, :]) ** 2).sum(-1)
    expected_map = np.mean(
        [average_precision_score(dl == ql[i], -d2[i]) for i in range(len(q))]
    )
    assert exact(metrics, "euclidean")["map"] == pytest.approx(expected_map, abs=1e-6)


def test_two_stage_in_cosine_uses_normalised_anchors():
    q, ql, db, dl, anchors = float_problem(2)
    embeddings, anchor_frame = frames(q, ql, db, dl, anchors)
    metrics, _ = evaluate_cell(
        embeddings,
        anchor_frame,
        {
            "precision_at": (1, 5),
            "top_k_error": (1,),
            "two_stage": {"classes": [1, 2], "rest": "cut"},
        },
        geometry="cosine",
    )

    def unit(x):
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    reference = evaluate_retrieval_methods(
        unit(q),
        ql,
        unit(db),
        dl,
        anchors=unit(anchors),
        classes=[1, 2],
        rest="cut",
        evaluation={"precision_at": (1, 5), "top_k_error": (1,)},
    )
    for method in ["two_stage_c1", "two_stage_c2"]:
        ours = metrics[metrics["retrieval"] == method].set_index("metric")["value"]
        for name in ["map", "precision@5", "distance_computations_per_query"]:
            assert ours[name] == pytest.approx(
                reference[method].metrics[name], abs=1e-6
            ), (method, name)
    # Unnormalised anchors of different norms pick other classes in stage 1.
    raw = evaluate_retrieval_methods(
        unit(q),
        ql,
        unit(db),
        dl,
        anchors=anchors,
        classes=[1],
        rest="cut",
        evaluation={"precision_at": (1, 5), "top_k_error": (1,)},
    )
    assert raw["two_stage_c1"].metrics["map"] != pytest.approx(
        reference["two_stage_c1"].metrics["map"]
    )


def test_nearest_anchor_accuracy_follows_the_geometry():
    # One query at angle ~0 from anchor 1 but nearer anchor 0 in L2.
    embeddings = pd.DataFrame(
        {
            "split": ["query", "database", "database"],
            "label": [1, 0, 1],
            "prediction": -1,
            "embedding": [
                np.array([1.0, 0.05], np.float32),
                np.array([0.5, 0.5], np.float32),
                np.array([3.0, 0.0], np.float32),
            ],
        }
    )
    anchors = pd.DataFrame(
        {
            "label": [0, 1],
            "anchor": [
                np.array([0.8, 0.4], np.float32),
                np.array([5.0, 0.0], np.float32),
            ],
        }
    )
    for geometry, accuracy in [("cosine", 1.0), ("euclidean", 0.0)]:
        metrics, _ = evaluate_cell(
            embeddings,
            anchors,
            {"precision_at": (1,), "top_k_error": (1,), "two_stage": {"classes": []}},
            geometry=geometry,
        )
        assert exact(metrics, geometry)["accuracy"] == accuracy, geometry


def test_distances_resolve_own_first_each_once():
    assert resolve_distances(["own"], "cosine") == ["cosine"]
    assert resolve_distances(["own", "euclidean", "cosine"], "cosine") == [
        "cosine",
        "euclidean",
    ]
    assert resolve_distances(["euclidean"], "euclidean") == ["euclidean"]
    assert resolve_distances([], "euclidean") == ["euclidean"]
    with pytest.raises(
        ValueError, match="evaluation.distances: unknown distance 'manhattan'"
    ):
        resolve_distances(["manhattan"], "cosine")
    frame = pd.DataFrame(
        {
            "geometry": ["cosine"] * 2,
            "distance": ["cosine", "euclidean"],
            "value": [1, 2],
        }
    )
    assert own_distance_rows(frame)["value"].tolist() == [1]


def test_every_loss_declares_its_geometry():
    geometries = {name: loss_geometry(name) for name in LOSSES.names()}
    assert set(geometries.values()) <= {"euclidean", "cosine"}
    # Trained on L2-normalised embeddings or cosines:
    for name in ["triplet", "arcface", "proxy_anchor", "supcon", "lm"]:
        assert geometries[name] == "cosine", name
    for name in ["ce", "cam", "center", "island", "contrastive"]:
        assert geometries[name] == "euclidean", name
    with pytest.raises(ValueError, match="geometry="):
        LOSSES.register("no_geometry")


def test_evaluation_stays_on_the_cpu_when_a_gpu_is_present(monkeypatch):
    # The evaluate rule declares no GPU, so evaluation must not take one.
    # (No GPU here: is_available is patched to say there is one; moving a
    # tensor to CUDA would then fail.)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    q, ql, db, dl, anchors = float_problem(3)
    embeddings, anchor_frame = frames(q, ql, db, dl, anchors)
    metrics, _ = evaluate_cell(
        embeddings,
        anchor_frame,
        {"precision_at": (1,), "top_k_error": (1,), "two_stage": {"classes": [1]}},
        geometry="euclidean",
    )
    assert metrics["value"].notna().all()

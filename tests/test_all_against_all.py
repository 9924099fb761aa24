"""All-against-all evaluation (issue 21): every test image a query against
all the others, itself excluded; Recall@k; NMI and AMI of a seeded k-means.

Checked against a brute-force float64 reference and against
pytorch-metric-learning's ``AccuracyCalculator`` (``get_accuracy`` without
a reference: query = reference, self excluded), on random float data. Two
kinds of data: continuous Gaussian clusters, checked to have no pair of a
positive and a negative whose distances lie within float32 rounding of each
other (then any correct L2 ranking agrees, whatever its formula); and the
same with duplicated rows of other classes, so that exact ties abound
(there PML is run with a stable-sort k-NN that takes out the query's own
column, our convention: ties by database index, the query itself never
counted).
"""

import numpy as np
import pandas as pd
import pytest
import torch
from pytorch_metric_learning.distances import LpDistance
from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
from pytorch_metric_learning.utils.inference import CustomKNN

from workflow.evaluate import evaluate_cell
from workflow.retrieval.exact import evaluate_retrieval
from workflow.retrieval.inputs import queries_without_positives
from workflow.retrieval.metric_registry import kmeans_clusters
from workflow.retrieval.metrics import METRICS
from workflow.splits import ALL_AGAINST_ALL

RECALL_AT = (1, 2, 4, 8)
EVALUATION = {
    "precision_at": [1, 5],
    "top_k_error": [1, 5],
    "recall_at": list(RECALL_AT),
    "clustering": True,
}


def float_data(seed, n=150, dim=8, n_classes=12, duplicates=0):
    """Gaussian clusters of uneven sizes (one class of a single image: a
    query without positives); ``duplicates`` rows copied with another
    class's label (exact ties between a positive and a negative)."""
    rng = np.random.default_rng(seed)
    labels = np.concatenate([[0], rng.integers(1, n_classes, n - 1)])
    centres = rng.normal(0, 1.5, (n_classes, dim))
    emb = (centres[labels] + rng.normal(0, 1.0, (n, dim))).astype(np.float32)
    if duplicates:
        pick = rng.choice(n, duplicates, replace=False)
        emb = np.concatenate([emb, emb[pick]])
        labels = np.concatenate([labels, (labels[pick] % (n_classes - 1)) + 1])
        order = rng.permutation(len(labels))
        emb, labels = emb[order], labels[order]
    return emb, labels


def reference(emb, labels):
    """Brute force, float64: each row's ranking of the others, stable by
    index, itself left out; the relevance of every position."""
    x = emb.astype(np.float64)
    d = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    n = len(x)
    others = np.array([np.delete(np.arange(n), i) for i in range(n)])
    dist = np.take_along_axis(d, others, 1)
    order = np.take_along_axis(others, np.argsort(dist, axis=1, kind="stable"), 1)
    return d, labels[order] == labels[:, None]


def near_ties(d, labels, tol=1e-4):
    """Queries with a positive and a negative whose squared distances lie
    within ``tol`` of each other but differ (float32 rounding of distances
    of this size is below 1e-5; ``tol=0``: exact ties)."""
    count = 0
    for i, row in enumerate(d):
        mask = np.arange(len(row)) != i
        pos = np.sort(row[mask & (labels == labels[i])])
        neg = row[mask & (labels != labels[i])]
        if len(pos):
            at = np.searchsorted(pos, neg).clip(1, len(pos)) - 1
            gap = np.minimum(
                np.abs(neg - pos[at]),
                np.abs(neg - pos[(at + 1).clip(max=len(pos) - 1)]),
            )
            count += bool(((gap <= tol) & ((gap > 0) | (tol == 0))).any())
    return count


def expected_metrics(relevant, labels):
    keep = relevant.any(1)
    rel, ql = relevant[keep], labels[keep]
    r = rel.sum(1)
    hits = np.cumsum(rel, 1)
    positions = np.arange(1, rel.shape[1] + 1)
    precision_at = lambda k: hits[:, k - 1] / k  # noqa: E731
    within_r = positions[None, :] <= r[:, None]
    out = {
        f"precision@{k}": np.mean(
            [precision_at(k)[ql == c].mean() for c in np.unique(ql)]
        )
        for k in (1, 5)
    }
    out.update({f"top{k}_error": np.mean(hits[:, k - 1] == 0) for k in (1, 5)})
    out.update({f"recall@{k}": np.mean(hits[:, k - 1] > 0) for k in RECALL_AT})
    out["map"] = np.mean((rel * hits / positions).sum(1) / r)
    out["map@r"] = np.mean((rel * within_r * hits / positions).sum(1) / r)
    out["r_precision"] = np.mean((rel * within_r).sum(1) / r)
    return out


@pytest.mark.parametrize("chunk_size", [1, 7, 1024])
@pytest.mark.parametrize("duplicates", [0, 40])
def test_all_against_all_matches_brute_force_blockwise(chunk_size, duplicates):
    emb, labels = float_data(1, duplicates=duplicates)
    d, relevant = reference(emb, labels)
    assert near_ties(d, labels) == 0
    got, curve = evaluate_retrieval(
        emb, labels, evaluation=EVALUATION, chunk_size=chunk_size
    )
    for name, value in expected_metrics(relevant, labels).items():
        assert got[name] == pytest.approx(value, abs=1e-12), name
    assert (
        len(curve) == len(emb) - 1
    )  # cutoffs 1..N-1: the query itself is never ranked
    assert curve["recall"].iloc[-1] == pytest.approx(1.0)
    assert queries_without_positives(labels) == 1
    # The same as ranking each query against a database without itself.
    i = 5
    rest = np.arange(len(emb)) != i
    alone, _ = evaluate_retrieval(
        emb[i : i + 1],
        labels[i : i + 1],
        emb[rest],
        labels[rest],
        {"precision_at": [], "top_k_error": [1, 5]},
    )
    mine, _ = evaluate_retrieval(
        emb,
        labels,
        evaluation={"precision_at": [], "top_k_error": [1, 5]},
        chunk_size=chunk_size,
    )
    assert alone["map"] == pytest.approx(
        expected_metrics(relevant[i : i + 1], labels[i : i + 1])["map"]
    )
    assert mine["map"] == pytest.approx(got["map"])


class RecallCalculator(AccuracyCalculator):
    """PML's calculator with Recall@k (the DML literature's: any same-class
    item in the top k) computed from PML's own k-NN labels and lone-query
    mask, as PML's precision_at_1 is."""

    def _recall(self, k, knn_labels, query_labels, not_lone_query_mask, **kwargs):
        knn_labels, query_labels = (
            knn_labels[not_lone_query_mask],
            query_labels[not_lone_query_mask],
        )
        return (
            (knn_labels[:, :k] == query_labels[:, None]).any(1).double().mean().item()
        )

    def requires_knn(self):
        return super().requires_knn() + [f"recall_at_{k}" for k in RECALL_AT]


for _k in RECALL_AT:
    setattr(
        RecallCalculator,
        f"calculate_recall_at_{_k}",
        lambda self, *args, _k=_k, **kwargs: self._recall(_k, *args, **kwargs),
    )


class StableSelfKNN:
    """L2 k-NN by a stable sort (ties by index) that takes the query's own
    column out, whatever ties it has (PML's return_results takes out the
    column holding the query's index too, but among tied rows torch.topk
    may leave it outside the k it returns)."""

    def __call__(self, query, k, reference, ref_includes_query=False):
        mat = LpDistance(normalize_embeddings=False)(query, reference)
        if ref_includes_query:
            mat[torch.arange(len(query)), torch.arange(len(query))] = float("inf")
        dist, idx = torch.sort(mat, dim=1, stable=True)
        return dist[:, :k], idx[:, :k]


def pml(emb, labels, db=None, db_labels=None, knn_func=None, kmeans_func=None):
    include = ["precision_at_1", "r_precision", "mean_average_precision_at_r"]
    include += [f"recall_at_{k}" for k in RECALL_AT]
    if db is None:
        include += ["NMI", "AMI"]
    calc = RecallCalculator(
        include=tuple(include),
        k=None,
        device=torch.device("cpu"),
        knn_func=knn_func or CustomKNN(LpDistance(normalize_embeddings=False)),
        kmeans_func=kmeans_func
        or (lambda x, k: torch.from_numpy(kmeans_clusters(x.cpu().numpy(), k))),
    )
    return calc.get_accuracy(emb, labels, db, db_labels, ref_includes_query=False)


def compare(ours, theirs, nmi=True):
    pairs = {
        "recall@1": "precision_at_1",
        "r_precision": "r_precision",
        "map@r": "mean_average_precision_at_r",
    }
    pairs.update({f"recall@{k}": f"recall_at_{k}" for k in RECALL_AT})
    if nmi:
        pairs.update(nmi="NMI", ami="AMI")
    for mine, name in pairs.items():
        assert ours[mine] == pytest.approx(theirs[name], abs=1e-12), mine


@pytest.mark.parametrize("seed", [3, 5])
def test_all_against_all_matches_pml_accuracy_calculator(seed):
    emb, labels = float_data(seed)
    d, _ = reference(emb, labels)
    assert near_ties(d, labels) == 0
    ours = evaluate_retrieval(emb, labels, evaluation=EVALUATION)[0]
    compare(
        ours, pml(emb, labels)
    )  # PML's stock CustomKNN (torch.topk) and its self-removal
    assert ours["recall@1"] == pytest.approx(1 - ours["top1_error"], abs=1e-12)
    assert 0 < ours["recall@1"] < ours["recall@8"] < 1


def test_all_against_all_matches_pml_with_ties():
    emb, labels = float_data(4, duplicates=40)
    d, _ = reference(emb, labels)
    assert (
        near_ties(d, labels, tol=0) > 10
    )  # exact ties between positives and negatives
    ours = evaluate_retrieval(emb, labels, evaluation=EVALUATION)[0]
    compare(ours, pml(emb, labels, knn_func=StableSelfKNN()))


def test_recall_at_k_matches_pml_with_query_and_database():
    emb, labels = float_data(5, n=200)
    q, ql, db, dl = emb[:60], labels[:60], emb[60:], labels[60:]
    d = ((q[:, None].astype(np.float64) - db[None].astype(np.float64)) ** 2).sum(-1)
    ties = sum(
        bool(set(row[dl == c].round(6)) & set(row[dl != c].round(6)))
        for row, c in zip(d, ql)
    )
    assert ties == 0
    ours = evaluate_retrieval(q, ql, db, dl, EVALUATION)[0]
    compare(ours, pml(q, ql, db, dl), nmi=False)


def test_nmi_and_ami_cluster_every_test_embedding_once():
    """k-means (k = number of classes, seeded) of the query set all against
    all, of queries and database together otherwise; close to PML's own
    faiss k-means on well-separated classes."""
    from pytorch_metric_learning.utils.inference import FaissKMeans
    from sklearn.metrics import adjusted_mutual_info_score, normalized_mutual_info_score

    emb, labels = float_data(6, n=240, dim=16, n_classes=6)
    emb = emb + 4 * np.eye(16, dtype=np.float32)[labels]  # well separated
    ours = evaluate_retrieval(emb, labels, evaluation=EVALUATION)[0]
    clusters = kmeans_clusters(emb, 6)
    assert ours["nmi"] == normalized_mutual_info_score(labels, clusters)
    assert ours["ami"] == adjusted_mutual_info_score(labels, clusters)
    faiss = pml(emb, labels, kmeans_func=FaissKMeans(niter=20))
    assert ours["nmi"] == pytest.approx(faiss["NMI"], abs=0.05) and ours["nmi"] > 0.8
    split = evaluate_retrieval(
        emb[:80], labels[:80], emb[80:], labels[80:], EVALUATION
    )[0]
    assert split["nmi"] == ours["nmi"]  # the same embeddings, in the same order
    assert (
        evaluate_retrieval(emb, labels, evaluation=EVALUATION)[0]["nmi"] == ours["nmi"]
    )  # seeded


def cell_frame(emb, labels, split):
    return pd.DataFrame(
        {
            "index": np.arange(len(labels)),
            "split": split,
            "label": labels,
            "prediction": labels,
            "embedding": list(emb),
        }
    )


def test_evaluate_cell_all_against_all():
    emb, labels = float_data(7, n=60)
    frame = cell_frame(emb, labels, ALL_AGAINST_ALL)
    anchors = pd.DataFrame(
        {"label": np.arange(12), "anchor": list(np.zeros((12, 8), np.float32))}
    )
    evaluation = dict(
        EVALUATION, two_stage={"classes": [1, 2]}, distances=["own", "cosine"]
    )
    metrics, curve = evaluate_cell(frame, anchors, evaluation)
    assert set(metrics["retrieval"]) == {"exact"}  # two-stage needs a database apart
    for _distance, rows in metrics.groupby("distance"):
        assert rows["metric"].tolist() == METRICS.names(evaluation, retrieval="exact")
    values = metrics[metrics["distance"] == "euclidean"].set_index("metric")["value"]
    expected = evaluate_retrieval(emb, labels, evaluation=EVALUATION)[0]
    for name in ["recall@1", "recall@8", "map@r", "nmi", "ami"]:
        assert values[name] == expected[name], name
    assert np.isnan(values["accuracy"])  # test classes are not the training classes
    assert values["queries_without_positives"] == 1
    assert values["distance_computations_per_query"] == len(emb) - 1
    assert len(curve) == len(emb) - 1


def test_default_evaluation_writes_no_new_metric():
    """recall@k, nmi and ami are off unless the evaluation mapping asks."""
    names = METRICS.names({})
    assert not [n for n in names if n.startswith("recall@") or n in ("nmi", "ami")]
    emb, labels = float_data(8, n=60)
    frame = cell_frame(emb, labels, np.where(np.arange(60) < 20, "query", "database"))
    metrics, _ = evaluate_cell(frame, pd.DataFrame({"label": [], "anchor": []}), {})
    assert metrics["metric"].tolist() == METRICS.names({})


@pytest.mark.parametrize("rows", [1, 2, 5])
def test_duplicate_items_get_equal_distances_in_every_chunk_size(rows):
    """A one-row product (BLAS's matrix-vector kernel) rounded equal items
    differently, so a chunk of one query broke their tie by rounding, not
    by index; kernel.distances computes one row as two."""
    from workflow.retrieval.kernel import distances, squared_norms

    emb, _ = float_data(1, duplicates=40)
    x = torch.from_numpy(emb)
    same = (x[:, None, :] == x[None, :, :]).all(-1) & ~torch.eye(
        len(x), dtype=torch.bool
    )
    a, b = same.nonzero(as_tuple=True)
    assert len(a) >= 80
    for start in range(0, len(x), rows):
        d = distances(x[start : start + rows], x, squared_norms(x))
        assert torch.equal(d[:, a], d[:, b]), start

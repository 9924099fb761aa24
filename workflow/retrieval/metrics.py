"""The metric registry: every metric of ``results/metrics.csv``, registered once.

Each metric is registered with its name (or a name pattern with ``{k}``,
whose cutoffs come from a key of the config's ``evaluation`` section; or a
switch, an ``evaluation`` key that turns it on, off by default), its
direction (``higher`` or ``lower`` is better), its kind (``per query``: the
mean over queries of a per-query value; ``per class``: the mean over query
classes of the mean within each class; ``per cell``: one value for the
whole cell), its range (``bounds``: [0, 1] for a fraction, the default;
[0, inf) for a count or cost, which a ``scale: percent`` of published values
never multiplies by 100), a one-line definition and the function that
computes it. As
pytorch-metric-learning's ``AccuracyCalculator`` finds its metrics by name,
``evaluate`` writes what is registered here, in this order; the config check
of table and selection metrics (``workflow.guards``), the tables' best value
and the selection (:meth:`MetricRegistry.lower_is_better`), the figures'
labels, ``python -m workflow`` and the docs' metric reference read it here.

Adding a metric is one registered function (and its test):

* ``source="ranks"``: a function of a chunk of queries' positive ranks
  (:class:`workflow.retrieval.accumulate.QueryRanks`: ``ranks``, ``valid``,
  ``r``, ``precision``, ``within_r``, ``first_rank``), and ``k`` for a
  pattern, that returns one value per query; they are averaged per query or
  per class (``kind``). It uses only operators and methods of the tensors it
  is given, so that this module imports no torch: the report environment
  imports it.
* ``source="curve"``: a function of the mean precision-recall curve
  (columns ``cutoff``, ``precision``, ``recall``) that returns the value.
* ``source="clusters"``: a function of the labels of the cell's test
  embeddings and their k-means clusters (:func:`~workflow.retrieval.metric_registry.kmeans_clusters`, computed
  once for all such metrics) that returns the value.

The ``evaluation`` mapping (the config's section) reaches this module
untouched: only the registry (:meth:`MetricRegistry.cutoffs`,
:meth:`MetricRegistry.names`, :func:`speedup_k`) and the schema read its
cutoff keys and switches, with the schema's defaults in
``DEFAULT_EVALUATION`` where a key is missing.
* :func:`declare_metric`: a metric written by other code (``written_by``
  names it): ``evaluate`` (``accuracy``, ``queries_without_positives``) and
  the search's cost (:mod:`workflow.retrieval.two_stage`).

The tie-break and the treatment of queries without positives and of
unretrieved positives: :mod:`workflow.retrieval`.

Metrics in full
---------------
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
``recall@{k}``
    Recall@k of the deep-metric-learning literature: the fraction of
    queries with at least one positive in the top ``k`` (``r_1 <= k``), so
    ``1 - top{k}_error``. PML's ``precision_at_1`` is ``recall@1``.
``nmi``, ``ami``
    scikit-learn's normalised and adjusted mutual information of the
    classes and a seeded k-means (k = number of classes) of the cell's test
    embeddings, each once (all against all: the queries; otherwise queries
    and database together).
``pr_auc``
    Area under the mean precision-recall curve of
    :func:`workflow.retrieval.exact.pr_curve` (mean precision@k against mean
    recall@k over queries, for every cutoff ``k = 1..N``), by the
    trapezoidal rule over recall (as ``sklearn.metrics.auc``), with the point ``(recall 0, precision of the
    first point)`` prepended so the area starts at recall 0. With exact
    retrieval the curve ends at recall 1 (cutoff ``N`` retrieves every
    positive).
"""

from __future__ import annotations

import numpy as np

from workflow.retrieval.metric_registry import (
    METRICS,
    declare_metric,
    register_metric,
    setting,
)

__all__ = ["METRICS", "pr_auc", "speedup_k"]


@register_metric(
    "precision@{k}",
    direction="higher",
    kind="per class",
    cutoffs="precision_at",
    definition='the LM paper\'s "mAP@k" (its eq. 4): per query, the fraction of the top k that '
    "share the query's class; averaged within each class, then over classes",
)
def precision_at_k(q, k: int):
    return (q.valid & (q.ranks <= k)).sum(1).double() / k


@register_metric(
    "top{k}_error",
    direction="lower",
    kind="per query",
    cutoffs="top_k_error",
    label="top-{k} error",
    definition="fraction of queries with no same-class image in the top k",
)
def top_k_error(q, k: int):
    return q.first_rank > k


@register_metric(
    "recall@{k}",
    direction="higher",
    kind="per query",
    cutoffs="recall_at",
    label="Recall@{k}",
    definition="Recall@k of the deep-metric-learning literature: fraction of queries with a same-class "
    "image in the top k (1 - top{k}_error); at the cutoffs of evaluation.recall_at (by default the dataset's usual ones under the class-disjoint protocol, none in the closed set)",
)
def recall_at_k(q, k: int):
    return q.first_rank <= k


@register_metric(
    "map",
    direction="higher",
    kind="per query",
    label="mAP",
    definition="mean over queries of the average precision over the full ranking "
    "(scikit-learn's `average_precision_score` per query)",
)
def mean_average_precision(q):
    return q.precision.sum(1) / q.r


@register_metric(
    "map@r",
    direction="higher",
    kind="per query",
    label="MAP@R",
    definition="as pytorch-metric-learning's `AccuracyCalculator` defines it: the average precision "
    "within the top R (R = number of same-class database items), averaged over queries",
)
def map_at_r(q):
    return (q.precision * q.within_r).sum(1) / q.r


@register_metric(
    "r_precision",
    direction="higher",
    kind="per query",
    label="R-precision",
    definition="as pytorch-metric-learning defines it: the fraction of the top R that share the "
    "query's class, averaged over queries",
)
def r_precision(q):
    return q.within_r.sum(1) / q.r


@register_metric(
    "pr_auc",
    direction="higher",
    kind="per cell",
    source="curve",
    label="PR AUC",
    definition="area under the precision-recall curve averaged over queries, cutoffs 1 to the "
    "database size, trapezoidal over recall from 0",
)
def pr_auc(curve) -> float:
    """Trapezoidal area under (recall, precision), from (0, precision[0])."""
    recall, precision = curve["recall"].to_numpy(), curve["precision"].to_numpy()
    x = np.concatenate([[0.0], recall])
    y = np.concatenate([[precision[0]], precision])
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2.0))


@register_metric(
    "nmi",
    direction="higher",
    kind="per cell",
    source="clusters",
    enabled_by="clustering",
    label="NMI",
    exact_only=True,
    definition="normalised mutual information of the classes and a seeded k-means (k = number of "
    "classes) of the cell's test embeddings (scikit-learn); with evaluation.clustering (by default under the class-disjoint protocol)",
)
def nmi(labels, clusters) -> float:
    from sklearn.metrics import normalized_mutual_info_score

    return normalized_mutual_info_score(labels, clusters)


@register_metric(
    "ami",
    direction="higher",
    kind="per cell",
    source="clusters",
    enabled_by="clustering",
    label="AMI",
    exact_only=True,
    bounds=(float("-inf"), 1.0),  # below 0: worse than chance
    definition="adjusted mutual information of the same classes and k-means clusters as nmi "
    "(scikit-learn); with evaluation.clustering (by default under the class-disjoint protocol)",
)
def ami(labels, clusters) -> float:
    from sklearn.metrics import adjusted_mutual_info_score

    return adjusted_mutual_info_score(labels, clusters)


declare_metric(
    "accuracy",
    direction="higher",
    kind="per query",
    exact_only=True,
    written_by="workflow.evaluate.classification_accuracy",
    definition="fraction of query images classified correctly, by the loss's own prediction "
    "(classifier head, nearest class weight, proxy or anchor), else by the nearest exported "
    "anchor; NaN for losses that cannot classify",
)
declare_metric(
    "queries_without_positives",
    direction="lower",
    kind="per cell",
    exact_only=True,
    quality=False,
    bounds=(0.0, float("inf")),
    written_by="workflow.evaluate.evaluate_cell",
    label="queries without positives",
    definition="queries whose class has no database item, left out of every other metric",
)
declare_metric(
    "distance_computations_per_query",
    direction="lower",
    kind="per cell",
    quality=False,
    bounds=(0.0, float("inf")),
    written_by="workflow.retrieval.two_stage.evaluate_retrieval_methods",
    label="distance computations per query",
    definition="embedding distances computed per query: the database size for exact retrieval, "
    "anchors plus candidates for two-stage",
)


def speedup_k(evaluation: dict | None) -> int:
    """The k of the speed-up figure's precision@k: ``speedup_precision_at``
    if set (it must be among ``precision_at``), else 10 if ``precision_at``
    has it, else its first cutoff."""
    precision_at, k = (
        list(setting(evaluation, "precision_at")),
        setting(evaluation, "speedup_precision_at"),
    )
    if k is None:
        if not precision_at:
            raise ValueError(
                "config key evaluation.precision_at is empty: the speed-up figure "
                "needs a precision@k; add a cutoff or set evaluation.two_stage.classes: []"
            )
        return 10 if 10 in precision_at else precision_at[0]
    if k not in precision_at:
        raise ValueError(
            f"config key evaluation.speedup_precision_at: {k} is not among "
            f"evaluation.precision_at {precision_at}; add it there or choose one of them"
        )
    return k


if __name__ == "__main__":  # the metric reference (docs/metrics.md)
    print(METRICS.markdown(), end="")

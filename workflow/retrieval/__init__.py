"""Retrieval: exact and two-stage L2 search, and the metrics of their rankings.

Modules (none imports another's private names):

``kernel``
    distances (the one ``||b||^2 - 2 a.b``), and each query's positive
    ranks by counting (``count_at_or_before``) or by sorting.
``inputs``
    queries and database checked, coded and placed on a device.
``exact``
    exact search, one chunk of queries at a time (``evaluate_retrieval``).
``two_stage``
    the CAM paper's two-stage search with class anchors, beside exact search
    (``evaluate_retrieval_methods``, what ``evaluate`` calls).
``metrics``
    the metric registry: every metric's name, direction, kind, definition
    and function (NumPy only: the report environment imports it).
``accumulate``
    chunks of positive ranks reduced to the registered metrics and the
    precision-recall curve.

This file imports nothing, so that importing ``workflow.retrieval.metrics``
does not import torch.

Every query is ranked against a database by the Euclidean (L2) distance of
the embeddings it is given: ``evaluate`` passes each loss's own geometry
(:mod:`workflow.geometry`; for ``cosine``, L2-normalised embeddings, whose
L2 order is the cosine order). Queries
and database are disjoint sets: a query is never looked up in the database, so
there is no self-match to remove; or, all against all (no database given:
the class-disjoint protocol), the queries are the database and each query
is ranked against the others, itself excluded (:mod:`workflow.retrieval.exact`).

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
    as a *stable* sort of the distances would. Every metric follows
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
    out its "lone" queries; :func:`~workflow.retrieval.inputs.queries_without_positives` counts them (the
    pipeline writes the count as a metric row). Only when *no* query has a
    positive is :class:`ValueError` raised.
Unretrieved positives
    A retrieval method may return only part of the database (two-stage
    retrieval with ``rest: cut``, see :mod:`workflow.retrieval.two_stage`). A
    positive it does not return is ranked at infinity: it counts towards ``R`` but is never
    within a cutoff, adds 0 to the average precision, and the curve's recall
    stays below 1 (the area under the curve stops at the recall reached).
"""

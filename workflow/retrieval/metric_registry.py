"""The machinery of the metric registry: :class:`Metric`, the registry
:data:`METRICS` and the decorators that fill it. The metrics themselves are
registered in :mod:`workflow.retrieval.metrics` (which is what callers import:
importing it registers every metric)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

DIRECTIONS = ("higher", "lower")
KINDS = ("per query", "per class", "per cell")
METRIC_SOURCES = ("ranks", "curve", "clusters", "written")
# The evaluation keys that the metrics read, with the schema's defaults
# (used when the evaluation mapping lacks a key): a pattern's cutoffs, or a
# switch that turns a metric on (off by default).
DEFAULT_EVALUATION = {
    "precision_at": [1, 5, 10],
    "top_k_error": [1, 5],
    "recall_at": [],
    "clustering": False,
    "speedup_precision_at": None,
}
# k-means of the clustering metrics: a fixed seed, so that they are a
# function of the embeddings alone.
CLUSTERING_SEED = 0


@dataclass(frozen=True)
class Metric:
    """One registered metric (a pattern with ``{k}`` when ``cutoffs`` is set)."""

    name: str
    direction: str  # "higher" or "lower" is better
    kind: str  # "per query", "per class" or "per cell"
    definition: str  # one line, the metric reference's table
    label: str  # axis label in figures ({k} filled in)
    source: str  # "ranks", "curve" or "written" (by written_by)
    cutoffs: str | None = None  # evaluation.<key> giving the k of a pattern
    enabled_by: str | None = (
        None  # evaluation.<key> that turns the metric on (default off)
    )
    exact_only: bool = (
        False  # written for exact retrieval only (not per two-stage method)
    )
    quality: bool = True  # False: a row about cost or the split, kept out of the tables
    bounds: tuple[float, float] = (
        0.0,
        1.0,
    )  # the values it can take; (0, 1): a fraction
    compute: Callable | None = None
    written_by: str | None = None

    @property
    def pattern(self) -> re.Pattern:
        return re.compile(
            re.escape(self.name).replace(re.escape("{k}"), r"([1-9][0-9]*)") + r"\Z"
        )

    def names(self, evaluation: dict | None = None) -> list[str]:
        """The concrete names the ``evaluation`` mapping (the config's
        section; the schema's defaults where a key is missing) asks for: one
        per cutoff for a pattern, none when the metric's switch is off."""
        if self.cutoffs:
            return list(
                dict.fromkeys(
                    self.name.format(k=k) for k in setting(evaluation, self.cutoffs)
                )
            )
        if self.enabled_by and not setting(evaluation, self.enabled_by):
            return []
        return [self.name]


def setting(evaluation: dict | None, key: str):
    """``evaluation[key]``, or the default where the key is missing or null
    (a null ``recall_at`` or ``clustering`` is the dataset's protocol
    default, which ``workflow.config.dataset_evaluation`` fills in; read
    raw, it is the closed set's)."""
    value = (evaluation or {}).get(key)
    return DEFAULT_EVALUATION[key] if value is None else value


class MetricRegistry:
    """The metrics in registration order (the order of ``results/metrics.csv``)."""

    def __init__(self):
        self._metrics: dict[str, Metric] = {}

    def add(self, metric: Metric) -> Metric:
        if metric.name in self._metrics:
            raise ValueError(f"metric {metric.name!r} is registered twice")
        if metric.direction not in DIRECTIONS:
            raise ValueError(
                f"metric {metric.name!r}: direction must be one of {DIRECTIONS}"
            )
        if metric.kind not in KINDS:
            raise ValueError(f"metric {metric.name!r}: kind must be one of {KINDS}")
        if metric.source not in METRIC_SOURCES:
            raise ValueError(
                f"metric {metric.name!r}: source must be one of {METRIC_SOURCES}"
            )
        if ("{k}" in metric.name) != (metric.cutoffs is not None):
            raise ValueError(
                f"metric {metric.name!r}: a name with {{k}} needs cutoffs= and only it"
            )
        self._metrics[metric.name] = metric
        return metric

    def __iter__(self):
        return iter(self._metrics.values())

    def source(self, source: str) -> list[Metric]:
        return [m for m in self if m.source == source]

    def find(self, name: str) -> tuple[Metric, int | None] | None:
        """The metric a concrete name belongs to, and its k (None: not a
        pattern); None when no metric has that name."""
        for metric in self:
            match = metric.pattern.match(name)
            if match:
                return metric, int(match.group(1)) if metric.cutoffs else None
        return None

    def get(self, name: str) -> tuple[Metric, int | None]:
        found = self.find(name)
        if found is None:
            raise KeyError(
                f"unknown metric {name!r}; registered (workflow/retrieval/metrics.py): "
                + ", ".join(m.name for m in self)
            )
        return found

    def lower_is_better(self, name: str) -> bool:
        return self.get(name)[0].direction == "lower"

    def bounds(self, name: str) -> tuple[float, float]:
        """The least and greatest value a concrete metric name can take."""
        return self.get(name)[0].bounds

    def is_fraction(self, name: str) -> bool:
        """A metric at most 1 (a share of queries, items or information):
        papers print it in percent; counts and costs they print as they are."""
        return self.bounds(name)[1] == 1.0

    def label(self, name: str) -> str:
        """The figure label of a concrete metric name."""
        metric, k = self.get(name)
        return metric.label.format(k=k)

    def cutoff_keys(self) -> list[str]:
        return list(dict.fromkeys(m.cutoffs for m in self if m.cutoffs))

    def cutoffs(
        self, evaluation: dict | None, n_ranked: int | None = None
    ) -> dict[str, tuple[int, ...]]:
        """``{evaluation key: cutoffs}`` of every pattern, from the
        ``evaluation`` mapping (the schema's defaults where a key is
        missing), each checked: positive integers, and at most ``n_ranked``
        (the items ranked for a query) when given."""
        out = {}
        for key in self.cutoff_keys():
            ks = tuple(setting(evaluation, key))
            for k in ks:
                if isinstance(k, bool) or int(k) != k or k < 1:
                    raise ValueError(
                        f"config key evaluation.{key}: cutoffs must be positive integers, got {k!r}"
                    )
            too_large = [k for k in ks if n_ranked is not None and k > n_ranked]
            if too_large:
                raise ValueError(
                    f"config key evaluation.{key}: cutoff {max(too_large)} exceeds the database of this "
                    f"cell ({n_ranked} images); use cutoffs up to {n_ranked} or a larger database "
                    "(datasets.<name>.database_per_class; for selection trials validation.database_per_class; "
                    "all against all, a query's database is the other test images)"
                )
            out[key] = tuple(int(k) for k in ks)
        return out

    def names(
        self, evaluation: dict | None = None, retrieval: str | None = None
    ) -> list[str]:
        """Every metric name ``evaluate`` writes with these ``evaluation``
        settings (the schema's defaults where a key is missing), in order;
        ``retrieval``: only those of ``exact`` or of a two-stage method."""
        return [
            name
            for metric in self
            if retrieval in (None, "exact") or not metric.exact_only
            for name in metric.names(evaluation)
        ]

    def of_clusters(
        self, evaluation: dict | None, embeddings, labels
    ) -> dict[str, float]:
        """The metrics of source ``clusters`` that ``evaluation`` turns on,
        from one k-means of ``embeddings`` (n, D) with k the number of
        classes in ``labels`` (:func:`kmeans_clusters`)."""
        wanted = [
            metric for metric in self.source("clusters") if metric.names(evaluation)
        ]
        if not wanted:
            return {}
        labels = np.asarray(labels)
        clusters = kmeans_clusters(embeddings, len(np.unique(labels)))
        return {
            metric.name: float(metric.compute(labels, clusters)) for metric in wanted
        }

    def order(self, names) -> list[str]:
        """Concrete names in registration order, a pattern's by k; unknown
        names last, alphabetically."""
        position = {m.name: i for i, m in enumerate(self)}

        def key(name: str):
            found = self.find(name)
            if found is None:
                return (len(position), 0, name)
            return (position[found[0].name], found[1] or 0, name)

        return sorted(set(names), key=key)

    def markdown(self) -> str:
        """The metric reference's table (docs/metrics.md)."""
        lines = [
            "| metric | better | kind | range | definition |",
            "|---|---|---|---|---|",
        ]
        for m in self:
            rows = " (exact retrieval only)" if m.exact_only else ""
            low, high = m.bounds
            span = f"{'(' if np.isinf(low) else '['}{low:g}, {high:g}{')' if np.isinf(high) else ']'}".replace(
                "inf", "∞"
            )
            lines.append(
                f"| `{m.name}` | {m.direction} | {m.kind} | {span} | {m.definition}{rows} |"
            )
        return "\n".join(lines) + "\n"


METRICS = MetricRegistry()


def register_metric(
    name: str,
    *,
    direction: str,
    kind: str,
    definition: str,
    label: str | None = None,
    source: str = "ranks",
    cutoffs: str | None = None,
    enabled_by: str | None = None,
    exact_only: bool = False,
    quality: bool = True,
    bounds: tuple[float, float] = (0.0, 1.0),
) -> Callable:
    """Register the decorated function as metric ``name`` (module docstring)."""
    for key in (cutoffs, enabled_by):
        if key is not None and key not in DEFAULT_EVALUATION:
            raise ValueError(
                f"metric {name!r}: evaluation key {key!r} has no default in DEFAULT_EVALUATION "
                "(add it there and to the schema)"
            )

    def decorator(fn: Callable) -> Callable:
        METRICS.add(
            Metric(
                name,
                direction,
                kind,
                definition,
                label or name,
                source,
                cutoffs,
                enabled_by,
                exact_only,
                quality,
                bounds,
                compute=fn,
            )
        )
        return fn

    return decorator


def declare_metric(
    name: str,
    *,
    direction: str,
    kind: str,
    definition: str,
    written_by: str,
    label: str | None = None,
    exact_only: bool = False,
    quality: bool = True,
    bounds: tuple[float, float] = (0.0, 1.0),
) -> Metric:
    """Register a metric that ``written_by`` computes and writes."""
    return METRICS.add(
        Metric(
            name,
            direction,
            kind,
            definition,
            label or name,
            "written",
            None,
            None,
            exact_only,
            quality,
            bounds,
            written_by=written_by,
        )
    )


# ---------------------------------------------------------------------------
# The metrics, in the order of results/metrics.csv
# ---------------------------------------------------------------------------


def kmeans_clusters(embeddings, k: int) -> np.ndarray:
    """Cluster of each embedding by scikit-learn's k-means (k-means++
    initialisation, one run, seed ``CLUSTERING_SEED``)."""
    from sklearn.cluster import KMeans

    return KMeans(n_clusters=k, n_init=1, random_state=CLUSTERING_SEED).fit_predict(
        np.asarray(embeddings)
    )

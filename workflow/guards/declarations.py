"""Checks of the declared tables and rankings:

- **table metrics**: every metric a declared table shows must be one that
  ``evaluate`` writes with the configured ``evaluation`` settings;
- **table selections**: the attributes a declared table selects by and
  lays out (those of results/metrics.csv), what it selects, its explicit rows
  (distinct labels) and its ``baseline`` must exist in the config, so no
  row silently drops out (nor a loss the select leaves without rows) and no
  marker claims a test that was not done;
- **published values**: a table's ``reference`` gives a value for every
  row and metric it shows, and for nothing else, each in its ``scale``
  and in the metric's range (``workflow.tables.reference_value_problem``);
- **rankings**: blocks and ``select`` name attributes of results/metrics.csv
  (blocks may be seeds, never losses), the ranked metric is computed, and
  the losses ranked (``losses``, else every loss the ``select`` keeps) are
  at least two distinct losses the ranking selects, none of which the
  ``select`` leaves without a value (a distance, retrieval or fixed factor
  it does not have, accuracy of a loss that cannot classify);
"""

from __future__ import annotations

import difflib

from workflow.config import ConfigError, laid_out, ranked_losses
from workflow.registry import did_you_mean


def check_table_metrics(config: dict) -> None:
    from workflow.config import dataset_evaluation
    from workflow.retrieval.metrics import METRICS

    # What some dataset's cells compute (the datasets' protocols fill in
    # their own Recall@k and clustering defaults).
    known = list(
        dict.fromkeys(
            name
            for dataset in config["datasets"]
            for name in METRICS.names(dataset_evaluation(config, dataset))
        )
    )
    named = [
        (f"tables.{table}.metrics", metric)
        for table, declaration in (config.get("tables") or {}).items()
        for metric in declaration.get("metrics", [])
    ]
    named += [
        (f"rankings.{name}.metric", decl["metric"])
        for name, decl in (config.get("rankings") or {}).items()
    ]
    if config.get("selection"):
        named.append(("selection.metric", config["selection"]["metric"]))
    for key, metric in named:
        if metric not in known:
            close = [m for m in known if m.lower() == metric.lower()]
            close = close or difflib.get_close_matches(metric, known, n=1)
            raise ConfigError(
                f"config key {key}: no metric {metric!r} is computed"
                + (f" (did you mean {close[0]!r}?)" if close else "")
                + f"; with these evaluation settings the metrics are: {', '.join(known)} ("
                + ", ".join(
                    [
                        f"{m.name} exists for the k in evaluation.{m.cutoffs}"
                        for m in METRICS
                        if m.cutoffs
                    ]
                    + [
                        f"{m.name} with evaluation.{m.enabled_by}: true"
                        for m in METRICS
                        if m.enabled_by
                    ]
                )
                + "; python -m workflow lists the registered metrics)"
            )


# Cell attributes whose values the config names, and the section naming them.
CELL_SECTIONS = {
    "dataset": "datasets",
    "regime": "regimes",
    "backbone": "backbones",
    "loss": "losses",
}


def _table_values(config: dict) -> dict[str, list]:
    """The values each table attribute can take with this config (those
    whose values are known before any job)."""
    from workflow.geometry import DISTANCES

    values = {
        attribute: [str(n) for n in config[section]]
        for attribute, section in CELL_SECTIONS.items()
    }
    classes = ((config.get("evaluation") or {}).get("two_stage") or {}).get(
        "classes", [1, 2]
    )
    values["retrieval"] = ["exact", *(f"two_stage_c{c}" for c in classes)]
    values["distance"] = list(DISTANCES)
    return values


def _swept_hint(config: dict, value) -> str:
    names = [
        n
        for n, sweep in (config.get("sweeps") or {}).items()
        if sweep["base"] == value and n != value
    ]
    return (
        f"; its sweep made {', '.join(names)}"
        if names and not config.get("trials")
        else ""
    )


def _check_selectors(config: dict, key: str, selectors: dict, values: dict) -> None:
    for attribute, wanted in selectors.items():
        if attribute not in values:
            continue
        for value in wanted if isinstance(wanted, list) else [wanted]:
            if str(value) not in values[attribute]:
                raise ConfigError(
                    f"config key {key}.{attribute}: {value!r} matches no {attribute} of this config "
                    f"({', '.join(values[attribute])}){_swept_hint(config, value)}, so it would select "
                    "nothing; name one of those"
                )


def _check_attributes(table: str, decl: dict) -> None:
    """Every attribute a table selects by (``select``, explicit rows) or
    lays out (``rows``, ``columns``, ``blocks``) is one that
    results/metrics.csv has (``TABLE_ATTRIBUTES``)."""
    from workflow.config import TABLE_ATTRIBUTES

    named = [(f"tables.{table}.select.{a}", a) for a in decl.get("select") or {}]
    for key in ["rows", "columns", "blocks"]:
        for i, entry in enumerate(decl.get(key) or []):
            if isinstance(entry, dict):
                named += [
                    (f"tables.{table}.{key}[{i}].{a}", a) for a in entry if a != "label"
                ]
            else:
                named.append((f"tables.{table}.{key}", entry))
    for key, attribute in named:
        if attribute not in TABLE_ATTRIBUTES:
            raise ConfigError(
                f"config key {key}: {attribute!r} is not a cell attribute"
                f"{did_you_mean(str(attribute), TABLE_ATTRIBUTES)}; a table selects by and lays out "
                f"{', '.join(TABLE_ATTRIBUTES)}"
            )
    layout = [
        (key, entry)
        for key in ["rows", "columns", "blocks"]
        for entry in decl.get(key) or []
        if not isinstance(entry, dict)
    ]
    _check_laid_out_once(f"tables.{table}", layout)


def _check_laid_out_once(key: str, layout: list[tuple[str, str]]) -> None:
    """No attribute is laid out twice ((place, attribute) pairs): its values
    would make two equal index levels, so rows repeat their label
    (``a / a``) or a block its value, and the writers meet two columns of
    one name."""
    seen: dict[str, str] = {}
    for place, attribute in layout:
        if attribute in seen:
            where = (
                f"twice in {key}.{place}"
                if seen[attribute] == place
                else f"in both {key}.{seen[attribute]} and {key}.{place}"
            )
            raise ConfigError(
                f"config key {key}.{place}: {attribute!r} is laid out {where}, which would repeat its value in "
                "every row and block; name each attribute once"
            )
        seen[attribute] = place


def _as_strings(value) -> list[str]:
    return [str(v) for v in (value if isinstance(value, list) else [value])]


def _has_two_stage_rows(spec: dict) -> bool:
    """Whether evaluate can write two-stage rows for a dataset: it needs a
    database apart from the queries, which protocol class_disjoint has only
    on official query and database sides (registered ``query_database``:
    In-Shop's query and gallery, without ``train_classes``); otherwise its
    test classes are evaluated all against all (``workflow.evaluate``)."""
    from workflow.datasets import DATASETS

    if spec.get("protocol", "closed_set") != "class_disjoint":
        return True
    return spec.get("train_classes") is None and bool(
        DATASETS.metadata(spec["source"]).get("query_database")
    )


def _check_two_stage(
    config: dict, key: str, selectors: dict, losses: list | None = None
) -> None:
    """A selection of only two-stage retrievals (``selectors``: a table's or
    ranking's ``select``, or an explicit row with its table's ``select``)
    keeps a dataset that can have two-stage rows and a loss that learns
    class anchors; otherwise it could never match, and the table or
    ranking would stop for want of rows after the whole grid trained."""
    from workflow.losses import LOSSES, loss_has_anchors

    wanted = _as_strings(selectors["retrieval"]) if "retrieval" in selectors else []
    if not wanted or not all(w.startswith("two_stage_") for w in wanted):
        return
    datasets = (
        _as_strings(selectors["dataset"])
        if "dataset" in selectors
        else list(map(str, config["datasets"]))
    )
    datasets = [d for d in datasets if d in config["datasets"]]
    if datasets and not any(
        _has_two_stage_rows(config["datasets"][d]) for d in datasets
    ):
        raise ConfigError(
            f"config key {key}.retrieval: {', '.join(wanted)} can never match: dataset "
            f"{', '.join(datasets)} {'is' if len(datasets) == 1 else 'are'} of protocol class_disjoint, whose "
            "test classes are evaluated all against all (no database apart from the queries, and no anchors of "
            "the test classes), so evaluate writes no two-stage rows; select retrieval exact, or a dataset of "
            "protocol closed_set"
        )
    kept = losses or (
        _as_strings(selectors["loss"])
        if "loss" in selectors
        else list(map(str, config["losses"]))
    )
    kept = [loss for loss in kept if loss in config["losses"]]
    if kept and not any(
        loss_has_anchors(config["losses"][loss]["impl"]) for loss in kept
    ):
        raise ConfigError(
            f"config key {key}.retrieval: {', '.join(wanted)} can never match: no loss selected "
            f"({', '.join(kept)}) learns class anchors, and two-stage retrieval runs only for losses that do "
            f"({', '.join(n for n in LOSSES.names() if loss_has_anchors(n))}); select retrieval exact, or a loss "
            "with anchors"
        )


def check_tables(config: dict) -> None:
    """What a declared table selects must exist, so that nothing silently
    drops out or is mislabelled: every value of ``select`` and of an
    explicit row names a configured dataset, regime, backbone, loss (or a
    retrieval or distance that is evaluated); an explicit row asks only for
    values ``select`` keeps; explicit rows have distinct labels; a table
    laying out losses has a row for every loss its ``select`` keeps (no
    distance, retrieval or fixed factor that leaves one out); and
    ``baseline`` is an explicit row's label or a loss the table shows."""
    values = _table_values(config)
    for table, decl in (config.get("tables") or {}).items():
        _check_attributes(table, decl)
        select = decl.get("select") or {}
        _check_selectors(config, f"tables.{table}.select", select, values)
        _check_two_stage(config, f"tables.{table}.select", select)
        shown = {
            a: [str(v) for v in (w if isinstance(w, list) else [w])]
            for a, w in select.items()
        }
        rows = decl.get("rows") or []
        explicit = [row for row in rows if isinstance(row, dict)]
        labels: dict[str, int] = {}
        for i, row in enumerate(explicit):
            selectors = {k: v for k, v in row.items() if k != "label"}
            key = f"tables.{table}.rows[{i}]"
            _check_selectors(config, key, selectors, values)
            _check_two_stage(config, key, {**select, **selectors})
            for attribute, wanted in selectors.items():
                wanted = [
                    str(v) for v in (wanted if isinstance(wanted, list) else [wanted])
                ]
                if attribute in shown and not set(wanted) & set(shown[attribute]):
                    raise ConfigError(
                        f"config key {key}.{attribute}: {', '.join(wanted)} is not among what "
                        f"tables.{table}.select.{attribute} keeps ({', '.join(shown[attribute])}), so "
                        "the row would be empty; change the row or the select"
                    )
            label = str(row.get("label", " / ".join(map(str, selectors.values()))))
            if label in labels:
                raise ConfigError(
                    f"config key {key}.label: rows {labels[label]} and {i} are both labelled {label!r}, "
                    "so one would hide the other; give every row its own label"
                )
            labels[label] = i
        if not explicit and "loss" in laid_out(decl):
            for loss in ranked_losses(config, {"select": select}):
                problem = _loss_rows_problem(config, loss, select)
                if problem:
                    raise ConfigError(
                        f"config key tables.{table}.select: the row of loss {loss!r} would be empty: {problem}; "
                        f"change the select, or name the losses to show in tables.{table}.select.loss"
                    )
        if decl.get("reference"):
            _check_reference(table, decl, explicit, labels, shown, values)
        baseline = decl.get("baseline")
        if baseline is None or str(baseline) in labels:
            continue
        losses = [
            loss
            for loss in values["loss"]
            if "loss" not in shown or loss in shown["loss"]
        ]
        if str(baseline) not in losses:
            raise ConfigError(
                f"config key tables.{table}.baseline: {baseline!r} is "
                + (
                    f"no row label ({', '.join(map(repr, labels))}) and "
                    if explicit
                    else ""
                )
                + f"no loss this table shows ({', '.join(losses)}){_swept_hint(config, baseline)}, so "
                "nothing would be compared with it; name one of those, or null for no significance marker"
            )


def _check_reference(
    table: str, decl: dict, explicit: list, labels: dict, shown: dict, values: dict
) -> None:
    """Every row and metric of a table with ``reference`` has a published
    value (``workflow.tables.reference_problem``). The rows are known here
    when they are explicit, or laid out by dataset, regime, backbone and
    loss (the values the table's ``select`` keeps); otherwise the table's
    job checks them against the rows it builds."""
    import itertools

    from workflow.tables import reference_problem

    rows = decl.get("rows") or ["loss"]
    if explicit:
        labels_ = list(labels)
    elif all(attribute in CELL_SECTIONS for attribute in rows):
        kept = [[v for v in values[a] if a not in shown or v in shown[a]] for a in rows]
        labels_ = [" / ".join(combination) for combination in itertools.product(*kept)]
    else:
        labels_ = None
    problem = reference_problem(table, decl, labels_)
    if problem:
        raise ConfigError(problem)


def check_rankings(config: dict) -> None:
    """A ranking's blocks and ``select`` name attributes of
    results/metrics.csv (``seed`` too for blocks, ``loss`` never: the losses
    are what is ranked), its ``select`` values and its ``losses`` exist in
    the config, and its losses are distinct and kept by its ``select``."""
    from workflow.config import TABLE_ATTRIBUTES

    values = _table_values(config)
    for name, decl in (config.get("rankings") or {}).items():
        key = f"rankings.{name}"
        allowed = [a for a in TABLE_ATTRIBUTES if a != "loss"] + ["seed"]
        for attribute in decl["blocks"]:
            if attribute not in allowed:
                raise ConfigError(
                    f"config key {key}.blocks: {attribute!r} cannot make blocks{did_you_mean(str(attribute), allowed)}"
                    f"; blocks are combinations of {', '.join(allowed)} (the losses are what is ranked)"
                )
        _check_laid_out_once(
            key, [("blocks", attribute) for attribute in decl["blocks"]]
        )
        for attribute in decl.get("select") or {}:
            if attribute not in TABLE_ATTRIBUTES:
                raise ConfigError(
                    f"config key {key}.select.{attribute}: {attribute!r} is not a cell attribute; a ranking "
                    f"selects by {', '.join(TABLE_ATTRIBUTES)}"
                )
        select = decl.get("select") or {}
        _check_selectors(config, f"{key}.select", select, values)
        _check_two_stage(config, f"{key}.select", select, decl.get("losses"))
        kept = ranked_losses(config, {"select": select})
        losses = ranked_losses(config, decl)
        for loss in losses:
            if loss not in kept:
                raise ConfigError(
                    f"config key {key}.losses: {loss!r} is no loss this ranking selects ({', '.join(kept)})"
                    f"{_swept_hint(config, loss)}; name one of those"
                )
        if len(set(losses)) != len(losses):
            raise ConfigError(
                f"config key {key}.losses: {losses} names a loss twice; name each once"
            )
        if len(losses) < 2:
            raise ConfigError(
                f"config key {key}: only {', '.join(losses)} would be ranked; a ranking needs 2 losses or more"
            )
        for loss in losses:
            problem = _loss_rows_problem(config, loss, select, decl["metric"])
            if problem:
                raise ConfigError(
                    f"config key {key}: loss {loss!r} would have no values of {decl['metric']}: "
                    f"{problem}; a ranking never ranks the other losses without it: change "
                    f"{key}.select or {key}.metric, or leave {loss!r} out of {key}.losses"
                )


def _loss_rows_problem(
    config: dict, loss: str, select: dict, metric: str | None = None
) -> str | None:
    """Why ``select`` would leave ``loss`` without a row (of ``metric``) in
    results/metrics.csv, as far as the config tells before any job: a
    distance it is not evaluated in, a retrieval it has not (two-stage
    needs anchors), a fixed factor (epochs, ...) that no setting of the
    loss has; with ``metric``, also a metric that retrieval does not write
    or accuracy of a loss that cannot classify. None when it may have rows."""
    from workflow.config import (
        FIXED_FACTORS,
        candidate_settings,
        cells,
        dataset_evaluation,
    )
    from workflow.geometry import resolve_distances
    from workflow.losses import loss_classifies, loss_geometry, loss_has_anchors
    from workflow.retrieval.metrics import METRICS

    def wanted(attribute: str) -> list[str] | None:
        value = select.get(attribute)
        return (
            None
            if value is None
            else [str(v) for v in (value if isinstance(value, list) else [value])]
        )

    impl = config["losses"][loss]["impl"]
    evaluation = config.get("evaluation") or {}
    distances = resolve_distances(
        evaluation.get("distances", ["own"]), loss_geometry(impl)
    )
    if wanted("distance") and not set(wanted("distance")) & set(distances):
        return (
            f"it is evaluated in {', '.join(distances)} only (its geometry and evaluation.distances), "
            f"not in {', '.join(wanted('distance'))}"
        )
    classes = (evaluation.get("two_stage") or {}).get("classes", [1, 2])
    retrievals = ["exact"] + (
        [f"two_stage_c{c}" for c in classes] if loss_has_anchors(impl) else []
    )
    kept = [r for r in wanted("retrieval") or ["exact"] if r in retrievals]
    if not kept:
        asked = ", ".join(wanted("retrieval"))
        return (
            f"{impl} exports no anchors, so its only retrieval is exact, not {asked}"
            if not loss_has_anchors(impl)
            else f"its retrievals are {', '.join(retrievals)} (evaluation.two_stage.classes), not {asked}"
        )
    # The metrics of the datasets the select keeps (their protocols fill in
    # recall_at and clustering).
    evaluations = [
        dataset_evaluation(config, d)
        for d in wanted("dataset") or config["datasets"]
        if d in config["datasets"]
    ]
    if metric and not any(
        metric in METRICS.names(e, retrieval=r) for e in evaluations for r in kept
    ):
        return (
            f"{metric} is written for exact retrieval only, not for {', '.join(kept)}"
        )
    if metric == "accuracy" and not (loss_classifies(impl) or loss_has_anchors(impl)):
        return f"{impl} neither classifies nor exports anchors, so its accuracy is NaN"
    factors = [f for f in FIXED_FACTORS if f != "backbone" and wanted(f)]
    if factors:
        grid = [
            c
            for c in cells(config)
            if c.loss == loss
            and all(
                str(getattr(c, a)) in (wanted(a) or [str(getattr(c, a))])
                for a in ("dataset", "regime", "backbone")
            )
        ]
        settings = [s for c in grid for s in candidate_settings(config, c).values()]
        if not any(
            all(str(FIXED_FACTORS[f](s)) in wanted(f) for f in factors)
            for s in settings
        ):
            has = "; ".join(
                f"{f} {', '.join(sorted({str(FIXED_FACTORS[f](s)) for s in settings}))}"
                for f in factors
            )
            asked = "; ".join(f"{f} {', '.join(wanted(f))}" for f in factors)
            return f"it is trained with {has}, not {asked}"
    return None

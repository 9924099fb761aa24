"""Paper-style tables declared in the config.

A declaration (one entry under ``tables:``) says which cells, rows, columns
and metrics a table shows::

    lm_table2:
      caption: CE against LM on the hard 5-class subset
      select: {dataset: places5, retrieval: exact}   # filters: a value or a list
      rows: [loss]                 # cell attributes that make the rows ...
      # rows: [{label: CE pre-trained, backbone: r18_places, loss: ce}, ...]
      #                            # ... or explicit rows, each a label + selectors
      columns: []                  # cell attributes spread over columns (e.g. [regime])
      blocks: []                   # attributes that split rows into blocks (e.g. [dataset, backbone])
      metrics: [precision@5, precision@10, top1_error, top5_error, accuracy, pr_auc]
      baseline: ce                 # the loss (or explicit row label) the marker compares with

Every value is the mean over seeds, shown as ``mean ± std``; a 95%
confidence interval of the mean (Student t over seeds) is in the CSV. The
best mean per column (per block) is bold, in the direction each metric is
registered with (:mod:`workflow.retrieval.metrics`: lower is better for
``top{k}_error`` and the cost metrics, higher for the others).

The significance of each row against the baseline:
:mod:`workflow.significance`; the tables as text (Markdown, LaTeX):
:mod:`workflow.table_text`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from workflow.config import TABLE_ATTRIBUTES as ATTRIBUTES
from workflow.config import ConfigError, laid_out
from workflow.geometry import own_distance_rows
from workflow.retrieval.metrics import METRICS
from workflow.significance import (
    ALPHA,
    holm,
    mean_ci,
    paired_differences,
    sign_flip_p_value,
)


def _as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def select(metrics: pd.DataFrame, selectors: dict) -> pd.DataFrame:
    mask = np.ones(len(metrics), dtype=bool)
    for key, value in selectors.items():
        mask &= metrics[key].isin(_as_list(value)).to_numpy()
    return metrics[mask]


def declared_selection(metrics: pd.DataFrame, decl: dict) -> pd.DataFrame:
    """The rows a table's ``select`` picks: each loss in its own geometry
    (:func:`workflow.geometry.own_distance_rows`) unless the table selects
    or lays out a ``distance``, and exact retrieval unless it selects or
    lays out a ``retrieval`` (a table never averages a two-stage retrieval
    with the exact one as if they were seeds)."""
    selectors = decl.get("select", {})
    layout = laid_out(decl)
    if (
        "distance" not in selectors
        and "distance" not in layout
        and "distance" in metrics
    ):
        metrics = own_distance_rows(metrics)
    if (
        "retrieval" not in selectors
        and "retrieval" not in layout
        and "retrieval" in metrics
    ):
        metrics = metrics[metrics["retrieval"] == "exact"]
    return select(metrics, selectors)


def check_no_pooling(
    name: str, label: str, values: pd.DataFrame, section: str = "tables"
) -> None:
    """One table cell averages over seeds only: several results of one seed
    (different cells, retrievals or distances that the table neither
    selects one of nor lays out) stop with the attributes that differ.
    ``section``: the config section of the declaration (``rankings`` too)."""
    duplicated = values[values.duplicated(["seed", "metric"], keep=False)]
    if duplicated.empty:
        return
    differing = [
        a for a in ATTRIBUTES if a in duplicated and duplicated[a].nunique() > 1
    ]
    found = ", ".join(
        f"{a} ({', '.join(map(str, dict.fromkeys(duplicated[a])))})" for a in differing
    )
    raise ConfigError(
        f"config key {section}.{name}: row {label!r} would average several results of one seed that "
        f"differ in {found or 'nothing the table shows'}; a {section[:-1]} averages over seeds only: select "
        f"one value of each ({section}.{name}.select) or lay it out in "
        + ("rows, columns or blocks" if section == "tables" else "blocks")
    )


def reference_problem(name: str, decl: dict, rows: list[str] | None) -> str | None:
    """Why ``tables.<name>.reference`` does not fit the table, or None: every
    row (``rows``, its labels; None: not known yet, then only the metrics are
    checked) and every metric the table shows needs a published value, and
    the reference names no other row or metric (a typo would otherwise
    leave a cell without its published value)."""
    values = decl["reference"]["values"]
    key = f"config key tables.{name}.reference.values"
    if rows is not None:
        missing = [row for row in rows if row not in values]
        if missing:
            return (
                f"{key}: no published values for the row{'s' if len(missing) > 1 else ''} "
                f"{', '.join(map(repr, missing))}; give a value of every metric for every row of the "
                f"table ({', '.join(map(repr, rows))})"
            )
        other = [row for row in values if row not in rows]
        if other:
            return (
                f"{key}.{other[0]}: {other[0]!r} is no row of the table (rows: {', '.join(map(repr, rows))}); "
                "use the row labels"
            )
    for row, by_metric in values.items():
        missing = [m for m in decl["metrics"] if m not in (by_metric or {})]
        if missing:
            return (
                f"{key}.{row}: no published value of {', '.join(missing)}; give one for every metric "
                f"of tables.{name}.metrics ({', '.join(decl['metrics'])})"
            )
        other = [m for m in by_metric if m not in decl["metrics"]]
        if other:
            return (
                f"{key}.{row}.{other[0]}: {other[0]!r} is not among tables.{name}.metrics "
                f"({', '.join(decl['metrics'])}); add it there or remove it here"
            )
    return reference_value_problem(name, decl)


def reference_scale(reference: dict, metric: str) -> float:
    """What a published value of ``metric`` is divided by to read it as ours:
    100 for a fraction (:meth:`~workflow.retrieval.metric_registry.MetricRegistry.is_fraction`)
    under ``scale: percent``, else 1 (a count or cost is never rescaled)."""
    return (
        100.0
        if reference.get("scale", "fraction") == "percent"
        and METRICS.is_fraction(metric)
        else 1.0
    )


def reference_value_problem(name: str, decl: dict) -> str | None:
    """Why a published value cannot be what its ``scale`` says, or None:
    outside its metric's range (``bounds`` in the registry: a negative mAP,
    an error above 1, or above 100 in percent), a fraction given where
    ``scale`` is the default ``fraction`` but the value lies in (1, 100]
    (a percentage), or under ``scale: percent`` a value of a
    higher-is-better fraction in [0, 1] (below 1%, that is at or below
    chance: a fraction) or fractions that are all in [0, 1] (an error rate
    may be under 1%, but not every value of a paper's table)."""
    reference = decl["reference"]
    key = f"tables.{name}.reference"
    percent = reference.get("scale", "fraction") == "percent"
    published = [
        (row, metric, value)
        for row, by_metric in reference["values"].items()
        for metric, value in (by_metric or {}).items()
        if METRICS.find(metric)
    ]
    for row, metric, value in published:
        factor = reference_scale(reference, metric)
        low, high = (bound * factor for bound in METRICS.bounds(metric))
        unit = "%" if factor == 100 else ""
        where = f"config key {key}.values.{row}.{metric}: {value:g}"
        if value < low:
            return (
                f"{where} is below {low:g}{unit}, the least value of {metric}"
                + (" (it is never negative)" if low == 0 else "")
                + "; give the published value"
            )
        if value > high:
            if not percent and METRICS.is_fraction(metric) and value <= 100:
                return (
                    f"{where} is above 1, the greatest {metric} as a fraction; it looks like a "
                    f"percentage: set {key}.scale: percent, or give fractions"
                )
            return f"{where} is above {high:g}{unit}, the greatest value of {metric}; give the published value"
    fractions = [
        (row, metric, value)
        for row, metric, value in published
        if reference_scale(reference, metric) == 100
    ]
    small = [
        (row, metric, value)
        for row, metric, value in fractions
        if value <= 1
        and (
            not METRICS.lower_is_better(metric) or all(v <= 1 for _, _, v in fractions)
        )
    ]
    if small:
        row, metric, value = small[0]
        return (
            f"config key {key}.values.{row}.{metric}: {value:g} under {key}.scale: percent means {value:g}%, "
            f"which looks like a fraction ({value * 100:g}%); give percentages, or set {key}.scale: fraction"
        )
    return None


def check_declaration(name: str, decl: dict, metrics: pd.DataFrame) -> None:
    """Errors name the table and the key, and list what exists."""
    for key in ["rows", "columns", "blocks"]:
        for attribute in decl.get(key, []):
            if isinstance(attribute, str) and attribute not in ATTRIBUTES:
                raise ConfigError(
                    f"config key tables.{name}.{key}: {attribute!r} is not a cell attribute; "
                    f"use one of {', '.join(ATTRIBUTES)}"
                )
    selected = declared_selection(metrics, decl)
    if selected.empty:
        raise ConfigError(
            f"config key tables.{name}.select: no results match {decl.get('select')}"
        )
    missing = [m for m in decl["metrics"] if m not in set(selected["metric"])]
    if missing:
        raise ConfigError(
            f"config key tables.{name}.metrics: no values for {', '.join(missing)}; "
            f"available: {', '.join(sorted(set(selected['metric'])))}"
        )


def _row_frames(decl: dict, selected: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """(row label, its values) in declaration order, or in order of appearance."""
    rows = decl.get("rows", ["loss"])
    if rows and isinstance(rows[0], dict):
        out = []
        for row in rows:
            selectors = {k: v for k, v in row.items() if k != "label"}
            out.append(
                (
                    row.get("label", " / ".join(map(str, selectors.values()))),
                    select(selected, selectors),
                )
            )
        return out
    keys = selected[rows].drop_duplicates()
    return [
        (" / ".join(map(str, key)), select(selected, dict(zip(rows, key))))
        for key in keys.itertuples(index=False)
    ]


def build_table(name: str, decl: dict, metrics: pd.DataFrame) -> pd.DataFrame:
    """Long frame: one row per (block, row, column group, metric) with
    mean, std, ci_low, ci_high, n, then against the baseline: n_paired (seeds
    paired with it, a seed with a NaN on either side left out; <NA> where
    there is no comparison, as on the baseline's own row), diff,
    diff_ci_low, diff_ci_high (mean paired difference row - baseline and its
    95% Student-t interval; a description, not a test), p (sign-flip test),
    p_holm (Holm-adjusted over every comparison of the table), significant
    (p_holm < ALPHA), and best."""
    check_declaration(name, decl, metrics)
    selected = declared_selection(metrics, decl)
    selected = selected[selected["metric"].isin(decl["metrics"])]
    blocks, columns = decl.get("blocks", []), decl.get("columns", [])
    baseline = decl.get("baseline")
    records = []
    block_keys = (
        selected[blocks].drop_duplicates().itertuples(index=False) if blocks else [()]
    )
    for block in block_keys:
        in_block = select(selected, dict(zip(blocks, block)))
        rows = _row_frames(decl, in_block)
        # The baseline: an explicit row's label, else a loss.
        base_rows = dict(rows).get(baseline) if baseline else None
        for label, row_values in rows:
            column_keys = (
                row_values[columns].drop_duplicates().itertuples(index=False)
                if columns
                else [()]
            )
            for column in column_keys:
                values = select(row_values, dict(zip(columns, column)))
                check_no_pooling(name, label, values)
                base = None
                if base_rows is not None:
                    base = (
                        select(base_rows, dict(zip(columns, column)))
                        if label != baseline
                        else None
                    )
                elif baseline and not set(values["loss"]) <= {baseline}:
                    base = select(
                        in_block, {"loss": baseline, **dict(zip(columns, column))}
                    )
                for metric in decl["metrics"]:
                    v = values[values["metric"] == metric].set_index("seed")["value"]
                    if v.empty:
                        continue
                    mean, std, low, high = mean_ci(v.to_numpy())
                    test = {
                        "n_paired": None,
                        "diff": np.nan,
                        "diff_ci_low": np.nan,
                        "diff_ci_high": np.nan,
                        "p": np.nan,
                    }
                    if base is not None:
                        b = base[base["metric"] == metric].set_index("seed")["value"]
                        if b.index.has_duplicates:
                            raise ConfigError(
                                f"config key tables.{name}.baseline: {baseline!r} matches several "
                                "cells per seed (e.g. one loss on two backbones); name an explicit "
                                "row's label instead"
                            )
                        d = paired_differences(v, b)
                        diff, _, diff_low, diff_high = mean_ci(d)
                        test = {
                            "n_paired": len(d),
                            "diff": diff,
                            "diff_ci_low": diff_low,
                            "diff_ci_high": diff_high,
                            "p": sign_flip_p_value(d),
                        }
                    records.append(
                        {
                            **dict(zip(blocks, block)),
                            "row": label,
                            **dict(zip(columns, column)),
                            "metric": metric,
                            "mean": mean,
                            "std": std,
                            "ci_low": low,
                            "ci_high": high,
                            "n": len(v),
                            **test,
                        }
                    )
    frame = pd.DataFrame(records)
    frame["n_paired"] = frame["n_paired"].astype("Int64")
    group = blocks + columns + ["metric"]
    # Holm over every comparison of the table: one family, so that the
    # table's markers together keep the error rate below ALPHA.
    frame["p_holm"] = holm(frame["p"].to_numpy(float))
    frame.insert(frame.columns.get_loc("p") + 1, "p_holm", frame.pop("p_holm"))
    frame["significant"] = frame["p_holm"] < ALPHA
    frame["best"] = False
    for _, part in frame.groupby(group, sort=False) if group else [(None, frame)]:
        metric = part["metric"].iloc[0]
        best = (
            part["mean"].min()
            if METRICS.lower_is_better(metric)
            else part["mean"].max()
        )
        frame.loc[part.index[np.isclose(part["mean"], best)], "best"] = True
    if decl.get("reference"):
        add_reference(name, decl, frame)
    return frame


def add_reference(name: str, decl: dict, frame: pd.DataFrame) -> None:
    """Columns ``published`` (the reference's value, as a fraction like
    ours), ``published_diff`` (our mean - published) and
    ``published_in_ci`` (the published value inside our 95% interval of
    the mean; <NA> with fewer than 2 seeds) of a table with a reference."""
    problem = reference_problem(name, decl, list(dict.fromkeys(frame["row"])))
    if problem:
        raise ConfigError(problem)
    reference = decl["reference"]
    frame["published"] = [
        reference["values"][r.row][r.metric] / reference_scale(reference, r.metric)
        for r in frame.itertuples()
    ]
    frame["published_diff"] = frame["mean"] - frame["published"]
    inside = (frame["ci_low"] <= frame["published"]) & (
        frame["published"] <= frame["ci_high"]
    )
    frame["published_in_ci"] = inside.astype("boolean").mask(frame["ci_low"].isna())


def regime_declaration(metrics: pd.DataFrame, dataset: str, regime: str) -> dict:
    """The table every run writes for one dataset and regime
    (``results/tables/{dataset}/{regime}.*``), as a declaration for the one
    engine: a block per backbone, a row per loss, every quality metric
    evaluated (in the registry's order), and the config's first loss (the
    first in ``results/metrics.csv``) as the baseline of the significance
    marker."""
    shown = metrics[(metrics["dataset"] == dataset) & (metrics["regime"] == regime)]
    # A row the registry does not know (seconds_per_query of a run before
    # wall times left metrics.csv) is no quality metric.
    quality = [
        m
        for m in shown["metric"].unique()
        if METRICS.find(m) and METRICS.find(m)[0].quality
    ]
    seeds = shown["seed"].nunique()
    decl = {
        "caption": f"Retrieval on {dataset} ({regime}), {seeds} seed{'s' if seeds != 1 else ''}",
        "select": {"dataset": dataset, "regime": regime},
        "blocks": ["backbone"],
        "rows": ["loss"],
        "metrics": METRICS.order(quality),
    }
    if shown["loss"].nunique() > 1:
        decl["baseline"] = shown["loss"].iloc[0]
    return decl

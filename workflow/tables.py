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

Significance, against the row of the baseline in the same block and column
group, per metric, over the seeds both have (a seed fixes the split, so
seeds pair up; a seed with a NaN on either side, e.g. the accuracy of a loss
that cannot classify, is left out):

* an **exact paired sign-flip permutation test** (:func:`sign_flip_p_value`):
  statistic ``|mean(d)|`` of the paired differences ``d``; p is the share of
  the 2^n sign assignments at least as extreme, all enumerated up to
  EXACT_MAX_SEEDS seeds (a seeded Monte-Carlo with the +1 correction above).
  It makes no normality assumption and never returns p = 0: its smallest
  value is 2/2^n (0.25 with 3 seeds, 0.125 with 4, 0.0625 with 5), and
  all-zero differences give p = 1. Fewer than MIN_SEEDS (3) paired seeds:
  no test (NaN);
* **Holm** correction (:func:`holm`) over every comparison of the table
  (each row against the baseline, in every block, column group and
  metric): one family per table, so a table's markers hold together;
* ``*`` marks Holm-adjusted p < ALPHA (0.05). The CSV has the raw ``p``,
  ``p_holm``, ``n_paired`` and the mean paired difference ``diff`` (row -
  baseline) with its 95% Student-t interval ``diff_ci_low``/``diff_ci_high``.
  The caption (:func:`significance_note`) names the test, the seed count,
  the family size and the smallest p the seeds allow, and says when no
  marker can appear (always with 5 seeds or fewer).
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
from scipy import stats

from workflow.config import TABLE_ATTRIBUTES as ATTRIBUTES
from workflow.config import ConfigError, laid_out
from workflow.geometry import own_distance_rows
from workflow.retrieval.metrics import METRICS

ALPHA = 0.05
# The significance test: no test below MIN_SEEDS paired seeds; exact
# enumeration of the 2^n sign flips up to EXACT_MAX_SEEDS, else Monte-Carlo.
MIN_SEEDS = 3
EXACT_MAX_SEEDS = 16
MONTE_CARLO_RESAMPLES = 100_000


def mean_ci(
    values: np.ndarray, level: float = 0.95
) -> tuple[float, float, float, float]:
    """Mean, std (ddof 1), and the Student-t confidence interval of the mean."""
    values = np.asarray(values, dtype=float)
    mean = float(values.mean()) if len(values) else float("nan")
    if len(values) < 2:
        return mean, float("nan"), float("nan"), float("nan")
    std = float(values.std(ddof=1))
    half = stats.t.ppf(0.5 + level / 2, len(values) - 1) * std / np.sqrt(len(values))
    return mean, std, mean - half, mean + half


def paired_differences(values: pd.Series, baseline: pd.Series) -> np.ndarray:
    """``values - baseline`` over the seeds both have (index = seed), seeds
    where either value is NaN left out (e.g. accuracy of a loss that cannot
    classify)."""
    common = values.index.intersection(baseline.index)
    d = values.loc[common].to_numpy(float) - baseline.loc[common].to_numpy(float)
    return d[~np.isnan(d)]


def smallest_p(n: int) -> float:
    """The smallest p-value :func:`sign_flip_p_value` can return for ``n``
    paired seeds (NaN below MIN_SEEDS: no test)."""
    if n < MIN_SEEDS:
        return float("nan")
    return 2.0 / 2**n if n <= EXACT_MAX_SEEDS else 1.0 / (MONTE_CARLO_RESAMPLES + 1)


def sign_flip_p_value(d, rtol: float = 1e-9) -> float:
    """Two-sided paired sign-flip permutation test of "the differences are
    symmetric about 0": statistic ``|mean(d)|``; p is the share of the 2^n
    sign assignments whose statistic is at least the observed one (ties
    within ``rtol`` of the mean absolute difference count as at least).

    Exact (every assignment enumerated) up to EXACT_MAX_SEEDS differences,
    so p >= 2/2^n and all-zero differences give p = 1; above, a seeded
    Monte-Carlo sample of MONTE_CARLO_RESAMPLES assignments with the +1
    correction, p = (1 + hits) / (1 + resamples). Fewer than MIN_SEEDS
    differences: NaN (no test). NaN differences are dropped first."""
    d = np.asarray(d, dtype=float)
    d = d[~np.isnan(d)]
    n = len(d)
    if n < MIN_SEEDS:
        return float("nan")
    observed = abs(d.mean())
    threshold = observed - rtol * np.abs(d).mean()
    if n <= EXACT_MAX_SEEDS:
        bits = (np.arange(2**n)[:, None] >> np.arange(n)) & 1
        means = np.abs((1 - 2 * bits) @ d) / n
        return float(np.count_nonzero(means >= threshold) / 2**n)
    rng = np.random.default_rng(0)
    hits, left = 0, MONTE_CARLO_RESAMPLES
    while left:
        size = min(left, 10_000)
        signs = rng.choice([-1.0, 1.0], size=(size, n))
        hits += int(np.count_nonzero(np.abs(signs @ d) / n >= threshold))
        left -= size
    return (1 + hits) / (1 + MONTE_CARLO_RESAMPLES)


def paired_p_value(values: pd.Series, baseline: pd.Series) -> float:
    """Sign-flip test (:func:`sign_flip_p_value`) of the paired differences
    over the seeds both series have (index = seed); NaN below MIN_SEEDS."""
    return sign_flip_p_value(paired_differences(values, baseline))


def holm(p_values) -> np.ndarray:
    """Holm step-down adjusted p-values; NaN entries (no test) stay NaN and
    are not counted in the family. The i-th smallest of m p-values becomes
    max over j <= i of min(1, (m - j + 1) p_(j))."""
    p = np.asarray(p_values, dtype=float)
    out = np.full(p.shape, np.nan)
    tested = np.flatnonzero(~np.isnan(p))
    order = tested[np.argsort(p[tested], kind="stable")]
    m = len(order)
    adjusted = np.minimum(1.0, (m - np.arange(m)) * p[order])
    out[order] = np.maximum.accumulate(adjusted)
    return out


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
    100 for a fraction (:meth:`~workflow.retrieval.metrics.MetricRegistry.is_fraction`)
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


def _cell_text(r, digits: int, bold: str, escape=str, factor: float = 1.0) -> str:
    mean, std = r["mean"] * factor, r["std"] * factor
    text = (
        f"{mean:.{digits}f}"
        if np.isnan(std)
        else f"{mean:.{digits}f} ± {std:.{digits}f}"
    )
    if r["significant"]:
        text += "*"
    text = escape(text)
    return bold.format(text) if r["best"] else text


def wide_text(
    frame: pd.DataFrame, decl: dict, bold: str, digits: int = 3, escape=str
) -> pd.DataFrame:
    """Rows x (column groups, metrics) of formatted strings (each passed
    through ``escape`` before ``bold`` wraps the best one)."""
    blocks, columns = decl.get("blocks", []), decl.get("columns", [])
    reference = decl.get("reference")
    if reference:
        frame = _reference_parts(frame, reference, bold, escape)
    else:
        frame = frame.assign(
            text=[_cell_text(r, digits, bold, escape) for _, r in frame.iterrows()]
        )
    index = blocks + ["row"]
    header = columns + ["metric"] + (["part"] if reference else [])
    wide = frame.pivot_table(
        index=index, columns=header, values="text", aggfunc="first", sort=False
    )
    order = frame[index].drop_duplicates()
    wide = wide.reindex(
        pd.MultiIndex.from_frame(order) if len(index) > 1 else order["row"]
    )
    col_order = frame[header].drop_duplicates()
    wide = wide.reindex(
        columns=pd.MultiIndex.from_frame(col_order)
        if len(header) > 1
        else col_order["metric"]
    )
    rows = decl.get("rows", ["loss"])
    row_title = "setting" if rows and isinstance(rows[0], dict) else " / ".join(rows)
    return wide.rename_axis(index=[*blocks, row_title] if blocks else row_title)


def _reference_parts(
    frame: pd.DataFrame, reference: dict, bold: str, escape
) -> pd.DataFrame:
    """Four texts per cell of a table with a reference, in its scale: the
    published value, ours (mean ± std, bold and marker as usual), the
    difference, and whether the published value lies in our 95% interval
    (left out when no row has one: fewer than 2 seeds). Counts and costs
    keep their values under ``scale: percent`` (:func:`reference_scale`)."""
    digits = 2 if reference.get("scale", "fraction") == "percent" else 3
    parts = ["published", "ours", "diff"]
    if frame["published_in_ci"].notna().any():
        parts.append("in 95% CI")
    records = []
    for _, r in frame.iterrows():
        factor = reference_scale(reference, r["metric"])
        texts = {
            "published": escape(f"{r['published'] * factor:.{digits}f}"),
            "ours": _cell_text(r, digits, bold, escape, factor),
            "diff": escape(f"{r['published_diff'] * factor:+.{digits}f}"),
            "in 95% CI": ""
            if pd.isna(r["published_in_ci"])
            else ("yes" if r["published_in_ci"] else "no"),
        }
        records += [
            {**r.to_dict(), "part": part, "text": texts[part]} for part in parts
        ]
    return pd.DataFrame(records)


def reference_note(decl: dict) -> str:
    """What the published columns of a table with a reference mean."""
    reference = decl["reference"]
    unit = ""
    if reference.get("scale", "fraction") == "percent":
        rescaled = [
            m for m in decl["metrics"] if METRICS.find(m) and not METRICS.is_fraction(m)
        ]
        unit = (
            " (in percent, ours too"
            + (f"; {', '.join(rescaled)} as they are" if rescaled else "")
            + ")"
        )
    return (
        f"published: {reference['source']}{unit}; diff: ours - published; in 95% CI: whether the "
        "published value lies inside the 95% Student-t interval of our mean over seeds (no such "
        "column with one seed)"
    )


def _span(values) -> str:
    values = sorted(set(int(v) for v in values))
    return str(values[0]) if len(values) == 1 else f"{values[0]}-{values[-1]}"


def significance_note(frame: pd.DataFrame, decl: dict) -> str:
    """What ``*`` means in this table: the test, the seeds, the Holm family
    size, and the smallest p the seed count allows (so that a table where
    no marker can appear says so)."""
    baseline = decl["baseline"]
    compared = frame[frame["n_paired"].notna()]
    tested = compared[compared["p"].notna()]
    if tested.empty:
        return (
            f"*: no test against {baseline} (fewer than {MIN_SEEDS} seeds paired with it), "
            "so no marker"
        )
    exact = tested["n_paired"].max() <= EXACT_MAX_SEEDS
    test = (
        "an exact paired sign-flip permutation test"
        if exact
        else f"a paired sign-flip permutation test (exact up to {EXACT_MAX_SEEDS} seeds, "
        f"else {MONTE_CARLO_RESAMPLES} random sign flips)"
    )
    k = len(tested)
    note = (
        f"*: differs from {baseline} by {test} over {_span(tested['n_paired'])} seeds, "
        f"Holm-corrected over the table's {k} comparison{'s' if k != 1 else ''}, p < {ALPHA:g}"
    )
    n_max = int(tested["n_paired"].max())
    floor = smallest_p(n_max)
    holm_floor = min(1.0, k * floor)
    note += f"; with {n_max} seeds the smallest possible p is {floor:.3g}"
    if floor < ALPHA and holm_floor > floor:
        note += f", {holm_floor:.3g} after Holm"
    if holm_floor >= ALPHA:
        note += ", so no marker can appear"
    if len(tested) < len(compared):
        note += f"; no test where fewer than {MIN_SEEDS} seeds pair up"
    return note


def render(name: str, decl: dict, frame: pd.DataFrame) -> tuple[str, str, str]:
    """CSV (long, numeric), Markdown and LaTeX (booktabs) of a built table."""
    caption = decl.get("caption", name)
    note = "mean ± std over seeds; bold: best per column"
    if decl.get("baseline"):
        note += "; " + significance_note(frame, decl)
    if decl.get("reference"):
        note += "; " + reference_note(decl)
    csv = frame.to_csv(index=False)
    # Cells are our numbers (bold and marker meant as Markdown); captions,
    # labels and names are the user's text, escaped.
    md_wide = wide_text(frame, decl, "**{}**")
    md_wide.index = md_wide.index.map(
        lambda label: _escape_label(label, markdown_escape)
    )
    md_wide = md_wide.rename_axis(
        index=[markdown_escape(n) for n in md_wide.index.names]
    )
    md_wide.columns = [
        markdown_escape(" ".join(map(str, c)) if isinstance(c, tuple) else c)
        for c in md_wide.columns
    ]
    # A reference's signed differences keep their sign and digits as text.
    numparse = {"disable_numparse": True} if decl.get("reference") else {}
    markdown = (
        f"**{markdown_escape(caption)}** ({markdown_escape(note)})\n\n"
        + md_wide.reset_index().to_markdown(index=False, **numparse)
        + "\n"
    )
    tex_wide = wide_text(frame, decl, r"\textbf{{{}}}", escape=tex_escape)
    tex_wide.index = tex_wide.index.map(_escape_label)
    tex_wide = tex_wide.rename_axis(index=[tex_escape(n) for n in tex_wide.index.names])
    tex_wide.columns = tex_wide.columns.map(_escape_label)
    tex_wide.columns.names = [
        None if n is None else tex_escape(n) for n in tex_wide.columns.names
    ]
    latex = tex_wide.style.to_latex(
        hrules=True,
        caption=tex_escape(f"{caption} ({note})"),
        label=f"tab:{name}",
        position="t",
        multicol_align="c",
    )
    return csv, markdown, latex


# Every character that LaTeX reads as markup, and what stands for it in
# text: the ten specials (\ { } # $ % & _ ~ ^), < > | (which the default
# OT1 font encoding prints as other glyphs) and ±.
TEX_SPECIALS = {
    "\\": r"\textbackslash{}",
    "{": r"\{",
    "}": r"\}",
    "#": r"\#",
    "$": r"\$",
    "%": r"\%",
    "&": r"\&",
    "_": r"\_",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "<": "$<$",
    ">": "$>$",
    "|": r"\textbar{}",
    "±": r"$\pm$",
}
_TEX_SPECIAL = re.compile("|".join(map(re.escape, TEX_SPECIALS)))


def tex_escape(text) -> str:
    """``text`` as LaTeX that prints it: every character of TEX_SPECIALS
    replaced in one pass (so a replacement is never escaped again)."""
    return _TEX_SPECIAL.sub(lambda m: TEX_SPECIALS[m.group()], str(text))


def _escape_label(label, escape=tex_escape):
    return (
        tuple(escape(part) for part in label)
        if isinstance(label, tuple)
        else escape(label)
    )


# Characters of user text (captions, row labels, names) that Markdown would
# read as markup, and what stands for each: a backslash escape (one that
# Python-Markdown and CommonMark both read: \ ` * _ { } [ ] |), or an
# entity for the characters that start markup only before certain others
# (< an HTML tag, & an entity, ~ GFM's strikethrough); a line break would
# end a table row, so it becomes a space. An underscore inside a word
# (``proxy_anchor``) emphasises nothing in either, so it stays as written.
_MARKDOWN_SPECIAL = re.compile(
    r"[\\`*{}\[\]|]|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])|<(?=[A-Za-z/!?])|&(?=#?\w+;)|~|\r\n|[\r\n]"
)
_MARKDOWN_ENTITY = {
    "<": "&lt;",
    "&": "&amp;",
    "~": "&#126;",
    "\r\n": " ",
    "\r": " ",
    "\n": " ",
}


def markdown_escape(text) -> str:
    """``text`` as Markdown that prints it, in a table cell or a paragraph:
    a ``|`` no longer splits a cell, a ``*`` or ``_`` no longer emphasises,
    a line break no longer ends a row (every character in one pass)."""
    return _MARKDOWN_SPECIAL.sub(
        lambda m: _MARKDOWN_ENTITY.get(m.group(), "\\" + m.group()), str(text)
    )

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
best mean per column (per block) is bold; lower is better for ``*_error``
and for the cost metrics ``*_per_query``, higher for every other metric.

Significance: a **paired t-test over seeds** (``scipy.stats.ttest_rel``;
seeds pair up because a seed fixes the split) between a row and the row of
the baseline loss in the same block and column; ``*`` marks p < 0.05. With
fewer than two common seeds there is no test and no marker.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from workflow.config import ConfigError

# Cell attributes, then the fixed factors (workflow.config.FIXED_FACTORS)
# that results/metrics.csv carries as columns: a table that compares cells
# differing in a factor must lay that factor out.
ATTRIBUTES = ["dataset", "regime", "backbone", "loss", "retrieval",
              "embedding_size", "optimizer", "epochs", "batch_size", "augment"]
ALPHA = 0.05


def lower_is_better(metric: str) -> bool:
    return metric.endswith("_error") or metric.endswith("_per_query")


def mean_ci(values: np.ndarray, level: float = 0.95) -> tuple[float, float, float, float]:
    """Mean, std (ddof 1), and the Student-t confidence interval of the mean."""
    values = np.asarray(values, dtype=float)
    mean = float(values.mean())
    if len(values) < 2:
        return mean, float("nan"), float("nan"), float("nan")
    std = float(values.std(ddof=1))
    half = stats.t.ppf(0.5 + level / 2, len(values) - 1) * std / np.sqrt(len(values))
    return mean, std, mean - half, mean + half


def paired_p_value(values: pd.Series, baseline: pd.Series) -> float:
    """Paired t-test over the seeds both series have (index = seed)."""
    common = values.index.intersection(baseline.index)
    if len(common) < 2:
        return float("nan")
    a, b = values.loc[common].to_numpy(float), baseline.loc[common].to_numpy(float)
    if np.allclose(a - b, (a - b)[0]):  # constant difference: t undefined
        return 0.0 if not np.isclose((a - b)[0], 0) else 1.0
    return float(stats.ttest_rel(a, b).pvalue)


def _as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def select(metrics: pd.DataFrame, selectors: dict) -> pd.DataFrame:
    mask = np.ones(len(metrics), dtype=bool)
    for key, value in selectors.items():
        mask &= metrics[key].isin(_as_list(value)).to_numpy()
    return metrics[mask]


def check_declaration(name: str, decl: dict, metrics: pd.DataFrame) -> None:
    """Errors name the table and the key, and list what exists."""
    for key in ["rows", "columns", "blocks"]:
        for attribute in decl.get(key, []):
            if isinstance(attribute, str) and attribute not in ATTRIBUTES:
                raise ConfigError(
                    f"config key tables.{name}.{key}: {attribute!r} is not a cell attribute; "
                    f"use one of {', '.join(ATTRIBUTES)}"
                )
    selected = select(metrics, decl.get("select", {}))
    if selected.empty:
        raise ConfigError(f"config key tables.{name}.select: no results match {decl.get('select')}")
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
            out.append((row.get("label", " / ".join(map(str, selectors.values()))), select(selected, selectors)))
        return out
    keys = selected[rows].drop_duplicates()
    return [
        (" / ".join(map(str, key)), select(selected, dict(zip(rows, key))))
        for key in keys.itertuples(index=False)
    ]


def build_table(name: str, decl: dict, metrics: pd.DataFrame) -> pd.DataFrame:
    """Long frame: one row per (block, row, column group, metric) with
    mean, std, ci_low, ci_high, n, p_value, significant, best."""
    check_declaration(name, decl, metrics)
    selected = select(metrics, decl.get("select", {}))
    selected = selected[selected["metric"].isin(decl["metrics"])]
    blocks, columns = decl.get("blocks", []), decl.get("columns", [])
    baseline = decl.get("baseline")
    records = []
    block_keys = selected[blocks].drop_duplicates().itertuples(index=False) if blocks else [()]
    for block in block_keys:
        in_block = select(selected, dict(zip(blocks, block)))
        rows = _row_frames(decl, in_block)
        # The baseline: an explicit row's label, else a loss.
        base_rows = dict(rows).get(baseline) if baseline else None
        for label, row_values in rows:
            column_keys = row_values[columns].drop_duplicates().itertuples(index=False) if columns else [()]
            for column in column_keys:
                values = select(row_values, dict(zip(columns, column)))
                base = None
                if base_rows is not None:
                    base = select(base_rows, dict(zip(columns, column))) if label != baseline else None
                elif baseline and not set(values["loss"]) <= {baseline}:
                    base = select(in_block, {"loss": baseline, **dict(zip(columns, column))})
                for metric in decl["metrics"]:
                    v = values[values["metric"] == metric].set_index("seed")["value"]
                    if v.empty:
                        continue
                    mean, std, low, high = mean_ci(v.to_numpy())
                    p = float("nan")
                    if base is not None:
                        b = base[base["metric"] == metric].set_index("seed")["value"]
                        if b.index.has_duplicates:
                            raise ConfigError(
                                f"config key tables.{name}.baseline: {baseline!r} matches several "
                                "cells per seed (e.g. one loss on two backbones); name an explicit "
                                "row's label instead"
                            )
                        p = paired_p_value(v, b) if not b.empty else float("nan")
                    records.append({
                        **dict(zip(blocks, block)), "row": label, **dict(zip(columns, column)),
                        "metric": metric, "mean": mean, "std": std, "ci_low": low, "ci_high": high,
                        "n": len(v), "p_value": p, "significant": bool(p < ALPHA),
                    })
    frame = pd.DataFrame(records)
    group = blocks + columns + ["metric"]
    frame["best"] = False
    for _, part in frame.groupby(group, sort=False) if group else [(None, frame)]:
        metric = part["metric"].iloc[0]
        best = part["mean"].min() if lower_is_better(metric) else part["mean"].max()
        frame.loc[part.index[np.isclose(part["mean"], best)], "best"] = True
    return frame


def _cell_text(r, digits: int, bold: str) -> str:
    text = f"{r['mean']:.{digits}f}" if np.isnan(r["std"]) else f"{r['mean']:.{digits}f} ± {r['std']:.{digits}f}"
    if r["significant"]:
        text += "*"
    return bold.format(text) if r["best"] else text


def wide_text(frame: pd.DataFrame, decl: dict, bold: str, digits: int = 3) -> pd.DataFrame:
    """Rows x (column groups, metrics) of formatted strings."""
    blocks, columns = decl.get("blocks", []), decl.get("columns", [])
    frame = frame.assign(text=[_cell_text(r, digits, bold) for _, r in frame.iterrows()])
    index = blocks + ["row"]
    header = columns + ["metric"]
    wide = frame.pivot_table(index=index, columns=header, values="text", aggfunc="first", sort=False)
    order = frame[index].drop_duplicates()
    wide = wide.reindex(pd.MultiIndex.from_frame(order) if len(index) > 1 else order["row"])
    col_order = frame[header].drop_duplicates()
    wide = wide.reindex(columns=pd.MultiIndex.from_frame(col_order) if len(header) > 1 else col_order["metric"])
    rows = decl.get("rows", ["loss"])
    row_title = "setting" if rows and isinstance(rows[0], dict) else " / ".join(rows)
    return wide.rename_axis(index=[*blocks, row_title] if blocks else row_title)


def render(name: str, decl: dict, frame: pd.DataFrame) -> tuple[str, str, str]:
    """CSV (long, numeric), Markdown and LaTeX (booktabs) of a built table."""
    caption = decl.get("caption", name)
    note = "mean ± std over seeds; bold: best per column"
    if decl.get("baseline"):
        note += f"; *: differs from {decl['baseline']} (paired t-test over seeds, p < 0.05)"
    csv = frame.to_csv(index=False)
    md_wide = wide_text(frame, decl, "**{}**")
    md_wide.columns = [" ".join(map(str, c)) if isinstance(c, tuple) else str(c) for c in md_wide.columns]
    markdown = f"**{caption}** ({note})\n\n" + md_wide.reset_index().to_markdown(index=False) + "\n"
    tex_wide = wide_text(frame, decl, r"\textbf{{{}}}")
    tex_wide = tex_wide.map(tex_escape)
    tex_wide.index = tex_wide.index.map(_escape_label)
    tex_wide.columns = tex_wide.columns.map(_escape_label)
    latex = tex_wide.style.to_latex(
        hrules=True,
        caption=tex_escape(f"{caption} ({note})"),
        label=f"tab:{name}",
        position="t",
        multicol_align="c",
    )
    return csv, markdown, latex


def tex_escape(text) -> str:
    return str(text).replace("_", r"\_").replace("%", r"\%").replace("&", r"\&").replace("±", r"$\pm$")


def _escape_label(label):
    return tuple(tex_escape(part) for part in label) if isinstance(label, tuple) else tex_escape(label)

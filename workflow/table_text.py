"""The declared tables (:mod:`workflow.tables`) as text: the wide table
of ``mean ± std`` cells with the best bold and significance markers, its
notes (published values, the significance test), and Markdown and LaTeX
escaping.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from workflow.retrieval.metrics import METRICS
from workflow.significance import (
    ALPHA,
    EXACT_MAX_SEEDS,
    MIN_SEEDS,
    MONTE_CARLO_RESAMPLES,
    smallest_p,
)
from workflow.tables import reference_scale


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

"""select: per (dataset, regime, backbone, loss), the trial setting with
the best validation score, and the selection table (its sensitivity figure
is drawn by workflow/figures.py).

Trials are trained and evaluated like cells, on the validation split (see
``validation_split.make_validation_split``); their metrics files are the only input
of a selection, so the test queries and database cannot influence it.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from workflow.geometry import own_distance_rows
from workflow.io import read_csv
from workflow.retrieval.metrics import METRICS


def trial_scores(
    trials: list[str], seeds: list[int], metric_files: list[str], metric: str
) -> pd.DataFrame:
    """Mean validation ``metric`` (exact retrieval in the loss's own
    geometry) per trial over the
    seeds; ``metric_files`` are in the order of ``trials`` x ``seeds``."""
    records = []
    files = iter(metric_files)
    for trial in trials:
        for seed in seeds:
            path = next(files)
            frame = own_distance_rows(
                read_csv(path, ["geometry", "distance", "retrieval", "metric", "value"])
            )
            rows = frame[(frame["retrieval"] == "exact") & (frame["metric"] == metric)]
            if rows.empty:
                raise ValueError(
                    f"config key selection.metric: {metric!r} is not in {path}; available: "
                    f"{', '.join(sorted(frame.loc[frame['retrieval'] == 'exact', 'metric']))}"
                )
            records.append(
                {"trial": trial, "seed": seed, "value": float(rows["value"].iloc[0])}
            )
    scores = pd.DataFrame(records).groupby("trial", sort=False)["value"].mean()
    return scores.reindex(trials).rename("score").reset_index()


def select_trial(scores: pd.DataFrame, metric: str) -> str:
    """The best trial (in the metric's registered direction); ties go to
    the first in config order."""
    values = scores["score"].to_numpy()
    best = values.min() if METRICS.lower_is_better(metric) else values.max()
    return str(scores["trial"].iloc[int(np.flatnonzero(np.isclose(values, best))[0])])


def selection_record(
    loss: str, metric: str, scores: pd.DataFrame, sweeps: dict, seeds: list[int]
) -> dict:
    """What results/selection/.../<loss>.json holds."""
    chosen = select_trial(scores, metric)
    return {
        "loss": loss,
        "metric": metric,
        "seeds": list(seeds),
        "trials": len(scores),
        "selected": chosen,
        "values": sweeps[chosen]["values"],
        "score": float(scores.set_index("trial").loc[chosen, "score"]),
        "scores": [
            {"trial": t, "values": sweeps[t]["values"], "score": float(s)}
            for t, s in zip(scores["trial"], scores["score"])
        ],
    }


def resolve_settings(settings: dict, selection_file: str | None) -> dict:
    """A cell's settings: as given, or, for a selected loss (settings
    ``{"candidates": {trial: settings}}``), the selected trial's."""
    if "candidates" not in settings:
        return settings
    if selection_file is None:
        raise ValueError("settings with candidates need the selection file of the cell")
    with open(selection_file) as f:
        chosen = json.load(f)["selected"]
    return settings["candidates"][chosen]


def selection_table(records: list[dict], cells: list[tuple]) -> pd.DataFrame:
    """One row per (dataset, regime, backbone, loss): trials run, the
    selected values, its validation score."""
    rows = []
    for (dataset, regime, backbone), record in zip(cells, records):
        values = record["values"]
        rows.append(
            {
                "dataset": dataset,
                "regime": regime,
                "backbone": backbone,
                "loss": record["loss"],
                "trials": record["trials"],
                "metric": record["metric"],
                "score": record["score"],
                "selected": ", ".join(f"{k}={v}" for k, v in values.items())
                or "(no sweep)",
            }
        )
    return pd.DataFrame(rows)


def trials_table(records: list[dict], cells: list[tuple]) -> pd.DataFrame:
    """One row per trial of every (dataset, regime, backbone, loss): its
    values (one column per searched key), its validation score, its rank
    among the loss's trials (1 = best, in the metric's direction) and
    whether it was selected."""
    rows = []
    for (dataset, regime, backbone), record in zip(cells, records):
        scores = pd.Series([s["score"] for s in record["scores"]])
        ranks = scores.rank(
            ascending=METRICS.lower_is_better(record["metric"]), method="min"
        )
        for score, rank in zip(record["scores"], ranks):
            rows.append(
                {
                    "dataset": dataset,
                    "regime": regime,
                    "backbone": backbone,
                    "loss": record["loss"],
                    "trial": score["trial"],
                    **score["values"],
                    "metric": record["metric"],
                    "score": score["score"],
                    "rank": int(rank),
                    "selected": score["trial"] == record["selected"],
                }
            )
    return pd.DataFrame(rows)


def trials_markdown(table: pd.DataFrame) -> str:
    """The trials table in Markdown: a section per loss (and dataset,
    regime, backbone), its trials from best to worst, the searched keys
    as columns, the selected trial in bold."""
    # Imported here: train and embed jobs import this module (for
    # resolve_settings), and table_text brings in the table engine and scipy.
    from workflow.table_text import markdown_escape as esc

    parts = []
    keys = ["dataset", "regime", "backbone", "loss"]
    for key, group in table.groupby(keys, sort=False):
        group = group.dropna(axis=1, how="all").sort_values("rank", kind="stable")
        shown = group.drop(columns=keys + ["metric", "selected"])
        shown["trial"] = [
            f"**{t}**" if chosen else t
            for t, chosen in zip(group["trial"], group["selected"])
        ]
        metric = group["metric"].iloc[0]
        parts.append(
            f"**{esc(key[3])}** ({esc(key[0])}, {esc(key[1])}, {esc(key[2])}): "
            f"validation {metric} of "
            f"every trial, best first; selected in bold\n\n"
            + shown.to_markdown(index=False, floatfmt=".4g")
        )
    return "\n\n".join(parts) + "\n"


def selection_texts(records: list[dict], cells: list[tuple]) -> dict[str, str]:
    """What rule ``selection_table`` writes, by file name: ``table.csv``,
    ``table.md`` (the selected settings) and ``trials.csv``, ``trials.md``
    (every trial's values, validation score and rank); also what
    ``python -m workflow.regenerate`` writes from a committed run's
    selection records."""
    table = selection_table(records, cells)
    budget = ", ".join(sorted({str(n) for n in table["trials"]}))
    trials = trials_table(records, cells)
    return {
        "table.csv": table.to_csv(index=False),
        "table.md": (
            f"**Selected settings** (validation {table['metric'].iloc[0]}; "
            f"trials per loss: {budget})\n\n" + table.to_markdown(index=False) + "\n"
        ),
        "trials.csv": trials.to_csv(index=False),
        "trials.md": "**Every trial** (validation scores)\n\n"
        + trials_markdown(trials),
    }

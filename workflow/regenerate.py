"""Tables of a committed run again from its metrics, with today's table
engine (:mod:`workflow.tables`)::

    python -m workflow.regenerate docs/results/<run> [--out DIR]

reads ``<run>/config.yaml`` and ``<run>/metrics.csv`` and writes what the
pipeline's table rules write from ``results/metrics.csv``: every table
declared under ``tables:`` (``{name}.{csv,md,tex}``, rule
``declared_table``) and the table of each dataset and regime
(``{dataset}/{regime}.{csv,md,tex}``, rule ``table``), into
``<run>/tables`` (or ``DIR``). A tuned run's folder also holds its
selection records, ``<run>/selection/{dataset}/{regime}/{backbone}/{loss}.json``
(rule ``select``'s outputs, copied as they are); from them it writes the
selection tables too (``selection/table.{csv,md}``,
``selection/trials.{csv,md}``, rule ``selection_table``). No cell is trained or evaluated again, so a
change of the engine (markers, captions, layout) reaches the committed
results without a rerun.

A run stopped before every cell finished (``--keep-going``, a time limit)
has fewer seeds for some losses; every caption then says which
(:func:`fewer_seeds_note`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd
import yaml

from workflow.config_loader import load_config
from workflow.io import read_csv, save_text
from workflow.report import CELL_COLUMNS
from workflow.selection import selection_texts
from workflow.table_text import render
from workflow.tables import build_table, regime_declaration
from workflow.targets import selection_keys

# The columns every metrics.csv has; ``geometry`` and ``distance`` came
# later (a run without them was retrieved in one distance).
REQUIRED_COLUMNS = CELL_COLUMNS + ["retrieval", "metric", "value"]


def fewer_seeds_note(metrics: pd.DataFrame) -> str:
    """``seeds per loss where fewer: lm 2, ...`` when some loss has fewer
    seeds than the most any has, else ``""``."""
    seeds = metrics.groupby("loss", sort=False)["seed"].nunique()
    short = ", ".join(f"{loss} {n}" for loss, n in seeds.items() if n < seeds.max())
    return f"seeds per loss where fewer: {short}" if short else ""


def declarations(config: dict, metrics: pd.DataFrame) -> dict[str, dict]:
    """Table name (its path under ``tables/`` without the extension) ->
    declaration: those under ``tables:``, then one per dataset and regime
    with results (:func:`workflow.tables.regime_declaration`)."""
    out = dict(config["tables"])
    for dataset in config["datasets"]:
        for regime in config["regimes"]:
            if ((metrics["dataset"] == dataset) & (metrics["regime"] == regime)).any():
                out[f"{dataset}/{regime}"] = regime_declaration(
                    metrics, dataset, regime
                )
    return out


def table_texts(config: dict, metrics: pd.DataFrame) -> dict[str, str]:
    """Relative path (under ``tables/``) -> text of every table the
    pipeline's table rules write for ``config`` from ``metrics``
    (``.csv``, ``.md`` and ``.tex`` of each of :func:`declarations`)."""
    note = fewer_seeds_note(metrics)
    texts = {}
    for name, declaration in declarations(config, metrics).items():
        if note:
            declaration = {
                **declaration,
                "caption": f"{declaration.get('caption', name)} ({note})",
            }
        csv, markdown, latex = render(
            name, declaration, build_table(name, declaration, metrics)
        )
        texts.update({f"{name}.csv": csv, f"{name}.md": markdown, f"{name}.tex": latex})
    return texts


def selection_records(folder, config: dict) -> tuple[list[dict], list[tuple]]:
    """The selection records of the run in ``folder`` in the pipeline's
    order, and their (dataset, regime, backbone) cells; none where the
    folder has no ``selection/`` (an untuned run)."""
    root = Path(folder) / "selection"
    if not root.is_dir():
        return [], []
    records, cells = [], []
    for dataset, regime, backbone, loss in selection_keys(config):
        path = root / dataset / regime / backbone / f"{loss}.json"
        if not path.is_file():
            raise FileNotFoundError(
                f"{path}: no such file; a results folder with selection/ holds the "
                "selection record (rule select's JSON) of every tuned loss of its config"
            )
        records.append(json.loads(path.read_text()))
        cells.append((dataset, regime, backbone))
    return records, cells


def read_run(folder) -> tuple[dict, pd.DataFrame]:
    """The checked config and the metrics of the run in ``folder``."""
    folder = Path(folder)
    config_path = folder / "config.yaml"
    if not config_path.is_file():
        raise FileNotFoundError(
            f"{config_path}: no such file; give a results folder holding the run's "
            "config.yaml and metrics.csv (e.g. docs/results/cifar100_fewshot)"
        )
    config = load_config(yaml.safe_load(config_path.read_text()))
    return config, read_csv(folder / "metrics.csv", REQUIRED_COLUMNS)


def regenerate(folder, out=None) -> list[Path]:
    """Write the tables of the run in ``folder`` (its ``config.yaml`` and
    ``metrics.csv``) into ``out`` (default ``folder/tables``); the paths
    written."""
    config, metrics = read_run(folder)
    out = Path(out) if out is not None else Path(folder) / "tables"
    written = []
    texts = table_texts(config, metrics)
    records, cells = selection_records(folder, config)
    if records:
        for name, text in selection_texts(records, cells).items():
            texts[f"selection/{name}"] = text
    for relative, text in texts.items():
        save_text(out / relative, text)
        written.append(out / relative)
    return written


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m workflow.regenerate", description=__doc__.split("::")[0].strip()
    )
    parser.add_argument(
        "folder",
        help="a results folder with config.yaml and metrics.csv, e.g. docs/results/cifar100_fewshot",
    )
    parser.add_argument("--out", help="write the tables here instead of FOLDER/tables")
    args = parser.parse_args(argv)
    for path in regenerate(args.folder, args.out):
        print(path)


if __name__ == "__main__":
    main()

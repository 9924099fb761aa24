"""Cells and their settings, with no Snakemake: the list of cells and
trials of a loaded config (:mod:`workflow.config_loader`), each cell's
resolved settings and their hash, the fixed factors a comparison keeps
equal and the per-dataset evaluation mapping.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass


class ConfigError(ValueError):
    """A config value is wrong; the message names its key."""


# A cell's folder below results/cells (and trials', logs', benchmarks'
# folders): the one place the pattern is written. Snakemake fills it in as
# wildcards (workflow/targets.py, cell_path); Python fills it in with a cell.
CELL_PATTERN = "{dataset}/{regime}/{backbone}/{loss}/seed{seed}"


@dataclass(frozen=True, order=True)
class Cell:
    dataset: str
    regime: str
    backbone: str
    loss: str
    seed: int

    @property
    def path(self) -> str:
        return CELL_PATTERN.format(**vars(self))


# Factors that must be equal within one comparison table (Musgrave et al.
# 2020): each maps a cell's settings to its value.
FIXED_FACTORS = {
    "backbone": lambda s: s["backbone"],
    "embedding_size": lambda s: s["embedding_size"],
    "optimizer": lambda s: s["training"].get("optimizer"),
    "epochs": lambda s: s["training"].get("epochs"),
    "batch_size": lambda s: s["training"].get("batch_size"),
    "augment": lambda s: s["training"].get("augment", "none"),
}
# What a table may select by and lay out: the cell attributes, distance
# and retrieval, then the fixed factors that results/metrics.csv carries
# as columns (a table that compares cells differing in a factor must lay
# that factor out). Checked before any job (workflow.guards).
TABLE_ATTRIBUTES = [
    "dataset",
    "regime",
    "backbone",
    "loss",
    "distance",
    "retrieval",
    *[factor for factor in FIXED_FACTORS if factor != "backbone"],
]


def cell_factors(config: dict, cell: Cell) -> dict:
    """The fixed factors of a cell (columns of results/metrics.csv)."""
    settings = cell_settings(config, cell)
    return {
        name: get(settings) for name, get in FIXED_FACTORS.items() if name != "backbone"
    }


# Recall@k cutoffs of a class-disjoint dataset that registers none.
DEFAULT_RECALL_AT = [1, 2, 4, 8]


def dataset_evaluation(config: dict, dataset: str) -> dict:
    """The evaluation mapping of every cell of ``dataset``: the config's
    ``evaluation`` (less the speed-up figure's k, so that changing it
    re-evaluates no cell), with ``recall_at`` and ``clustering`` left null
    filled in by the dataset's protocol: under ``class_disjoint`` the
    dataset's registered Recall@k cutoffs (:data:`DEFAULT_RECALL_AT` if it
    registers none) and NMI/AMI, as the literature reports; under
    ``closed_set`` neither."""
    from workflow.datasets import DATASETS

    spec = config["datasets"][dataset]
    evaluation = {
        key: value
        for key, value in config["evaluation"].items()
        if key != "speedup_precision_at"
    }
    disjoint = spec.get("protocol", "closed_set") == "class_disjoint"
    if evaluation.get("recall_at") is None:
        registered = (
            DATASETS.metadata(spec["source"]).get("recall_at") or DEFAULT_RECALL_AT
        )
        evaluation["recall_at"] = list(registered) if disjoint else []
    if evaluation.get("clustering") is None:
        evaluation["clustering"] = disjoint
    if evaluation.get("device", "cpu") == "cpu":
        # The default adds no key, so that no finished cell is evaluated again.
        evaluation.pop("device", None)
    return evaluation


def candidate_settings(config: dict, cell: Cell) -> dict[str, dict]:
    """Every setting a final cell may be trained with: with selection on,
    one per trial of its loss (keyed by trial name); else only its own."""
    trials = config["trials"].get(cell.loss)
    if not trials:
        return {cell.loss: cell_settings(config, cell)}
    return {
        name: cell_settings(config, cell, loss_entry=entry)
        for name, entry in trials.items()
    }


def laid_out(decl: dict) -> set[str]:
    """The attributes a declared table lays out in its rows, columns or blocks."""
    layout = set(decl.get("columns", [])) | set(decl.get("blocks", []))
    for row in decl.get("rows", ["loss"]):
        layout |= set(row) - {"label"} if isinstance(row, dict) else {row}
    return layout


def ranked_losses(config: dict, decl: dict) -> list[str]:
    """The losses a declared ranking ranks, from the config (never from the
    rows a run happens to have): its ``losses``, else every configured loss
    its ``select`` keeps, in config order. The ranking job stops when one of
    them has no value (:func:`workflow.rankings.block_values`)."""
    if decl.get("losses"):
        return [str(loss) for loss in decl["losses"]]
    wanted = (decl.get("select") or {}).get("loss")
    if wanted is None:
        return [str(loss) for loss in config["losses"]]
    wanted = [str(v) for v in (wanted if isinstance(wanted, list) else [wanted])]
    return [str(loss) for loss in config["losses"] if str(loss) in wanted]


def cells(config: dict) -> list[Cell]:
    return [
        Cell(*values)
        for values in itertools.product(
            config["datasets"],
            config["regimes"],
            config["backbones"],
            config["losses"],
            config["seeds"],
        )
    ]


def training_settings(config: dict, backbone: str, loss: str | dict) -> dict:
    """Global training settings, overridden by the backbone's, then the
    loss's (``loss``: a name in ``losses`` or a loss entry)."""
    entry = config["losses"][loss] if isinstance(loss, str) else loss
    return {
        **config["training"],
        **config["backbones"][backbone].get("training", {}),
        **entry.get("training", {}),
    }


# Schema defaults of the dataset keys the splits read (configs checked by
# the schema have them filled in already).
SPLIT_DEFAULTS = {
    "test_fraction": 0.3,
    "query_per_class": 10,
    "database_per_class": None,
    "database_from": "test",
}


def _split_key(spec: dict, key: str):
    return spec.get(key, SPLIT_DEFAULTS[key])


def training_pool_spec(spec: dict) -> dict:
    """The keys of a dataset's config entry that decide its training pool
    (and so the training split with the regime's ``train_per_class``):
    ``test_fraction`` (used when the dataset has no official test side),
    ``database_from``, and ``database_per_class`` only when the database is
    drawn from the training pool (``database_from: train``)."""
    pool = {key: _split_key(spec, key) for key in ["test_fraction", "database_from"]}
    if pool["database_from"] == "train":
        pool["database_per_class"] = _split_key(spec, "database_per_class")
    return {**pool, **protocol_spec(spec)}


def evaluation_spec(spec: dict) -> dict:
    """The keys of a dataset's config entry that decide its query and
    database images (the evaluation split)."""
    return {
        **{key: _split_key(spec, key) for key in SPLIT_DEFAULTS},
        **protocol_spec(spec),
    }


def protocol_spec(spec: dict) -> dict:
    """``protocol`` and ``train_classes`` of a class-disjoint dataset (the
    latter from the dataset's registered official boundary, e.g. CUB's
    100, when the entry gives none); {} for the default closed set, so
    the settings of closed-set cells stay as they were."""
    protocol = spec.get("protocol", "closed_set")
    if protocol == "closed_set" and spec.get("train_classes") is None:
        return {}
    train_classes = spec.get("train_classes")
    if train_classes is None and protocol == "class_disjoint":
        from workflow.datasets import (
            DATASETS,  # here: the loaders import workflow.download, which imports this
        )

        train_classes = DATASETS.metadata(spec["source"]).get("train_classes")
    return {"protocol": protocol, "train_classes": train_classes}


PREPARE_DEFAULTS = {
    "params": {},
    "image_size": None,
    "classes": None,
    "skip_undecodable": False,
}


def prepare_settings(spec: dict) -> dict:
    """The part of a dataset's config that determines its prepared arrays
    (so changing, e.g., ``query_per_class`` does not decode again).
    ``storage`` only when it is not the default ``array``: the settings
    (and hashes) of datasets prepared before the key existed stay the same."""
    settings = {
        "source": spec["source"],
        **{k: spec.get(k, v) for k, v in PREPARE_DEFAULTS.items()},
    }
    if spec.get("storage", "array") != "array":
        settings["storage"] = spec["storage"]
    return settings


def training_dataset_spec(spec: dict) -> dict:
    """What training depends on of a dataset's config entry: the keys that
    decide the prepared arrays (:func:`prepare_settings`)
    and the training pool (:func:`training_pool_spec`). Not
    ``query_per_class``, nor ``database_per_class`` unless
    ``database_from: train``: they only decide query and database, so
    changing them re-runs the evaluation split, embed and evaluate, and
    trains nothing again."""
    return {**prepare_settings(spec), **training_pool_spec(spec)}


def cell_settings(config: dict, cell: Cell, loss_entry: dict | None = None) -> dict:
    """Everything that determines a cell's trained model, as plain data
    (``loss_entry`` replaces the loss's config entry, e.g. with a trial's).
    Of the dataset's entry only what training depends on
    (:func:`training_dataset_spec`): these settings are the train rule's
    params (Snakemake's rerun trigger) and their :func:`settings_hash` is
    the resume checkpoint's and the embeddings' ``config_hash``."""
    backbone = config["backbones"][cell.backbone]
    loss = config["losses"][cell.loss] if loss_entry is None else loss_entry
    return {
        "dataset": cell.dataset,
        "regime": cell.regime,
        "backbone": cell.backbone,
        "loss": cell.loss,
        "seed": int(cell.seed),
        "dataset_spec": training_dataset_spec(config["datasets"][cell.dataset]),
        "regime_spec": config["regimes"][cell.regime],
        "arch": backbone["arch"],
        "embedding_size": backbone["embedding_size"],
        "backbone_params": backbone.get("params", {}),
        "loss_impl": loss["impl"],
        "loss_params": loss.get("params", {}),
        "loss_lr_multiplier": loss.get("lr_multiplier", 1.0),
        "sampler": loss.get("sampler"),
        "training": training_settings(config, cell.backbone, loss),
    }


def trial_cells(config: dict) -> list[Cell]:
    """With selection on, the trial cells: every trial of every loss, at the
    selection seeds, trained and evaluated on the validation split."""
    if not config["trials"]:
        return []
    seeds = config["selection"]["seeds"] or config["seeds"][:1]
    names = [name for trials in config["trials"].values() for name in trials]
    return [
        Cell(*values)
        for values in itertools.product(
            config["datasets"], config["regimes"], config["backbones"], names, seeds
        )
    ]


def trial_settings(config: dict, cell: Cell) -> dict:
    """A trial cell's settings (its loss is a trial name)."""
    base = config["sweeps"][cell.loss]["base"]
    final = Cell(cell.dataset, cell.regime, cell.backbone, base, cell.seed)
    settings = cell_settings(
        config, final, loss_entry=config["trials"][base][cell.loss]
    )
    settings["loss"] = cell.loss
    return settings


def settings_hash(settings: dict) -> str:
    """A short stable hash of a cell's settings (recorded in its outputs and
    resume checkpoint); it covers only what training depends on, so it is
    the same for every evaluation setting."""
    blob = json.dumps(settings, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]

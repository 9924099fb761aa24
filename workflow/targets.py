"""The files the rules make, with no Snakemake: every cell path, the
target lists (the final output, the selections, the figures) and the
cells each rule's input function asks for. ``rules/common.smk`` turns
them into input functions and ``rule all``'s input.
"""

from __future__ import annotations

import re

from workflow.config import CELL_PATTERN, Cell, cells


def cell_path(prefix, cell=None):
    """`prefix/<cell folder>`, the cell folder being
    workflow.config.CELL_PATTERN: with its wildcards left in for a rule
    (`cell_path("results/logs/train") + ".log"`), or filled in for `cell`.
    Every path of a cell or trial in rules/ is made here."""
    return f"{prefix}/{CELL_PATTERN if cell is None else cell.path}"


def cell_file(name, cell=None, root="results/cells"):
    """A file in a cell's folder (root results/trials: a trial's)."""
    return f"{cell_path(root, cell)}/{name}"


def cell_log(rule):
    return f"{cell_path(f'results/logs/{rule}')}.log"


def cell_benchmark(rule, cell=None):
    return f"{cell_path(f'results/benchmarks/{rule}', cell)}.tsv"


def cell_timing(rule, cell=None):
    """The wall times a rule measures itself (evaluate's search), beside its
    benchmark: never in metrics.csv, which must be the same run to run."""
    return f"{cell_path(f'results/benchmarks/{rule}', cell)}.timing.json"


def cell_files(cells_, name):
    return [cell_file(name, c) for c in cells_]


# The selection of one (dataset, regime, backbone, loss) (rules/select.smk).
SELECTION_FILE = "results/selection/{dataset}/{regime}/{backbone}/{loss}.json"


def selection_file(dataset, regime, backbone, loss):
    return SELECTION_FILE.format(
        dataset=dataset, regime=regime, backbone=backbone, loss=loss
    )


def selection_seeds(config):
    return (config.get("selection") or {}).get("seeds") or config["seeds"][:1]


def trial_metric_files(config, dataset, regime, backbone, trials):
    """Validation metrics of every trial of one loss, trials x seeds."""
    return [
        cell_file(
            "metrics.csv",
            Cell(dataset, regime, backbone, trial, seed),
            root="results/trials",
        )
        for trial in trials
        for seed in selection_seeds(config)
    ]


def selection_keys(config):
    """(dataset, regime, backbone, loss) of every selection."""
    return [
        (c.dataset, c.regime, c.backbone, c.loss)
        for c in cells(config)
        if c.seed == config["seeds"][0] and c.loss in config["trials"]
    ]


def selection_outputs(config):
    outputs = [selection_file(*key) for key in selection_keys(config)]
    if outputs:
        outputs += ["results/selection/table.csv", "results/selection/table.md"]
        for dataset, regime, backbone, loss in selection_keys(config):
            for ext in ["png", "pdf"]:
                outputs.append(
                    f"results/figures/{dataset}/{regime}/{backbone}/sensitivity_{loss}.{ext}"
                )
    return outputs


def cells_of(cells_, dataset, regime):
    return [c for c in cells_ if c.dataset == dataset and c.regime == regime]


def cells_at_first_seed(config, cells_, dataset, regime, backbone):
    """Cells of one (dataset, regime, backbone) at the first seed, one per loss."""
    return [
        c
        for c in cells_of(cells_, dataset, regime)
        if c.backbone == backbone and c.seed == config["seeds"][0]
    ]


def all_seed_cells(cells_, dataset, regime, backbone):
    return [c for c in cells_of(cells_, dataset, regime) if c.backbone == backbone]


def storage_patterns(config):
    """Datasets with `storage: jpeg` are prepared by rule prepare_jpeg into
    images.jpegs, the others by rule prepare into images.npy; each rule's
    dataset wildcard admits only its own datasets (a negative lookahead for
    the JPEG datasets' names), so no file has two rules. Returns the JPEG
    datasets and the two rules' dataset wildcard patterns."""
    jpeg_datasets = [
        name
        for name, spec in config["datasets"].items()
        if spec.get("storage") == "jpeg"
    ]
    jpeg_names = "|".join(re.escape(name) for name in jpeg_datasets)
    array_dataset = (
        f"(?!(?:{jpeg_names})/)" if jpeg_datasets else ""
    ) + "[A-Za-z0-9][A-Za-z0-9_.-]*"
    jpeg_dataset = f"(?:{jpeg_names})(?=/)" if jpeg_datasets else "(?!)"
    return jpeg_datasets, array_dataset, jpeg_dataset


# What rule ranking writes into results/rankings/{ranking}/ (rules/tables.smk).
RANKING_FILES = [
    "average_ranks.csv",
    "average_ranks.md",
    "blocks.csv",
    "critical_difference.png",
    "critical_difference.pdf",
]

FIGURE_KINDS = ["tsne", "examples", "training"]


# The anchor figure of one cell, less its extension (rules/figures.smk).
ANCHOR_FIGURE = (
    "results/figures/{dataset}/{regime}/{backbone}/anchors_{loss}_seed{seed}"
)


def has_anchors(config, loss):
    from workflow.losses import loss_has_anchors

    return loss_has_anchors(config["losses"][loss]["impl"])


def figure_outputs(config):
    outputs = []
    seed = config["seeds"][0]
    for dataset in config["datasets"]:
        for regime in config["regimes"]:
            for backbone in config["backbones"]:
                stems = [
                    f"results/figures/{dataset}/{regime}/{kind}_{backbone}"
                    for kind in FIGURE_KINDS
                ]
                stems += [
                    ANCHOR_FIGURE.format(
                        **vars(Cell(dataset, regime, backbone, loss, seed))
                    )
                    for loss in config["losses"]
                    if has_anchors(config, loss)
                ]
                for stem in stems:
                    for ext in ["png", "pdf"]:
                        outputs.append(f"{stem}.{ext}")
    return outputs


def final_output(config):
    """Every file of the configured grid: `rule all`'s input."""
    outputs = ["results/metrics.csv"]
    outputs += selection_outputs(config)
    outputs += ["results/cost.csv", "results/cost.md"]
    for table in config["tables"]:
        for ext in ["csv", "md", "tex"]:
            outputs.append(f"results/tables/{table}.{ext}")
    for ranking in config["rankings"]:
        for name in RANKING_FILES:
            outputs.append(f"results/rankings/{ranking}/{name}")
    outputs += figure_outputs(config)
    for dataset in config["datasets"]:
        for regime in config["regimes"]:
            for ext in ["csv", "md", "tex"]:
                outputs.append(f"results/tables/{dataset}/{regime}.{ext}")
            for ext in ["png", "pdf"]:
                outputs.append(f"results/figures/{dataset}/pr_{regime}.{ext}")
            if config["evaluation"]["two_stage"]["classes"]:
                for ext in ["png", "pdf"]:
                    outputs.append(f"results/figures/{dataset}/speedup_{regime}.{ext}")
    return outputs

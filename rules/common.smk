import re
import sys

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

# The `workflow` package of this repository (rule scripts import it through
# workflow/scripts/_repo_path.py).
sys.path.insert(0, workflow.basedir)

from workflow.config import (
    CELL_PATTERN,
    Cell,
    ConfigError,
    candidate_settings,
    cell_factors,
    cell_settings,
    cells,
    dataset_evaluation,
    check_finite,
    check_integers,
    describe_schema_error,
    expand_sweeps,
    prepare_config,
    prepare_settings,
    ranked_losses,
    trial_cells,
    trial_settings,
)
from workflow.datasets import input_fingerprint
from workflow.download import plan_downloads
from workflow.guards import check_config, check_config_files


def config_files_read():
    """The config files whose values are in `config` (with
    --replace-workflow-config only those given with --configfile)."""
    if workflow.config_settings.replace_workflow_config:
        return list(workflow.config_settings.configfiles)
    return list(workflow.configfiles)


try:
    # First: PyYAML has merged a duplicate key silently (the last one wins).
    check_config_files(config_files_read())
    # YAML's .nan and .inf pass every bound of the schema.
    check_finite(config)
    # Sweeps (lists, ranges) expand into loss entries before the schema
    # check, so that every expanded entry is checked like a written one.
    EXPANDED, SWEEPS = expand_sweeps(config)
    validate(EXPANDED, "../workflow/schemas/config.schema.yaml")
    check_integers(EXPANDED)
    CONFIG = prepare_config(EXPANDED, SWEEPS)
    check_config(CONFIG)
except WorkflowError as error:
    raise WorkflowError(describe_schema_error(error))
except ConfigError as error:
    raise WorkflowError(str(error))

# `--resources gpu=N` counts GPUs; each train and embed job holds one of
# N x jobs_per_gpu slots (`resources: gpu=1`) and claims its own device
# (workflow/devices.py). Snakemake's resources are integers, so the slots
# are counted by scaling the given total, which its scheduler reads after
# the Snakefile is parsed (tests/test_devices.py runs it).
if CONFIG["jobs_per_gpu"] > 1 and "gpu" in workflow.global_resources:
    workflow.global_resources["gpu"] = (
        workflow.global_resources["gpu"].value * CONFIG["jobs_per_gpu"]
    )

CELLS = cells(CONFIG)
# With `selection`: the trial cells (trial names in the loss position),
# trained and scored on the validation split (rules/select.smk).
TRIALS = trial_cells(CONFIG)

# Which downloaded folder (results/raw/<key>) each dataset reads, and the
# official files of each; datasets sharing files share one download.
try:
    DATASET_DOWNLOADS, DOWNLOAD_FILES = plan_downloads(CONFIG["datasets"])
except ConfigError as error:
    raise WorkflowError(str(error))


wildcard_constraints:
    dataset="[A-Za-z0-9][A-Za-z0-9_.-]*",
    regime="[A-Za-z0-9][A-Za-z0-9_.-]*",
    backbone="[A-Za-z0-9][A-Za-z0-9_.-]*",
    loss="[A-Za-z0-9][A-Za-z0-9_.-]*",
    seed="[0-9]+",
    table="[A-Za-z0-9][A-Za-z0-9_.-]*",
    ranking="[A-Za-z0-9][A-Za-z0-9_.-]*",
    download="[A-Za-z0-9][A-Za-z0-9_.-]*",


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


# The selection of one (dataset, regime, backbone, loss) (rules/select.smk).
SELECTION_FILE = "results/selection/{dataset}/{regime}/{backbone}/{loss}.json"


def selection_file(dataset, regime, backbone, loss):
    return SELECTION_FILE.format(
        dataset=dataset, regime=regime, backbone=backbone, loss=loss
    )


def config_entry(section, name, entries=None):
    """CONFIG[section][name], or an error naming a target's unknown name."""
    entries = CONFIG[section] if entries is None else entries
    if name not in entries:
        raise WorkflowError(
            f"{name!r} in the requested target is not in the config key {section} "
            f"(configured: {', '.join(map(str, entries))}); ask for a target of a "
            f"configured name or add {name!r} to {section}"
        )
    return entries[name]


def cell_of(wildcards):
    for section, name in [
        ("datasets", wildcards.dataset),
        ("regimes", wildcards.regime),
        ("backbones", wildcards.backbone),
        ("losses", wildcards.loss),
    ]:
        config_entry(section, name)
    if int(wildcards.seed) not in CONFIG["seeds"]:
        config_entry("seeds", int(wildcards.seed), dict.fromkeys(CONFIG["seeds"]))
    return Cell(
        wildcards.dataset,
        wildcards.regime,
        wildcards.backbone,
        wildcards.loss,
        int(wildcards.seed),
    )


def get_download_files(wildcards):
    if wildcards.download not in DOWNLOAD_FILES:
        raise WorkflowError(
            f"no dataset of the config downloads into results/raw/{wildcards.download} "
            f"(downloads: {', '.join(DOWNLOAD_FILES) or 'none'})"
        )
    return DOWNLOAD_FILES[wildcards.download]


def get_prepare_input(wildcards):
    config_entry("datasets", wildcards.dataset)
    key = DATASET_DOWNLOADS[wildcards.dataset]
    return {"raw": f"results/raw/{key}"} if key else {}


# Datasets with `storage: jpeg` are prepared by rule prepare_jpeg into
# images.jpegs, the others by rule prepare into images.npy; each rule's
# dataset wildcard admits only its own datasets (a negative lookahead for the
# JPEG datasets' names), so no file has two rules.
JPEG_DATASETS = [
    name for name, spec in CONFIG["datasets"].items() if spec.get("storage") == "jpeg"
]
_JPEG_NAMES = "|".join(re.escape(name) for name in JPEG_DATASETS)
ARRAY_DATASET = (
    f"(?!(?:{_JPEG_NAMES})/)" if JPEG_DATASETS else ""
) + "[A-Za-z0-9][A-Za-z0-9_.-]*"
JPEG_DATASET = f"(?:{_JPEG_NAMES})(?=/)" if JPEG_DATASETS else "(?!)"


def prepared_images(wildcards):
    """The prepared images file of a dataset: images.npy, or images.jpegs
    with `storage: jpeg`."""
    name = "images.jpegs" if wildcards.dataset in JPEG_DATASETS else "images.npy"
    return f"results/data/{wildcards.dataset}/{name}"


def get_prepare_spec(wildcards):
    """What decides the prepared arrays; for a dataset read from your own
    files (an image folder, an .npz) also their listing hash, `user_files`,
    so that changing them prepares it again (a params trigger; `prepare`
    ignores the key). Other datasets get no such key: their recorded
    params, and so their arrays, stay valid."""
    spec = prepare_settings(config_entry("datasets", wildcards.dataset))
    files = input_fingerprint(spec["source"], spec["params"])
    return {**spec, "user_files": files} if files else spec


def get_regime_spec(wildcards):
    return config_entry("regimes", wildcards.regime)


def get_cell_settings(wildcards):
    """A cell's settings; for a loss chosen by selection, every candidate
    (the script takes the selected one, workflow.selection.resolve_settings)."""
    cell = cell_of(wildcards)
    if cell.loss in CONFIG["trials"]:
        return {"candidates": candidate_settings(CONFIG, cell)}
    return cell_settings(CONFIG, cell)


def get_selection_input(wildcards):
    """The selection file a selected loss's cell is trained with, if any."""
    if wildcards.loss not in CONFIG["trials"]:
        return {}
    w = wildcards
    return {"selection": selection_file(w.dataset, w.regime, w.backbone, w.loss)}


def trial_of(wildcards):
    cell = Cell(
        wildcards.dataset,
        wildcards.regime,
        wildcards.backbone,
        wildcards.loss,
        int(wildcards.seed),
    )
    if cell not in TRIALS:
        raise WorkflowError(
            f"{cell.path} is not a trial of the config (selection.budget, "
            "selection.seeds and the sweeps of the losses decide the trials)"
        )
    return cell


def get_trial_settings(wildcards):
    return trial_settings(CONFIG, trial_of(wildcards))


def selection_seeds():
    return (CONFIG.get("selection") or {}).get("seeds") or CONFIG["seeds"][:1]


def get_trial_metric_files(wildcards):
    """Validation metrics of every trial of one loss, trials x seeds."""
    return [
        cell_file(
            "metrics.csv",
            Cell(wildcards.dataset, wildcards.regime, wildcards.backbone, trial, seed),
            root="results/trials",
        )
        for trial in config_entry("losses", wildcards.loss, CONFIG["trials"])
        for seed in selection_seeds()
    ]


def selection_keys():
    """(dataset, regime, backbone, loss) of every selection."""
    return [
        (c.dataset, c.regime, c.backbone, c.loss)
        for c in CELLS
        if c.seed == CONFIG["seeds"][0] and c.loss in CONFIG["trials"]
    ]


def selection_outputs():
    outputs = [selection_file(*key) for key in selection_keys()]
    if outputs:
        outputs += ["results/selection/table.csv", "results/selection/table.md"]
        for dataset, regime, backbone, loss in selection_keys():
            for ext in ["png", "pdf"]:
                outputs.append(
                    f"results/figures/{dataset}/{regime}/{backbone}/sensitivity_{loss}.{ext}"
                )
    return outputs


def cells_of(dataset, regime):
    return [c for c in CELLS if c.dataset == dataset and c.regime == regime]


def cell_files(cells_, name):
    return [cell_file(name, c) for c in cells_]


def get_all_metric_files(wildcards):
    return cell_files(CELLS, "metrics.csv")


def get_pr_curve_files(wildcards):
    return cell_files(cells_of(wildcards.dataset, wildcards.regime), "pr_curve.parquet")


def get_cells_of_figure(wildcards):
    return cells_of(wildcards.dataset, wildcards.regime)


def get_speedup_k(wildcards):
    from workflow.retrieval.metrics import speedup_k

    try:
        return speedup_k(CONFIG["evaluation"])
    except ValueError as error:
        raise WorkflowError(str(error))


def first_seed_cells(wildcards):
    """Cells of one (dataset, regime, backbone) at the first seed, one per loss."""
    return [
        c
        for c in cells_of(wildcards.dataset, wildcards.regime)
        if c.backbone == wildcards.backbone and c.seed == CONFIG["seeds"][0]
    ]


def get_first_seed_cells(wildcards):
    return first_seed_cells(wildcards)


def get_first_seed_embeddings(wildcards):
    return cell_files(first_seed_cells(wildcards), "embeddings.parquet")


def get_all_seed_cells(wildcards):
    return [
        c
        for c in cells_of(wildcards.dataset, wildcards.regime)
        if c.backbone == wildcards.backbone
    ]


def get_all_seed_models(wildcards):
    return cell_files(get_all_seed_cells(wildcards), "model.pt")


def get_all_models(wildcards):
    return cell_files(CELLS, "model.pt")


def get_all_train_benchmarks(wildcards):
    return [cell_benchmark("train", c) for c in CELLS]


def get_all_evaluate_benchmarks(wildcards):
    return [cell_benchmark("evaluate", c) for c in CELLS]


def get_all_evaluate_timings(wildcards):
    return [cell_timing("evaluate", c) for c in CELLS]


def get_table_declaration(wildcards):
    return CONFIG["tables"][wildcards.table]


# What rule ranking writes into results/rankings/{ranking}/ (rules/tables.smk).
RANKING_FILES = [
    "average_ranks.csv",
    "average_ranks.md",
    "blocks.csv",
    "critical_difference.png",
    "critical_difference.pdf",
]


def get_ranking_declaration(wildcards):
    """The declaration with the losses it ranks filled in from the config."""
    decl = config_entry("rankings", wildcards.ranking)
    return {**decl, "losses": ranked_losses(CONFIG, decl)}


def get_cell_evaluation(wildcards):
    """The evaluation mapping of a cell: the config's, with the dataset's
    protocol defaults (workflow.config.dataset_evaluation)."""
    return dataset_evaluation(CONFIG, wildcards.dataset)


def get_evaluate_gpu(wildcards):
    """1 (a GPU slot) when evaluate ranks on a GPU (evaluation.device), else 0."""
    return int(CONFIG["evaluation"]["device"] != "cpu")


def get_loss_geometry(wildcards):
    """The geometry of a cell's loss (a trial's loss is its base loss's impl)."""
    from workflow.losses import loss_geometry

    losses = {
        **CONFIG["losses"],
        **{t: e for trials in CONFIG["trials"].values() for t, e in trials.items()},
    }
    return loss_geometry(config_entry("losses", wildcards.loss, losses)["impl"])


def has_anchors(loss):
    from workflow.losses import loss_has_anchors

    return loss_has_anchors(CONFIG["losses"][loss]["impl"])


FIGURE_KINDS = ["tsne", "examples", "training"]


# The anchor figure of one cell, less its extension (rules/figures.smk).
ANCHOR_FIGURE = (
    "results/figures/{dataset}/{regime}/{backbone}/anchors_{loss}_seed{seed}"
)


def figure_outputs():
    outputs = []
    seed = CONFIG["seeds"][0]
    for dataset in CONFIG["datasets"]:
        for regime in CONFIG["regimes"]:
            for backbone in CONFIG["backbones"]:
                stems = [
                    f"results/figures/{dataset}/{regime}/{kind}_{backbone}"
                    for kind in FIGURE_KINDS
                ]
                stems += [
                    ANCHOR_FIGURE.format(
                        **vars(Cell(dataset, regime, backbone, loss, seed))
                    )
                    for loss in CONFIG["losses"]
                    if has_anchors(loss)
                ]
                for stem in stems:
                    for ext in ["png", "pdf"]:
                        outputs.append(f"{stem}.{ext}")
    return outputs


def get_cell_factors():
    """Fixed factors per cell (columns of results/metrics.csv)."""
    return [cell_factors(CONFIG, c) for c in CELLS]


def get_final_output():
    outputs = [f"results/metrics.csv"]
    outputs += selection_outputs()
    outputs += ["results/cost.csv", "results/cost.md"]
    for table in CONFIG["tables"]:
        for ext in ["csv", "md", "tex"]:
            outputs.append(f"results/tables/{table}.{ext}")
    for ranking in CONFIG["rankings"]:
        for name in RANKING_FILES:
            outputs.append(f"results/rankings/{ranking}/{name}")
    outputs += figure_outputs()
    for dataset in CONFIG["datasets"]:
        for regime in CONFIG["regimes"]:
            for ext in ["csv", "md", "tex"]:
                outputs.append(f"results/tables/{dataset}/{regime}.{ext}")
            for ext in ["png", "pdf"]:
                outputs.append(f"results/figures/{dataset}/pr_{regime}.{ext}")
            if CONFIG["evaluation"]["two_stage"]["classes"]:
                for ext in ["png", "pdf"]:
                    outputs.append(f"results/figures/{dataset}/speedup_{regime}.{ext}")
    return outputs

import sys

from snakemake.exceptions import WorkflowError

# The `workflow` package of this repository (rule scripts import it through
# workflow/scripts/_repo_path.py).
sys.path.insert(0, workflow.basedir)

from workflow.config import (
    Cell,
    ConfigError,
    candidate_settings,
    cell_factors,
    cell_settings,
    cells,
    dataset_evaluation,
    prepare_settings,
    ranked_losses,
    trial_cells,
    trial_settings,
)
from workflow.config_loader import load_config
from workflow.config_schema import describe_schema_error
from workflow.datasets import input_fingerprint
from workflow.download import plan_downloads
from workflow.targets import (
    ANCHOR_FIGURE,
    SELECTION_FILE,
    all_seed_cells,
    cell_benchmark,
    cell_file,
    cell_files,
    cell_log,
    cell_timing,
    cells_at_first_seed,
    cells_of,
    final_output,
    selection_file,
    selection_keys,
    selection_seeds,
    storage_patterns,
    trial_metric_files,
)


def config_files_read():
    """The config files whose values are in `config` (with
    --replace-workflow-config only those given with --configfile)."""
    if workflow.config_settings.replace_workflow_config:
        return list(workflow.config_settings.configfiles)
    return list(workflow.configfiles)


# The one loader (workflow/config_loader.py), with every check before any job.
try:
    CONFIG = load_config(config, files=config_files_read(), check=True)
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


# Each prepare rule's dataset wildcard admits only its own datasets
# (workflow.targets.storage_patterns).
JPEG_DATASETS, ARRAY_DATASET, JPEG_DATASET = storage_patterns(CONFIG)


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


def get_trial_metric_files(wildcards):
    """Validation metrics of every trial of one loss, trials x seeds."""
    w = wildcards
    trials = config_entry("losses", w.loss, CONFIG["trials"])
    return trial_metric_files(CONFIG, w.dataset, w.regime, w.backbone, trials)


def get_all_metric_files(wildcards):
    return cell_files(CELLS, "metrics.csv")


def get_pr_curve_files(wildcards):
    return cell_files(
        cells_of(CELLS, wildcards.dataset, wildcards.regime), "pr_curve.parquet"
    )


def get_cells_of_figure(wildcards):
    return cells_of(CELLS, wildcards.dataset, wildcards.regime)


def get_speedup_k(wildcards):
    from workflow.retrieval.metrics import speedup_k

    try:
        return speedup_k(CONFIG["evaluation"])
    except ValueError as error:
        raise WorkflowError(str(error))


def first_seed_cells(wildcards):
    """Cells of one (dataset, regime, backbone) at the first seed, one per loss."""
    w = wildcards
    return cells_at_first_seed(CONFIG, CELLS, w.dataset, w.regime, w.backbone)


def get_first_seed_embeddings(wildcards):
    return cell_files(first_seed_cells(wildcards), "embeddings.parquet")


def get_all_seed_cells(wildcards):
    w = wildcards
    return all_seed_cells(CELLS, w.dataset, w.regime, w.backbone)


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


def get_cell_factors():
    """Fixed factors per cell (columns of results/metrics.csv)."""
    return [cell_factors(CONFIG, c) for c in CELLS]


def get_final_output():
    return final_output(CONFIG)

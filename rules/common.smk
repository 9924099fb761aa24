import sys

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

# The `workflow` package of this repository (rule scripts import it through
# workflow/scripts/_repo_path.py).
sys.path.insert(0, workflow.basedir)

from workflow.config import (
    Cell,
    ConfigError,
    cell_settings,
    cells,
    describe_schema_error,
    prepare_config,
    settings_hash,
)
from workflow.download import plan_downloads
from workflow.prepare import prepare_settings

try:
    validate(config, "../workflow/schemas/config.schema.yaml")
    CONFIG = prepare_config(config)
except WorkflowError as error:
    raise WorkflowError(describe_schema_error(error))
except ConfigError as error:
    raise WorkflowError(str(error))

CELLS = cells(CONFIG)

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
    download="[A-Za-z0-9][A-Za-z0-9_.-]*",


def cell_of(wildcards):
    return Cell(
        wildcards.dataset,
        wildcards.regime,
        wildcards.backbone,
        wildcards.loss,
        int(wildcards.seed),
    )


def get_dataset_spec(wildcards):
    return CONFIG["datasets"][wildcards.dataset]


def get_download_files(wildcards):
    return DOWNLOAD_FILES[wildcards.download]


def get_prepare_input(wildcards):
    key = DATASET_DOWNLOADS[wildcards.dataset]
    return {"raw": f"results/raw/{key}"} if key else {}


def get_prepare_spec(wildcards):
    return prepare_settings(CONFIG["datasets"][wildcards.dataset])


def get_regime_spec(wildcards):
    return CONFIG["regimes"][wildcards.regime]


def get_cell_settings(wildcards):
    return cell_settings(CONFIG, cell_of(wildcards))


def get_cell_hash(wildcards):
    return settings_hash(get_cell_settings(wildcards))


def cells_of(dataset, regime):
    return [c for c in CELLS if c.dataset == dataset and c.regime == regime]


def cell_files(cells_, name):
    return [f"results/cells/{c.path}/{name}" for c in cells_]


def get_all_metric_files(wildcards):
    return cell_files(CELLS, "metrics.csv")


def get_pr_curve_files(wildcards):
    return cell_files(cells_of(wildcards.dataset, wildcards.regime), "pr_curve.parquet")


def get_cells_of_figure(wildcards):
    return cells_of(wildcards.dataset, wildcards.regime)


def get_speedup_k(wildcards):
    from workflow.two_stage import speedup_k

    evaluation = CONFIG["evaluation"]
    try:
        return speedup_k(evaluation["precision_at"], evaluation["speedup_precision_at"])
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
    return [f"results/benchmarks/train/{c.path}.tsv" for c in CELLS]


def get_all_evaluate_benchmarks(wildcards):
    return [f"results/benchmarks/evaluate/{c.path}.tsv" for c in CELLS]


def get_table_declaration(wildcards):
    return CONFIG["tables"][wildcards.table]


def has_anchors(loss):
    from workflow.losses import LOSSES

    return hasattr(LOSSES.get(CONFIG["losses"][loss]["impl"]), "class_anchors")


FIGURE_KINDS = ["tsne", "examples", "training"]


def figure_outputs():
    outputs = []
    seed = CONFIG["seeds"][0]
    for dataset in CONFIG["datasets"]:
        for regime in CONFIG["regimes"]:
            for backbone in CONFIG["backbones"]:
                names = [f"{regime}/{kind}_{backbone}" for kind in FIGURE_KINDS]
                names += [
                    f"{regime}/{backbone}/anchors_{loss}_seed{seed}"
                    for loss in CONFIG["losses"]
                    if has_anchors(loss)
                ]
                for name in names:
                    for ext in ["png", "pdf"]:
                        outputs.append(f"results/figures/{dataset}/{name}.{ext}")
    return outputs


def get_final_output():
    outputs = [f"results/metrics.csv"]
    outputs += ["results/cost.csv", "results/cost.md"]
    for table in CONFIG["tables"]:
        for ext in ["csv", "md", "tex"]:
            outputs.append(f"results/tables/{table}.{ext}")
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

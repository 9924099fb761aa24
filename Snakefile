# CBIR loss benchmark: regenerates every table and figure of the configured
# grid. `snakemake --cores 8 --resources gpu=1`; see README.md and docs/.
from snakemake.utils import min_version

min_version("9.0")


# Snakemake's reader names neither the file nor the line of a broken config
# file: check config.yaml first (docs/configuration.md).
include: "rules/config_file.smk"


configfile: "config.yaml"


include: "rules/common.smk"
include: "rules/download.smk"
include: "rules/prepare.smk"
include: "rules/split.smk"
include: "rules/train.smk"
include: "rules/embed.smk"
include: "rules/evaluate.smk"
include: "rules/select.smk"
include: "rules/report.smk"
include: "rules/tables.smk"
include: "rules/figures.smk"


rule all:
    default_target: True
    input:
        get_final_output(),


# A folder where a rule writes a file, or a file where results/tensorboard
# belongs, stops here, before any job, named (workflow/io.py).
from workflow.io import check_result_paths

check_result_paths(
    workflow.rules,
    folders=["results/tensorboard"] if config.get("tensorboard", True) else [],
)

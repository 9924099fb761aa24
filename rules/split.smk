# Two split files, so that each depends only on what decides it (Snakemake's
# params rerun trigger): the training images of a (dataset, regime, seed),
# which train reads, and the query and database images of a (dataset, seed),
# which embed reads. Changing query_per_class re-draws the evaluation split
# and re-embeds, but trains nothing again (workflow/splits.py).
from workflow.config import evaluation_spec, training_pool_spec


rule train_split:
    input:
        labels="results/data/{dataset}/labels.parquet",
        classes="results/data/{dataset}/classes.json",
    output:
        "results/splits/{dataset}/{regime}/seed{seed}.train.parquet",
    log:
        "results/logs/train_split/{dataset}/{regime}/seed{seed}.log",
    benchmark:
        "results/benchmarks/train_split/{dataset}/{regime}/seed{seed}.tsv"
    conda:
        "../envs/pytorch.yaml"
    params:
        pool=lambda wildcards: training_pool_spec(
            config_entry("datasets", wildcards.dataset)
        ),
        train_per_class=lambda wildcards: get_regime_spec(wildcards)["train_per_class"],
    script:
        "../workflow/scripts/split.py"


rule evaluation_split:
    input:
        labels="results/data/{dataset}/labels.parquet",
        classes="results/data/{dataset}/classes.json",
    output:
        "results/splits/{dataset}/seed{seed}.evaluation.parquet",
    log:
        "results/logs/evaluation_split/{dataset}/seed{seed}.log",
    benchmark:
        "results/benchmarks/evaluation_split/{dataset}/seed{seed}.tsv"
    conda:
        "../envs/pytorch.yaml"
    params:
        evaluation=lambda wildcards: evaluation_spec(
            config_entry("datasets", wildcards.dataset)
        ),
    script:
        "../workflow/scripts/split.py"

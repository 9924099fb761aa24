rule split:
    input:
        labels="results/data/{dataset}/labels.parquet",
        classes="results/data/{dataset}/classes.json",
    output:
        "results/splits/{dataset}/{regime}/seed{seed}.parquet",
    log:
        "results/logs/split/{dataset}/{regime}/seed{seed}.log",
    benchmark:
        "results/benchmarks/split/{dataset}/{regime}/seed{seed}.tsv"
    conda:
        "../envs/pytorch.yaml"
    params:
        dataset_spec=get_dataset_spec,
        regime_spec=get_regime_spec,
    script:
        "../workflow/scripts/split.py"

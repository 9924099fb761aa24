rule split:
    input:
        labels=RESULTS + "/data/{dataset}/labels.parquet",
    output:
        RESULTS + "/splits/{dataset}/{regime}/seed{seed}.parquet",
    params:
        dataset_spec=get_dataset_spec,
        regime_spec=get_regime_spec,
    log:
        RESULTS + "/logs/split/{dataset}/{regime}/seed{seed}.log",
    benchmark:
        RESULTS + "/benchmarks/split/{dataset}/{regime}/seed{seed}.tsv"
    conda:
        "../envs/pytorch.yaml"
    script:
        "../workflow/scripts/split.py"

rule prepare:
    output:
        images="results/data/{dataset}/images.npy",
        labels="results/data/{dataset}/labels.parquet",
        classes="results/data/{dataset}/classes.json",
    log:
        "results/logs/prepare/{dataset}.log",
    benchmark:
        "results/benchmarks/prepare/{dataset}.tsv"
    conda:
        "../envs/pytorch.yaml"
    params:
        spec=get_dataset_spec,
    script:
        "../workflow/scripts/prepare.py"

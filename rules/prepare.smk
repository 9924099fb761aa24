rule prepare:
    input:
        unpack(get_prepare_input),
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
    threads: 2
    params:
        spec=get_prepare_spec,
    script:
        "../workflow/scripts/prepare.py"

rule prepare:
    output:
        images=RESULTS + "/data/{dataset}/images.npy",
        labels=RESULTS + "/data/{dataset}/labels.parquet",
        classes=RESULTS + "/data/{dataset}/classes.json",
    params:
        spec=get_dataset_spec,
    log:
        RESULTS + "/logs/prepare/{dataset}.log",
    benchmark:
        RESULTS + "/benchmarks/prepare/{dataset}.tsv"
    conda:
        "../envs/pytorch.yaml"
    script:
        "../workflow/scripts/prepare.py"

rule train:
    input:
        images=RESULTS + "/data/{dataset}/images.npy",
        labels=RESULTS + "/data/{dataset}/labels.parquet",
        classes=RESULTS + "/data/{dataset}/classes.json",
        split=RESULTS + "/splits/{dataset}/{regime}/seed{seed}.parquet",
    output:
        CELL_DIR + "/model.pt",
    params:
        settings=get_cell_settings,
    threads: 1
    resources:
        gpu=1,
    log:
        RESULTS + "/logs/train/" + CELL_LOG + ".log",
    benchmark:
        RESULTS + "/benchmarks/train/" + CELL_LOG + ".tsv"
    conda:
        "../envs/pytorch.yaml"
    script:
        "../workflow/scripts/train.py"

rule embed:
    input:
        model=CELL_DIR + "/model.pt",
        images=RESULTS + "/data/{dataset}/images.npy",
        labels=RESULTS + "/data/{dataset}/labels.parquet",
        split=RESULTS + "/splits/{dataset}/{regime}/seed{seed}.parquet",
    output:
        embeddings=CELL_DIR + "/embeddings.parquet",
        anchors=CELL_DIR + "/anchors.parquet",
    params:
        settings=get_cell_settings,
        config_hash=get_cell_hash,
    threads: 1
    resources:
        gpu=1,
    log:
        RESULTS + "/logs/embed/" + CELL_LOG + ".log",
    benchmark:
        RESULTS + "/benchmarks/embed/" + CELL_LOG + ".tsv"
    conda:
        "../envs/pytorch.yaml"
    script:
        "../workflow/scripts/embed.py"

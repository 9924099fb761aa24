rule evaluate:
    input:
        embeddings=CELL_DIR + "/embeddings.parquet",
        anchors=CELL_DIR + "/anchors.parquet",
    output:
        metrics=CELL_DIR + "/metrics.csv",
        pr_curve=CELL_DIR + "/pr_curve.parquet",
    params:
        evaluation=CONFIG["evaluation"],
    log:
        RESULTS + "/logs/evaluate/" + CELL_LOG + ".log",
    benchmark:
        RESULTS + "/benchmarks/evaluate/" + CELL_LOG + ".tsv"
    conda:
        "../envs/pytorch.yaml"
    script:
        "../workflow/scripts/evaluate.py"

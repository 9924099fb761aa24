rule evaluate:
    input:
        embeddings="results/cells/{dataset}/{regime}/{backbone}/{loss}/seed{seed}/embeddings.parquet",
        anchors="results/cells/{dataset}/{regime}/{backbone}/{loss}/seed{seed}/anchors.parquet",
    output:
        metrics="results/cells/{dataset}/{regime}/{backbone}/{loss}/seed{seed}/metrics.csv",
        pr_curve="results/cells/{dataset}/{regime}/{backbone}/{loss}/seed{seed}/pr_curve.parquet",
    log:
        "results/logs/evaluate/{dataset}/{regime}/{backbone}/{loss}/seed{seed}.log",
    benchmark:
        "results/benchmarks/evaluate/{dataset}/{regime}/{backbone}/{loss}/seed{seed}.tsv"
    conda:
        "../envs/pytorch.yaml"
    params:
        evaluation=CONFIG["evaluation"],
    script:
        "../workflow/scripts/evaluate.py"

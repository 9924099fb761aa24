rule train:
    input:
        images="results/data/{dataset}/images.npy",
        labels="results/data/{dataset}/labels.parquet",
        classes="results/data/{dataset}/classes.json",
        split="results/splits/{dataset}/{regime}/seed{seed}.parquet",
    output:
        "results/cells/{dataset}/{regime}/{backbone}/{loss}/seed{seed}/model.pt",
    log:
        "results/logs/train/{dataset}/{regime}/{backbone}/{loss}/seed{seed}.log",
    benchmark:
        "results/benchmarks/train/{dataset}/{regime}/{backbone}/{loss}/seed{seed}.tsv"
    conda:
        "../envs/pytorch.yaml"
    threads: 1
    resources:
        gpu=1,
    params:
        settings=get_cell_settings,
    script:
        "../workflow/scripts/train.py"

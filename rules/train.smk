rule train:
    input:
        # With `selection`: results/selection/... (which trial's setting).
        unpack(get_selection_input),
        images="results/data/{dataset}/images.npy",
        labels="results/data/{dataset}/labels.parquet",
        classes="results/data/{dataset}/classes.json",
        # Only the training images: query and database settings never retrain.
        split="results/splits/{dataset}/{regime}/seed{seed}.train.parquet",
    output:
        model="results/cells/{dataset}/{regime}/{backbone}/{loss}/seed{seed}/model.pt",
        stats="results/cells/{dataset}/{regime}/{backbone}/{loss}/seed{seed}/train_stats.json",
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
        # Resume checkpoint (training.checkpoint_every): deliberately not an
        # output, so Snakemake keeps it when it cleans up a killed job
        # (--rerun-incomplete); the script deletes it once model.pt exists.
        checkpoint="results/checkpoints/{dataset}/{regime}/{backbone}/{loss}/seed{seed}/last.pt",
    script:
        "../workflow/scripts/train.py"

rule train:
    input:
        # With `selection`: results/selection/... (which trial's setting).
        unpack(get_selection_input),
        images=prepared_images,
        labels="results/data/{dataset}/labels.parquet",
        classes="results/data/{dataset}/classes.json",
        # Only the training images: query and database settings never retrain.
        split="results/splits/{dataset}/{regime}/seed{seed}.train.parquet",
    output:
        model=cell_file("model.pt"),
        stats=cell_file("train_stats.json"),
    log:
        cell_log("train"),
    benchmark:
        cell_benchmark("train")
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
        checkpoint=cell_file("last.pt", root="results/checkpoints"),
    script:
        "../workflow/scripts/train.py"

# Hyperparameter selection on the validation split (config key `selection`;
# docs "Fair comparisons"). Trials are cells under results/trials/ whose
# loss is a trial name; they train, embed and evaluate with the same rules
# as cells, on the validation split, which holds training-pool images only.


rule validation_split:
    input:
        labels="results/data/{dataset}/labels.parquet",
        # The regime's training images; the pool is recomputed from the
        # training-pool keys, so query and database never enter.
        split="results/splits/{dataset}/{regime}/seed{seed}.train.parquet",
    output:
        "results/splits/{dataset}/{regime}/seed{seed}.validation.parquet",
    log:
        "results/logs/validation_split/{dataset}/{regime}/seed{seed}.log",
    benchmark:
        "results/benchmarks/validation_split/{dataset}/{regime}/seed{seed}.tsv"
    conda:
        "../envs/pytorch.yaml"
    params:
        pool=lambda wildcards: training_pool_spec(
            config_entry("datasets", wildcards.dataset)
        ),
        validation=CONFIG["validation"],
    script:
        "../workflow/scripts/validation_split.py"


use rule train as train_trial with:
    input:
        images=prepared_images,
        labels="results/data/{dataset}/labels.parquet",
        classes="results/data/{dataset}/classes.json",
        split="results/splits/{dataset}/{regime}/seed{seed}.validation.parquet",
    output:
        model=cell_file("model.pt", root="results/trials"),
        stats=cell_file("train_stats.json", root="results/trials"),
    log:
        cell_log("train_trial"),
    benchmark:
        cell_benchmark("train_trial")
    params:
        settings=get_trial_settings,
        checkpoint=cell_file("last.pt", root="results/checkpoints/trials"),


use rule embed as embed_trial with:
    input:
        model=cell_file("model.pt", root="results/trials"),
        images=prepared_images,
        labels="results/data/{dataset}/labels.parquet",
        split="results/splits/{dataset}/{regime}/seed{seed}.validation.parquet",
    output:
        embeddings=cell_file("embeddings.parquet", root="results/trials"),
        anchors=cell_file("anchors.parquet", root="results/trials"),
    log:
        cell_log("embed_trial"),
    benchmark:
        cell_benchmark("embed_trial")
    params:
        settings=get_trial_settings,


use rule evaluate as evaluate_trial with:
    input:
        embeddings=cell_file("embeddings.parquet", root="results/trials"),
        anchors=cell_file("anchors.parquet", root="results/trials"),
    output:
        metrics=cell_file("metrics.csv", root="results/trials"),
        pr_curve=cell_file("pr_curve.parquet", root="results/trials"),
        timing=cell_timing("evaluate_trial"),
    log:
        cell_log("evaluate_trial"),
    benchmark:
        cell_benchmark("evaluate_trial")


rule select:
    input:
        get_trial_metric_files,
    output:
        SELECTION_FILE,
    log:
        "results/logs/select/{dataset}/{regime}/{backbone}/{loss}.log",
    benchmark:
        "results/benchmarks/select/{dataset}/{regime}/{backbone}/{loss}.tsv"
    conda:
        "../envs/report.yaml"
    params:
        trials=lambda wildcards: list(CONFIG["trials"][wildcards.loss]),
        seeds=selection_seeds(CONFIG),
        metric=CONFIG["selection"]["metric"] if CONFIG.get("selection") else None,
        sweeps=CONFIG["sweeps"],
    script:
        "../workflow/scripts/select.py"


rule selection_table:
    input:
        [selection_file(*key) for key in selection_keys(CONFIG)],
    output:
        csv="results/selection/table.csv",
        md=report(
            "results/selection/table.md",
            caption="../workflow/captions/selection.rst",
            category="Tables",
        ),
        trials_csv="results/selection/trials.csv",
        trials_md=report(
            "results/selection/trials.md",
            caption="../workflow/captions/selection_trials.rst",
            category="Tables",
        ),
    log:
        "results/logs/selection_table.log",
    benchmark:
        "results/benchmarks/selection_table.tsv"
    conda:
        "../envs/report.yaml"
    params:
        cells=[key[:3] for key in selection_keys(CONFIG)],
    script:
        "../workflow/scripts/selection_table.py"


rule sensitivity_figure:
    input:
        SELECTION_FILE,
    output:
        png=report(
            "results/figures/{dataset}/{regime}/{backbone}/sensitivity_{loss}.png",
            caption="../workflow/captions/sensitivity.rst",
            category="Figures",
            subcategory="{dataset}",
        ),
        pdf="results/figures/{dataset}/{regime}/{backbone}/sensitivity_{loss}.pdf",
    log:
        "results/logs/sensitivity_figure/{dataset}/{regime}/{backbone}/{loss}.log",
    benchmark:
        "results/benchmarks/sensitivity_figure/{dataset}/{regime}/{backbone}/{loss}.tsv"
    conda:
        "../envs/report.yaml"
    script:
        "../workflow/scripts/sensitivity_figure.py"

# Hyperparameter selection on the validation split (config key `selection`;
# README "Fair comparisons"). Trials are cells under results/trials/ whose
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
        images="results/data/{dataset}/images.npy",
        labels="results/data/{dataset}/labels.parquet",
        classes="results/data/{dataset}/classes.json",
        split="results/splits/{dataset}/{regime}/seed{seed}.validation.parquet",
    output:
        model="results/trials/{dataset}/{regime}/{backbone}/{loss}/seed{seed}/model.pt",
        stats="results/trials/{dataset}/{regime}/{backbone}/{loss}/seed{seed}/train_stats.json",
    log:
        "results/logs/train_trial/{dataset}/{regime}/{backbone}/{loss}/seed{seed}.log",
    benchmark:
        "results/benchmarks/train_trial/{dataset}/{regime}/{backbone}/{loss}/seed{seed}.tsv"
    params:
        settings=get_trial_settings,
        checkpoint="results/checkpoints/trials/{dataset}/{regime}/{backbone}/{loss}/seed{seed}/last.pt",


use rule embed as embed_trial with:
    input:
        model="results/trials/{dataset}/{regime}/{backbone}/{loss}/seed{seed}/model.pt",
        images="results/data/{dataset}/images.npy",
        labels="results/data/{dataset}/labels.parquet",
        split="results/splits/{dataset}/{regime}/seed{seed}.validation.parquet",
    output:
        embeddings="results/trials/{dataset}/{regime}/{backbone}/{loss}/seed{seed}/embeddings.parquet",
        anchors="results/trials/{dataset}/{regime}/{backbone}/{loss}/seed{seed}/anchors.parquet",
    log:
        "results/logs/embed_trial/{dataset}/{regime}/{backbone}/{loss}/seed{seed}.log",
    benchmark:
        "results/benchmarks/embed_trial/{dataset}/{regime}/{backbone}/{loss}/seed{seed}.tsv"
    params:
        settings=get_trial_settings,


use rule evaluate as evaluate_trial with:
    input:
        embeddings="results/trials/{dataset}/{regime}/{backbone}/{loss}/seed{seed}/embeddings.parquet",
        anchors="results/trials/{dataset}/{regime}/{backbone}/{loss}/seed{seed}/anchors.parquet",
    output:
        metrics="results/trials/{dataset}/{regime}/{backbone}/{loss}/seed{seed}/metrics.csv",
        pr_curve="results/trials/{dataset}/{regime}/{backbone}/{loss}/seed{seed}/pr_curve.parquet",
    log:
        "results/logs/evaluate_trial/{dataset}/{regime}/{backbone}/{loss}/seed{seed}.log",
    benchmark:
        "results/benchmarks/evaluate_trial/{dataset}/{regime}/{backbone}/{loss}/seed{seed}.tsv"


rule select:
    input:
        get_trial_metric_files,
    output:
        "results/selection/{dataset}/{regime}/{backbone}/{loss}.json",
    log:
        "results/logs/select/{dataset}/{regime}/{backbone}/{loss}.log",
    benchmark:
        "results/benchmarks/select/{dataset}/{regime}/{backbone}/{loss}.tsv"
    conda:
        "../envs/report.yaml"
    params:
        trials=lambda wildcards: list(CONFIG["trials"][wildcards.loss]),
        seeds=selection_seeds(),
        metric=CONFIG["selection"]["metric"] if CONFIG.get("selection") else None,
        sweeps=CONFIG["sweeps"],
    script:
        "../workflow/scripts/select.py"


rule selection_table:
    input:
        [f"results/selection/{'/'.join(key)}.json" for key in selection_keys()],
    output:
        csv="results/selection/table.csv",
        md=report(
            "results/selection/table.md",
            caption="../workflow/captions/selection.rst",
            category="Tables",
        ),
    log:
        "results/logs/selection_table.log",
    benchmark:
        "results/benchmarks/selection_table.tsv"
    conda:
        "../envs/report.yaml"
    params:
        cells=[key[:3] for key in selection_keys()],
    script:
        "../workflow/scripts/selection_table.py"


rule sensitivity_figure:
    input:
        "results/selection/{dataset}/{regime}/{backbone}/{loss}.json",
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

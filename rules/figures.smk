rule tsne_figure:
    input:
        get_first_seed_embeddings,
    output:
        png=report(
            "results/figures/{dataset}/{regime}/tsne_{backbone}.png",
            caption="../workflow/captions/tsne.rst",
            category="Figures",
            subcategory="{dataset}",
        ),
        pdf="results/figures/{dataset}/{regime}/tsne_{backbone}.pdf",
    log:
        "results/logs/tsne_figure/{dataset}/{regime}/{backbone}.log",
    benchmark:
        "results/benchmarks/tsne_figure/{dataset}/{regime}/{backbone}.tsv"
    conda:
        "../envs/pytorch.yaml"
    params:
        cells=first_seed_cells,
        max_points=CONFIG["figures"]["tsne_max_points"],
    script:
        "../workflow/scripts/tsne_figure.py"


rule examples_figure:
    input:
        images=prepared_images,
        labels="results/data/{dataset}/labels.parquet",
        classes="results/data/{dataset}/classes.json",
        embeddings=get_first_seed_embeddings,
    output:
        png=report(
            "results/figures/{dataset}/{regime}/examples_{backbone}.png",
            caption="../workflow/captions/examples.rst",
            category="Figures",
            subcategory="{dataset}",
        ),
        pdf="results/figures/{dataset}/{regime}/examples_{backbone}.pdf",
    log:
        "results/logs/examples_figure/{dataset}/{regime}/{backbone}.log",
    benchmark:
        "results/benchmarks/examples_figure/{dataset}/{regime}/{backbone}.tsv"
    conda:
        "../envs/pytorch.yaml"
    params:
        cells=first_seed_cells,
        n_queries=CONFIG["figures"]["example_queries"],
        top=CONFIG["figures"]["example_top"],
    script:
        "../workflow/scripts/examples_figure.py"


rule training_figure:
    input:
        get_all_seed_models,
    output:
        png=report(
            "results/figures/{dataset}/{regime}/training_{backbone}.png",
            caption="../workflow/captions/training.rst",
            category="Figures",
            subcategory="{dataset}",
        ),
        pdf="results/figures/{dataset}/{regime}/training_{backbone}.pdf",
    log:
        "results/logs/training_figure/{dataset}/{regime}/{backbone}.log",
    benchmark:
        "results/benchmarks/training_figure/{dataset}/{regime}/{backbone}.tsv"
    conda:
        "../envs/pytorch.yaml"
    params:
        cells=get_all_seed_cells,
    script:
        "../workflow/scripts/training_figure.py"


rule anchor_figure:
    input:
        anchors=cell_file("anchors.parquet"),
        classes="results/data/{dataset}/classes.json",
    output:
        png=report(
            f"{ANCHOR_FIGURE}.png",
            caption="../workflow/captions/anchors.rst",
            category="Figures",
            subcategory="{dataset}",
        ),
        pdf=f"{ANCHOR_FIGURE}.pdf",
    log:
        cell_log("anchor_figure"),
    benchmark:
        cell_benchmark("anchor_figure")
    conda:
        "../envs/pytorch.yaml"
    script:
        "../workflow/scripts/anchor_figure.py"

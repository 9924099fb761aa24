rule embed:
    input:
        unpack(get_selection_input),
        model=cell_file("model.pt"),
        images=prepared_images,
        labels="results/data/{dataset}/labels.parquet",
        # Query and database of the (dataset, seed), the same for every regime.
        split="results/splits/{dataset}/seed{seed}.evaluation.parquet",
    output:
        embeddings=cell_file("embeddings.parquet"),
        anchors=cell_file("anchors.parquet"),
    log:
        cell_log("embed"),
    benchmark:
        cell_benchmark("embed")
    conda:
        "../envs/pytorch.yaml"
    threads: 1
    resources:
        gpu=1,
    params:
        settings=get_cell_settings,
    script:
        "../workflow/scripts/embed.py"

rule embed:
    input:
        unpack(get_selection_input),
        model="results/cells/{dataset}/{regime}/{backbone}/{loss}/seed{seed}/model.pt",
        images="results/data/{dataset}/images.npy",
        labels="results/data/{dataset}/labels.parquet",
        # Query and database of the (dataset, seed), the same for every regime.
        split="results/splits/{dataset}/seed{seed}.evaluation.parquet",
    output:
        embeddings="results/cells/{dataset}/{regime}/{backbone}/{loss}/seed{seed}/embeddings.parquet",
        anchors="results/cells/{dataset}/{regime}/{backbone}/{loss}/seed{seed}/anchors.parquet",
    log:
        "results/logs/embed/{dataset}/{regime}/{backbone}/{loss}/seed{seed}.log",
    benchmark:
        "results/benchmarks/embed/{dataset}/{regime}/{backbone}/{loss}/seed{seed}.tsv"
    conda:
        "../envs/pytorch.yaml"
    threads: 1
    resources:
        gpu=1,
    params:
        settings=get_cell_settings,
    script:
        "../workflow/scripts/embed.py"

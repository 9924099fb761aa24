rule prepare:
    input:
        unpack(get_prepare_input),
    output:
        images="results/data/{dataset}/images.npy",
        labels="results/data/{dataset}/labels.parquet",
        classes="results/data/{dataset}/classes.json",
    log:
        "results/logs/prepare/{dataset}.log",
    benchmark:
        "results/benchmarks/prepare/{dataset}.tsv"
    wildcard_constraints:
        dataset=ARRAY_DATASET,
    conda:
        "../envs/pytorch.yaml"
    threads: 2
    params:
        spec=get_prepare_spec,
    script:
        "../workflow/scripts/prepare.py"


# datasets.<name>.storage: jpeg (workflow/jpeg_store.py): the same job,
# writing a JPEG store instead of the decoded array.
use rule prepare as prepare_jpeg with:
    output:
        images="results/data/{dataset}/images.jpegs",
        labels="results/data/{dataset}/labels.parquet",
        classes="results/data/{dataset}/classes.json",
    wildcard_constraints:
        dataset=JPEG_DATASET,

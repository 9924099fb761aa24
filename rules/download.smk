rule download:
    output:
        directory("results/raw/{download}"),
    log:
        "results/logs/download/{download}.log",
    benchmark:
        "results/benchmarks/download/{download}.tsv"
    conda:
        "../envs/pytorch.yaml"
    params:
        files=get_download_files,
    script:
        "../workflow/scripts/download.py"

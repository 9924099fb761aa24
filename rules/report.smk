rule aggregate:
    input:
        get_all_metric_files,
    output:
        report(
            "results/metrics.csv",
            caption="../workflow/captions/metrics.rst",
            category="Metrics",
        ),
    log:
        "results/logs/aggregate.log",
    benchmark:
        "results/benchmarks/aggregate.tsv"
    conda:
        "../envs/report.yaml"
    params:
        cells=CELLS,
        factors=get_cell_factors(),
    script:
        "../workflow/scripts/aggregate.py"


rule table:
    input:
        "results/metrics.csv",
    output:
        csv="results/tables/{dataset}/{regime}.csv",
        md=report(
            "results/tables/{dataset}/{regime}.md",
            caption="../workflow/captions/table.rst",
            category="Tables",
        ),
        tex="results/tables/{dataset}/{regime}.tex",
    log:
        "results/logs/table/{dataset}/{regime}.log",
    benchmark:
        "results/benchmarks/table/{dataset}/{regime}.tsv"
    conda:
        "../envs/report.yaml"
    script:
        "../workflow/scripts/table.py"


rule pr_figure:
    input:
        get_pr_curve_files,
    output:
        png=report(
            "results/figures/{dataset}/pr_{regime}.png",
            caption="../workflow/captions/pr_figure.rst",
            category="Figures",
        ),
        pdf="results/figures/{dataset}/pr_{regime}.pdf",
    log:
        "results/logs/pr_figure/{dataset}/{regime}.log",
    benchmark:
        "results/benchmarks/pr_figure/{dataset}/{regime}.tsv"
    conda:
        "../envs/report.yaml"
    params:
        cells=get_cells_of_figure,
    script:
        "../workflow/scripts/pr_figure.py"


rule speedup_figure:
    input:
        "results/metrics.csv",
    output:
        png=report(
            "results/figures/{dataset}/speedup_{regime}.png",
            caption="../workflow/captions/speedup_figure.rst",
            category="Figures",
        ),
        pdf="results/figures/{dataset}/speedup_{regime}.pdf",
    log:
        "results/logs/speedup_figure/{dataset}/{regime}.log",
    benchmark:
        "results/benchmarks/speedup_figure/{dataset}/{regime}.tsv"
    conda:
        "../envs/report.yaml"
    params:
        k=get_speedup_k,
    script:
        "../workflow/scripts/speedup_figure.py"

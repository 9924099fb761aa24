rule aggregate:
    input:
        get_all_metric_files,
    output:
        report(
            RESULTS + "/metrics.csv",
            caption="../workflow/captions/metrics.rst",
            category="Metrics",
        ),
    params:
        cells=CELLS,
    log:
        RESULTS + "/logs/aggregate.log",
    benchmark:
        RESULTS + "/benchmarks/aggregate.tsv"
    conda:
        "../envs/report.yaml"
    script:
        "../workflow/scripts/aggregate.py"


rule table:
    input:
        RESULTS + "/metrics.csv",
    output:
        csv=RESULTS + "/tables/{dataset}/{regime}.csv",
        md=report(
            RESULTS + "/tables/{dataset}/{regime}.md",
            caption="../workflow/captions/table.rst",
            category="Tables",
        ),
        tex=RESULTS + "/tables/{dataset}/{regime}.tex",
    log:
        RESULTS + "/logs/table/{dataset}/{regime}.log",
    benchmark:
        RESULTS + "/benchmarks/table/{dataset}/{regime}.tsv"
    conda:
        "../envs/report.yaml"
    script:
        "../workflow/scripts/table.py"


rule pr_figure:
    input:
        get_pr_curve_files,
    output:
        png=report(
            RESULTS + "/figures/{dataset}/pr_{regime}.png",
            caption="../workflow/captions/pr_figure.rst",
            category="Figures",
        ),
        pdf=RESULTS + "/figures/{dataset}/pr_{regime}.pdf",
    params:
        cells=get_cells_of_figure,
    log:
        RESULTS + "/logs/pr_figure/{dataset}/{regime}.log",
    benchmark:
        RESULTS + "/benchmarks/pr_figure/{dataset}/{regime}.tsv"
    conda:
        "../envs/report.yaml"
    script:
        "../workflow/scripts/pr_figure.py"

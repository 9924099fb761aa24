rule declared_table:
    input:
        "results/metrics.csv",
    output:
        csv="results/tables/{table}.csv",
        md=report(
            "results/tables/{table}.md",
            caption="../workflow/captions/declared_table.rst",
            category="Tables",
        ),
        tex="results/tables/{table}.tex",
    log:
        "results/logs/declared_table/{table}.log",
    benchmark:
        "results/benchmarks/declared_table/{table}.tsv"
    conda:
        "../envs/report.yaml"
    params:
        declaration=get_table_declaration,
    script:
        "../workflow/scripts/declared_table.py"


rule cost_table:
    input:
        checkpoints=get_all_models,
        train_benchmarks=get_all_train_benchmarks,
        evaluate_benchmarks=get_all_evaluate_benchmarks,
        evaluate_timings=get_all_evaluate_timings,
    output:
        csv="results/cost.csv",
        md=report(
            "results/cost.md",
            caption="../workflow/captions/cost.rst",
            category="Tables",
        ),
    log:
        "results/logs/cost_table.log",
    benchmark:
        "results/benchmarks/cost_table.tsv"
    conda:
        "../envs/pytorch.yaml"
    params:
        cells=CELLS,
    script:
        "../workflow/scripts/cost_table.py"


rule ranking:
    input:
        "results/metrics.csv",
    output:
        csv="results/rankings/{ranking}/average_ranks.csv",
        blocks="results/rankings/{ranking}/blocks.csv",
        md=report(
            "results/rankings/{ranking}/average_ranks.md",
            caption="../workflow/captions/ranking.rst",
            category="Rankings",
        ),
        png=report(
            "results/rankings/{ranking}/critical_difference.png",
            caption="../workflow/captions/ranking.rst",
            category="Rankings",
        ),
        pdf="results/rankings/{ranking}/critical_difference.pdf",
    log:
        "results/logs/ranking/{ranking}.log",
    benchmark:
        "results/benchmarks/ranking/{ranking}.tsv"
    conda:
        "../envs/report.yaml"
    params:
        declaration=get_ranking_declaration,
    script:
        "../workflow/scripts/ranking.py"

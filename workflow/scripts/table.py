import _repo_path  # noqa: F401  (makes `workflow` importable)

from workflow.io import read_csv, save_text
from workflow.logs import log_to
from workflow.report import METRICS_COLUMNS
from workflow.table_text import render
from workflow.tables import build_table, regime_declaration

with log_to(snakemake.log[0]):
    dataset, regime = snakemake.wildcards.dataset, snakemake.wildcards.regime
    metrics = read_csv(snakemake.input[0], METRICS_COLUMNS)
    decl = regime_declaration(metrics, dataset, regime)
    name = f"{dataset}/{regime}"
    csv, markdown, latex = render(name, decl, build_table(name, decl, metrics))
    save_text(snakemake.output.csv, csv)
    save_text(snakemake.output.md, markdown)
    save_text(snakemake.output.tex, latex)
    print(markdown)

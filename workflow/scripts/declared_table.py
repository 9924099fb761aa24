import _repo_path  # noqa: F401  (makes `workflow` importable)

from workflow.io import read_csv, save_text
from workflow.logs import log_to
from workflow.report import METRICS_COLUMNS
from workflow.table_text import render
from workflow.tables import build_table

with log_to(snakemake.log[0]):
    name = snakemake.wildcards.table
    declaration = snakemake.params.declaration
    frame = build_table(
        name, declaration, read_csv(snakemake.input[0], METRICS_COLUMNS)
    )
    csv, markdown, latex = render(name, declaration, frame)
    save_text(snakemake.output.csv, csv)
    save_text(snakemake.output.md, markdown)
    save_text(snakemake.output.tex, latex)
    print(markdown)

import _repo_path  # noqa: F401  (makes `workflow` importable)
import pandas as pd

from workflow.io import save_text
from workflow.logs import log_to
from workflow.tables import build_table, render

with log_to(snakemake.log[0]):
    name = snakemake.wildcards.table
    declaration = snakemake.params.declaration
    frame = build_table(name, declaration, pd.read_csv(snakemake.input[0]))
    csv, markdown, latex = render(name, declaration, frame)
    save_text(snakemake.output.csv, csv)
    save_text(snakemake.output.md, markdown)
    save_text(snakemake.output.tex, latex)
    print(markdown)

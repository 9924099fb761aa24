import _repo_path  # noqa: F401  (makes `workflow` importable)

import json

from workflow.io import save_csv, save_text
from workflow.logs import log_to
from workflow.selection import selection_table, trials_markdown, trials_table

with log_to(snakemake.log[0]):
    records = [json.load(open(path)) for path in snakemake.input]
    table = selection_table(records, snakemake.params.cells)
    save_csv(snakemake.output.csv, table)
    budget = ", ".join(sorted({str(n) for n in table["trials"]}))
    text = (
        f"**Selected settings** (validation {table['metric'].iloc[0]}; trials per loss: {budget})\n\n"
        + table.to_markdown(index=False)
        + "\n"
    )
    save_text(snakemake.output.md, text)
    print(text)
    trials = trials_table(records, snakemake.params.cells)
    save_csv(snakemake.output.trials_csv, trials)
    save_text(
        snakemake.output.trials_md,
        "**Every trial** (validation scores)\n\n" + trials_markdown(trials),
    )

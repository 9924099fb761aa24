import _repo_path  # noqa: F401  (makes `workflow` importable)

import json

from workflow.io import save_text
from workflow.logs import log_to
from workflow.selection import selection_texts

with log_to(snakemake.log[0]):
    records = [json.load(open(path)) for path in snakemake.input]
    texts = selection_texts(records, snakemake.params.cells)
    out = snakemake.output
    for name, path in [
        ("table.csv", out.csv),
        ("table.md", out.md),
        ("trials.csv", out.trials_csv),
        ("trials.md", out.trials_md),
    ]:
        save_text(path, texts[name])
    print(texts["table.md"])

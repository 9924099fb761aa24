import _repo_path  # noqa: F401  (makes `workflow` importable)
import pandas as pd

from workflow.io import save_text
from workflow.logs import log_to
from workflow.report import summary_table, table_outputs

with log_to(snakemake.log[0]):
    dataset, regime = snakemake.wildcards.dataset, snakemake.wildcards.regime
    metrics = pd.read_csv(snakemake.input[0])
    metrics = metrics[(metrics["dataset"] == dataset) & (metrics["regime"] == regime)]
    n_seeds = metrics["seed"].nunique()
    caption = (
        f"Retrieval on {dataset} ({regime}): mean ± std over {n_seeds} seed(s)"
    )
    csv, markdown, latex = table_outputs(summary_table(metrics), caption)
    save_text(snakemake.output.csv, csv)
    save_text(snakemake.output.md, markdown)
    save_text(snakemake.output.tex, latex)
    print(markdown)

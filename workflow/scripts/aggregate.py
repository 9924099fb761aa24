import _repo_path  # noqa: F401  (makes `workflow` importable)

from workflow.io import save_csv
from workflow.logs import log_to
from workflow.report import aggregate

with log_to(snakemake.log[0]):
    metrics = aggregate(
        snakemake.params.cells, list(snakemake.input), snakemake.params.factors
    )
    save_csv(snakemake.output[0], metrics)
    print(f"{len(metrics)} rows")

import _repo_path  # noqa: F401  (makes `workflow` importable)

from workflow.cost import cost_table
from workflow.io import save_csv, save_text
from workflow.logs import log_to

with log_to(snakemake.log[0]):
    table = cost_table(
        snakemake.params.cells,
        snakemake.input.checkpoints,
        snakemake.input.train_benchmarks,
        snakemake.input.evaluate_benchmarks,
        snakemake.input.evaluate_timings,
    )
    save_csv(snakemake.output.csv, table)
    text = "**Cost per cell** (wall seconds and peak memory from Snakemake's benchmark files)\n\n"
    save_text(
        snakemake.output.md,
        text + table.to_markdown(index=False, floatfmt=".2f") + "\n",
    )
    print(table.to_string())

import _repo_path  # noqa: F401  (makes `workflow` importable)

import json

from workflow.figures import sensitivity_figure
from workflow.io import save_figure
from workflow.logs import log_to

with log_to(snakemake.log[0]):
    record = json.load(open(snakemake.input[0]))
    w = snakemake.wildcards
    fig = sensitivity_figure(
        record, f"{w.loss} on {w.dataset} ({w.regime}, {w.backbone})"
    )
    save_figure(fig, snakemake.output.png, snakemake.output.pdf)

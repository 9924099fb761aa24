import _repo_path  # noqa: F401  (makes `workflow` importable)

import pandas as pd

from workflow.figures import pr_figure
from workflow.io import atomic_path
from workflow.logs import log_to

with log_to(snakemake.log[0]):
    frames = []
    for cell, path in zip(snakemake.params.cells, snakemake.input):
        curve = pd.read_parquet(path)
        curve["backbone"], curve["loss"], curve["seed"] = (
            cell.backbone,
            cell.loss,
            cell.seed,
        )
        frames.append(curve)
    dataset, regime = snakemake.wildcards.dataset, snakemake.wildcards.regime
    fig = pr_figure(pd.concat(frames, ignore_index=True), f"{dataset} ({regime})")
    for key in ["png", "pdf"]:
        with atomic_path(snakemake.output[key]) as tmp:
            fig.savefig(tmp, format=key)

import _repo_path  # noqa: F401  (makes `workflow` importable)

import pandas as pd

from workflow.figures import speedup_figure, speedup_points
from workflow.io import atomic_path
from workflow.logs import log_to

with log_to(snakemake.log[0]):
    dataset, regime = snakemake.wildcards.dataset, snakemake.wildcards.regime
    metrics = pd.read_csv(snakemake.input[0])
    metrics = metrics[(metrics["dataset"] == dataset) & (metrics["regime"] == regime)]
    k = snakemake.params.k
    print(speedup_points(metrics, k).to_string(index=False))
    fig = speedup_figure(metrics, k, f"{dataset} ({regime})")
    for key in ["png", "pdf"]:
        with atomic_path(snakemake.output[key]) as tmp:
            fig.savefig(tmp, format=key)

import _repo_path  # noqa: F401  (makes `workflow` importable)
import pandas as pd
import torch

from workflow.figures import training_curves_figure
from workflow.io import save_figure
from workflow.logs import log_to

with log_to(snakemake.log[0]):
    rows = []
    for cell, path in zip(snakemake.params.cells, snakemake.input):
        history = torch.load(path, map_location="cpu", weights_only=True)["history"]
        for epoch, record in enumerate(history, start=1):
            terms = record if isinstance(record, dict) else {"loss": record}
            for term, value in terms.items():
                rows.append({"loss": cell.loss, "seed": cell.seed, "epoch": epoch, "term": term, "value": float(value)})
    w = snakemake.wildcards
    fig = training_curves_figure(pd.DataFrame(rows), title=f"{w.dataset} ({w.regime}, {w.backbone})")
    save_figure(fig, snakemake.output.png, snakemake.output.pdf)

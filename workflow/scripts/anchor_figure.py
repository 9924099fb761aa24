import _repo_path  # noqa: F401  (makes `workflow` importable)

import json

import numpy as np
import pandas as pd

from workflow.figures import anchor_distance_figure
from workflow.io import save_figure
from workflow.logs import log_to

with log_to(snakemake.log[0]):
    anchors = pd.read_parquet(snakemake.input.anchors)
    classes = json.loads(open(snakemake.input.classes).read())
    w = snakemake.wildcards
    # The matrix is built here with NumPy so this job does not import torch.
    fig = anchor_distance_figure(
        np.stack(anchors["anchor"].to_numpy()).astype(np.float32),
        [classes[i] for i in anchors["label"]],
        title=f"{w.loss} anchors: {w.dataset} ({w.regime}, {w.backbone}, seed {w.seed})",
    )
    save_figure(fig, snakemake.output.png, snakemake.output.pdf)

import _repo_path  # noqa: F401  (makes `workflow` importable)
import json

import numpy as np
import pandas as pd
import torch

from workflow.io import atomic_path
from workflow.logs import log_to
from workflow.training import train_cell

with log_to(snakemake.log[0]):
    settings = snakemake.params.settings
    print(json.dumps(settings, indent=2, sort_keys=True))
    images = np.load(snakemake.input.images, mmap_mode="r")
    labels = pd.read_parquet(snakemake.input.labels)["label"].to_numpy()
    classes = json.loads(open(snakemake.input.classes).read())
    split = pd.read_parquet(snakemake.input.split)
    checkpoint = train_cell(
        images,
        labels,
        split.loc[split["split"] == "train", "index"].to_numpy(),
        num_classes=len(classes),
        settings=settings,
        threads=snakemake.threads,
    )
    print(f"trained on {checkpoint['device']}; loss per epoch: {checkpoint['history']}")
    with atomic_path(snakemake.output[0]) as tmp:
        torch.save(checkpoint, tmp)

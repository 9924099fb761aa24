import _repo_path  # noqa: F401  (makes `workflow` importable)
import json
from pathlib import Path

import numpy as np
import pandas as pd

from workflow.backbones.weights import set_sources
from workflow.io import save_json
from workflow.logs import log_to
from workflow.selection import resolve_settings
from workflow.training import save_torch, train_cell

with log_to(snakemake.log[0]):
    # Pretrained weights come from data_mirror when it is set, else from
    # their address through results/downloads/ (workflow/backbones/weights.py).
    set_sources(mirror=snakemake.config.get("data_mirror"))
    settings = resolve_settings(snakemake.params.settings, snakemake.input.get("selection"))
    print(json.dumps(settings, indent=2, sort_keys=True))
    images = np.load(snakemake.input.images, mmap_mode="r")
    labels = pd.read_parquet(snakemake.input.labels)["label"].to_numpy()
    classes = json.loads(open(snakemake.input.classes).read())
    split = pd.read_parquet(snakemake.input.split)
    checkpoint_path = Path(snakemake.params.checkpoint)
    model = train_cell(
        images,
        labels,
        split.loc[split["split"] == "train", "index"].to_numpy(),
        num_classes=len(classes),
        settings=settings,
        threads=snakemake.threads,
        checkpoint_path=checkpoint_path,
    )
    # Timing and device are not reproducible: they go to train_stats.json
    # and the log, so model.pt has the same bits on every CPU run.
    stats = model.pop("stats")
    print(f"trained: {json.dumps(stats, sort_keys=True)}")
    print(f"per epoch: {model['history']}")
    save_json(snakemake.output.stats, stats)
    save_torch(snakemake.output.model, model)
    # model.pt is complete: the resume checkpoint is no longer needed.
    checkpoint_path.unlink(missing_ok=True)

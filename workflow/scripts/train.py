import _repo_path  # noqa: F401  (makes `workflow` importable)

import json

import pandas as pd

from workflow.backbones.weights import set_sources
from workflow.jpeg_store import open_images
from workflow.logs import log_to
from workflow.selection import resolve_settings
from workflow.training.loop import train_job
from workflow.training_log import final_folder

with log_to(snakemake.log[0]):
    # Pretrained weights come from data_mirror when it is set, else from
    # their address through results/downloads/ (workflow/backbones/weights.py).
    set_sources(mirror=snakemake.config.get("data_mirror"))
    settings = resolve_settings(
        snakemake.params.settings, snakemake.input.get("selection")
    )
    print(json.dumps(settings, indent=2, sort_keys=True))
    images = open_images(snakemake.input.images, snakemake.wildcards.dataset)
    labels = pd.read_parquet(snakemake.input.labels)["label"].to_numpy()
    classes = json.loads(open(snakemake.input.classes).read())
    split = pd.read_parquet(snakemake.input.split)
    train_job(
        images,
        labels,
        split.loc[split["split"] == "train", "index"].to_numpy(),
        num_classes=len(classes),
        settings=settings,
        model_path=snakemake.output.model,
        stats_path=snakemake.output.stats,
        checkpoint_path=snakemake.params.checkpoint,
        threads=snakemake.threads,
        # Config key tensorboard: read here, not a rule parameter, so that
        # switching it retrains nothing.
        tensorboard_dir=final_folder(snakemake.params.checkpoint)
        if snakemake.config.get("tensorboard", True)
        else None,
        # Config key jobs_per_gpu (workflow/devices.py): read here for the
        # same reason.
        jobs_per_gpu=snakemake.config.get("jobs_per_gpu", 1),
    )

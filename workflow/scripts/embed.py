import _repo_path  # noqa: F401  (makes `workflow` importable)

import pandas as pd
import torch

from workflow.cell_files import class_ids, read_model
from workflow.config import CELL_PATTERN, settings_hash
from workflow.devices import claim_device
from workflow.embedding import compute_embeddings, provenance, write_embeddings
from workflow.jpeg_store import open_images
from workflow.logs import log_to
from workflow.selection import resolve_settings

with log_to(snakemake.log[0]):
    settings = resolve_settings(
        snakemake.params.settings, snakemake.input.get("selection")
    )
    torch.set_num_threads(snakemake.threads)
    checkpoint = read_model(snakemake.input.model, settings)
    images = open_images(snakemake.input.images, snakemake.wildcards.dataset)
    labels = pd.read_parquet(snakemake.input.labels)["label"].to_numpy()
    # A cell's evaluation split holds query and database only; a trial's
    # validation split also holds its training images, which are not embedded.
    split = pd.read_parquet(snakemake.input.split)
    split = split[split["split"] != "train"].reset_index(drop=True)
    index = split["index"].to_numpy()
    # The device this job holds while it embeds (workflow/devices.py); the
    # config key jobs_per_gpu is read here, not a rule parameter, so that
    # changing it re-embeds nothing.
    with claim_device(
        settings["training"]["device"],
        snakemake.config.get("jobs_per_gpu", 1),
        CELL_PATTERN.format(**settings),
    ) as claim:
        embeddings, predictions, anchors = compute_embeddings(
            checkpoint,
            settings,
            images,
            index,
            source=snakemake.input.model,
            device=claim.device,
        )
    write_embeddings(
        snakemake.output.embeddings,
        snakemake.output.anchors,
        split,
        labels[index],
        embeddings,
        predictions,
        anchors,
        provenance(settings, settings_hash(settings)),
        anchor_labels=class_ids(checkpoint),
    )
    print(f"{len(index)} embeddings of size {embeddings.shape[1]}")

import _repo_path  # noqa: F401  (makes `workflow` importable)

import torch

from workflow.devices import claim_device
from workflow.evaluate import evaluate_cell, read_cell_files
from workflow.io import save_csv, save_json, save_parquet
from workflow.logs import log_to

with log_to(snakemake.log[0]):
    torch.set_num_threads(snakemake.threads)
    embeddings, anchors = read_cell_files(
        snakemake.input.embeddings, snakemake.input.anchors
    )
    timing = {}
    # evaluation.device: the CPU, or a GPU claimed like a train job's (docs "GPUs").
    with claim_device(
        snakemake.params.evaluation.get("device", "cpu"),
        snakemake.config.get("jobs_per_gpu", 1),
        f"evaluate {snakemake.output.metrics}",
    ) as claim:
        metrics, curve = evaluate_cell(
            embeddings,
            anchors,
            evaluation=snakemake.params.evaluation,
            geometry=snakemake.params.geometry,
            device=claim.device,
            timing=timing,
        )
    print(metrics.to_string(index=False))
    print(timing)
    save_csv(snakemake.output.metrics, metrics)
    save_parquet(snakemake.output.pr_curve, curve)
    # Wall times differ run to run: a benchmark record, kept out of metrics.csv.
    save_json(
        snakemake.output.timing,
        {"geometry": snakemake.params.geometry, "search": timing},
    )

import _repo_path  # noqa: F401  (makes `workflow` importable)

import json

from workflow.io import save_json
from workflow.logs import log_to
from workflow.selection import selection_record, trial_scores

with log_to(snakemake.log[0]):
    metric = snakemake.params.metric
    scores = trial_scores(
        snakemake.params.trials, snakemake.params.seeds, list(snakemake.input), metric
    )
    record = selection_record(
        snakemake.wildcards.loss,
        metric,
        scores,
        snakemake.params.sweeps,
        snakemake.params.seeds,
    )
    print(scores.to_string(index=False))
    print(json.dumps(record, indent=2))
    save_json(snakemake.output[0], record)

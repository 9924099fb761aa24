import _repo_path  # noqa: F401  (makes `workflow` importable)

import json

import pandas as pd

from workflow.io import save_parquet
from workflow.logs import log_to
from workflow.splits import make_evaluation_split, make_training_split

# One script for both split rules: train_split (params pool and
# train_per_class) and evaluation_split (params evaluation).
with log_to(snakemake.log[0]):
    labels = pd.read_parquet(snakemake.input.labels)
    with open(snakemake.input.classes) as f:
        class_names = json.load(f)
    arrays = labels["label"].to_numpy(), labels["official_split"].to_numpy()
    common = dict(
        seed=int(snakemake.wildcards.seed),
        name=snakemake.wildcards.dataset,
        class_names=class_names,
    )
    if hasattr(snakemake.params, "evaluation"):
        split = make_evaluation_split(*arrays, **snakemake.params.evaluation, **common)
    else:
        split = make_training_split(
            *arrays,
            train_per_class=snakemake.params.train_per_class,
            regime=snakemake.wildcards.regime,
            **snakemake.params.pool,
            **common,
        )
    print(split["split"].value_counts().to_string())
    save_parquet(snakemake.output[0], split)

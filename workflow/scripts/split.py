import _repo_path  # noqa: F401  (makes `workflow` importable)
import json

import pandas as pd

from workflow.io import save_parquet
from workflow.logs import log_to
from workflow.splits import make_split

with log_to(snakemake.log[0]):
    labels = pd.read_parquet(snakemake.input.labels)
    with open(snakemake.input.classes) as f:
        class_names = json.load(f)
    spec = snakemake.params.dataset_spec
    split = make_split(
        labels["label"].to_numpy(),
        labels["official_split"].to_numpy(),
        seed=int(snakemake.wildcards.seed),
        query_per_class=spec["query_per_class"],
        database_per_class=spec["database_per_class"],
        test_fraction=spec["test_fraction"],
        train_per_class=snakemake.params.regime_spec["train_per_class"],
        name=snakemake.wildcards.dataset,
        regime=snakemake.wildcards.regime,
        database_from=spec.get("database_from", "test"),
        class_names=class_names,
    )
    print(split["split"].value_counts().to_string())
    save_parquet(snakemake.output[0], split)

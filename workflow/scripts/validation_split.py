import _repo_path  # noqa: F401  (makes `workflow` importable)

import pandas as pd

from workflow.io import save_parquet
from workflow.logs import log_to
from workflow.validation_split import make_validation_split

with log_to(snakemake.log[0]):
    labels = pd.read_parquet(snakemake.input.labels)
    spec = snakemake.params.validation
    pool = snakemake.params.pool
    split = make_validation_split(
        labels["label"].to_numpy(),
        labels["official_split"].to_numpy(),
        pd.read_parquet(snakemake.input.split),
        seed=int(snakemake.wildcards.seed),
        query_per_class=spec["query_per_class"],
        database_per_class=spec["database_per_class"],
        class_disjoint=spec["class_disjoint"],
        class_fraction=spec["class_fraction"],
        test_fraction=pool["test_fraction"],
        database_from=pool["database_from"],
        dataset_database_per_class=pool.get("database_per_class"),
        protocol=pool.get("protocol", "closed_set"),
        train_classes=pool.get("train_classes"),
        name=snakemake.wildcards.dataset,
        regime=snakemake.wildcards.regime,
    )
    print(split["split"].value_counts().to_string())
    save_parquet(snakemake.output[0], split)

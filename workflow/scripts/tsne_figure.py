import _repo_path  # noqa: F401  (makes `workflow` importable)

import pandas as pd

from workflow.cell_files import embedding_matrix
from workflow.evaluate import query_and_database
from workflow.figures import tsne_figure
from workflow.io import save_figure
from workflow.logs import log_to

with log_to(snakemake.log[0]):
    panels = {}
    for cell, path in zip(snakemake.params.cells, snakemake.input):
        frame = pd.read_parquet(path)
        queries, database = query_and_database(frame)
        database = (
            queries if database is None else database
        )  # all against all: every test image
        panels[cell.loss] = (embedding_matrix(database), database["label"].to_numpy())
    w = snakemake.wildcards
    fig = tsne_figure(
        panels,
        seed=snakemake.params.cells[0].seed,
        max_points=snakemake.params.max_points,
        title=f"{w.dataset} ({w.regime}, {w.backbone}): database embeddings",
    )
    save_figure(fig, snakemake.output.png, snakemake.output.pdf)

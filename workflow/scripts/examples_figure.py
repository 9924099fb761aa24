import _repo_path  # noqa: F401  (makes `workflow` importable)

import json

import numpy as np
import pandas as pd
import torch

from workflow.cell_files import embedding_matrix
from workflow.evaluate import query_and_database
from workflow.figures import retrieval_examples_figure
from workflow.guards.counts import example_queries_problem
from workflow.io import save_figure
from workflow.jpeg_store import open_images
from workflow.logs import log_to

with log_to(snakemake.log[0]):
    images = open_images(snakemake.input.images, snakemake.wildcards.dataset)
    labels = pd.read_parquet(snakemake.input.labels)["label"].to_numpy()
    classes = json.loads(open(snakemake.input.classes).read())
    cells = snakemake.params.cells
    results, queries = {}, None
    for cell, path in zip(cells, snakemake.input.embeddings):
        frame = pd.read_parquet(path)
        q, db = query_and_database(frame)
        db = q if db is None else db  # all against all: the other test images
        if queries is None:  # the same queries for every loss, drawn by the seed
            problem = example_queries_problem(
                snakemake.params.n_queries, cell.dataset, len(q)
            )
            if problem:
                raise ValueError(problem)
            rng = np.random.default_rng(cell.seed)
            queries = sorted(
                rng.choice(
                    q["index"].to_numpy(), snakemake.params.n_queries, replace=False
                ).tolist()
            )
        chosen = q.set_index("index").loc[queries]
        dist = torch.cdist(
            torch.from_numpy(embedding_matrix(chosen)),
            torch.from_numpy(embedding_matrix(db)),
        )
        db_index = db["index"].to_numpy()
        dist[torch.from_numpy(db_index[None, :] == np.asarray(queries)[:, None])] = (
            float("inf")
        )  # never itself
        top = dist.topk(snakemake.params.top, largest=False).indices.numpy()
        results[cell.loss] = {
            query: db_index[row].tolist() for query, row in zip(queries, top)
        }
    fig = retrieval_examples_figure(
        images, labels, queries, results, classes, top=snakemake.params.top
    )
    save_figure(fig, snakemake.output.png, snakemake.output.pdf)

"""The same cell trained twice on the CPU gives identical model.pt bytes and
identical Parquet embeddings (bytes and content)."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
from conftest import TINY_CONFIG

from workflow.config import Cell, cell_settings
from workflow.config_loader import load_config
from workflow.datasets import load_dataset
from workflow.embedding import compute_embeddings, provenance, write_embeddings
from workflow.splits import make_split


def run_cell(tmp_path, name, loss="cam", seed=0):
    from workflow.checkpoints import save_torch
    from workflow.training.loop import train_cell

    config = load_config(TINY_CONFIG)
    settings = cell_settings(
        config, Cell("digits", "fewshot5", "small_cnn", loss, seed)
    )
    data = load_dataset("sklearn_digits")
    split = make_split(
        data.labels,
        np.full(len(data.labels), "none"),
        seed=seed,
        query_per_class=5,
        train_per_class=20,
    )
    train = split.loc[split["split"] == "train", "index"].to_numpy()
    checkpoint = train_cell(
        data.images, data.labels, train, 10, settings, progress=False
    )
    evaluation = split[split["split"] != "train"].reset_index(drop=True)
    index = evaluation["index"].to_numpy()
    emb, pred, anchors = compute_embeddings(checkpoint, settings, data.images, index)
    path = tmp_path / f"{name}.parquet"
    write_embeddings(
        path,
        tmp_path / f"{name}_anchors.parquet",
        evaluation,
        data.labels[index],
        emb,
        pred,
        anchors,
        provenance(settings, "hash"),
    )
    model_path = tmp_path / f"{name}.pt"
    save_torch(
        model_path, {k: v for k, v in checkpoint.items() if k != "stats"}
    )  # as scripts/train.py
    return pq.read_table(path), path.read_bytes(), model_path.read_bytes()


def test_same_cell_twice_gives_identical_parquet_embeddings(tmp_path):
    first, first_bytes, first_model = run_cell(tmp_path, "a")
    second, second_bytes, second_model = run_cell(tmp_path, "b")
    assert first.equals(second)
    assert first.schema.metadata == second.schema.metadata
    # Bit-identical files: model.pt (no timings in it) and the Parquet file.
    assert first_model == second_model
    assert first_bytes == second_bytes
    # A different seed changes the model, so the comparison above can fail.
    other, _, other_model = run_cell(tmp_path, "c", seed=1)
    assert other_model != first_model
    assert not np.array_equal(
        np.stack(first.column("embedding").to_numpy(zero_copy_only=False))[:5],
        np.stack(other.column("embedding").to_numpy(zero_copy_only=False))[:5],
    )


def test_same_cell_evaluated_twice_gives_byte_identical_metrics(tmp_path):
    """The evaluate rule run twice on the same embeddings (exact and
    two-stage retrieval, two distances) writes the same metrics.csv bytes:
    the search's wall times go to its benchmark record (timing.json)."""
    import json

    import pandas as pd
    from conftest import make_workspace, snakemake

    config = {
        "datasets": {"digits": {"source": "sklearn_digits", "query_per_class": 2}},
        "regimes": {"full": {}},
        "backbones": {"small_cnn": {"arch": "small_cnn", "embedding_size": 8}},
        "losses": {"cam": {"impl": "cam"}},
        "seeds": [0],
        "evaluation": {"distances": ["own", "cosine"]},
    }
    workdir = make_workspace(tmp_path / "work", config)
    cell = "digits/full/small_cnn/cam/seed0"
    folder = workdir / "results/cells" / cell
    rng = np.random.default_rng(0)
    split = pd.DataFrame(
        {"index": np.arange(60), "split": ["query"] * 10 + ["database"] * 50}
    )
    write_embeddings(
        folder / "embeddings.parquet",
        folder / "anchors.parquet",
        split,
        np.arange(60) % 5,
        rng.normal(size=(60, 8)).astype(np.float32),
        np.full(60, -1),
        rng.normal(size=(5, 8)).astype(np.float32),
        {"loss": "cam"},
    )
    target = f"results/cells/{cell}/metrics.csv"
    runs = []
    for _ in range(2):
        snakemake(
            workdir,
            "--cores",
            "1",
            target,
            "--allowed-rules",
            "evaluate",
            "--forcerun",
            "evaluate",
        )
        timing = json.loads(
            (workdir / f"results/benchmarks/evaluate/{cell}.timing.json").read_text()
        )
        runs.append(((workdir / target).read_bytes(), timing))
    (first, first_timing), (second, second_timing) = runs
    assert first == second
    metrics = pd.read_csv(workdir / target)
    assert set(metrics["retrieval"]) == {"exact", "two_stage_c1", "two_stage_c2"}
    assert set(metrics["distance"]) == {"euclidean", "cosine"}
    assert "seconds_per_query" not in set(metrics["metric"])
    for timing in (first_timing, second_timing):
        assert timing["geometry"] == "euclidean" and set(timing["search"]) == {
            "euclidean",
            "cosine",
        }
        assert all(
            t["seconds_per_query"] > 0
            for by in timing["search"].values()
            for t in by.values()
        )

"""The whole pipeline on a tiny config, through real Snakemake runs."""

from __future__ import annotations

import copy
import json
import re
import shutil

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import yaml
from conftest import REPO, TINY_CONFIG, make_workspace, snakemake

from workflow.config import cells
from workflow.config_loader import prepare_config

CELLS = cells(prepare_config(TINY_CONFIG))


def test_every_output_exists_and_is_well_formed(tiny_run):
    results = tiny_run / "results"
    assert (results / "data/digits/images.npy").exists()
    assert json.loads((results / "data/digits/classes.json").read_text()) == [
        str(i) for i in range(10)
    ]
    for cell in CELLS:
        cell_dir = results / "cells" / cell.path
        checkpoint = torch.load(cell_dir / "model.pt", weights_only=True)
        assert len(checkpoint["history"]) == TINY_CONFIG["training"]["epochs"]
        assert all(
            0 <= epoch["accuracy"] <= 1 and epoch["loss"] > 0
            for epoch in checkpoint["history"]
        )
        stats = json.loads(
            (cell_dir / "train_stats.json").read_text()
        )  # timing lives outside model.pt
        assert (
            stats["images_seen"] > 0
            and stats["train_seconds"] > 0
            and "train_seconds" not in checkpoint
        )

        table = pq.read_table(cell_dir / "embeddings.parquet")
        assert table.column_names == [
            "index",
            "split",
            "label",
            "prediction",
            "embedding",
        ]
        emb_type = table.schema.field("embedding").type
        assert pa.types.is_fixed_size_list(emb_type)
        assert emb_type.list_size == 16 and emb_type.value_type == pa.float32()
        frame = table.to_pandas()
        assert set(frame["split"]) == {"database", "query"}
        assert (frame["split"] == "query").sum() == 5 * 10
        meta = json.loads(table.schema.metadata[b"cbir"])
        assert {
            k: meta[k] for k in ["dataset", "regime", "backbone", "loss", "seed"]
        } == {
            "dataset": cell.dataset,
            "regime": cell.regime,
            "backbone": cell.backbone,
            "loss": cell.loss,
            "seed": cell.seed,
        }
        assert meta["embedding_size"] == 16
        assert re.fullmatch(r"[0-9a-f]{16}", meta["config_hash"])
        for key in ["git_commit", "torch_version", "project_version"]:
            assert meta[key]

        anchors = pq.read_table(cell_dir / "anchors.parquet").to_pandas()
        assert len(anchors) == (0 if cell.loss == "ce" else 10)

        # The evaluation split file gives the embedded rows: queries and
        # database only, none of the training split's images.
        split = pd.read_parquet(
            results / f"splits/{cell.dataset}/seed{cell.seed}.evaluation.parquet"
        )
        assert np.array_equal(
            np.sort(frame["index"].to_numpy()), split["index"].sort_values().to_numpy()
        )
        train = pd.read_parquet(
            results
            / f"splits/{cell.dataset}/{cell.regime}/seed{cell.seed}.train.parquet"
        )
        assert set(train["split"]) == {"train"} and not set(train["index"]) & set(
            split["index"]
        )

        assert (results / "logs/train" / f"{cell.path}.log").read_text().strip()
        assert (results / "benchmarks/train" / f"{cell.path}.tsv").exists()


def test_metrics_table_is_tidy_and_complete(tiny_run):
    metrics = pd.read_csv(tiny_run / "results/metrics.csv")
    assert list(metrics.columns) == [
        "dataset",
        "regime",
        "backbone",
        "loss",
        "seed",
        "geometry",
        "distance",
        "retrieval",
        "metric",
        "value",
        # the fixed factors of each cell (tables that compare them lay them out)
        "embedding_size",
        "optimizer",
        "epochs",
        "batch_size",
        "augment",
    ]
    assert set(metrics["epochs"]) == {2} and set(metrics["embedding_size"]) == {16}
    # Each loss in its own geometry, and only that (evaluation.distances: [own]).
    geometry = metrics.groupby("loss")["geometry"].unique().map(list).to_dict()
    assert geometry == {"ce": ["euclidean"], "cam": ["euclidean"], "lm": ["cosine"]}
    assert (metrics["distance"] == metrics["geometry"]).all()
    # Two-stage retrieval is on by default (classes [1, 2]) for the losses
    # that export anchors or centres (cam, lm), not for ce.
    assert set(metrics["retrieval"]) == {"exact", "two_stage_c1", "two_stage_c2"}
    quality = {
        "precision@1",
        "precision@5",
        "precision@10",
        "top1_error",
        "top5_error",
        "map",
        "map@r",
        "r_precision",
        "pr_auc",
    }
    cost = {"distance_computations_per_query"}
    expected = {
        "exact": quality | cost | {"accuracy", "queries_without_positives"},
        "two_stage_c1": quality | cost,
        "two_stage_c2": quality | cost,
    }
    for cell in CELLS:
        rows = metrics[
            (metrics["loss"] == cell.loss)
            & (metrics["regime"] == cell.regime)
            & (metrics["seed"] == cell.seed)
        ]
        methods = (
            ["exact"]
            if cell.loss == "ce"
            else ["exact", "two_stage_c1", "two_stage_c2"]
        )
        assert list(dict.fromkeys(rows["retrieval"])) == methods
        for method in methods:
            names = rows.loc[rows["retrieval"] == method, "metric"]
            assert len(names) == len(set(names)) and set(names) == expected[method]
        value = rows.set_index(["retrieval", "metric"])["value"]
        embeddings = pd.read_parquet(
            tiny_run / "results/cells" / cell.path / "embeddings.parquet"
        )
        n_db = int((embeddings["split"] == "database").sum())
        assert value["exact", "distance_computations_per_query"] == n_db
        assert value["exact", "queries_without_positives"] == 0
        if cell.loss != "ce":
            # 10 anchors plus the items of the kept classes (after 2 epochs
            # these may still be all of the database); more with c = 2.
            c1, c2 = (
                value[f"two_stage_c{c}", "distance_computations_per_query"]
                for c in (1, 2)
            )
            assert 10 < c1 <= c2 <= 10 + n_db
    assert len(metrics) == sum(
        len(expected["exact"]) + (0 if c.loss == "ce" else len(quality | cost) * 2)
        for c in CELLS
    )
    assert not metrics["value"].isna().any()
    assert (
        metrics.loc[metrics["metric"].isin(quality | {"accuracy"}), "value"]
        .between(0, 1)
        .all()
    )
    # Wall times are benchmark records (they differ run to run), not metrics.
    for cell in CELLS:
        timing = json.loads(
            (
                tiny_run / "results/benchmarks/evaluate" / f"{cell.path}.timing.json"
            ).read_text()
        )
        search = timing["search"][timing["geometry"]]
        assert set(search) == (
            {"exact"}
            if cell.loss == "ce"
            else {"exact", "two_stage_c1", "two_stage_c2"}
        )
        assert all(t["seconds_per_query"] > 0 for t in search.values())
    # Two epochs on digits already beat chance (0.1) by far.
    p1 = metrics[
        (metrics["metric"] == "precision@1") & (metrics["retrieval"] == "exact")
    ]
    assert p1["value"].mean() > 0.3


def test_tables_and_figures(tiny_run):
    results = tiny_run / "results"
    for regime in TINY_CONFIG["regimes"]:
        # The declared tables' engine: a block per backbone, a row per loss,
        # the config's first loss as the baseline of the marker.
        table = pd.read_csv(results / f"tables/digits/{regime}.csv")
        assert list(dict.fromkeys(table["row"])) == ["ce", "cam", "lm"]
        assert set(table["backbone"]) == {"small_cnn"}
        metrics = pd.read_csv(results / "metrics.csv")
        ce = metrics[
            (metrics["regime"] == regime)
            & (metrics["loss"] == "ce")
            & (metrics["metric"] == "map")
        ]
        ce_map = table[(table["row"] == "ce") & (table["metric"] == "map")]
        assert np.isclose(ce_map["mean"].item(), ce["value"].mean())
        assert np.isclose(ce_map["std"].item(), ce["value"].std())
        assert table.groupby("metric")["best"].any().all()
        assert table.loc[table["row"] == "ce", "n_paired"].isna().all()
        assert (table.loc[table["row"] != "ce", "n_paired"] == 2).all()
        markdown = (results / f"tables/digits/{regime}.md").read_text()
        assert "±" in markdown and "| cam" in markdown and "**0." in markdown
        assert (
            "no test against ce" in markdown
        )  # two seeds: no marker, and the caption says so
        latex = (results / f"tables/digits/{regime}.tex").read_text()
        assert r"\toprule" in latex and r"\bottomrule" in latex and r"$\pm$" in latex
        assert r"\textbf{" in latex
        for figure in ["pr", "speedup"]:
            png = (results / f"figures/digits/{figure}_{regime}.png").read_bytes()
            assert png.startswith(b"\x89PNG")
            assert (
                (results / f"figures/digits/{figure}_{regime}.pdf")
                .read_bytes()
                .startswith(b"%PDF")
            )


def test_second_run_does_nothing(tiny_run):
    result = snakemake(tiny_run, "--cores", "2", "--dry-run")
    assert "Nothing to be done" in result.stdout + result.stderr


def docs_block(after: str, language: str) -> str:
    """The first fenced code block of the losses page (docs/losses.md,
    "Adding a loss") after the text ``after``."""
    text = (REPO / "docs/losses.md").read_text()
    text = text[text.index(after) :]
    return re.search(rf"```{language}\n(.*?)```", text, flags=re.S).group(1)


def test_added_loss_adds_only_its_cells(tiny_run, tmp_path):
    """The docs' worked example: one new file plus one config entry; the dry
    run then lists only the new loss's cells (and the reports that read them)."""
    workdir = tmp_path / "copy"
    shutil.copytree(tiny_run, workdir, symlinks=True)
    (workdir / "workflow/losses/normalized_softmax.py").write_text(
        docs_block("Save as `workflow/losses/normalized_softmax.py`", "python")
    )
    entry = yaml.safe_load(docs_block("and add to `config.yaml`", "yaml"))["losses"]
    config = dict(TINY_CONFIG, losses={**TINY_CONFIG["losses"], **entry})
    (workdir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))

    out = snakemake(workdir, "--cores", "1", "--dry-run").stdout
    jobs = dict(re.findall(r"^(\w+)\s+(\d+)$", out.split("Job stats:")[1], flags=re.M))
    n_new = len(TINY_CONFIG["regimes"]) * len(TINY_CONFIG["seeds"])
    assert jobs == {
        "train": str(n_new),
        "embed": str(n_new),
        "evaluate": str(n_new),
        "aggregate": "1",
        "table": "2",
        "pr_figure": "2",
        "speedup_figure": "2",
        "tsne_figure": "2",
        "examples_figure": "2",
        "training_figure": "2",
        "cost_table": "1",
        "declared_table": "1",
        "all": "1",
        "total": str(3 * n_new + 16),
    }
    trained = re.findall(r"rule train:.*?wildcards: ([^\n]+)", out, flags=re.S)
    assert len(trained) == n_new and all("loss=normsoftmax" in w for w in trained)

    # And the new loss really trains, embeds and is evaluated (the reports
    # are the tiny run's, tested there; running only up to metrics.csv
    # saves the suite 15 jobs).
    snakemake(workdir, "results/metrics.csv", "--cores", "2")
    metrics = pd.read_csv(workdir / "results/metrics.csv")
    # Exact retrieval only (no anchors): 9 retrieval metrics, accuracy,
    # queries_without_positives and the cost row (distance computations;
    # wall times are in timing.json, not metrics.csv).
    assert (metrics["loss"] == "normsoftmax").sum() == n_new * 12


def test_declared_table_figures_and_cost(tiny_run):
    results = tiny_run / "results"
    table = pd.read_csv(results / "tables/tiny_grid.csv")
    assert list(dict.fromkeys(table["row"])) == ["ce", "cam", "lm"]
    assert set(table["regime"]) == {"full", "fewshot5"} and set(table["metric"]) == {
        "map",
        "precision@5",
    }
    assert (table["n"] == 2).all() and table["ci_low"].le(table["mean"]).all()
    assert table.groupby(["regime", "metric"])["best"].sum().ge(1).all()
    assert r"\toprule" in (results / "tables/tiny_grid.tex").read_text()
    for regime in TINY_CONFIG["regimes"]:
        folder = results / "figures/digits" / regime
        for kind in ["tsne", "examples", "training"]:
            assert (
                (folder / f"{kind}_small_cnn.png").read_bytes().startswith(b"\x89PNG")
            )
            assert (folder / f"{kind}_small_cnn.pdf").exists()
        anchors = sorted(p.name for p in (folder / "small_cnn").glob("anchors_*.png"))
        assert anchors == [
            "anchors_cam_seed0.png",
            "anchors_lm_seed0.png",
        ]  # ce has no anchors
    cost = pd.read_csv(results / "cost.csv")
    assert len(cost) == len(CELLS) and set(cost["device"]) == {"cpu"}
    assert (cost["train_wall_s"] > 0).all() and (cost["train_peak_rss_mb"] > 0).all()
    assert (cost["train_images_per_s"] > 0).all() and (
        cost["search_s_per_query"] > 0
    ).all()


def test_html_report_holds_every_table_and_figure(tiny_run):
    snakemake(tiny_run, "--report", "results/report.html")
    html = (tiny_run / "results/report.html").read_text()
    for name in [
        "pr_full.png",
        "tsne_small_cnn.png",
        "examples_small_cnn.png",
        "training_small_cnn.png",
        "anchors_cam_seed0.png",
        "tiny_grid.md",
        "cost.md",
        "metrics.csv",
    ]:
        assert name in html, name
    assert "t-SNE maps of the database embeddings" in html  # captions are rendered


def job_counts(out: str) -> dict[str, int]:
    """Jobs per rule of a (dry) run's "Job stats" table ({} when nothing is to be done)."""
    if "Job stats:" not in out:
        return {}
    return {
        rule: int(n)
        for rule, n in re.findall(
            r"^(\w+)\s+(\d+)$", out.split("Job stats:")[1], flags=re.M
        )
    }


def test_every_cam_term_acts_in_a_real_run(tiny_run):
    """The tiny run's CAM (the class's own defaults, anchors starting within
    the margins): attractor, repeller and minimum norm are all > 0 in
    epoch 1 of every cell (the epoch's means), with most anchor pairs
    within 2m and anchors below p (the default run checks the shipped
    setting)."""
    cam = [c for c in CELLS if c.loss == "cam"]
    assert len(cam) == 4
    for cell in cam:
        path = (
            tiny_run
            / f"results/cells/{cell.dataset}/{cell.regime}/{cell.backbone}/cam/seed{cell.seed}/model.pt"
        )
        first = torch.load(path, weights_only=True)["history"][0]
        assert all(first["terms"][t] > 0 for t in ["attractor", "repeller", "min_norm"])
        assert first["diagnostics"]["pairs_within_margin"] > 0.5, cell
        assert first["diagnostics"]["anchors_below_min_norm"] > 0, cell


def test_changing_evaluation_keys_retrains_nothing(tmp_path):
    """Training reads only the training split and its settings (hash,
    params) hold only what training reads: after a change of
    query_per_class or database_per_class, a dry run plans the evaluation
    split, embed and evaluate, and no train job; the re-run keeps model.pt
    and the embeddings' config_hash. A change of train_per_class retrains."""
    config = copy.deepcopy(TINY_CONFIG)
    config["regimes"] = {"fewshot5": {"train_per_class": 5}}
    config["losses"] = {"ce": {"impl": "ce"}}
    config["seeds"] = [0]
    config["training"]["epochs"] = 1
    workdir = make_workspace(tmp_path / "ws", config)
    cell = workdir / "results/cells/digits/fewshot5/small_cnn/ce/seed0"
    target = str(cell.relative_to(workdir) / "metrics.csv")
    snakemake(workdir, "--cores", "2", target)
    model_bytes, model_mtime = (
        (cell / "model.pt").read_bytes(),
        (cell / "model.pt").stat().st_mtime_ns,
    )
    config_hash = json.loads(
        pq.read_schema(cell / "embeddings.parquet").metadata[b"cbir"]
    )["config_hash"]

    def dry_run(dataset_spec: dict, regime_spec: dict | None = None) -> dict[str, int]:
        changed = copy.deepcopy(config)
        changed["datasets"]["digits"].update(dataset_spec)
        changed["regimes"]["fewshot5"].update(regime_spec or {})
        (workdir / "config.yaml").write_text(yaml.safe_dump(changed, sort_keys=False))
        result = snakemake(workdir, "--cores", "1", "--dry-run", target)
        return job_counts(result.stdout + result.stderr)

    evaluation_only = {"evaluation_split": 1, "embed": 1, "evaluate": 1, "total": 3}
    assert dry_run({"query_per_class": 4}) == evaluation_only
    assert dry_run({"database_per_class": 30}) == evaluation_only
    assert dry_run({}) == {}
    retrain = dry_run({}, {"train_per_class": 3})
    assert retrain == {
        "train_split": 1,
        "train": 1,
        "embed": 1,
        "evaluate": 1,
        "total": 4,
    }

    # Run the query change: the model stays as it was, bit for bit, and
    # the embeddings record the same (training) settings hash.
    dry_run({"query_per_class": 4})
    snakemake(workdir, "--cores", "2", target)
    assert (cell / "model.pt").stat().st_mtime_ns == model_mtime
    assert (cell / "model.pt").read_bytes() == model_bytes
    table = pq.read_table(cell / "embeddings.parquet")
    assert json.loads(table.schema.metadata[b"cbir"])["config_hash"] == config_hash
    assert (
        table.column("split").to_numpy(zero_copy_only=False) == "query"
    ).sum() == 4 * 10
    assert (
        "Nothing to be done"
        in snakemake(workdir, "--cores", "1", "--dry-run", target).stdout
    )

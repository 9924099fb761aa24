"""The paper configs (config/lm_places365.yaml, config/lm_places365_hard5.yaml,
config/cam_grid.yaml, config/mlrc.yaml) plan exactly their grids offline, hold the papers'
protocols, declare tables with the papers' layouts, and benchmarks/grid_cost.py
counts their training image passes."""

from __future__ import annotations

import importlib.util
import json
import re

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import REPO, make_workspace, snakemake

from workflow.config import cells, training_settings
from workflow.config_loader import load_config
from workflow.table_text import render
from workflow.tables import build_table

CONFIGS = ["lm_places365", "lm_places365_hard5", "cam_grid", "mlrc"]
# Losses that export anchors or centres (README, "Two-stage retrieval").
WITH_ANCHORS = {"cam", "lm", "center", "island", "arcface", "proxy_anchor"}
# Sources whose files are downloaded (sklearn_digits and imagefolder need none).
DOWNLOADED = {
    "cifar100",
    "svhn",
    "tiny_imagenet",
    "food101",
    "places365",
    "cub200",
    "cars196",
    "sop",
    "inshop",
}
# Network access would fail fast through this proxy (nothing listens on port 9).
DEAD_PROXY = "http://127.0.0.1:9"


def load(name: str) -> dict:
    return yaml.safe_load((REPO / "config" / f"{name}.yaml").read_text())


def expected_jobs(config: dict) -> dict[str, int]:
    """Jobs per rule, from the config's structure alone."""
    n = {
        key: len(config[key])
        for key in ["datasets", "regimes", "backbones", "losses", "seeds"]
    }
    anchored = sum(entry["impl"] in WITH_ANCHORS for entry in config["losses"].values())
    downloads = {
        (spec["source"], json.dumps(spec.get("params", {}), sort_keys=True))
        for spec in config["datasets"].values()
        if spec["source"] in DOWNLOADED
    }
    per_regime = n["datasets"] * n["regimes"]
    n_cells = per_regime * n["backbones"] * n["losses"] * n["seeds"]
    jpeg = sum(spec.get("storage") == "jpeg" for spec in config["datasets"].values())
    jobs = {
        "download": len(downloads),
        "prepare": n["datasets"] - jpeg,
        "prepare_jpeg": jpeg,
        # Training images per (dataset, regime, seed); query and database per (dataset, seed).
        "train_split": per_regime * n["seeds"],
        "evaluation_split": n["datasets"] * n["seeds"],
        "train": n_cells,
        "embed": n_cells,
        "evaluate": n_cells,
        "aggregate": 1,
        "cost_table": 1,
        "table": per_regime,
        "pr_figure": per_regime,
        "speedup_figure": per_regime,  # two-stage retrieval is on by default
        "tsne_figure": per_regime * n["backbones"],
        "examples_figure": per_regime * n["backbones"],
        "training_figure": per_regime * n["backbones"],
        "anchor_figure": per_regime * n["backbones"] * anchored,  # first seed only
        "declared_table": len(config.get("tables", {})),
        "ranking": len(config.get("rankings", {})),
        "all": 1,
    }
    if config.get(
        "selection"
    ):  # docs "Selection": every loss gets exactly `budget` trials per selection seed
        selection = config["selection"]
        selected = (
            per_regime * n["backbones"] * n["losses"]
        )  # one select per (dataset, regime, backbone, loss)
        trials = (
            selected
            * selection["budget"]
            * len(selection.get("seeds") or config["seeds"][:1])
        )
        jobs.update(
            {
                "validation_split": per_regime
                * len(selection.get("seeds") or config["seeds"][:1]),
                "train_trial": trials,
                "embed_trial": trials,
                "evaluate_trial": trials,
                "select": selected,
                "sensitivity_figure": selected,
                "selection_table": 1,
            }
        )
    jobs = {rule: count for rule, count in jobs.items() if count}
    jobs["total"] = sum(jobs.values())
    return jobs


@pytest.mark.parametrize("name", CONFIGS)
def test_dry_run_lists_the_expected_jobs_offline(name, tmp_path, monkeypatch):
    """`snakemake -n --configfile config/<name>.yaml --replace-workflow-config`
    plans one job per rule and cell as computed from the config, without
    any data and without touching the network (a dead proxy would make any
    download fail; torch's hub cache stays empty)."""
    for var in ["http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"]:
        monkeypatch.setenv(var, DEAD_PROXY)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    config = load(name)
    workdir = make_workspace(
        tmp_path / "ws", {"datasets": {}}
    )  # config.yaml is replaced
    path = REPO / "config" / f"{name}.yaml"
    out = snakemake(
        workdir, "-n", "--configfile", str(path), "--replace-workflow-config"
    ).stdout
    counts = {
        rule: int(c)
        for rule, c in re.findall(
            r"^(\w+)\s+(\d+)$", out.split("Job stats:")[1], flags=re.M
        )
    }
    assert counts == expected_jobs(config)
    trained = set(re.findall(r"rule train:.*?wildcards: ([^\n]+)", out, flags=re.S))
    planned = {
        f"dataset={c.dataset}, regime={c.regime}, backbone={c.backbone}, loss={c.loss}, seed={c.seed}"
        for c in cells(load_config(config))
    }
    assert trained == planned
    assert not (workdir / "results").exists()
    assert not (tmp_path / "torch_home").exists()


def test_job_counts_of_the_shipped_configs():
    """The numbers README quotes."""
    assert expected_jobs(load("lm_places365"))["total"] == 31
    assert expected_jobs(load("lm_places365_hard5"))["total"] == 37
    assert expected_jobs(load("cam_grid"))["total"] == 2450
    assert expected_jobs(load("mlrc"))["total"] == 2797


# The CSAIL Places365 ResNet-18's training and evaluation input, torchvision's
# reference recipe: random-resized crops of 224 with flips; shorter side 256,
# centre crop 224.
CSAIL_INPUT = {"augment": "rrc_flip", "input_size": 224, "eval_crop_fraction": 0.875}


@pytest.mark.parametrize("name", CONFIGS)
def test_pretrained_backbones_see_their_weights_input(name):
    """Every backbone that starts from published weights is fed inputs of
    the side those weights were trained on (its record's input_size), and
    where it evaluates on a centre crop, from the record's resize side."""
    from workflow.backbones.weights import resolve
    from workflow.training.settings import input_view

    config = load_config(load(name))
    pretrained = 0
    for backbone, entry in config["backbones"].items():
        record = resolve(entry.get("params", {}).get("pretrained"), entry["arch"])
        if record is None:
            continue
        pretrained += 1
        for dataset, spec in config["datasets"].items():
            stored = (
                spec["image_size"] or grid_cost_module().NATIVE_SIZE[spec["source"]]
            )
            settings = training_settings(config, backbone, next(iter(config["losses"])))
            size, fraction = input_view(settings, stored, stored)
            assert size == record.input_size, (backbone, dataset)
            if fraction < 1:
                assert int(size / fraction) == record.resize_size, (backbone, dataset)
    assert pretrained


def test_lm_configs_hold_the_papers_protocols():
    t1 = load_config(load("lm_places365"))
    for key, value in {
        "optimizer": "adam",
        "lr": 1e-4,
        "lr_schedule": "step",
        "lr_step_epochs": 30,
        "lr_gamma": 0.1,
        "epochs": 90,
        "batch_size": 128,
        **CSAIL_INPUT,
        "data_on_device": False,
    }.items():
        assert t1["training"][key] == value, key
    places = t1["datasets"]["places365"]
    assert places["image_size"] == 256  # Places365's official small images
    assert (
        places["storage"] == "jpeg"
    )  # decoded, train-standard at 256 would take 355 GB
    assert (
        places["query_per_class"],
        places["database_per_class"],
        places["database_from"],
    ) == (8, 80, "test")
    assert t1["regimes"] == {"full": {"train_per_class": None}}
    backbones = t1["backbones"]
    assert all(
        b["arch"] == "resnet18" and b["embedding_size"] == 512
        for b in backbones.values()
    )
    assert "pretrained" not in backbones["r18_scratch"].get("params", {})
    # The CSAIL Places365 ResNet-18's record (address, normalisation; workflow/backbones/weights.py).
    assert backbones["r18_frozen"]["params"] == {
        "pretrained": "resnet18_places365",
        "freeze_trunk": True,
    }
    assert t1["losses"]["lm"]["params"] == {"beta": 0.01}

    t2 = load_config(load("lm_places365_hard5"))
    for key, value in {
        "optimizer": "adam",
        "lr": 1e-4,
        "lr_schedule": "constant",
        "epochs": 25,
        "batch_size": 128,
        **CSAIL_INPUT,
    }.items():
        assert t2["training"][key] == value, key
    hard5 = t2["datasets"]["places365_hard5"]
    assert hard5["image_size"] == 256
    assert hard5["classes"] == [
        "roof_garden",
        "tree_farm",
        "vegetable_garden",
        "yard",
        "zen_garden",
    ]
    assert (
        hard5["database_from"],
        hard5["database_per_class"],
        hard5["query_per_class"],
    ) == ("train", 1000, 100)
    assert t2["regimes"] == {"train1000": {"train_per_class": 1000}}
    assert t2["backbones"]["r18_places_pretrained"]["params"] == {
        "pretrained": "resnet18_places365"
    }
    assert t2["losses"]["lm"]["params"] == {"beta": 0.01}


def fake_metrics(config: dict, retrievals=("exact", "two_stage_c1")) -> pd.DataFrame:
    """A results/metrics.csv for every cell of ``config`` with distinct
    random values (the tables are checked for layout, not numbers)."""
    config = load_config(config)
    metrics = [f"precision@{k}" for k in config["evaluation"]["precision_at"]]
    metrics += [f"top{k}_error" for k in config["evaluation"]["top_k_error"]]
    metrics += ["map", "pr_auc", "accuracy", "distance_computations_per_query"]
    rng = np.random.default_rng(0)
    rows = [
        {
            "dataset": c.dataset,
            "regime": c.regime,
            "backbone": c.backbone,
            "loss": c.loss,
            "seed": c.seed,
            "retrieval": r,
            "metric": m,
            "value": rng.uniform(),
        }
        for c in cells(config)
        for r in retrievals
        for m in metrics
    ]
    return pd.DataFrame(rows)


@pytest.mark.parametrize(
    "name, table, rows, metrics",
    [
        (
            "lm_places365",
            "lm_table1",
            [
                "CE pre-trained",
                "LM fine-tuned (frozen conv. layers)",
                "LM from scratch",
            ],
            [
                "precision@5",
                "precision@8",
                "top1_error",
                "top5_error",
                "accuracy",
                "pr_auc",
            ],
        ),
        (
            "lm_places365_hard5",
            "lm_table2",
            ["CE", "LM"],
            [
                "precision@5",
                "precision@10",
                "top1_error",
                "top5_error",
                "accuracy",
                "pr_auc",
            ],
        ),
    ],
)
def test_lm_tables_have_the_papers_rows_and_columns(name, table, rows, metrics):
    config = load(name)
    metrics_frame = fake_metrics(config)
    decl = load_config(config)["tables"][table]
    frame = build_table(table, decl, metrics_frame)
    assert list(dict.fromkeys(frame["row"])) == rows
    assert list(dict.fromkeys(frame["metric"])) == metrics
    # Each row is one (backbone, loss) cell over the seeds, never a mix.
    assert (frame["n"] == len(config["seeds"])).all()
    if name == "lm_places365":
        chosen = frame[
            (frame["row"] == "LM from scratch") & (frame["metric"] == "pr_auc")
        ]["mean"].item()
        cell = metrics_frame.query(
            "backbone == 'r18_scratch' and loss == 'lm' and metric == 'pr_auc' and retrieval == 'exact'"
        )
        assert np.isclose(chosen, cell["value"].mean())
    _, markdown, latex = render(table, decl, frame)
    assert all(row in markdown for row in rows) and r"\toprule" in latex


def test_cam_grid_covers_the_papers_grid_and_its_table_layout():
    config = load_config(load("cam_grid"))
    assert {d["source"] for d in config["datasets"].values()} == {
        "cifar100",
        "food101",
        "svhn",
        "tiny_imagenet",
    }
    assert {b["arch"] for b in config["backbones"].values()} == {
        "cifar_resnet18",
        "resnet50",
        "swin_t",
    }
    # From scratch at the stored size, and an ImageNet-pretrained block at 224.
    assert "pretrained" not in config["backbones"]["cifar_resnet18"].get("params", {})
    assert "input_size" not in config["backbones"]["cifar_resnet18"].get("training", {})
    for name, weights in [
        ("resnet50", "ResNet50_Weights.IMAGENET1K_V1"),
        ("swin_t", "Swin_T_Weights.IMAGENET1K_V1"),
    ]:
        assert config["backbones"][name]["params"] == {"pretrained": weights}
        assert config["backbones"][name]["training"]["input_size"] == 224
    # The leak of Tiny ImageNet's test images into ImageNet weights is said where the block is.
    assert (
        "Tiny ImageNet's images come from ImageNet"
        in (REPO / "config" / "cam_grid.yaml").read_text()
    )
    from workflow.losses import LOSSES

    assert {entry["impl"] for entry in config["losses"].values()} == set(LOSSES.names())
    assert sorted(r["train_per_class"] is None for r in config["regimes"].values()) == [
        False,
        True,
    ]

    frame = build_table(
        "cam_grid", config["tables"]["cam_grid"], fake_metrics(load("cam_grid"))
    )
    blocks = frame[["dataset", "backbone"]].drop_duplicates()
    assert len(blocks) == len(config["datasets"]) * len(config["backbones"])
    per_block = frame.groupby(["dataset", "backbone"])
    assert (per_block["row"].nunique() == len(config["losses"])).all()
    assert set(frame["regime"]) == set(config["regimes"])
    assert set(frame["metric"]) == {"map", "precision@10", "precision@20"}
    assert (frame["n"] == len(config["seeds"])).all()


def grid_cost_module():
    spec = importlib.util.spec_from_file_location(
        "grid_cost", REPO / "benchmarks" / "grid_cost.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_grid_cost_counts_image_passes(capsys):
    grid_cost = grid_cost_module()
    # LM Table 1: 4 cells on all 1,803,460 train-standard images, 90 epochs.
    t1 = grid_cost.grid_cost(load("lm_places365"))
    assert t1["image_passes"].sum() == 4 * 1_803_460 * 90
    # Table 2: 6 cells of 5 classes x 1,000 images, 25 epochs.
    assert (
        grid_cost.grid_cost(load("lm_places365_hard5"))["image_passes"].sum()
        == 6 * 5_000 * 25
    )
    # CAM grid: per (backbone, loss, seed) the few-shot (10 per class) and full pools, 100 epochs.
    fewshot = 10 * (100 + 101 + 10 + 200)
    full = 50_000 + 75_750 + 73_257 + 100_000
    cam = grid_cost.grid_cost(load("cam_grid"))
    assert cam["image_passes"].sum() == 3 * 10 * 3 * (fewshot + full) * 100
    # The size a backbone sees: the LM configs store 256 and crop 224; the
    # CAM grid's pretrained block resizes its 32 and 64 pixel images to 224.
    assert set(t1["image_size"]) == {256} and set(t1["input_size"]) == {224}
    assert set(cam.loc[cam["backbone"] == "swin_t", "input_size"]) == {224}
    assert set(cam.loc[cam["backbone"] == "cifar_resnet18", "input_size"]) == {32, 64}
    # The CIFAR-100 few-shot config: k images of each of 100 classes per regime.
    c100 = load("cifar100_fewshot")
    per_regime = sum(r["train_per_class"] * 100 for r in c100["regimes"].values())
    n = len(c100["losses"]) * len(c100["seeds"]) * c100["training"]["epochs"]
    assert grid_cost.grid_cost(c100)["image_passes"].sum() == per_regime * n
    grid_cost.main([str(REPO / "config" / "cam_grid.yaml")])
    out = capsys.readouterr().out
    assert (
        "training image passes: 2,728,053,000" in out
        and "swin_t at 224x224: 909,351,000" in out
    )


def test_mlrc_holds_the_reality_check_protocol():
    """config/mlrc.yaml: CUB, Cars196 and SOP class-disjoint, an ImageNet
    ResNet-50 at 224 with a 128-d embedding, batch 32 of 4 images per class
    for every loss, class-disjoint validation quarters selected by MAP@R
    with one budget, the usual Recall@k cutoffs, NMI/AMI, and what differs
    from the paper said in its header."""
    raw = load("mlrc")
    config = load_config(raw)
    assert {name: spec["source"] for name, spec in config["datasets"].items()} == {
        "cub200": "cub200",
        "cars196": "cars196",
        "sop": "sop",
    }
    assert all(
        spec["protocol"] == "class_disjoint" for spec in config["datasets"].values()
    )
    assert raw["backbones"] == {
        "resnet50": {
            "arch": "resnet50",
            "embedding_size": 128,
            "params": {"pretrained": "ResNet50_Weights.IMAGENET1K_V1"},
        }
    }
    for key, value in {"batch_size": 32, **CSAIL_INPUT}.items():
        assert config["training"][key] == value, key
    assert {entry["impl"] for entry in raw["losses"].values()} == {
        "contrastive",
        "triplet",
        "supcon",
        "arcface",
        "proxy_anchor",
        "ce",
        "cam",
        "lm",
    }
    assert all(
        entry["sampler"] == {"m_per_class": 4} for entry in raw["losses"].values()
    )
    assert (
        config["selection"]["metric"] == "map@r"
        and len(config["selection"]["seeds"]) == 4
    )
    assert config["validation"]["class_fraction"] == 0.25
    # Every loss has exactly `budget` settings, so every setting is tried.
    assert all(
        len(trials) == config["selection"]["budget"]
        for trials in config["trials"].values()
    )
    recall = set(config["evaluation"]["recall_at"])
    assert (
        {1, 2, 4, 8} <= recall
        and {1, 10, 100, 1000} <= recall
        and config["evaluation"]["clustering"]
    )
    header = (REPO / "config" / "mlrc.yaml").read_text()
    for said in [
        "BN-Inception",
        "no k-fold",
        "no ensemble",
        "RMSprop",
        "normalised softmax",
    ]:
        assert said in header, said


def test_mlrc_tables_have_the_papers_metrics_per_dataset():
    """One table per dataset: a row per loss over its 5 seeds, MAP@R,
    R-precision and P@1 first, then the dataset's usual Recall@k and NMI/AMI."""
    config = load("mlrc")
    resolved = load_config(config)
    names = ["map@r", "r_precision", "precision@1", "nmi", "ami"]
    names += [f"recall@{k}" for k in resolved["evaluation"]["recall_at"]]
    rng = np.random.default_rng(0)
    metrics = pd.DataFrame(
        [
            {
                "dataset": c.dataset,
                "regime": c.regime,
                "backbone": c.backbone,
                "loss": c.loss,
                "seed": c.seed,
                "retrieval": "exact",
                "metric": m,
                "value": rng.uniform(),
            }
            for c in cells(resolved)
            for m in names
        ]
    )
    usual = {"cub200": [2, 4, 8], "cars196": [2, 4, 8], "sop": [10, 100, 1000]}
    for dataset, cutoffs in usual.items():
        table = f"mlrc_{dataset}"
        frame = build_table(table, resolved["tables"][table], metrics)
        assert list(dict.fromkeys(frame["row"])) == list(config["losses"])
        assert list(dict.fromkeys(frame["metric"])) == (
            ["map@r", "r_precision", "precision@1"]
            + [f"recall@{k}" for k in cutoffs]
            + ["nmi", "ami"]
        )
        assert (frame["n"] == len(config["seeds"])).all()
        # Each row is its dataset's cells only.
        chosen = frame[(frame["row"] == "cam") & (frame["metric"] == "map@r")][
            "mean"
        ].item()
        cell = metrics.query(
            f"dataset == '{dataset}' and loss == 'cam' and metric == 'map@r'"
        )
        assert np.isclose(chosen, cell["value"].mean())


def test_grid_cost_counts_selection_trials():
    """mlrc's selection trials train on three quarters of the training
    classes (class-disjoint validation holds out a quarter), beside the
    cells on all of them: CUB 5,864 images of classes 1-100, Cars196 8,054
    of classes 1-98, SOP 59,551 of Ebay_train."""
    grid_cost = grid_cost_module()
    cost = grid_cost.grid_cost(load("mlrc"))
    cells_ = cost[cost["kind"] == "cell"]
    trials = cost[cost["kind"] == "trial"]
    assert len(cells_) == 3 * 8 * 5 and len(trials) == 3 * 8 * 8 * 4
    assert cells_.groupby("dataset")["train_images"].first().to_dict() == {
        "cub200": 5_864,
        "cars196": 8_054,
        "sop": 59_551,
    }
    assert trials.groupby("dataset")["train_images"].first().to_dict() == {
        "cub200": round(5_864 * 75 / 100),
        "cars196": round(8_054 * 74 / 98),
        "sop": round(59_551 * 8_488 / 11_318),
    }
    assert cost["image_passes"].sum() == 511_645_680 and set(cost["input_size"]) == {
        224
    }

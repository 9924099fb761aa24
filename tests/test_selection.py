"""Fair comparisons (issue 7): sweeps, the validation split, selection on
it, the equal trial budget and the fixed-factor check of tables."""

from __future__ import annotations

import copy
import io
import json

import numpy as np
import pandas as pd
import pytest
from conftest import TINY_CONFIG, make_workspace, snakemake
from official_formats import SHARED_DATASETS

from workflow.config import (
    Cell,
    ConfigError,
    cells,
    settings_hash,
    trial_cells,
    trial_settings,
)
from workflow.config_loader import load_config
from workflow.io import read_metadata
from workflow.selection import select_trial
from workflow.splits import make_split
from workflow.sweeps import sweep_values
from workflow.validation_split import make_validation_split

# --- sweeps ---------------------------------------------------------------


def test_ranges_expand_to_points():
    assert sweep_values("k", {"range": [1e-4, 1e-2], "points": 3, "scale": "log"}) == [
        1e-4,
        1e-3,
        1e-2,
    ]
    assert sweep_values("k", {"range": [0.1, 0.3], "points": 3}) == [0.1, 0.2, 0.3]
    assert sweep_values("k", {"range": [2, 10], "points": 3}) == [2, 6, 10]
    assert sweep_values("k", 0.5) is None and sweep_values("k", {"margin": 1}) is None


@pytest.mark.parametrize(
    "value, fragment",
    [
        ([], "an empty list sweeps nothing"),
        ({"range": [1], "points": 3}, "a range is {range: [low, high]"),
        ({"range": [0.1, 1], "points": 1}, "points: n >= 2"),
        ({"range": [0, 1], "points": 3, "scale": "log"}, "needs positive ends"),
        ({"range": [0.1, 1], "points": 3, "scale": "cubic"}, "scale: linear or log"),
    ],
)
def test_bad_sweeps_name_the_key(value, fragment):
    config = copy.deepcopy(TINY_CONFIG)
    config["losses"]["cam"]["params"] = {"margin": value}
    with pytest.raises(ConfigError, match="losses.cam.params.margin") as error:
        load_config(config)
    assert fragment in str(error.value)


def test_loss_and_training_sweeps_are_named_cells():
    config = copy.deepcopy(TINY_CONFIG)
    config["losses"]["cam"] = {
        "impl": "cam",
        "params": {"margin": [1, 2]},
        "training": {"lr": {"range": [1e-3, 1e-2], "points": 2, "scale": "log"}},
    }
    config["training"]["epochs"] = [2, 3]  # top level: sweeps every loss
    config["tables"] = {}  # a table would stop on the differing epochs (fixed factor)
    loaded = load_config(config)
    names = list(loaded["losses"])
    assert "ce-epochs2" in names and "lm-epochs3" in names
    assert "cam-margin1-lr0.001-epochs2" in names and len(names) == 2 + 2 + 8
    assert loaded["sweeps"]["cam-margin2-lr0.01-epochs3"] == {
        "base": "cam",
        "values": {"params.margin": 2, "training.lr": 0.01, "training.epochs": 3},
    }
    grid = cells(loaded)
    assert Cell("digits", "full", "small_cnn", "cam-margin2-lr0.01-epochs3", 1) in grid
    assert len(grid) == 2 * 12 * 2


def test_a_top_level_sweep_clashes_with_a_backbone_override():
    config = copy.deepcopy(TINY_CONFIG)
    config["training"]["lr"] = [0.1, 0.01]
    config["backbones"]["small_cnn"]["training"] = {"lr": 0.5}
    with pytest.raises(
        ConfigError, match="training.lr: a sweep of every loss cannot be combined"
    ):
        load_config(config)


# --- budget and trials ----------------------------------------------------


def selection_config(budget=2):
    config = copy.deepcopy(TINY_CONFIG)
    config["losses"] = {
        "ce": {"impl": "ce", "training": {"lr": [0.01, 0.001]}},
        "cam": {"impl": "cam", "params": {"margin": [0.5, 1, 2]}},
    }
    config["selection"] = {"budget": budget}
    return config


def test_every_loss_gets_the_same_budget_of_trials():
    loaded = load_config(selection_config())
    assert list(loaded["losses"]) == ["ce", "cam"]  # reported under the base names
    assert {base: len(t) for base, t in loaded["trials"].items()} == {"ce": 2, "cam": 2}
    assert set(loaded["trials"]["cam"]) < {
        "cam-margin0.5",
        "cam-margin1",
        "cam-margin2",
    }
    assert (
        load_config(selection_config())["trials"] == loaded["trials"]
    )  # seeded subset
    trials = trial_cells(loaded)
    assert len(trials) == 2 * 4  # 2 regimes x 4 trials, first seed only
    assert {c.seed for c in trials} == {0}
    settings = trial_settings(
        loaded, Cell("digits", "full", "small_cnn", "ce-lr0.001", 0)
    )
    assert settings["training"]["lr"] == 0.001 and settings["loss"] == "ce-lr0.001"


def test_a_loss_with_fewer_settings_than_the_budget_stops():
    with pytest.raises(ConfigError, match="loss 'ce' has 2 setting.*budget of 3"):
        load_config(selection_config(budget=3))


# --- fixed factors --------------------------------------------------------


def test_a_table_mixing_a_fixed_factor_stops_naming_it():
    config = copy.deepcopy(TINY_CONFIG)
    config["losses"]["cam"]["training"] = {"epochs": 5}
    with pytest.raises(
        ConfigError, match=r"tables.tiny_grid: the compared cells differ in epochs"
    ):
        load_config(config)
    config["tables"]["tiny_grid"]["columns"] = ["regime", "epochs"]  # declared: allowed
    load_config(config)


def test_a_tuned_fixed_factor_stops_too():
    config = selection_config()
    config["losses"]["ce"]["training"] = {"batch_size": [32, 64]}
    with pytest.raises(ConfigError, match="differ in batch_size"):
        load_config(config)


def test_backbones_may_differ_across_blocks():
    config = copy.deepcopy(TINY_CONFIG)
    config["backbones"]["wide"] = {"arch": "small_cnn", "embedding_size": 32}
    with pytest.raises(ConfigError, match="differ in backbone"):
        load_config(config)
    config["tables"]["tiny_grid"]["blocks"] = ["backbone"]
    load_config(config)


# --- the validation split -------------------------------------------------


def labels_and_split(train_per_class, seed=0):
    labels = np.repeat(np.arange(5), 60)
    official = np.where(np.tile(np.arange(60) < 40, 5), "train", "test")
    split = make_split(
        labels, official, seed, query_per_class=4, train_per_class=train_per_class
    )
    return labels, official, split


def test_validation_holds_only_training_pool_images_and_keeps_few_shot_training():
    labels, official, split = labels_and_split(train_per_class=5)
    val = make_validation_split(
        labels, official, split, 0, query_per_class=3, database_per_class=6
    )
    test_images = set(split.loc[split["split"] != "train", "index"])
    assert (
        not test_images & set(val["index"])
        and (official[val["index"]] == "train").all()
    )
    train = split.loc[split["split"] == "train", "index"].to_numpy()
    assert np.array_equal(
        np.sort(val.loc[val["split"] == "train", "index"]), np.sort(train)
    )
    counts = val.groupby("split")["index"].apply(
        lambda i: np.bincount(labels[i]).tolist()
    )
    assert counts["query"] == [3] * 5 and counts["database"] == [6] * 5
    again = make_validation_split(
        labels, official, split, 0, query_per_class=3, database_per_class=6
    )
    assert again.equals(val)


def test_full_regime_validation_comes_out_of_the_training_images():
    labels, official, split = labels_and_split(train_per_class=None)
    val = make_validation_split(
        labels, official, split, 0, query_per_class=3, database_per_class=6
    )
    train = set(split.loc[split["split"] == "train", "index"])
    held = set(val.loc[val["split"] != "train", "index"])
    assert held <= train
    assert set(val.loc[val["split"] == "train", "index"]) == train - held


def test_class_disjoint_validation_trains_on_the_other_classes():
    labels, official, split = labels_and_split(train_per_class=None)
    val = make_validation_split(
        labels,
        official,
        split,
        0,
        query_per_class=3,
        database_per_class=6,
        class_disjoint=True,
    )
    val_classes = set(labels[val.loc[val["split"] != "train", "index"]])
    train_classes = set(labels[val.loc[val["split"] == "train", "index"]])
    assert len(val_classes) == 2 or len(val_classes) == 3  # round(0.5 * 5)
    assert not val_classes & train_classes and val_classes | train_classes == set(
        range(5)
    )


def test_too_large_a_validation_split_names_the_keys():
    labels, official, split = labels_and_split(train_per_class=None)
    with pytest.raises(
        ConfigError, match="validation.query_per_class/database_per_class"
    ):
        make_validation_split(
            labels, official, split, 0, query_per_class=10, database_per_class=30
        )


# --- selection ------------------------------------------------------------


def test_select_trial_maximises_or_minimises_and_breaks_ties_in_order():
    scores = pd.DataFrame({"trial": ["a", "b", "c"], "score": [0.2, 0.5, 0.5]})
    assert select_trial(scores, "map@r") == "b"
    assert select_trial(scores, "top1_error") == "a"


SELECTION_RUN = {
    **copy.deepcopy(TINY_CONFIG),
    "regimes": {"full": {"train_per_class": None}},
    "losses": {
        "ce": {"impl": "ce", "training": {"lr": [0.03, 0.0001]}},
        "cam": {"impl": "cam", "params": {"margin": [0.5, 4.0]}},
    },
    "selection": {"budget": 2},
    "validation": {"query_per_class": 3, "database_per_class": 10},
    "tables": {},
}


@pytest.fixture(scope="module")
def selection_run(tmp_path_factory):
    workdir = make_workspace(tmp_path_factory.mktemp("selection"), SELECTION_RUN)
    targets = [
        "results/metrics.csv",
        "results/selection/table.csv",
        *[
            f"results/figures/digits/full/small_cnn/sensitivity_{loss}.png"
            for loss in ("ce", "cam")
        ],
    ]
    # Targets first: `--resources` takes every following word as a resource.
    snakemake(workdir, *targets, "--cores", "2", "--resources", "gpu=1")
    return workdir


def test_the_trials_table_ranks_in_the_metrics_direction_and_escapes_names():
    """selection_texts: ranks 1 = best in the metric's direction (ties
    share the better rank), the selected trial marked, and a name with
    Markdown characters printed as written."""
    from workflow.selection import selection_texts

    def record(loss, metric, scores, selected):
        return {
            "loss": loss,
            "metric": metric,
            "score": scores[selected],
            "selected": selected,
            "trials": len(scores),
            "values": {"m": 1.0},
            "scores": [
                {"trial": t, "score": v, "values": {"m": float(i)}}
                for i, (t, v) in enumerate(scores.items())
            ],
        }

    records = [
        record("a_b*", "map@r", {"t0": 0.2, "t1": 0.5, "t2": 0.2}, "t1"),
        record("err", "top1_error", {"e0": 0.3, "e1": 0.1, "e2": 0.3}, "e1"),
    ]
    texts = selection_texts(records, [("d", "r", "b")] * 2)
    trials = pd.read_csv(io.StringIO(texts["trials.csv"]))
    ranks = dict(zip(trials["trial"], trials["rank"]))
    assert ranks == {"t0": 2, "t1": 1, "t2": 2, "e0": 2, "e1": 1, "e2": 2}
    assert list(trials.loc[trials["selected"], "trial"]) == ["t1", "e1"]
    # (an intraword _ does not emphasise in CommonMark and stays as it is)
    assert r"**a_b\*** (d, r, b)" in texts["trials.md"]
    assert "**t1**" in texts["trials.md"] and "**e1**" in texts["trials.md"]
    table = pd.read_csv(io.StringIO(texts["table.csv"]))
    assert list(table["score"]) == [0.5, 0.1]


def test_selection_picks_the_best_validation_value_and_trains_it(selection_run):
    results = selection_run / "results"
    for loss, trials in [
        ("ce", ["ce-lr0.03", "ce-lr0.0001"]),
        ("cam", ["cam-margin0.5", "cam-margin4.0"]),
    ]:
        record = json.loads(
            (results / f"selection/digits/full/small_cnn/{loss}.json").read_text()
        )
        scores = {}
        for trial in trials:
            metrics = pd.read_csv(
                results / f"trials/digits/full/small_cnn/{trial}/seed0/metrics.csv"
            )
            row = metrics[
                (metrics["retrieval"] == "exact") & (metrics["metric"] == "map@r")
            ]
            scores[trial] = float(row["value"].iloc[0])
        assert record["selected"] == max(scores, key=scores.get)
        # The trials table: every trial's validation score, its rank, the
        # selected one (rule selection_table; docs/results' tuned runs).
        trials_table = pd.read_csv(results / "selection/trials.csv")
        rows = trials_table[trials_table["loss"] == loss].set_index("trial")
        assert sorted(rows.index) == sorted(trials)
        for trial, score in scores.items():
            assert rows.loc[trial, "score"] == pytest.approx(score, abs=0, rel=1e-12)
            assert rows.loc[trial, "rank"] == 1 + sum(
                v > score for v in scores.values()
            )
            assert rows.loc[trial, "selected"] == (trial == record["selected"])
        assert (
            f"**{record['selected']}**" in (results / "selection/trials.md").read_text()
        )
        assert record["trials"] == 2 and record["score"] == pytest.approx(
            max(scores.values())
        )
        # The final cells (every seed) are trained with the selected setting.
        loaded = load_config(SELECTION_RUN)
        chosen = trial_settings(
            loaded, Cell("digits", "full", "small_cnn", record["selected"], 0)
        )
        for seed in (0, 1):
            path = (
                results
                / f"cells/digits/full/small_cnn/{loss}/seed{seed}/embeddings.parquet"
            )
            expected = {**chosen, "loss": loss, "seed": seed}
            assert read_metadata(path)["config_hash"] == settings_hash(expected), (
                loss,
                seed,
            )
    metrics = pd.read_csv(results / "metrics.csv")
    assert set(metrics["loss"]) == {"ce", "cam"}
    table = pd.read_csv(results / "selection/table.csv")
    assert list(table["trials"]) == [2, 2] and set(table["loss"]) == {"ce", "cam"}
    for loss in ("ce", "cam"):
        assert (
            results / f"figures/digits/full/small_cnn/sensitivity_{loss}.png"
        ).stat().st_size > 1000


# --- selection never reads test data ----------------------------------------

NOISE_CONFIG = {
    "data_mirror": str(SHARED_DATASETS),
    "datasets": {
        "c100": {"source": "cifar100", "query_per_class": 2, "database_per_class": 5}
    },
    "regimes": {"fewshot3": {"train_per_class": 3}},
    "backbones": {
        "small_cnn": {
            "arch": "small_cnn",
            "embedding_size": 16,
            "params": {"widths": [8, 16]},
        }
    },
    "losses": {"cam": {"impl": "cam", "params": {"margin": [0.5, 2.0]}}},
    "seeds": [0],
    "training": {"epochs": 2, "batch_size": 64},
    "selection": {"budget": 2},
    "validation": {"query_per_class": 1, "database_per_class": 2},
}
NOISE_TARGETS = ["results/selection/c100/fewshot3/small_cnn/cam.json"]


def test_selection_is_unchanged_when_the_test_labels_are_noise(tmp_path):
    """Two workspaces on the real CIFAR-100; in the second, the labels of
    every official test image (where the test queries and database come
    from) are replaced with random labels before anything is split. Every
    trial's validation metrics, and so the selection, are identical."""
    runs = {}
    for name in ("clean", "noise"):
        workdir = make_workspace(tmp_path / name, NOISE_CONFIG)
        snakemake(workdir, "--cores", "2", "results/data/c100/labels.parquet")
        if name == "noise":
            path = workdir / "results/data/c100/labels.parquet"
            labels = pd.read_parquet(path)
            test = labels["official_split"] == "test"
            noise = np.random.default_rng(1).integers(0, 100, test.sum())
            assert (noise != labels.loc[test, "label"]).mean() > 0.9
            labels.loc[test, "label"] = noise
            labels.to_parquet(path)
        # The evaluation split too: the selection does not read it, the
        # comparison below does.
        snakemake(
            workdir,
            "--cores",
            "2",
            *NOISE_TARGETS,
            "results/splits/c100/seed0.evaluation.parquet",
        )
        runs[name] = workdir
    clean, noise = runs["clean"] / "results", runs["noise"] / "results"
    split = lambda root, name: pd.read_parquet(root / "splits/c100" / name)  # noqa: E731
    evaluation, train = "seed0.evaluation.parquet", "fewshot3/seed0.train.parquet"
    assert not split(clean, evaluation).equals(
        split(noise, evaluation)
    )  # test queries and database changed
    assert split(clean, train).equals(
        split(noise, train)
    )  # the training images did not
    for target in NOISE_TARGETS:
        assert json.loads((clean.parent / target).read_text()) == json.loads(
            (noise.parent / target).read_text()
        )
    for trial in ("cam-margin0.5", "cam-margin2.0"):
        relative = f"trials/c100/fewshot3/small_cnn/{trial}/seed0/metrics.csv"
        assert (clean / relative).read_bytes() == (noise / relative).read_bytes()


def test_an_unknown_selection_metric_stops_naming_the_key():
    from workflow.guards import check_config

    config = selection_config()
    config["selection"]["metric"] = "mAP@R"
    with pytest.raises(
        ConfigError,
        match="config key selection.metric: no metric 'mAP@R'.*did you mean 'map@r'",
    ):
        check_config(load_config(config))


def test_the_shipped_fair_comparison_config_plans_equal_budgets(tmp_path):
    """config/fair_digits.yaml: 5 losses x 4 trials on the validation split,
    then 5 losses x 3 seeds; counts from the dry run's job table."""
    import re

    import yaml
    from conftest import REPO

    path = REPO / "config" / "fair_digits.yaml"
    config = yaml.safe_load(path.read_text())
    workdir = make_workspace(tmp_path / "ws", config)
    out = snakemake(
        workdir, "-n", "--configfile", str(path), "--replace-workflow-config"
    ).stdout
    counts = {
        rule: int(n) for rule, n in re.findall(r"^(\w+)\s+(\d+)$", out, flags=re.M)
    }
    losses, budget, seeds = (
        len(config["losses"]),
        config["selection"]["budget"],
        len(config["seeds"]),
    )
    assert (
        counts["train_trial"]
        == counts["embed_trial"]
        == counts["evaluate_trial"]
        == losses * budget
    )
    assert counts["train"] == counts["evaluate"] == losses * seeds
    assert counts["select"] == counts["sensitivity_figure"] == losses
    assert (
        counts["validation_split"] == 1
        and counts["train_split"] == counts["evaluation_split"] == seeds
    )

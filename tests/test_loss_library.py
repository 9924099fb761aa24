"""Tests of the baseline losses (center, island, contrastive, triplet,
arcface, proxy_anchor, supcon), the class-balanced sampler and the per-loss
learning-rate multiplier.

Values on tiny inputs are computed by hand here from each paper's formula
(for the losses taken from pytorch-metric-learning too, so a change in the
library's conventions shows up).
"""

import copy
import math

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TINY_CONFIG, make_workspace, snakemake

from workflow.config import Cell, ConfigError, cell_settings
from workflow.config_loader import load_config
from workflow.datasets import load_dataset
from workflow.embedding import compute_embeddings
from workflow.evaluate import classification_accuracy
from workflow.losses import LOSSES, build_loss
from workflow.samplers import MPerClassBatches, ShuffledBatches, make_batches
from workflow.table_text import render
from workflow.tables import build_table, regime_declaration
from workflow.training.loop import seed_everything, train_cell
from workflow.training.step import (
    build_models,
    make_optimizer,
    make_scheduler,
    parameter_groups,
)

LIBRARY = [
    "center",
    "island",
    "contrastive",
    "triplet",
    "arcface",
    "proxy_anchor",
    "supcon",
]
WITH_ANCHORS = ["center", "island", "arcface", "proxy_anchor"]
WITHOUT_PARAMETERS = ["contrastive", "triplet", "supcon"]


def t(rows):
    return torch.tensor(rows, dtype=torch.float64)


def unit(degrees):
    return [math.cos(math.radians(degrees)), math.sin(math.radians(degrees))]


# ---------------------------------------------------------------- hand values


def test_center_hand_computed():
    loss = build_loss("center", num_classes=2, embedding_size=2, lambda_c=0.1).double()
    with torch.no_grad():
        loss.classifier.weight.zero_()
        loss.classifier.bias.zero_()  # CE = log 2 for every sample
        loss.centres.copy_(t([[0, 0], [1, 1]]))
    f = t([[1, 0], [1, 3]])
    y = torch.tensor([0, 1])
    # squared distances to own centre: 1 and 4 -> L_C = 1/2 * mean(1, 4)
    assert loss(f, y).item() == pytest.approx(math.log(2) + 0.1 * 0.5 * 2.5, rel=1e-12)
    assert torch.equal(loss.class_anchors(), t([[0, 0], [1, 1]]))


def test_island_hand_computed():
    loss = build_loss(
        "island", num_classes=3, embedding_size=2, lambda_il=0.5, lambda_1=10.0
    ).double()
    with torch.no_grad():
        loss.classifier.weight.zero_()
        loss.classifier.bias.zero_()  # CE = log 3
        loss.centres.copy_(
            t([[1, 0], [0, 2], [-3, 0]])
        )  # directions (1,0) (0,1) (-1,0)
    f = t([[1, 0], [0, 0]])
    y = torch.tensor([0, 1])
    # L_C = 1/2 * mean(0, 4) = 1. Ordered pairs, cos + 1: (0,1) and (1,2) are
    # orthogonal -> 1 each, twice; (0,2) opposite -> 0. Sum 4.
    assert loss.pair_term().item() == pytest.approx(4.0)
    assert loss(f, y).item() == pytest.approx(
        math.log(3) + 0.5 * (1 + 10 * 4), rel=1e-12
    )


def test_contrastive_hand_computed():
    loss = build_loss("contrastive", num_classes=2, embedding_size=2, margin=1.0)
    f = t([[0, 0], [0.6, 0], [0, 0.8]])
    y = torch.tensor([0, 0, 1])
    # positive pair d = 0.6: 1/2 * 0.36 (both orders, mean 0.18);
    # negatives: d = 0.8 -> 1/2 * 0.2^2 = 0.02; d = 1.0 -> 0, left out of
    # the mean over non-zero negatives.
    assert loss(f, y).item() == pytest.approx(0.18 + 0.02, rel=1e-9)
    # raw, not normalised, embeddings: scaling changes the loss
    assert loss(3 * f, y).item() == pytest.approx(0.5 * 1.8**2, rel=1e-9)


def triplet_example():
    # unit directions (the loss normalises, so norms must not matter)
    angles = [0, 20, 30, 180]
    f = t([unit(a) for a in angles]) * t([[1], [2], [0.5], [5]])
    y = torch.tensor([0, 0, 1, 1])

    def d(i, j):  # squared distance of unit vectors
        return 2 - 2 * math.cos(math.radians(angles[i] - angles[j]))

    return f, y, d


def test_triplet_semihard_hand_computed():
    f, y, d = triplet_example()
    loss = build_loss(
        "triplet", num_classes=2, embedding_size=2, margin=0.2, mining="semihard"
    )
    # semi-hard: d(a,p) < d(a,n) <= d(a,p) + 0.2. Of the 8 triplets only
    # (0,1,2) (0.121 < 0.268) and (3,2,1) (3.732 < 3.879) qualify.
    expected = [d(0, 1) - d(0, 2) + 0.2, d(3, 2) - d(3, 1) + 0.2]
    assert loss(f, y).item() == pytest.approx(sum(expected) / 2, rel=1e-9)


def test_triplet_batch_hard_hand_computed():
    f, y, d = triplet_example()
    loss = build_loss(
        "triplet", num_classes=2, embedding_size=2, margin=0.2, mining="batch_hard"
    )
    # per anchor: its only positive and its nearest negative
    expected = [
        d(0, 1) - min(d(0, 2), d(0, 3)) + 0.2,
        d(1, 0) - min(d(1, 2), d(1, 3)) + 0.2,
        d(2, 3) - min(d(2, 0), d(2, 1)) + 0.2,
        d(3, 2) - min(d(3, 0), d(3, 1)) + 0.2,
    ]
    assert min(expected) > 0
    assert loss(f, y).item() == pytest.approx(sum(expected) / 4, rel=1e-9)


def test_triplet_rejects_unknown_mining():
    with pytest.raises(ValueError, match="mining: 'hardest'"):
        build_loss("triplet", num_classes=2, embedding_size=2, mining="hardest")


def test_arcface_hand_computed():
    s, m = 2.0, 0.5
    loss = build_loss(
        "arcface", num_classes=2, embedding_size=2, margin=m, scale=s
    ).double()
    with torch.no_grad():
        loss.loss.W.copy_(
            t([[1, 0], [0, 1]])
        )  # (D, C): class 0 along x, class 1 along y
    f = t([[2 * c for c in unit(30)], [0, -3]])
    y = torch.tensor([0, 1])
    # sample 0: theta_0 = 30 deg gets the margin, theta_1 = 60 deg does not
    target = s * math.cos(math.radians(30) + m)
    l0 = -target + math.log(math.exp(target) + math.exp(s * math.cos(math.radians(60))))
    # sample 1: theta_1 = 180 deg, theta + m > pi -> cos(theta) - m sin(m)
    target = s * (-1 - m * math.sin(m))
    l1 = -target + math.log(math.exp(target) + math.exp(s * 0.0))
    assert loss(f, y).item() == pytest.approx((l0 + l1) / 2, rel=1e-9)
    assert torch.allclose(
        loss.predict(f), t([[math.cos(math.radians(30)), 0.5], [0, -1]])
    )


def test_proxy_anchor_hand_computed():
    alpha, delta = 2.0, 0.1
    loss = build_loss(
        "proxy_anchor", num_classes=2, embedding_size=2, alpha=alpha, margin=delta
    ).double()
    with torch.no_grad():
        loss.loss.proxies.copy_(t([[3, 0], [0, 1]]))
    f = t([[1, 0], [1, 1], [0, -2]])
    y = torch.tensor([0, 0, 1])
    r = 1 / math.sqrt(2)
    # cosines to proxy 0: 1, r, 0; to proxy 1: 0, r, -1
    pos0 = math.log(1 + math.exp(-alpha * (1 - delta)) + math.exp(-alpha * (r - delta)))
    pos1 = math.log(1 + math.exp(-alpha * (-1 - delta)))
    neg0 = math.log(1 + math.exp(alpha * (0 + delta)))
    neg1 = math.log(1 + math.exp(alpha * (0 + delta)) + math.exp(alpha * (r + delta)))
    expected = (pos0 + pos1) / 2 + (neg0 + neg1) / 2
    assert loss(f, y).item() == pytest.approx(expected, rel=1e-9)
    # only class 0 in the batch: P+ = {proxy 0}, negatives of proxy 0 none
    pos_only = math.log(
        1 + math.exp(-alpha * (1 - delta)) + math.exp(-alpha * (r - delta))
    )
    neg_only = (
        0 + math.log(1 + math.exp(alpha * delta) + math.exp(alpha * (r + delta)))
    ) / 2
    assert loss(f[:2], y[:2]).item() == pytest.approx(pos_only + neg_only, rel=1e-9)
    assert torch.allclose(loss.class_anchors(), t([[1, 0], [0, 1]]))


def test_supcon_hand_computed():
    tau = 0.5
    loss = build_loss("supcon", num_classes=2, embedding_size=2, temperature=tau)
    f = t([[2, 0], [0, 1], [-3, 0]])  # normalised: (1,0) (0,1) (-1,0)
    y = torch.tensor([0, 0, 1])
    # anchor 0: positive 1 (cos 0), others {1, 2} (cos 0, -1)
    l0 = -math.log(1 / (1 + math.exp(-1 / tau)))
    # anchor 1: positive 0 (cos 0), others {0, 2} (cos 0, 0)
    l1 = math.log(2)
    # anchor 2 has no positive: left out of the mean
    assert loss(f, y).item() == pytest.approx((l0 + l1) / 2, rel=1e-9)


# ------------------------------------------------- interface and gradients


@pytest.mark.parametrize("name", LIBRARY)
def test_interface(name):
    loss = build_loss(name, num_classes=5, embedding_size=7)
    f = torch.randn(10, 7)
    y = torch.arange(10) % 5
    assert loss(f, y).dim() == 0
    if name in WITH_ANCHORS:
        assert loss.predict(f).shape == (10, 5)
        assert loss.class_anchors().shape == (5, 7)
        assert not loss.class_anchors().requires_grad
    else:
        assert not hasattr(loss, "predict") and not hasattr(loss, "class_anchors")
        assert not list(loss.parameters())


@pytest.mark.parametrize(
    "name, params", [(n, {}) for n in LIBRARY] + [("triplet", {"mining": "batch_hard"})]
)
def test_gradients_reach_every_parameter(name, params):
    torch.manual_seed(2)
    loss = build_loss(name, num_classes=4, embedding_size=6, **params)
    f = torch.randn(16, 6, requires_grad=True)
    y = torch.arange(16) % 4
    loss(f, y).backward()
    named = list(loss.named_parameters()) + [("embeddings", f)]
    assert (name in WITHOUT_PARAMETERS) == (len(named) == 1)
    for pname, p in named:
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, pname


@pytest.mark.parametrize("name", LIBRARY)
def test_repeated_images_give_finite_gradients(name):
    # a class with fewer than m images repeats images in a balanced batch:
    # zero distances must not give NaN gradients
    torch.manual_seed(3)
    base = torch.randn(4, 6)
    f = base[[0, 0, 1, 1, 2, 2, 3, 3]].clone().requires_grad_()
    y = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    loss = build_loss(name, num_classes=4, embedding_size=6)
    value = loss(f, y)
    value.backward()
    assert torch.isfinite(value)
    assert torch.isfinite(f.grad).all()
    for p in loss.parameters():
        assert torch.isfinite(p.grad).all()


# ----------------------------------------------------------- optimisation


@pytest.mark.parametrize(
    "name, params", [(n, {}) for n in LIBRARY] + [("triplet", {"mining": "batch_hard"})]
)
def test_adam_lowers_loss_on_separable_toy(name, params):
    # three separable but noisy clusters in 8-d (in 2-d, angular losses can
    # trap a point behind another class's sector)
    torch.manual_seed(4)
    y = torch.arange(30) % 3
    f = (2 * torch.eye(8)[y] + 0.8 * torch.randn(30, 8)).requires_grad_()
    loss = build_loss(name, num_classes=3, embedding_size=8, **params)
    opt = torch.optim.Adam([f, *loss.parameters()], lr=0.05)
    values = []
    for _ in range(60):
        opt.zero_grad()
        value = loss(f, y)
        value.backward()
        opt.step()
        values.append(value.item())
    assert values[0] > 0
    assert values[-1] < 0.7 * values[0], values[::10]
    with torch.no_grad():
        dist = torch.cdist(f, f) + torch.diag(torch.full((30,), float("inf")))
        assert torch.equal(
            y[dist.argmin(1)], y
        )  # every nearest neighbour shares the class
        if hasattr(loss, "predict"):
            assert torch.equal(loss.predict(f).argmax(1), y)


def test_library_is_registered():
    assert set(LIBRARY) <= set(LOSSES.names())


# ---------------------------------------------------------------- sampler


def balanced_labels(classes=10, per_class=12):
    return torch.arange(classes).repeat_interleave(per_class)


def test_m_per_class_batches_have_m_images_of_distinct_classes():
    labels = balanced_labels()
    sampler = MPerClassBatches(
        labels, m=4, batch_size=24, generator=torch.Generator().manual_seed(0)
    )
    for _ in range(3):
        for batch in sampler.epoch():
            assert len(batch) == 24
            counts = torch.bincount(labels[batch], minlength=10)
            assert sorted(counts[counts > 0].tolist()) == [4] * 6
            assert len(set(batch.tolist())) == 24  # no image twice


def test_m_per_class_epoch_covers_balanced_data_exactly_once():
    labels = balanced_labels()
    sampler = MPerClassBatches(
        labels, m=4, batch_size=24, generator=torch.Generator().manual_seed(1)
    )
    for _ in range(3):
        batches = sampler.epoch()
        assert len(batches) == 5  # ceil(120 / 24), as a shuffled pass
        assert torch.equal(torch.cat(batches).sort().values, torch.arange(120))


def test_m_per_class_covers_imbalanced_data_over_epochs():
    labels = torch.tensor([0] * 30 + [1] * 5 + [2] * 3 + [3] * 12)
    sampler = MPerClassBatches(
        labels, m=4, batch_size=8, generator=torch.Generator().manual_seed(2)
    )
    seen = set()
    for _ in range(6):
        for batch in sampler.epoch():
            assert len(batch) == 8
            counts = torch.bincount(labels[batch], minlength=4)
            assert sorted(counts[counts > 0].tolist()) == [
                4,
                4,
            ]  # class 2 repeats images
            seen |= set(batch.tolist())
    assert seen == set(range(len(labels)))


def test_samplers_are_deterministic_per_seed():
    labels = balanced_labels()

    def run(seed, sampler):
        g = torch.Generator().manual_seed(seed)
        source = make_batches(labels, 24, sampler, g)
        return [b.tolist() for _ in range(3) for b in source.epoch()]

    for sampler in (None, {"m_per_class": 4}):
        assert run(0, sampler) == run(0, sampler)
        assert run(0, sampler) != run(1, sampler)


def test_shuffled_batches_are_one_pass_and_never_one_image():
    source = make_batches(torch.zeros(129), 64, None, torch.Generator().manual_seed(0))
    assert isinstance(source, ShuffledBatches)
    batches = source.epoch()
    assert [len(b) for b in batches] == [64, 65]  # the single last image joins
    assert torch.equal(torch.cat(batches).sort().values, torch.arange(129))


def test_sampler_errors_name_the_key():
    labels = balanced_labels(classes=4)
    g = torch.Generator()
    with pytest.raises(
        ValueError, match=r"losses\.tri\.sampler\.m_per_class = 5 must divide"
    ):
        make_batches(labels, 24, {"m_per_class": 5}, g, key="losses.tri.sampler")
    with pytest.raises(
        ValueError, match=r"needs 6 classes per batch, but the training set has 4"
    ):
        make_batches(labels, 24, {"m_per_class": 4}, g, key="losses.tri.sampler")


def test_config_rejects_sampler_not_dividing_batch_size():
    config = copy.deepcopy(TINY_CONFIG)
    config["losses"]["triplet"] = {"impl": "triplet", "sampler": {"m_per_class": 6}}
    with pytest.raises(
        ConfigError, match=r"losses\.triplet\.sampler\.m_per_class: 6 must divide"
    ):
        load_config(config)


def test_new_loss_keys_enter_the_cell_settings():
    config = copy.deepcopy(TINY_CONFIG)
    config["losses"]["triplet"] = {"impl": "triplet", "sampler": {"m_per_class": 8}}
    config["losses"]["proxy_anchor"] = {"impl": "proxy_anchor", "lr_multiplier": 100}
    loaded = load_config(config)
    cell = lambda loss: cell_settings(
        loaded, Cell("digits", "full", "small_cnn", loss, 0)
    )  # noqa: E731
    assert cell("triplet")["sampler"] == {"m_per_class": 8}
    assert cell("triplet")["loss_lr_multiplier"] == 1.0
    assert cell("proxy_anchor")["sampler"] is None
    assert cell("proxy_anchor")["loss_lr_multiplier"] == 100


# ------------------------------------------------------- lr multiplier


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd"])
def test_lr_multiplier_gives_the_loss_its_own_param_group(optimizer):
    backbone = torch.nn.Linear(3, 4)
    loss = build_loss("proxy_anchor", num_classes=5, embedding_size=4)
    cfg = {
        "optimizer": optimizer,
        "lr": 0.01,
        "weight_decay": 0.0,
        "momentum": 0.9,
        "lr_schedule": "step",
        "lr_step_epochs": 1,
        "lr_gamma": 0.5,
        "epochs": 3,
    }
    opt = make_optimizer(parameter_groups(backbone, loss, cfg["lr"], 100.0), cfg)
    assert [g["lr"] for g in opt.param_groups] == [0.01, pytest.approx(1.0)]
    assert opt.param_groups[0]["params"] == list(backbone.parameters())
    assert opt.param_groups[1]["params"] == [loss.loss.proxies]
    scheduler = make_scheduler(opt, cfg)
    opt.step()
    scheduler.step()
    assert [g["lr"] for g in opt.param_groups] == [0.005, pytest.approx(0.5)]


def test_losses_without_parameters_get_one_group():
    backbone = torch.nn.Linear(3, 4)
    groups = parameter_groups(backbone, build_loss("supcon", 5, 4), 0.01, 100.0)
    assert len(groups) == 1 and groups[0]["lr"] == 0.01


# ------------------------------------------ training, embedding, evaluation


def tiny_cell(loss, sampler=None, lr_multiplier=1.0, seed=0):
    config = copy.deepcopy(TINY_CONFIG)
    config["losses"] = {
        loss: {"impl": loss, "sampler": sampler, "lr_multiplier": lr_multiplier}
    }
    config["training"] = {"epochs": 2, "batch_size": 40}
    loaded = load_config(config)
    return cell_settings(loaded, Cell("digits", "full", "small_cnn", loss, seed))


@pytest.fixture(scope="module")
def digits():
    data = load_dataset("sklearn_digits")
    train = np.concatenate([np.flatnonzero(data.labels == c)[:20] for c in range(10)])
    return data, train


def train(digits, settings):
    data, index = digits
    return train_cell(data.images, data.labels, index, 10, settings, progress=False)


def test_training_with_sampler_is_bit_identical_per_seed(digits):
    settings = tiny_cell("triplet", sampler={"m_per_class": 4})
    first, second = train(digits, settings), train(digits, settings)
    for key, value in first["backbone"].items():
        assert torch.equal(value, second["backbone"][key]), key
    assert first["history"] == second["history"]
    other = train(digits, tiny_cell("triplet", sampler={"m_per_class": 4}, seed=1))
    assert other["history"] != first["history"]


def test_lr_multiplier_moves_the_proxies_further(digits):
    settings = tiny_cell("proxy_anchor")
    seed_everything(settings["seed"])  # the initial proxies, as train_cell builds them
    _, initial = build_models(settings, 1, 8, 10)
    start = initial.loss.proxies.detach()
    moved = {}
    for multiplier in (1.0, 100.0):
        checkpoint = train(digits, tiny_cell("proxy_anchor", lr_multiplier=multiplier))
        moved[multiplier] = (checkpoint["loss"]["loss.proxies"] - start).norm().item()
    assert moved[1.0] > 0
    assert moved[100.0] > 20 * moved[1.0]


def test_loss_without_classifier_gives_nan_accuracy_and_tables_still_work(digits):
    data, index = digits
    settings = tiny_cell("supcon", sampler={"m_per_class": 4})
    checkpoint = train(digits, settings)
    query = np.arange(len(data.labels))[-50:]
    _, predictions, anchors = compute_embeddings(
        checkpoint, settings, data.images, query
    )
    assert (predictions == -1).all() and anchors is None
    queries = pd.DataFrame({"label": data.labels[query], "prediction": predictions})
    assert math.isnan(classification_accuracy(queries, pd.DataFrame({"label": []})))

    metrics = pd.DataFrame(
        {
            "dataset": "digits",
            "regime": "full",
            "backbone": "small_cnn",
            "loss": ["supcon", "supcon", "ce", "ce"],
            "seed": [0, 1, 0, 1],
            "geometry": "euclidean",
            "distance": "euclidean",
            "retrieval": "exact",
            "metric": "accuracy",
            "value": [float("nan"), float("nan"), 0.8, 0.9],
        }
    )
    decl = regime_declaration(metrics, "digits", "full")
    csv, markdown, latex = render(
        "digits/full", decl, build_table("digits/full", decl, metrics)
    )
    assert "supcon" in markdown and "0.850 ± 0.071" in markdown
    assert "nan" in markdown.split("| supcon")[1].split("\n")[0]
    assert "supcon" in latex


def test_pipeline_runs_library_losses_end_to_end(tmp_path):
    config = copy.deepcopy(TINY_CONFIG)
    config["regimes"] = {"full": {"train_per_class": None}}
    config["seeds"] = [0]
    config["training"] = {"epochs": 1, "batch_size": 64}
    config["losses"] = {
        "triplet": {"impl": "triplet", "sampler": {"m_per_class": 8}},
        "proxy_anchor": {"impl": "proxy_anchor", "lr_multiplier": 100},
    }
    config[
        "tables"
    ] = {}  # TINY_CONFIG's table compares with ce, which this config lacks
    workdir = make_workspace(tmp_path / "run", config)
    snakemake(workdir, "--cores", "2")
    metrics = pd.read_csv(workdir / "results/metrics.csv")
    accuracy = metrics[metrics["metric"] == "accuracy"].set_index("loss")["value"]
    assert math.isnan(accuracy["triplet"])  # no classifier, no anchors
    assert 0 <= accuracy["proxy_anchor"] <= 1
    table = pd.read_csv(workdir / "results/tables/digits/full.csv")
    assert list(dict.fromkeys(table["row"])) == ["triplet", "proxy_anchor"]
    anchors = pd.read_parquet(
        workdir
        / "results/cells/digits/full/small_cnn/proxy_anchor/seed0/anchors.parquet"
    )
    assert len(anchors) == 10

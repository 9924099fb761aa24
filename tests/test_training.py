"""The fast training path (device-side augmentation, bf16 autocast,
channels-last) against the plain path, and the CPU fallback of ``auto``.

Tests taking ``device`` run on the CPU everywhere and, where PyTorch sees a
CUDA device, on it too (the fast path's real target); the CUDA results of
the lent GPU machine are in benchmarks/results/cuda_tests.md."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_CONFIG

import workflow.training.settings as training_settings
from workflow.augment import augment
from workflow.config import Cell, cell_settings
from workflow.config_loader import load_config
from workflow.datasets import load_dataset
from workflow.embedding import compute_embeddings
from workflow.retrieval.exact import retrieval_metrics
from workflow.splits import make_split
from workflow.training.loop import build_training, train_cell
from workflow.training.settings import cpu_has_native_bf16, resolve_speed
from workflow.training.step import make_optimizer

# Tolerances of the fast path (bf16 autocast, channels-last) against the
# plain fp32 path, same seed, same batches, same augmentation draws. bf16
# keeps 8 bits of mantissa, so the weights differ from the first step on and
# training drifts; measured on the tiny cell below (8 epochs, mAP about 0.5,
# chance 0.1): mAP moves by < 0.01 and the final loss by < 0.5%.
MAP_TOLERANCE = 0.05
LOSS_TOLERANCE = 0.05  # relative, mean training loss of the last epoch
DEVICES = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]


def settings(loss="ce", **training):
    config = copy.deepcopy(TINY_CONFIG)
    config["training"] = {"epochs": 8, "batch_size": 32, "lr": 0.003, **training}
    return cell_settings(
        load_config(config), Cell("digits", "full", "small_cnn", loss, 0)
    )


@pytest.fixture(scope="module")
def digits():
    data = load_dataset("sklearn_digits")
    split = make_split(
        data.labels,
        np.full(len(data.labels), "none"),
        seed=0,
        query_per_class=10,
        train_per_class=40,
        database_per_class=40,
    )
    return data, split


def trained(digits, loss="ce", **training):
    data, split = digits
    s = settings(loss, **training)
    train = split.loc[split["split"] == "train", "index"].to_numpy()
    model = train_cell(data.images, data.labels, train, 10, s, progress=False)
    return model, retrieval_map(digits, model, s)


def retrieval_map(digits, model, s):
    data, split = digits
    evaluation = split[split["split"] != "train"]
    query = evaluation.loc[evaluation["split"] == "query", "index"].to_numpy()
    database = evaluation.loc[evaluation["split"] == "database", "index"].to_numpy()
    q, _, _ = compute_embeddings(model, s, data.images, query)
    db, _, _ = compute_embeddings(model, s, data.images, database)
    metrics = retrieval_metrics(
        q,
        data.labels[query],
        db,
        data.labels[database],
        evaluation={"precision_at": [5], "top_k_error": [1]},
    )
    return metrics["map"]


@pytest.fixture(scope="module")
def plain(digits):
    return trained(
        digits, device="cpu", precision="fp32", channels_last=False, augment="none"
    )


def assert_close_results(fast, plain):
    (fast_model, fast_map), (plain_model, plain_map) = fast, plain
    # The fast path really ran in other arithmetic: the weights differ ...
    key = "0.0.weight"  # the first convolution of small_cnn
    assert not torch.equal(fast_model["backbone"][key], plain_model["backbone"][key])
    # ... but it learns the same: retrieval quality and training loss agree.
    assert plain_map > 0.3, (
        "the tiny cell must learn for the comparison to mean anything"
    )
    assert abs(fast_map - plain_map) <= MAP_TOLERANCE
    plain_loss, fast_loss = (
        plain_model["history"][-1]["loss"],
        fast_model["history"][-1]["loss"],
    )
    assert abs(fast_loss - plain_loss) <= LOSS_TOLERANCE * plain_loss


@pytest.mark.parametrize("device", DEVICES)
def test_bf16_channels_last_matches_the_plain_path_within_tolerance(
    digits, plain, device
):
    fast = trained(
        digits, device=device, precision="bf16", channels_last=True, augment="none"
    )
    assert fast[0]["stats"]["precision"] == "bf16" and fast[0]["stats"]["channels_last"]
    assert fast[0]["stats"]["device"] == device
    assert_close_results(fast, plain)


@pytest.mark.parametrize("device", DEVICES)
def test_fast_path_with_device_augmentation_matches_plain_path_with_it(
    digits, plain, device
):
    augmentation = {"augment": "crop", "augment_padding": 1}
    plain_augmented = trained(
        digits, device="cpu", precision="fp32", channels_last=False, **augmentation
    )
    assert plain_augmented[0]["history"] != plain[0]["history"]  # augmentation is on
    fast = trained(
        digits, device=device, precision="bf16", channels_last=True, **augmentation
    )
    assert_close_results(fast, plain_augmented)


def test_compile_takes_a_torch_compile_mode():
    cpu = torch.device("cpu")
    assert resolve_speed({"compile": True}, cpu)["compile"] == "default"
    assert (
        resolve_speed({"compile": "reduce-overhead"}, cpu)["compile"]
        == "reduce-overhead"
    )
    load_config(
        {**copy.deepcopy(TINY_CONFIG), "training": {"compile": "max-autotune"}}
    )  # a valid key


def cpuinfo_flags() -> set[str]:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


@pytest.mark.skipif(
    not Path("/proc/cpuinfo").exists(),
    reason="reads the CPU flags from Linux's /proc/cpuinfo",
)
def test_native_bf16_detection_agrees_with_the_cpu_flags():
    flags = cpuinfo_flags()
    assert cpu_has_native_bf16() == bool(flags & {"avx512_bf16", "amx_bf16"})


@pytest.mark.parametrize("native", [True, False])
def test_auto_on_the_cpu_is_fp32_on_every_cpu_and_channels_last(monkeypatch, native):
    # Stands in for the two kinds of CPU (with and without native bf16):
    # the default must not depend on which one runs it.
    monkeypatch.setattr(training_settings, "cpu_has_native_bf16", lambda: native)
    cpu = torch.device("cpu")
    assert resolve_speed(settings()["training"], cpu) == {
        "precision": "fp32",
        "channels_last": True,
        "compile": False,
    }
    assert resolve_speed(
        settings(precision="bf16", channels_last=False)["training"], cpu
    ) == {"precision": "bf16", "channels_last": False, "compile": False}


def test_the_default_trains_in_fp32_bit_for_bit_and_bf16_stays_available(digits):
    auto_model, auto_map = trained(
        digits, device="cpu"
    )  # precision/channels_last default to auto
    assert auto_model["stats"]["precision"] == "fp32"
    fp32_model, fp32_map = trained(digits, device="cpu", precision="fp32")
    bf16_model, bf16_map = trained(digits, device="cpu", precision="bf16")
    assert bf16_model["stats"]["precision"] == "bf16"
    for key, value in fp32_model["backbone"].items():
        assert torch.equal(auto_model["backbone"][key], value), key
    assert auto_map == fp32_map
    # bf16 is a different arithmetic: the weights differ (so the comparison
    # above could fail had the default picked bf16 on this CPU).
    assert any(
        not torch.equal(bf16_model["backbone"][k], v)
        for k, v in fp32_model["backbone"].items()
    )


@pytest.mark.parametrize("device", DEVICES)
def test_the_step_augments_then_normalises_each_batch_on_the_device(digits, device):
    data, split = digits
    train = split.loc[split["split"] == "train", "index"].to_numpy()
    run = build_training(
        data.images,
        data.labels,
        train,
        10,
        settings(device=device, augment="crop_flip", augment_padding=2),
    )
    assert run.step.images.dtype == torch.uint8 and run.step.images.shape[1:] == (
        1,
        8,
        8,
    )
    assert run.step.images.device.type == device
    batch = torch.arange(16, device=device)
    state = run.augment_generator.get_state()
    x = run.step.inputs(batch)
    expected = (
        augment(
            run.step.images[batch],
            "crop_flip",
            2,
            torch.Generator(device=device).manual_seed(0).set_state(state),
        ).float()
        / 255.0
    )
    expected = (expected - run.step.mean) / run.step.std
    assert torch.allclose(x, expected)
    assert not torch.allclose(
        x, (run.step.images[batch].float() / 255.0 - run.step.mean) / run.step.std
    )


def test_loss_terms_are_logged_per_epoch_when_the_loss_exposes_them(digits):
    data, split = digits
    train = split.loc[split["split"] == "train", "index"].to_numpy()
    config = copy.deepcopy(TINY_CONFIG)
    config["training"] = {"epochs": 2, "batch_size": 64}
    loaded = load_config(config)
    lm = train_cell(
        data.images,
        data.labels,
        train,
        10,
        cell_settings(loaded, Cell("digits", "full", "small_cnn", "lm", 0)),
        progress=False,
    )
    for record in lm["history"]:
        assert set(record["terms"]) == {"ce", "lm"}
        # LM's loss is CE + beta * L_LM: the epoch means add up too.
        assert record["terms"]["ce"] + record["terms"]["lm"] == pytest.approx(
            record["loss"], rel=1e-5
        )
    ce = train_cell(
        data.images,
        data.labels,
        train,
        10,
        cell_settings(loaded, Cell("digits", "full", "small_cnn", "ce", 0)),
        progress=False,
    )
    assert all("terms" not in record for record in ce["history"])


@pytest.mark.parametrize("device", DEVICES)
def test_batches_read_from_host_memory_train_the_same_model(
    digits, plain, tmp_path, device
):
    """training.data_on_device: false reads each batch from a memory-mapped
    images.npy (ahead, in DataLoader workers); the statistics come from a
    chunked pass. Same model as the on-device path: the normalisation agrees
    to float32 rounding and the weights to float32 noise."""
    data, split = digits
    path = tmp_path / "images.npy"
    np.save(path, data.images)
    mapped = np.load(path, mmap_mode="r")
    s = settings(
        device=device,
        precision="fp32",
        channels_last=False,
        augment="none",
        data_on_device=False,
    )
    train = split.loc[split["split"] == "train", "index"].to_numpy()
    model = train_cell(mapped, data.labels, train, 10, s, progress=False)
    if device != "cpu":
        # CUDA's convolutions are neither deterministic nor fp32 (TF32):
        # two runs of one path differ in the weights, so the two paths are
        # held to what they learn, as the fast path is.
        on_device_model, on_device_map = trained(
            digits, device=device, precision="fp32", channels_last=False, augment="none"
        )
        assert torch.allclose(model["mean"], on_device_model["mean"], rtol=1e-6)
        assert abs(retrieval_map(digits, model, s) - on_device_map) <= MAP_TOLERANCE
        loss, reference_loss = (
            model["history"][-1]["loss"],
            on_device_model["history"][-1]["loss"],
        )
        assert abs(loss - reference_loss) <= LOSS_TOLERANCE * reference_loss
        return
    # Read ahead by 2 worker processes (the default is 4) or in the training
    # process when the step asks: the same bits.
    unfetched = train_cell(
        mapped,
        data.labels,
        train,
        10,
        settings(
            device=device,
            precision="fp32",
            channels_last=False,
            augment="none",
            data_on_device=False,
            loader_workers=0,
        ),
        progress=False,
    )
    two = train_cell(
        mapped,
        data.labels,
        train,
        10,
        settings(
            device=device,
            precision="fp32",
            channels_last=False,
            augment="none",
            data_on_device=False,
            loader_workers=2,
        ),
        progress=False,
    )
    for key, value in model["backbone"].items():
        assert torch.equal(unfetched["backbone"][key], value) and torch.equal(
            two["backbone"][key], value
        ), key
    reference = plain[0]
    assert torch.allclose(model["mean"], reference["mean"], rtol=1e-6)
    assert torch.allclose(model["std"], reference["std"], rtol=1e-6)
    for key, value in reference["backbone"].items():
        assert torch.allclose(
            model["backbone"][key].float(), value.float(), rtol=1e-3, atol=1e-4
        ), key
    assert model["history"][-1]["loss"] == pytest.approx(
        reference["history"][-1]["loss"], rel=1e-3
    )


def test_inputs_prepared_ahead_in_a_thread_give_the_same_bits(digits):
    """TrainStep.steps prepares the next batch's inputs in a second thread
    on the CPU; the augmentation draws come in the same order, so losses
    and weights equal those of the steps run one after the other."""
    data, split = digits
    train = split.loc[split["split"] == "train", "index"].to_numpy()
    s = settings(device="cpu", augment="crop_flip", augment_padding=2)
    ahead = build_training(data.images, data.labels, train, 10, s)
    one_by_one = build_training(data.images, data.labels, train, 10, s)
    batches = ahead.batches.epoch()
    assert all(torch.equal(a, b) for a, b in zip(batches, one_by_one.batches.epoch()))
    losses_ahead = [out["loss"] for out in ahead.step.steps(batches)]
    losses = [one_by_one.step(batch)["loss"] for batch in batches]
    assert len(losses) > 2 and all(
        torch.equal(a, b) for a, b in zip(losses_ahead, losses)
    )
    for key, value in ahead.backbone.state_dict().items():
        assert torch.equal(one_by_one.backbone.state_dict()[key], value), key
    assert torch.equal(
        ahead.augment_generator.get_state(), one_by_one.augment_generator.get_state()
    )


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("loss", ["ce", "cam"])
def test_compiled_training_learns_what_eager_training_learns(
    digits, plain, loss, device
):
    """training.compile (TorchInductor; its C++ kernels on the CPU, CUDA
    graphs over backbone and loss on CUDA): backbone and loss really run
    compiled, CAM's per-term log (set inside the compiled region) survives,
    and they learn what the eager fp32 step on the CPU does."""
    fp32 = {"precision": "fp32", "channels_last": False, "augment": "none"}
    torch._dynamo.reset()
    compiled = trained(digits, loss, device=device, compile="reduce-overhead", **fp32)
    assert compiled[0]["stats"]["compile"] == "reduce-overhead"
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1
    eager = plain if loss == "ce" else trained(digits, loss, device="cpu", **fp32)
    assert_close_results(compiled, eager)
    for compiled_record, eager_record in zip(
        compiled[0]["history"], eager[0]["history"]
    ):
        assert compiled_record.keys() == eager_record.keys()
        for name, value in eager_record.get("terms", {}).items():
            assert compiled_record["terms"][name] == pytest.approx(
                value, rel=LOSS_TOLERANCE, abs=1e-6
            ), name


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", ["adam", "adamw", "sgd"])
def test_fused_optimiser_makes_the_unfused_update(name, device):
    """make_optimizer runs PyTorch's fused kernel (one update per parameter
    group); from the same gradients it gives the weights of the unfused
    per-parameter loop with the same settings (weight decay, momentum, two
    groups at their own learning rates), to float32 rounding."""
    cfg = {"optimizer": name, "lr": 0.01, "weight_decay": 0.05, "momentum": 0.9}
    generator = torch.Generator().manual_seed(0)
    shapes = [(64, 3, 3, 3), (64,), (10, 128)]
    start = [torch.randn(shape, generator=generator).to(device) for shape in shapes]
    grads = [
        [torch.randn(shape, generator=generator).to(device) for shape in shapes]
        for _ in range(5)
    ]

    def run(optimizer_of):
        params = [torch.nn.Parameter(p.clone()) for p in start]
        optimizer = optimizer_of(
            [{"params": params[:2], "lr": 0.01}, {"params": params[2:], "lr": 0.1}]
        )
        for step in grads:
            for p, g in zip(params, step):
                p.grad = g.clone()
            optimizer.step()
        return optimizer, params

    fused, fused_params = run(lambda groups: make_optimizer(groups, cfg))
    assert fused.defaults["fused"] is True
    reference = {
        "adam": torch.optim.Adam,
        "adamw": torch.optim.AdamW,
        "sgd": torch.optim.SGD,
    }[name]
    extra = {"momentum": 0.9} if name == "sgd" else {}
    _, plain_params = run(
        lambda groups: reference(groups, weight_decay=0.05, foreach=False, **extra)
    )
    for a, b, before in zip(fused_params, plain_params, start):
        assert (a - before).abs().max() > 0.01  # the steps moved every tensor
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_initialisation_batch_order_and_augmentation_draw_from_independent_streams(
    digits,
):
    # The same integer seeding two generators would make them one random
    # sequence read twice (weights and first batch order were correlated).
    data, split = digits
    train = split.loc[split["split"] == "train", "index"].to_numpy()
    run = build_training(
        data.images, data.labels, train, 10, settings(device="cpu", augment="crop_flip")
    )
    seeds = {
        run.batch_generator.initial_seed(),
        run.augment_generator.initial_seed(),
        torch.initial_seed(),
    }
    assert len(seeds) == 3
    from workflow.seeds import STREAMS, stream_seed

    assert torch.initial_seed() == stream_seed(0, "init")
    assert run.batch_generator.initial_seed() == stream_seed(0, "batches")
    assert len({stream_seed(s, name) for s in range(5) for name in STREAMS}) == 5 * len(
        STREAMS
    )

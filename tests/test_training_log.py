"""TensorBoard event files of the train jobs (workflow/training_log.py,
config key ``tensorboard``): read back with TensorBoard's own
EventAccumulator, they hold the history in model.pt; a resumed job's live
log continues where its checkpoint does; the event files never change the
model; ``tensorboard: false`` writes none."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from conftest import (
    TINY_CONFIG,
    digits_training_set,
    make_workspace,
    snakemake,
    training_settings,
)
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def settings(loss="cam", epochs=4):
    return training_settings(loss, epochs=epochs, checkpoint_every=2)


@pytest.fixture(scope="module")
def digits():
    return digits_training_set()


def logged(folder) -> dict[str, list[tuple[int, float]]]:
    """Every scalar in the event files of ``folder``: tag -> [(step, value)]."""
    accumulator = EventAccumulator(str(folder))
    accumulator.Reload()
    return {
        tag: [(e.step, e.value) for e in accumulator.Scalars(tag)]
        for tag in accumulator.Tags()["scalars"]
    }


def expected(history: list[dict]) -> dict[str, list[tuple[int, float]]]:
    """The history as TensorBoard stores it: float32 scalars at step = epoch."""
    out: dict[str, list] = {}
    for epoch, record in enumerate(history, start=1):
        flat = {k: record[k] for k in ("loss", "accuracy", "lr") if k in record}
        for part in ("terms", "diagnostics"):
            flat.update({f"{part}/{k}": v for k, v in record.get(part, {}).items()})
        for tag, value in flat.items():
            out.setdefault(tag, []).append((epoch, float(np.float32(value))))
    return out


def test_the_event_files_hold_the_history_of_model_pt(tmp_path, digits):
    from workflow.training.loop import train_job
    from workflow.training_log import final_folder

    data, train = digits
    checkpoint = tmp_path / "results/checkpoints/cell/last.pt"
    folder = final_folder(checkpoint)
    assert folder == tmp_path / "results/tensorboard/cell"
    train_job(
        data.images,
        data.labels,
        train,
        10,
        settings(),
        tmp_path / "model.pt",
        tmp_path / "stats.json",
        checkpoint,
        tensorboard_dir=folder,
    )
    history = torch.load(tmp_path / "model.pt", weights_only=True)["history"]
    events = logged(folder)
    assert events == expected(history)
    assert {
        "loss",
        "accuracy",
        "lr",
        "terms/attractor",
        "terms/repeller",
        "terms/min_norm",
        "diagnostics/pairs_within_margin",
        "diagnostics/anchors_below_min_norm",
    } == set(events)
    assert [value for _, value in events["lr"]] == pytest.approx(
        [1e-3, 1e-3, 5e-4, 5e-4]
    )  # the step schedule
    # The live log went with the checkpoint; no temporary folder is left.
    assert not (checkpoint.parent / "tensorboard").exists() and not checkpoint.exists()
    assert [p.name for p in folder.parent.iterdir()] == ["cell"]
    # A second run of the cell replaces the folder (one run's events, not two).
    train_job(
        data.images,
        data.labels,
        train,
        10,
        settings(),
        tmp_path / "model.pt",
        tmp_path / "stats.json",
        checkpoint,
        tensorboard_dir=folder,
    )
    assert logged(folder) == expected(history) and len(list(folder.iterdir())) == 1


def test_the_event_files_change_nothing_in_the_model(tmp_path, digits):
    from workflow.training.loop import train_cell

    data, train = digits
    plain = train_cell(
        data.images, data.labels, train, 10, settings(epochs=2), progress=False
    )
    logging = train_cell(
        data.images,
        data.labels,
        train,
        10,
        settings(epochs=2),
        progress=False,
        live_log=tmp_path / "live",
    )
    for part in ("backbone", "loss"):
        for key, value in plain[part].items():
            assert torch.equal(value, logging[part][key]), f"{part}.{key}"
    assert plain["history"] == logging["history"]
    assert logged(tmp_path / "live") == expected(logging["history"])


def test_a_resumed_job_continues_its_live_log_from_the_checkpoint(tmp_path, digits):
    """Killed after epoch 3 with a checkpoint after epoch 2: the live log
    has steps 1-3 of the killed run; the resumed run purges step 3 and
    logs 3 and 4 again, so the log equals the finished history."""
    from workflow.training.loop import train_cell

    data, train = digits
    checkpoint, live = tmp_path / "last.pt", tmp_path / "live"
    s = settings()
    assert (
        train_cell(
            data.images,
            data.labels,
            train,
            10,
            s,
            progress=False,
            checkpoint_path=checkpoint,
            stop_after_epoch=3,
            live_log=live,
        )
        is None
    )
    assert [step for step, _ in logged(live)["loss"]] == [1, 2, 3]
    model = train_cell(
        data.images,
        data.labels,
        train,
        10,
        s,
        progress=False,
        checkpoint_path=checkpoint,
        live_log=live,
    )
    assert logged(live) == expected(model["history"])
    # A fresh start (no checkpoint) clears what an earlier run left.
    checkpoint.unlink()
    model = train_cell(
        data.images,
        data.labels,
        train,
        10,
        settings(epochs=2),
        progress=False,
        checkpoint_path=checkpoint,
        live_log=live,
    )
    assert logged(live) == expected(model["history"])


def test_tensorboard_false_writes_no_event_files(tmp_path):
    config = {
        **copy.deepcopy(TINY_CONFIG),
        "regimes": {"full": {}},
        "losses": {"ce": {"impl": "ce"}},
        "seeds": [0],
        "training": {"epochs": 1, "batch_size": 64},
        "tables": {},
    }
    model = "results/cells/digits/full/small_cnn/ce/seed0/model.pt"
    off = make_workspace(tmp_path / "off", {**config, "tensorboard": False})
    snakemake(off, "--cores", "1", model)
    assert (off / model).exists() and not (off / "results/tensorboard").exists()
    assert not (
        off / "results/checkpoints/digits/full/small_cnn/ce/seed0/tensorboard"
    ).exists()
    on = make_workspace(tmp_path / "on", config)  # the default: on
    snakemake(on, "--cores", "1", model)
    folder = on / "results/tensorboard/digits/full/small_cnn/ce/seed0"
    assert logged(folder) == expected(
        torch.load(on / model, weights_only=True)["history"]
    )
    # Switching it off afterwards retrains nothing (it is no rule parameter).
    (on / "config.yaml").write_text(
        (on / "config.yaml").read_text() + "tensorboard: false\n"
    )
    assert "Nothing to be done" in snakemake(on, "-n", model).stdout

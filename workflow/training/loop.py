"""train: one cell = one backbone trained with one loss on one split.

Deterministic on the CPU for a given seed (same settings, same bits), also
when the job is killed and resumed from its last checkpoint
(:mod:`workflow.training.resume`). :func:`build_training` puts a cell's
parts together, :func:`train_cell` runs its epochs and :func:`train_job` is
what the train rule runs.
"""

from __future__ import annotations

import json
import random
import shutil
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from workflow.backbones.weights import input_normalisation
from workflow.checkpoints import save_torch
from workflow.config import CELL_PATTERN, ConfigError, settings_hash
from workflow.devices import claim_device
from workflow.io import check_output_path, save_json
from workflow.job_guard import cell_lock, lock_path, watch_parent
from workflow.jpeg_store import JpegImages, JpegStore
from workflow.losses import loss_classifies
from workflow.memory import check_fits
from workflow.samplers import make_batches
from workflow.seeds import stream_seed
from workflow.training.inputs import HostImages, check_images_fit, training_classes
from workflow.training.resume import Training, load_resume_checkpoint
from workflow.training.settings import (
    bounds,
    input_view,
    resolve_speed,
    select_device,
    training_option,
)
from workflow.training.step import (
    TrainStep,
    build_models,
    make_optimizer,
    make_scheduler,
    parameter_groups,
)
from workflow.training_log import LiveLog, write_history


def seed_everything(seed: int) -> None:
    """Seed the global Python, NumPy and torch generators from the cell's
    ``init`` stream (:mod:`workflow.seeds`): weight initialisation."""
    init = stream_seed(seed, "init")
    random.seed(init)
    np.random.seed(init % 2**32)
    torch.manual_seed(init)


def build_training(
    images: np.ndarray,
    labels: np.ndarray,
    train_index: np.ndarray,
    num_classes: int,
    settings: dict,
    device: torch.device | None = None,
) -> Training:
    """Models, optimiser, batch source and step of one cell, freshly seeded."""
    cfg = settings["training"]
    device = device or select_device(cfg["device"])
    speed = resolve_speed(cfg, device)
    seed_everything(settings["seed"])

    order = np.sort(train_index)
    class_ids, train_labels = training_classes(labels[order], num_classes)
    y = torch.as_tensor(train_labels, dtype=torch.long, device=device)
    if isinstance(
        images, JpegStore
    ):  # decoded batch by batch, whatever data_on_device says
        x = JpegImages(
            images,
            order,
            device,
            training_option(cfg, "loader_workers"),
            size=training_option(cfg, "input_size"),
        )
        if x.shape[2] is None:
            raise ConfigError(
                f"dataset {images.dataset} is stored as JPEGs of their own sizes (storage: jpeg without "
                f"image_size), so cell {CELL_PATTERN.format(**settings)} needs training.input_size: set it "
                "(e.g. 224), or set the dataset's image_size"
            )
        statistics = x.channel_statistics
    elif training_option(cfg, "data_on_device"):
        check_images_fit(images.shape[1:], len(order), settings, device)
        train_images = np.asarray(images[order])

        def statistics():
            # Per-channel statistics in NumPy: torch splits large reductions across
            # threads, so its float64 mean would depend on the thread count.
            pixels = (
                train_images.reshape(-1, train_images.shape[-1]).astype(np.float64)
                / 255.0
            )
            return (
                torch.from_numpy(pixels.mean(axis=0)).float(),
                torch.from_numpy(pixels.std(axis=0, ddof=1)).clamp_min(1e-3).float(),
            )

        x = (
            torch.as_tensor(np.ascontiguousarray(train_images), device=device)
            .permute(0, 3, 1, 2)
            .contiguous()
        )
    else:
        x = HostImages(
            images, order, device, workers=training_option(cfg, "loader_workers")
        )
        statistics = x.channel_statistics
    # A pretrained trunk gets the inputs it was trained on: its weights' mean
    # and std (the data's own are then not computed).
    mean, std = (
        input_normalisation(settings["backbone_params"], int(x.shape[1]))
        or statistics()
    )

    input_size, _ = input_view(cfg, int(x.shape[2]), int(x.shape[3]))
    if isinstance(
        x, JpegImages
    ):  # images of their own sizes: always brought to one size
        input_size = input_size or int(x.shape[2])
    image_size = input_size or int(x.shape[2])
    size_key = (
        "training.input_size"
        if input_size
        else f"datasets.{settings['dataset']}.image_size"
    )
    check_fits(
        cfg["batch_size"] * int(x.shape[1]) * image_size**2 * 4,
        f"config key {size_key}: one batch of {cfg['batch_size']} images at {image_size} x {image_size} x "
        f"{int(x.shape[1])} (float32)",
        "lower it (or training.batch_size)",
        device,
    )
    backbone, loss_fn = build_models(settings, x.shape[1], image_size, len(class_ids))
    backbone.to(device)
    loss_fn.to(device)
    if speed["channels_last"]:
        backbone.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(
        parameter_groups(backbone, loss_fn, cfg["lr"], settings["loss_lr_multiplier"]),
        cfg,
    )
    scheduler = make_scheduler(optimizer, cfg)
    batch_generator = torch.Generator().manual_seed(
        stream_seed(settings["seed"], "batches")
    )
    augment_generator = torch.Generator(device=device).manual_seed(
        stream_seed(settings["seed"], "augment")
    )
    batches = make_batches(
        y.cpu(),
        cfg["batch_size"],
        settings["sampler"],
        batch_generator,
        key=f"losses.{settings['loss']}.sampler",
    )
    step = TrainStep(
        backbone,
        loss_fn,
        optimizer,
        x,
        y,
        mean,
        std,
        augment_mode=training_option(cfg, "augment"),
        padding=training_option(cfg, "augment_padding"),
        generator=augment_generator,
        input_size=input_size,
        scale=bounds(cfg, "augment_scale"),
        ratio=bounds(cfg, "augment_ratio"),
        precision=speed["precision"],
        channels_last=speed["channels_last"],
        compile=speed["compile"],
        classifies=loss_classifies(settings["loss_impl"]),
    )
    return Training(
        backbone,
        loss_fn,
        optimizer,
        scheduler,
        batches,
        batch_generator,
        augment_generator,
        step,
        mean,
        std,
        device,
        speed,
        in_channels=int(x.shape[1]),
        image_size=image_size,
        class_ids=class_ids,
    )


def train_cell(
    images: np.ndarray,
    labels: np.ndarray,
    train_index: np.ndarray,
    num_classes: int,
    settings: dict,
    threads: int = 1,
    progress: bool = True,
    checkpoint_path=None,
    stop_after_epoch: int | None = None,
    writing=nullcontext,
    live_log=None,
    device: torch.device | None = None,
) -> dict:
    """Train one cell; return its model dict (state dicts and plain data
    only, so it loads with ``torch.load(weights_only=True)``, and the same
    bits for the same settings on the CPU).

    The dict's ``stats`` entry (device, speed settings, images seen and
    seconds in the loop, epoch resumed from) is the one part that is not
    deterministic: ``scripts/train.py`` writes it to ``train_stats.json``
    and saves the rest as ``model.pt``.

    With ``checkpoint_path``, a resume checkpoint is written there
    atomically every ``training.checkpoint_every`` epochs, and training
    starts from it when it holds a run of the same settings (hash). With
    ``stop_after_epoch`` training stops after that epoch (a test hook that
    simulates a kill) and returns None. ``writing``: a context manager
    around each checkpoint write (:meth:`workflow.job_guard.ParentWatch.writing`).
    ``live_log``: a folder for TensorBoard event files written each epoch
    (:class:`workflow.training_log.LiveLog`).
    """
    cfg = settings["training"]
    torch.set_num_threads(max(1, threads))
    device = device or select_device(cfg["device"])
    deterministic = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(device.type == "cpu")  # restored on return
    try:
        return _train(
            images,
            labels,
            train_index,
            num_classes,
            settings,
            device,
            progress,
            checkpoint_path,
            stop_after_epoch,
            writing,
            live_log,
        )
    finally:
        torch.use_deterministic_algorithms(deterministic)


def train_job(
    images,
    labels,
    train_index,
    num_classes,
    settings,
    model_path,
    stats_path,
    checkpoint_path,
    threads: int = 1,
    tensorboard_dir=None,
    jobs_per_gpu: int = 1,
) -> None:
    """What the train rule runs: :func:`train_cell` with a resume checkpoint,
    then ``model.pt`` (``model_path``) and its timing stats (``stats_path``),
    then the checkpoint is removed. The job holds the cell's lock
    (:func:`workflow.job_guard.cell_lock`, beside the checkpoint) throughout,
    so a second job of the cell stops at once naming the holder, and it
    stops without writing once the Snakemake process that started it has
    ended (:class:`workflow.job_guard.ParentWatch`). With ``tensorboard_dir``,
    TensorBoard event files of the history go live beside the checkpoint
    while training, and to ``tensorboard_dir`` (through a temporary folder)
    before ``model.pt`` is written (:mod:`workflow.training_log`). The job
    runs on the device it claims (:func:`workflow.devices.claim_device`,
    ``jobs_per_gpu`` jobs per GPU), held until it ends."""
    checkpoint_path = Path(checkpoint_path)
    live_log = checkpoint_path.parent / "tensorboard" if tensorboard_dir else None
    if tensorboard_dir:  # before training, not after the last epoch
        check_output_path(tensorboard_dir, folder=True)
    watch = watch_parent()
    cell = CELL_PATTERN.format(**settings)
    with (
        cell_lock(lock_path(checkpoint_path), cell),
        claim_device(settings["training"]["device"], jobs_per_gpu, cell) as claim,
    ):
        model = train_cell(
            images,
            labels,
            train_index,
            num_classes,
            settings,
            threads=threads,
            checkpoint_path=checkpoint_path,
            writing=watch.writing,
            live_log=live_log,
            device=claim.device,
        )
        # Timing and device are not reproducible: they go to train_stats.json
        # and the log, so model.pt has the same bits on every CPU run.
        stats = {**model.pop("stats"), **claim.record()}
        print(f"trained: {json.dumps(stats, sort_keys=True)}")
        print(f"per epoch: {model['history']}")
        with watch.writing():
            if tensorboard_dir:
                write_history(tensorboard_dir, model["history"])
            save_json(stats_path, stats)
            save_torch(model_path, model)
            # model.pt is complete: the resume checkpoint is no longer needed.
            checkpoint_path.unlink(missing_ok=True)
            if live_log:
                shutil.rmtree(live_log, ignore_errors=True)


def _train(
    images,
    labels,
    train_index,
    num_classes,
    settings,
    device,
    progress,
    checkpoint_path,
    stop_after_epoch,
    writing,
    live_log=None,
) -> dict | None:
    cfg = settings["training"]
    run = build_training(images, labels, train_index, num_classes, settings, device)
    expected_hash = settings_hash(settings)
    log = lambda line: print(line, file=sys.stderr)  # noqa: E731
    state = load_resume_checkpoint(checkpoint_path, expected_hash, log=log)
    if state is not None:
        try:
            run.load_state_dict(state)
        except (KeyError, IndexError, TypeError, ValueError, RuntimeError) as error:
            # Same settings hash, but parts that do not fit (another version
            # of the code wrote it): a fresh start, as for any foreign file.
            log(
                f"ignoring checkpoint {checkpoint_path}: its state does not fit this cell's training "
                f"({type(error).__name__}: {str(error).splitlines()[0][:200]}); training from the start"
            )
            run = build_training(
                images, labels, train_index, num_classes, settings, device
            )
    first_epoch = len(run.history)
    every = training_option(cfg, "checkpoint_every")

    cell = CELL_PATTERN.format(**settings)
    bar = tqdm(
        range(first_epoch, cfg["epochs"]),
        desc=f"train {cell}",
        file=sys.stderr,
        disable=not progress,
        initial=first_epoch,
        total=cfg["epochs"],
    )
    images_seen, start = 0, time.perf_counter()
    live = LiveLog(live_log, first_epoch) if live_log else None
    for epoch in bar:
        run.backbone.train()
        run.loss_fn.train()
        record = train_epoch(run, cell, epoch)
        record["lr"] = run.optimizer.param_groups[0][
            "lr"
        ]  # the backbone's, during this epoch
        run.scheduler.step()
        images_seen += record.pop("images")
        run.history.append(record)
        if live:
            live.add(epoch + 1, record)
        bar.set_postfix(loss=f"{record['loss']:.4f}")
        done = epoch + 1
        if checkpoint_path is not None and (done % every == 0) and done < cfg["epochs"]:
            with writing():
                save_torch(
                    checkpoint_path,
                    {"settings_hash": expected_hash, **run.state_dict()},
                )
        if (
            stop_after_epoch is not None
            and done >= stop_after_epoch
            and done < cfg["epochs"]
        ):
            if live:
                live.close()
            return None
    train_seconds = time.perf_counter() - start
    if live:
        live.close()

    return {
        "backbone": {k: v.cpu() for k, v in run.backbone.state_dict().items()},
        "loss": {k: v.cpu() for k, v in run.loss_fn.state_dict().items()},
        "mean": run.mean,
        "std": run.std,
        "in_channels": run.in_channels,
        "image_size": run.image_size,
        # The loss's classes: their number, and the dataset label of each
        # (embed maps predictions and anchors back through it).
        "num_classes": len(run.class_ids),
        "class_ids": run.class_ids.tolist(),
        # A JSON round trip gives the history one object graph however it
        # was built (a resumed run mixes unpickled and new key strings, which
        # pickle would write differently): the same bytes in model.pt.
        "history": json.loads(json.dumps(run.history)),
        "settings_hash": expected_hash,
        "stats": {
            "device": str(device),
            "device_name": torch.cuda.get_device_name(device)
            if device.type == "cuda"
            else "cpu",
            **run.speed,
            "threads": torch.get_num_threads(),
            "images_seen": images_seen,
            "train_seconds": train_seconds,
            "resumed_from_epoch": first_epoch,
        },
    }


def epoch_batches(run: Training) -> list[torch.Tensor]:
    """The epoch's batches of indices, on the device in one copy. Copying
    each batch from pageable host memory as its step starts would make the
    host wait for the device every step (CUDA synchronises the stream
    before such a copy), and the GPU would idle while the host queues the
    next step. With ``data_on_device: false`` the indices stay on the host,
    and ``HostImages`` starts reading the epoch's images ahead."""
    batches = run.batches.epoch()
    if isinstance(run.step.images, (HostImages, JpegImages)):
        run.step.images.prefetch(batches)
        return batches
    if run.device.type == "cpu":
        return batches
    flat = torch.cat(batches)
    if run.device.type == "cuda":
        flat = flat.pin_memory()
    return list(flat.to(run.device, non_blocking=True).split([len(b) for b in batches]))


def train_epoch(run: Training, cell: str, epoch: int) -> dict:
    """One pass of the batch source. Sums stay on the device (float64) and
    are read once at the end, so GPU steps are not synchronised one by one.
    -> mean ``loss``, ``accuracy`` (losses that classify), ``terms`` (mean
    of each loss term, for losses that report ``last_terms``),
    ``diagnostics`` (mean of each of ``last_diagnostics``), ``images``."""
    total = torch.zeros((), dtype=torch.float64, device=run.device)
    correct = torch.zeros((), dtype=torch.long, device=run.device)
    sums: dict[str, dict[str, torch.Tensor]] = {"terms": {}, "diagnostics": {}}
    count = 0
    batches = epoch_batches(run)
    for batch, out in zip(batches, run.step.steps(batches)):
        total += out["loss"].double() * len(batch)
        if out["correct"] is not None:
            correct += out["correct"]
        for part, values in sums.items():
            for name, value in (out[part] or {}).items():
                values[name] = values.get(name, 0) + value.detach().double() * len(
                    batch
                )
        count += len(batch)
    loss = total.item() / count
    if not np.isfinite(loss):
        raise FloatingPointError(
            f"cell {cell}: mean loss is {loss} in epoch {epoch + 1}; "
            "lower training.lr or check the loss parameters"
        )
    record = {"loss": loss}
    if run.step.can_classify:
        record["accuracy"] = int(correct.item()) / count
    for part, values in sums.items():
        if values:
            record[part] = {
                name: value.item() / count for name, value in values.items()
            }
    record["images"] = count
    return record

"""train: one cell = one backbone trained with one loss on one split.

Deterministic on the CPU for a given seed (same settings, same bits). The
whole training set is held as one float tensor on the device: the datasets
of this stage are small, and it keeps the loop free of DataLoader overhead.
"""

from __future__ import annotations

import random
import sys
import time

import numpy as np
import torch
from tqdm.auto import tqdm

from workflow.backbones import build_backbone
from workflow.losses import build_loss
from workflow.samplers import make_batches


def select_device(requested: str = "auto") -> torch.device:
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("training.device is 'cuda' but no CUDA device is available")
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(requested)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def to_tensor(images: np.ndarray, mean: torch.Tensor, std: torch.Tensor, device) -> torch.Tensor:
    """uint8 (N, H, W, C) -> normalised float (N, C, H, W) on ``device``."""
    x = torch.as_tensor(np.ascontiguousarray(images), device=device)
    x = x.permute(0, 3, 1, 2).float().div_(255.0)
    return (x - mean.to(device).view(1, -1, 1, 1)) / std.to(device).view(1, -1, 1, 1)


def build_models(settings: dict, in_channels: int, image_size: int, num_classes: int):
    backbone = build_backbone(
        settings["arch"],
        in_channels=in_channels,
        image_size=image_size,
        embedding_size=settings["embedding_size"],
        **settings["backbone_params"],
    )
    loss = build_loss(
        settings["loss_impl"],
        num_classes=num_classes,
        embedding_size=settings["embedding_size"],
        **settings["loss_params"],
    )
    return backbone, loss


def parameter_groups(backbone, loss_fn, lr: float, lr_multiplier: float = 1.0) -> list[dict]:
    """Optimiser parameter groups: the backbone at ``lr``, the loss's own
    parameters (anchors, centres, proxies, class weights) at
    ``lr * lr_multiplier`` (``losses.<name>.lr_multiplier``). Schedules scale
    both groups alike."""
    groups = [{"params": list(backbone.parameters()), "lr": lr}]
    loss_params = list(loss_fn.parameters())
    if loss_params:  # contrastive, triplet, supcon have none
        groups.append({"params": loss_params, "lr": lr * lr_multiplier})
    return groups


def make_optimizer(params, cfg: dict) -> torch.optim.Optimizer:
    name = cfg["optimizer"]
    if name == "adam":
        return torch.optim.Adam(params, lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    if name == "adamw":
        return torch.optim.AdamW(params, lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    if name == "sgd":
        return torch.optim.SGD(
            params, lr=cfg["lr"], momentum=cfg["momentum"], weight_decay=cfg["weight_decay"]
        )
    raise ValueError(f"training.optimizer: unknown optimiser {name!r}")


def make_scheduler(optimizer, cfg: dict):
    schedule = cfg["lr_schedule"]
    if schedule == "step":
        return torch.optim.lr_scheduler.StepLR(
            optimizer, step_size=cfg["lr_step_epochs"], gamma=cfg["lr_gamma"]
        )
    if schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg["epochs"])
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 1.0)


def train_cell(
    images: np.ndarray,
    labels: np.ndarray,
    train_index: np.ndarray,
    num_classes: int,
    settings: dict,
    threads: int = 1,
    progress: bool = True,
) -> dict:
    """Train one cell; return a checkpoint dict (state dicts and plain data
    only, so it loads with ``torch.load(weights_only=True)``)."""
    cfg = settings["training"]
    torch.set_num_threads(max(1, threads))
    device = select_device(cfg["device"])
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True)
    seed_everything(settings["seed"])

    train_images = np.asarray(images[np.sort(train_index)])
    y = torch.as_tensor(labels[np.sort(train_index)], dtype=torch.long, device=device)
    pixels = torch.as_tensor(train_images, dtype=torch.float64).div(255.0)
    mean = pixels.mean(dim=(0, 1, 2)).float()
    std = pixels.std(dim=(0, 1, 2)).clamp_min(1e-3).float()
    x = to_tensor(train_images, mean, std, device)

    backbone, loss_fn = build_models(settings, x.shape[1], x.shape[2], num_classes)
    backbone.to(device)
    loss_fn.to(device)
    optimizer = make_optimizer(
        parameter_groups(backbone, loss_fn, cfg["lr"], settings["loss_lr_multiplier"]),
        cfg,
    )
    scheduler = make_scheduler(optimizer, cfg)
    generator = torch.Generator().manual_seed(settings["seed"])
    batches = make_batches(
        y.cpu(), cfg["batch_size"], settings["sampler"], generator,
        key=f"losses.{settings['loss']}.sampler",
    )

    # Per epoch: mean loss and, for losses that classify, training accuracy.
    history = []
    can_classify = hasattr(loss_fn, "predict")
    cell = f"{settings['dataset']}/{settings['regime']}/{settings['backbone']}/{settings['loss']}/seed{settings['seed']}"
    bar = tqdm(range(cfg["epochs"]), desc=f"train {cell}", file=sys.stderr, disable=not progress)
    images_seen, start = 0, time.perf_counter()
    for epoch in bar:
        backbone.train()
        loss_fn.train()
        total, correct, count = 0.0, 0, 0
        for batch in batches.epoch():
            batch = batch.to(device)
            embeddings = backbone(x[batch])
            loss = loss_fn(embeddings, y[batch])
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"cell {cell}: loss is {loss.item()} at epoch {epoch + 1}; "
                    "lower training.lr or check the loss parameters"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(batch)
            count += len(batch)
            if can_classify:
                with torch.no_grad():
                    correct += int((loss_fn.predict(embeddings).argmax(1) == y[batch]).sum())
        scheduler.step()
        images_seen += count
        record = {"loss": total / count}
        if can_classify:
            record["accuracy"] = correct / count
        history.append(record)
        bar.set_postfix(loss=f"{record['loss']:.4f}")
    train_seconds = time.perf_counter() - start

    return {
        "backbone": {k: v.cpu() for k, v in backbone.state_dict().items()},
        "loss": {k: v.cpu() for k, v in loss_fn.state_dict().items()},
        "mean": mean,
        "std": std,
        "in_channels": int(x.shape[1]),
        "image_size": int(x.shape[2]),
        "num_classes": int(num_classes),
        "history": history,
        "device": str(device),
        "images_seen": images_seen,
        "train_seconds": train_seconds,
    }

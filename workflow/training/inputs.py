"""The training images and labels as the step reads them: the pixels'
normalisation (:func:`normalise`, shared with embedding), the images on
the device or in host memory, and the classes a loss sees
(:func:`training_classes`).

The training images are held on the device once, as uint8 (N, C, H, W) (a
quarter of float32's memory); each batch is gathered by indexing, augmented
on the device (``workflow.augment``) and normalised there, so there is no
DataLoader, no per-image Python and no host-to-device copy per step. This
fits every dataset of this benchmark at its configured size (CIFAR-100 at
32x32: 150 MB; :func:`check_images_fit`). Larger ones (Places365
train-standard at 64x64 would be 22 GB) stay in host memory with
``training.data_on_device: false`` (:class:`HostImages`: DataLoader workers
read each epoch's batches ahead into pinned memory).
"""

from __future__ import annotations

import os

import numpy as np
import torch

from workflow.backbones.weights import input_normalisation
from workflow.config import ConfigError
from workflow.memory import check_fits
from workflow.splits import MIN_CLASSES


def to_tensor(
    images: np.ndarray, mean: torch.Tensor, std: torch.Tensor, device
) -> torch.Tensor:
    """uint8 (N, H, W, C) -> normalised float (N, C, H, W) on ``device``."""
    x = torch.as_tensor(np.ascontiguousarray(images), device=device)
    return normalise(x.permute(0, 3, 1, 2), mean, std)


def normalise(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 (B, C, H, W) -> float (x / 255 - mean) / std, per channel."""
    x = x.float().div_(255.0)
    return (x - mean.to(x.device).view(1, -1, 1, 1)) / std.to(x.device).view(
        1, -1, 1, 1
    )


def read_rows(images: np.ndarray, rows: np.ndarray) -> torch.Tensor:
    """``images[rows]`` as a contiguous uint8 (B, C, H, W) tensor, read in
    file order (which a memory map reads fastest)."""
    by_file = np.argsort(rows, kind="stable")
    block = np.empty((len(rows), *images.shape[1:]), dtype=np.uint8)
    block[by_file] = images[rows[by_file]]
    return torch.from_numpy(block).permute(0, 3, 1, 2).contiguous()


class BatchReader(torch.utils.data.Dataset):
    """A DataLoader dataset whose items are whole batches: item ``positions``
    is ``read_rows(images, order[positions])``. A memory-mapped ``images``
    travels to the worker processes as its file name and is opened there
    again (pickling the map would copy the whole array)."""

    def __init__(self, images: np.ndarray, order: np.ndarray):
        self.path = getattr(images, "filename", None)
        self.images = None if self.path else images
        self.order = order

    def __getitem__(self, positions: np.ndarray) -> torch.Tensor:
        if self.images is None:
            self.images = np.load(self.path, mmap_mode="r")
        return read_rows(self.images, self.order[positions])

    def __len__(self) -> int:
        return len(self.order)


class HostImages:
    """Training images left in host memory (``training.data_on_device:
    false``), for datasets larger than the device's memory: ``images`` is
    the memory-mapped ``images.npy``; indexing with a batch of positions
    gives those images on the device, what indexing the on-device uint8
    (N, C, H, W) tensor gives. With ``workers > 0``, ``prefetch`` hands an
    epoch's batches to a DataLoader whose worker processes read them ahead
    into pinned memory while the GPU trains; indexing then takes them in
    order (and checks that the positions match). With ``workers == 0`` each
    batch is read in the training process when its step asks for it."""

    def __init__(
        self,
        images: np.ndarray,
        order: np.ndarray,
        device: torch.device,
        workers: int = 0,
    ):
        self.images, self.order, self.device, self.workers = (
            images,
            order,
            device,
            workers,
        )
        n, height, width, channels = len(order), *images.shape[1:]
        self.shape = (n, channels, height, width)
        self.pending = None  # (positions, images) of the epoch, read ahead

    def prefetch(self, batches: list[torch.Tensor]) -> None:
        if self.workers == 0:
            return
        loader = torch.utils.data.DataLoader(
            BatchReader(self.images, self.order),
            batch_size=None,
            sampler=[b.numpy() for b in batches],
            num_workers=min(self.workers, len(os.sched_getaffinity(0))),
            pin_memory=self.device.type == "cuda",
        )
        self.pending = zip(batches, loader)

    def __getitem__(self, batch: torch.Tensor) -> torch.Tensor:
        positions = batch.cpu()
        if self.pending is not None:
            expected, x = next(self.pending)
            if not torch.equal(expected, positions):
                raise RuntimeError(
                    "HostImages: batches asked for out of the prefetched order"
                )
        else:
            x = read_rows(self.images, self.order[positions.numpy()])
        if self.device.type == "cuda":
            return (x if x.is_pinned() else x.pin_memory()).to(
                self.device, non_blocking=True
            )
        return x

    def channel_statistics(
        self, chunk: int = 4096
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel mean and std (ddof 1) of the pixels in [0, 1], in
        float64 over chunks of images (the whole set never in memory)."""
        total = np.zeros(self.shape[1])
        squares = np.zeros(self.shape[1])
        for start in range(0, len(self.order), chunk):
            pixels = (
                self.images[self.order[start : start + chunk]].reshape(
                    -1, self.shape[1]
                )
                / 255.0
            )
            total += pixels.sum(axis=0)
            squares += (pixels * pixels).sum(axis=0)
        count = len(self.order) * self.shape[2] * self.shape[3]
        mean = total / count
        var = (squares - count * mean * mean) / (count - 1)
        std = np.sqrt(np.maximum(var, 0.0))
        return torch.from_numpy(mean).float(), torch.from_numpy(std).clamp_min(
            1e-3
        ).float()


def check_images_fit(
    shape: tuple, n: int, settings: dict, device: torch.device
) -> None:
    """With ``data_on_device``: the ``n`` training images (``shape``: height,
    width, channels) fit where they are copied: on the host a uint8 copy
    (two on the CPU device, which gets a channels-first copy), and, unless
    pretrained weights give the normalisation, the float64 pixels of the
    channel statistics; on a CUDA device the uint8 copy
    (:func:`workflow.memory.check_fits`)."""
    dataset = settings["dataset"]
    pixels = n * int(np.prod(shape))
    pretrained = (
        input_normalisation(settings["backbone_params"], int(shape[-1])) is not None
    )
    host = pixels * (1 if device.type == "cuda" else 2) + (
        0 if pretrained else pixels * 8
    )
    what = (
        f"config key training.data_on_device: true copies the {n} training images of {dataset} "
        f"({' x '.join(map(str, shape))} bytes each)"
        + ("" if pretrained else " and their float64 pixels")
    )
    advice = (
        f"set training.data_on_device: false (batches are read from the memory-mapped images.npy), "
        f"datasets.{dataset}.storage: jpeg, or a smaller datasets.{dataset}.image_size"
    )
    check_fits(host, what + " into host memory", advice)
    if device.type == "cuda":
        check_fits(pixels, what + " onto the device", advice, device)


def training_classes(
    train_labels: np.ndarray, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """The classes a loss sees and its labels: ``(class_ids, remapped)``.

    A loss learns one classifier row, anchor or proxy per class it trains
    on, and only those: ``class_ids`` are the dataset labels present among
    ``train_labels`` (sorted), ``remapped`` the training labels as indices
    0..K-1 into them. Under the class-disjoint protocol (and class-disjoint
    validation) the test or held-out classes are never trained, so the loss
    has no state for them; in the closed set every class trains and the
    mapping is the identity. ``num_classes``: the dataset's class count
    (labels lie in 0..num_classes-1)."""
    class_ids = np.unique(train_labels)
    if len(class_ids) and (class_ids[0] < 0 or class_ids[-1] >= num_classes):
        raise ValueError(
            f"training labels {class_ids[0]}..{class_ids[-1]} lie outside the dataset's "
            f"{num_classes} classes 0..{num_classes - 1}"
        )
    if (
        len(class_ids) < MIN_CLASSES
    ):  # the split jobs refuse such splits; a planted one stops here
        raise ConfigError(
            f"the training images hold {len(class_ids)} class{'' if len(class_ids) == 1 else 'es'}; training "
            f"needs at least {MIN_CLASSES} (with one, a classifier has nothing to tell apart and a pair loss no "
            "negatives): check config keys datasets.<name>.train_classes and validation.class_fraction, and "
            "delete the split files under results/splits/ made by an older version"
        )
    return class_ids, np.searchsorted(class_ids, train_labels)

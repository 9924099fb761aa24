"""Training-time augmentation on the device, on uint8 batches.

Datasets that fit in device memory stay there as uint8 (N, C, H, W); each
batch is augmented by indexing, with no per-image Python loop and no
host round trip, so the input pipeline does not stall the GPU:

- random crop: pad by ``padding`` pixels (zeros) and cut an H x W window at a
  uniformly drawn offset per image (torchvision's ``RandomCrop(padding=p)``);
- horizontal flip with probability 1/2 per image (``RandomHorizontalFlip``).

Random numbers come from a seeded ``torch.Generator``, so a run is
reproducible.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def random_crop(x: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """x: (B, C, H, W) -> randomly shifted crops of the zero-padded batch."""
    if padding <= 0:
        return x
    b, _, h, w = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))
    offsets = torch.randint(0, 2 * padding + 1, (2, b), generator=generator, device=generator.device)
    offsets = offsets.to(x.device)
    rows = (offsets[0][:, None] + torch.arange(h, device=x.device))[:, :, None]  # (B, H, 1)
    cols = (offsets[1][:, None] + torch.arange(w, device=x.device))[:, None, :]  # (B, 1, W)
    batch = torch.arange(b, device=x.device)[:, None, None]
    # Advanced indexing puts the indexed dimensions first: (B, H, W, C).
    return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)


def random_flip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    flip = torch.rand(x.shape[0], generator=generator, device=generator.device) < 0.5
    return torch.where(flip.to(x.device)[:, None, None, None], x.flip(-1), x)


AUGMENTATIONS = ("none", "crop", "crop_flip")


def augment(x: torch.Tensor, mode: str, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Apply the configured augmentation (``training.augment``): ``none``;
    ``crop`` (random crop only: for images whose mirror image is another
    class, such as digits); ``crop_flip`` (random crop, then horizontal
    flip: the usual CIFAR recipe)."""
    if mode == "none":
        return x
    if mode == "crop":
        return random_crop(x, padding, generator)
    if mode == "crop_flip":
        return random_flip(random_crop(x, padding, generator), generator)
    raise ValueError(f"training.augment: unknown augmentation {mode!r}; use one of {', '.join(AUGMENTATIONS)}")

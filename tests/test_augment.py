"""On-device augmentation against torchvision's transforms."""

from __future__ import annotations

import pytest
import torch
import torchvision.transforms.v2.functional as TF

from workflow.augment import augment, random_crop, random_flip


def batch(b=6, c=3, h=8, w=10):
    return torch.randint(0, 256, (b, c, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


def test_crop_equals_torchvision_crop_of_the_padded_image():
    x = batch()
    out = random_crop(x, 3, torch.Generator().manual_seed(1))
    offsets = torch.randint(0, 7, (2, len(x)), generator=torch.Generator().manual_seed(1))
    for i in range(len(x)):
        padded = TF.pad(x[i], [3, 3, 3, 3], fill=0)
        expected = TF.crop(padded, int(offsets[0, i]), int(offsets[1, i]), 8, 10)
        assert torch.equal(out[i], expected)
    assert out.dtype == torch.uint8 and out.shape == x.shape


def test_flip_flips_about_half_and_exactly():
    x = batch(b=400, h=4, w=5)
    out = random_flip(x, torch.Generator().manual_seed(2))
    flipped = [torch.equal(o, TF.horizontal_flip(i)) and not torch.equal(o, i) for o, i in zip(out, x)]
    kept = [torch.equal(o, i) for o, i in zip(out, x)]
    assert all(f or k for f, k in zip(flipped, kept))
    assert 150 < sum(flipped) < 250


def test_augment_is_reproducible_and_none_is_identity():
    x = batch()
    a = augment(x, "crop_flip", 4, torch.Generator().manual_seed(3))
    b = augment(x, "crop_flip", 4, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and not torch.equal(a, x)
    assert augment(x, "none", 4, torch.Generator()) is x


def test_crop_mode_crops_without_flipping_and_unknown_modes_name_the_key():
    x = batch()
    assert torch.equal(augment(x, "crop", 2, torch.Generator().manual_seed(4)),
                       random_crop(x, 2, torch.Generator().manual_seed(4)))
    with pytest.raises(ValueError, match="training.augment"):
        augment(x, "rotate", 2, torch.Generator())

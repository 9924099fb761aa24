"""Backbones: output shapes, grey inputs, pretrained weights from a file or URL
(records, checksums and bad files: tests/test_weights.py)."""

from __future__ import annotations

import hashlib

import pytest
import torch
import torchvision

from workflow.backbones import BACKBONES, build_backbone
from workflow.backbones.weights import WeightsMismatchError, WeightsMissingError

CASES = [
    ("small_cnn", 8),
    ("small_cnn", 32),
    ("cifar_resnet18", 32),
    ("resnet18", 32),
    ("resnet50", 64),
    ("swin_t", 64),
]


@pytest.mark.parametrize("arch, size", CASES)
@pytest.mark.parametrize("channels", [1, 3])
def test_backbone_maps_images_to_embeddings(arch, size, channels):
    torch.manual_seed(0)
    model = build_backbone(
        arch, in_channels=channels, image_size=size, embedding_size=24
    ).eval()
    with torch.no_grad():
        out = model(torch.randn(2, channels, size, size))
    assert out.shape == (2, 24) and torch.isfinite(out).all()


def test_cifar_stem_keeps_resolution():
    model = build_backbone(
        "cifar_resnet18", in_channels=3, image_size=32, embedding_size=8
    )
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert isinstance(model.maxpool, torch.nn.Identity)


def test_registry_lists_all_backbones():
    assert {"small_cnn", "resnet18", "resnet50", "cifar_resnet18", "swin_t"} <= set(
        BACKBONES.names()
    )


def save_imagenet_style_checkpoint(path, wrap: bool):
    """A torchvision resnet18 with a 365-way classifier, saved as Places365
    checkpoints are (``state_dict`` + ``module.`` prefixes) or plainly."""
    torch.manual_seed(1)
    reference = torchvision.models.resnet18(num_classes=365)
    state = reference.state_dict()
    if wrap:
        state = {
            "epoch": 90,
            "state_dict": {f"module.{k}": v for k, v in state.items()},
        }
    torch.save(state, path)
    return reference


def own_file(path, source=None) -> dict:
    """``pretrained`` for a weights file of one's own: the file (or URL),
    its checksum and the normalisation it expects."""
    sha256 = hashlib.sha256(path.read_bytes()).hexdigest()
    return {
        "file": source or str(path),
        "checksum": f"sha256:{sha256}",
        "normalisation": "ResNet18_Weights.IMAGENET1K_V1",
    }


@pytest.mark.parametrize("wrap", [False, True])
@pytest.mark.parametrize("as_url", [False, True])
def test_pretrained_weights_load_into_the_trunk(tmp_path, monkeypatch, wrap, as_url):
    monkeypatch.chdir(tmp_path)  # a URL downloads into results/downloads/
    path = tmp_path / "weights.pth"
    reference = save_imagenet_style_checkpoint(path, wrap)
    pretrained = own_file(path, path.as_uri() if as_url else None)
    model = build_backbone(
        "resnet18",
        in_channels=3,
        image_size=32,
        embedding_size=512,
        pretrained=pretrained,
    )
    assert torch.equal(model.layer4[1].conv2.weight, reference.layer4[1].conv2.weight)
    assert torch.equal(model.conv1.weight, reference.conv1.weight)
    assert model.fc.out_features == 512  # the classifier became the embedding layer


def test_pretrained_weights_adapt_to_grey_inputs(tmp_path):
    path = tmp_path / "weights.pth"
    reference = save_imagenet_style_checkpoint(path, wrap=False)
    model = build_backbone(
        "resnet18",
        in_channels=1,
        image_size=32,
        embedding_size=8,
        pretrained=own_file(path),
    )
    assert torch.allclose(model.conv1.weight[:, 0], reference.conv1.weight.mean(dim=1))


def test_mismatched_or_missing_weights_are_clear_errors(tmp_path):
    path = tmp_path / "resnet50.pth"
    torch.save(torchvision.models.resnet50().state_dict(), path)
    with pytest.raises(WeightsMismatchError, match="do not fit this backbone"):
        build_backbone(
            "resnet18",
            in_channels=3,
            image_size=32,
            embedding_size=8,
            pretrained=own_file(path),
        )
    missing = {**own_file(path), "file": str(tmp_path / "no_such.pth")}
    with pytest.raises(WeightsMissingError, match="no_such.pth"):
        build_backbone(
            "resnet18",
            in_channels=3,
            image_size=32,
            embedding_size=8,
            pretrained=missing,
        )


def test_frozen_trunk_trains_only_the_embedding_layer(tmp_path):
    path = tmp_path / "weights.pth"
    reference = save_imagenet_style_checkpoint(path, wrap=False)
    model = build_backbone(
        "resnet18",
        in_channels=3,
        image_size=32,
        embedding_size=8,
        pretrained=own_file(path),
        freeze_trunk=True,
    )
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable == ["model.fc.weight", "model.fc.bias"]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.SGD(
        [p for p in model.parameters() if p.requires_grad], lr=0.1
    )
    model.train()
    assert not model.model.bn1.training and model.model.fc.training
    model(torch.randn(4, 3, 32, 32)).pow(2).mean().backward()
    optimizer.step()
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {
        "model.fc.weight",
        "model.fc.bias",
    }  # BN statistics did not move either
    assert torch.equal(
        after["model.layer1.0.conv1.weight"], reference.layer1[0].conv1.weight
    )

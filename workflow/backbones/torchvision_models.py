"""torchvision backbones with an embedding layer in place of the classifier.

- ``resnet18``, ``resnet50``: ImageNet-style ResNets (7x7 stem, max-pool);
- ``cifar_resnet18``: ResNet-18 with a 3x3 stride-1 stem and no max-pool, the
  usual choice for 32x32 inputs;
- ``swin_t``: Swin-T transformer (the CAM paper's transformer backbone).

Each takes ``freeze_trunk`` (default false): train only the embedding layer,
with every other weight fixed and batch-norm statistics frozen (the LM
paper's "fine-tuned with the convolutional layers frozen"), and ``pretrained``: ``null`` (random init), a file path, or a URL
(``http(s)://`` or ``file://``; downloaded to torch's hub cache) of a
state dict, e.g. torchvision's ImageNet weights or a Places365 ResNet-18
checkpoint. Checkpoints are loaded with ``weights_only=True``; a
``state_dict`` entry and ``module.`` prefixes (DataParallel) are unwrapped,
the original classifier (``fc.``/``head.``) is dropped, and every other
backbone weight must match, else the error lists what did not.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from workflow.backbones import register_backbone


def _models():
    """torchvision.models, imported on first use: importing torchvision
    costs about 2 s, paid otherwise by every Snakemake start and job."""
    import torchvision

    return torchvision.models

CLASSIFIER_PREFIXES = ("fc.", "head.")


def read_state_dict(source: str) -> dict[str, torch.Tensor]:
    """A state dict from a path or URL, unwrapped as described above."""
    if "://" in source:
        state = torch.hub.load_state_dict_from_url(source, map_location="cpu", weights_only=True)
    else:
        if not Path(source).is_file():
            raise FileNotFoundError(f"pretrained weights {source!r}: no such file")
        state = torch.load(source, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_trunk_weights(model: nn.Module, source: str) -> None:
    """Load every non-classifier weight of ``source`` into ``model`` (whose
    classifier is then replaced); any mismatch is an error naming the keys."""
    state = {k: v for k, v in read_state_dict(source).items() if not k.startswith(CLASSIFIER_PREFIXES)}
    own = {k: v for k, v in model.state_dict().items() if not k.startswith(CLASSIFIER_PREFIXES)}
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong_shape = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong_shape:
        raise ValueError(
            f"pretrained weights {source!r} do not fit this backbone: "
            f"missing {missing[:5]}, unexpected {unexpected[:5]}, wrong shape {wrong_shape[:5]}"
        )
    model.load_state_dict(state, strict=False)


def adapt_input_channels(conv: nn.Conv2d, in_channels: int) -> nn.Conv2d:
    """A copy of ``conv`` taking ``in_channels`` inputs (grey images): the
    weights are averaged over the RGB channels and repeated."""
    if in_channels == conv.in_channels:
        return conv
    new = nn.Conv2d(
        in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, bias=conv.bias is not None
    )
    with torch.no_grad():
        new.weight.copy_(conv.weight.mean(dim=1, keepdim=True).expand_as(new.weight))
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    return new


class FrozenTrunk(nn.Module):
    """Wraps a model so that only ``head`` trains: every other parameter has
    ``requires_grad=False`` and the trunk stays in eval mode (batch-norm
    running statistics do not move) even when the model is put in training
    mode."""

    def __init__(self, model: nn.Module, head: str):
        super().__init__()
        self.model, self.head = model, head
        for name, param in model.named_parameters():
            param.requires_grad_(name.startswith(head + "."))

    def train(self, mode: bool = True):
        super().train(mode)
        self.model.eval()
        getattr(self.model, self.head).train(mode)
        return self

    def forward(self, x):
        return self.model(x)


def _finish(model: nn.Module, head: str, freeze_trunk: bool) -> nn.Module:
    return FrozenTrunk(model, head) if freeze_trunk else model


def _resnet(builder, in_channels: int, embedding_size: int, pretrained: str | None, cifar_stem: bool) -> nn.Module:
    model = builder(weights=None)
    if cifar_stem:
        model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
    if pretrained:
        load_trunk_weights(model, pretrained)
    model.conv1 = adapt_input_channels(model.conv1, in_channels)
    model.fc = nn.Linear(model.fc.in_features, embedding_size)
    return model


@register_backbone("resnet18")
def resnet18(
    in_channels: int, image_size: int, embedding_size: int, pretrained: str | None = None, freeze_trunk: bool = False
) -> nn.Module:
    return _finish(_resnet(_models().resnet18, in_channels, embedding_size, pretrained, cifar_stem=False), "fc", freeze_trunk)


@register_backbone("resnet50")
def resnet50(
    in_channels: int, image_size: int, embedding_size: int, pretrained: str | None = None, freeze_trunk: bool = False
) -> nn.Module:
    return _finish(_resnet(_models().resnet50, in_channels, embedding_size, pretrained, cifar_stem=False), "fc", freeze_trunk)


@register_backbone("cifar_resnet18")
def cifar_resnet18(
    in_channels: int, image_size: int, embedding_size: int, pretrained: str | None = None, freeze_trunk: bool = False
) -> nn.Module:
    return _finish(_resnet(_models().resnet18, in_channels, embedding_size, pretrained, cifar_stem=True), "fc", freeze_trunk)


@register_backbone("swin_t")
def swin_t(
    in_channels: int, image_size: int, embedding_size: int, pretrained: str | None = None, freeze_trunk: bool = False
) -> nn.Module:
    model = _models().swin_t(weights=None)
    if pretrained:
        load_trunk_weights(model, pretrained)
    patch_embed = model.features[0][0]
    model.features[0][0] = adapt_input_channels(patch_embed, in_channels)
    model.head = nn.Linear(model.head.in_features, embedding_size)
    return _finish(model, "head", freeze_trunk)

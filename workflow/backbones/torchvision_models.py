"""torchvision backbones with an embedding layer in place of the classifier.

- ``resnet18``, ``resnet50``: ImageNet-style ResNets (7x7 stem, max-pool);
- ``cifar_resnet18``: ResNet-18 with a 3x3 stride-1 stem and no max-pool, the
  usual choice for 32x32 inputs;
- ``swin_t``: Swin-T transformer (the CAM paper's transformer backbone).

Each takes ``freeze_trunk`` (default false): train only the embedding layer,
with every other weight fixed and batch-norm statistics frozen (the LM
paper's "fine-tuned with the convolutional layers frozen"), and
``pretrained``: null (random initialisation), or the weights to start from,
named by a record or given as a file with its checksum and normalisation
(``workflow.backbones.weights``: the file is verified before it is read,
and training and embedding normalise inputs with the weights' own mean and
std). The state dict loads with ``weights_only=True``; the original
classifier (``fc.``/``head.``) is dropped, and every other backbone weight
must be there with its shape, else a ``WeightsMismatchError`` names the
keys.
"""

from __future__ import annotations

import sys

import torch
from torch import nn

from workflow.backbones import register_backbone
from workflow.backbones.weights import WeightsMismatchError, load_pretrained
from workflow.registry import CheckedElsewhere, Flag


def _models():
    """torchvision.models, imported on first use: importing torchvision
    costs about 2 s, paid otherwise by every Snakemake start and job."""
    import torchvision

    return torchvision.models


CLASSIFIER_PREFIXES = ("fc.", "head.")


def load_trunk_weights(
    model: nn.Module, state: dict[str, torch.Tensor], label: str, arch: str
) -> None:
    """Load every non-classifier weight of ``state`` (from ``label``) into
    ``model`` (whose classifier is then replaced); missing or unexpected
    keys and wrong shapes are a ``WeightsMismatchError`` naming them."""
    state = {k: v for k, v in state.items() if not k.startswith(CLASSIFIER_PREFIXES)}
    own = {
        k: v
        for k, v in model.state_dict().items()
        if not k.startswith(CLASSIFIER_PREFIXES)
    }
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong_shape = [
        f"{k}: {tuple(state[k].shape)} in the file, {tuple(own[k].shape)} in the backbone"
        for k in sorted(set(own) & set(state))
        if own[k].shape != state[k].shape
    ]
    if missing or unexpected or wrong_shape:
        found = [
            f"{what} ({len(keys)}): {keys[:5]}"
            for what, keys in [
                ("missing keys", missing),
                ("unexpected keys", unexpected),
                ("wrong shapes", wrong_shape),
            ]
            if keys
        ]
        raise WeightsMismatchError(
            f"pretrained weights {label} do not fit this backbone (arch {arch}): {'; '.join(found)}. "
            f"Use weights saved from torchvision.models.{arch.removeprefix('cifar_')} "
            f"(python -m workflow.backbones.weights lists the records), or the arch they were made for."
        )
    model.load_state_dict(state, strict=False)


def load_pretrained_trunk(
    model: nn.Module, pretrained, arch: str, image_size: int
) -> None:
    """Fetch, verify and load the weights a ``pretrained`` value names."""
    state, record, path = load_pretrained(pretrained, arch)
    label = record.name if record.name == str(path) else f"{record.name} ({path})"
    load_trunk_weights(model, state, label, arch)
    if record.input_size and record.input_size != image_size:
        print(
            f"note: weights {record.name} were trained on {record.input_size}x{record.input_size} inputs; "
            f"this cell feeds {image_size}x{image_size}",
            file=sys.stderr,
        )


def adapt_input_channels(conv: nn.Conv2d, in_channels: int) -> nn.Conv2d:
    """A copy of ``conv`` taking ``in_channels`` inputs (grey images): the
    weights are averaged over the RGB channels and repeated."""
    if in_channels == conv.in_channels:
        return conv
    new = nn.Conv2d(
        in_channels,
        conv.out_channels,
        conv.kernel_size,
        conv.stride,
        conv.padding,
        bias=conv.bias is not None,
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


def _resnet(
    builder,
    in_channels: int,
    image_size: int,
    embedding_size: int,
    pretrained,
    arch: str,
) -> nn.Module:
    model = builder(weights=None)
    cifar_stem = arch == "cifar_resnet18"
    if cifar_stem:
        model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
    if pretrained is not None:
        load_pretrained_trunk(model, pretrained, arch, image_size)
    model.conv1 = adapt_input_channels(model.conv1, in_channels)
    model.fc = nn.Linear(model.fc.in_features, embedding_size)
    return model


# The parameters the config may set (their ranges, see workflow/registry.py).
TORCHVISION_PARAMS = {
    "pretrained": CheckedElsewhere(
        "workflow.backbones.weights.resolve (a record or a file with its checksum)"
    ),
    "freeze_trunk": Flag(),
}


@register_backbone("resnet18", params=TORCHVISION_PARAMS)
def resnet18(
    in_channels: int,
    image_size: int,
    embedding_size: int,
    pretrained: str | dict | None = None,
    freeze_trunk: bool = False,
) -> nn.Module:
    model = _resnet(
        _models().resnet18,
        in_channels,
        image_size,
        embedding_size,
        pretrained,
        "resnet18",
    )
    return _finish(model, "fc", freeze_trunk)


@register_backbone("resnet50", params=TORCHVISION_PARAMS)
def resnet50(
    in_channels: int,
    image_size: int,
    embedding_size: int,
    pretrained: str | dict | None = None,
    freeze_trunk: bool = False,
) -> nn.Module:
    model = _resnet(
        _models().resnet50,
        in_channels,
        image_size,
        embedding_size,
        pretrained,
        "resnet50",
    )
    return _finish(model, "fc", freeze_trunk)


@register_backbone("cifar_resnet18", params=TORCHVISION_PARAMS)
def cifar_resnet18(
    in_channels: int,
    image_size: int,
    embedding_size: int,
    pretrained: str | dict | None = None,
    freeze_trunk: bool = False,
) -> nn.Module:
    model = _resnet(
        _models().resnet18,
        in_channels,
        image_size,
        embedding_size,
        pretrained,
        "cifar_resnet18",
    )
    return _finish(model, "fc", freeze_trunk)


@register_backbone("swin_t", params=TORCHVISION_PARAMS)
def swin_t(
    in_channels: int,
    image_size: int,
    embedding_size: int,
    pretrained: str | dict | None = None,
    freeze_trunk: bool = False,
) -> nn.Module:
    model = _models().swin_t(weights=None)
    if pretrained is not None:
        load_pretrained_trunk(model, pretrained, "swin_t", image_size)
    patch_embed = model.features[0][0]
    model.features[0][0] = adapt_input_channels(patch_embed, in_channels)
    model.head = nn.Linear(model.head.in_features, embedding_size)
    return _finish(model, "head", freeze_trunk)

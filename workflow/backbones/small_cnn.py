"""A small CNN for 8x8 to 32x32 inputs: conv blocks, global average pooling
and a linear embedding layer."""

from torch import nn

from workflow.backbones import register_backbone
from workflow.registry import ListOf, Number


def _block(c_in: int, c_out: int, pool: bool) -> nn.Sequential:
    layers = [
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    ]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


@register_backbone(
    "small_cnn", params={"widths": ListOf(Number(ge=1, integer=True), min_items=1)}
)
def small_cnn(
    in_channels: int,
    image_size: int,
    embedding_size: int,
    widths: tuple[int, ...] = (32, 64, 128),
) -> nn.Module:
    """Conv blocks of the given widths; each halves the resolution while the
    feature map is larger than 4x4, so 8x8 and 32x32 inputs both work."""
    blocks, size, c_in = [], image_size, in_channels
    for width in widths:
        pool = size > 4
        blocks.append(_block(c_in, width, pool))
        size, c_in = (size // 2 if pool else size), width
    return nn.Sequential(
        *blocks,
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(c_in, embedding_size),
    )

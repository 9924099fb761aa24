"""Backbones, one file each, registered by name.

A builder is called as ``build(in_channels=..., image_size=..., embedding_size=...,
**params)`` and returns an ``nn.Module`` mapping float images (N, C, H, W)
to embeddings (N, embedding_size). It is registered with the range of
each parameter the config may set (``@register_backbone("small_cnn",
params={"widths": ListOf(Number(ge=1, integer=True))})``, see
``workflow/registry.py``).
"""

from workflow.registry import Registry

BACKBONES = Registry("backbone", __name__)
register_backbone = BACKBONES.register


def build_backbone(
    arch: str, in_channels: int, image_size: int, embedding_size: int, **params
):
    """The backbone ``arch`` with ``params``, after checking them against its
    declared ranges (:meth:`workflow.registry.Registry.check_params`)."""
    BACKBONES.check_params(arch, params)
    return BACKBONES.get(arch)(
        in_channels=in_channels,
        image_size=image_size,
        embedding_size=embedding_size,
        **params,
    )

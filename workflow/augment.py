"""Training-time augmentation on the device, on uint8 batches.

Datasets that fit in device memory stay there as uint8 (N, C, H, W); each
batch is augmented by indexing, with no per-image Python loop and no
host round trip, so the input pipeline does not stall the GPU:

- random crop: pad by ``padding`` pixels (zeros) and cut an H x W window at a
  uniformly drawn offset per image (torchvision's ``RandomCrop(padding=p)``);
- horizontal flip with probability 1/2 per image (``RandomHorizontalFlip``);
- random resized crop (torchvision's ``RandomResizedCrop``: a box of random
  area and aspect ratio, resized to the input size) for images larger than,
  or resized to, the backbone's input;
- resize of the shorter side and centre crop (torchvision's reference
  evaluation recipe, ``Resize`` then ``CenterCrop``), at evaluation, and
  the plain resize of the stored images to the input size (CIFAR stored at
  32, fed to Swin-T at 224: the upsampled copy exists only batch by batch).

Resizing is bilinear with antialiasing, as ``torchvision.transforms.v2``:
each output row (column) is a weighted sum of source rows (columns), with
the weights of PyTorch's antialiased bilinear kernel (a triangle filter
stretched by the scale when shrinking, renormalised at the box's edges).
Those weights form one (out x in) matrix per image and axis, so a batch
with a different crop box per image is two batched matrix products on the
device, in float32, rounded back to uint8 (as ``v2`` on a uint8 image).

Random numbers come from a seeded ``torch.Generator`` (on the training
device), drawn for the whole batch at once, so a run is reproducible.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def random_crop(
    x: torch.Tensor, padding: int, generator: torch.Generator
) -> torch.Tensor:
    """x: (B, C, H, W) -> randomly shifted crops of the zero-padded batch."""
    if padding <= 0:
        return x
    b, _, h, w = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))
    offsets = torch.randint(
        0, 2 * padding + 1, (2, b), generator=generator, device=generator.device
    )
    offsets = offsets.to(x.device)
    rows = (offsets[0][:, None] + torch.arange(h, device=x.device))[
        :, :, None
    ]  # (B, H, 1)
    cols = (offsets[1][:, None] + torch.arange(w, device=x.device))[
        :, None, :
    ]  # (B, 1, W)
    batch = torch.arange(b, device=x.device)[:, None, None]
    # Advanced indexing puts the indexed dimensions first: (B, H, W, C).
    return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)


def random_flip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    flip = torch.rand(x.shape[0], generator=generator, device=generator.device) < 0.5
    return torch.where(flip.to(x.device)[:, None, None, None], x.flip(-1), x)


# torchvision's RandomResizedCrop defaults, and its reference evaluation
# recipe's crop of 224 out of a shorter side resized to 256.
RRC_SCALE = (0.08, 1.0)
RRC_RATIO = (3.0 / 4.0, 4.0 / 3.0)
RRC_CROP_FRACTION = 224 / 256


def resize_weights(
    in_size: int,
    start: torch.Tensor,
    length: torch.Tensor,
    resized,
    first,
    count: int,
    antialias: bool = True,
) -> torch.Tensor:
    """Per image, the (count, in_size) float32 matrix that maps ``in_size``
    source pixels to outputs ``first .. first + count - 1`` of the window
    ``[start, start + length)`` (per image: (B,) tensors) resized to
    ``resized`` pixels (``resized`` and ``first``: ints, or (B,) tensors
    for images of different sizes): PyTorch's bilinear kernel (``align_corners=False``;
    with ``antialias`` its triangle filter is stretched by the scale when
    shrinking), weights renormalised over the pixels inside the window, as
    ``interpolate`` does at an image's edges. -> (B, count, in_size)."""
    device = start.device
    scale = length.double() / torch.as_tensor(
        resized, device=device
    )  # source pixels per output pixel
    support = (
        torch.where(scale > 1, scale, torch.ones_like(scale))
        if antialias
        else torch.ones_like(scale)
    )
    outputs = torch.as_tensor(first, device=device).reshape(-1, 1) + torch.arange(
        count, device=device
    )
    centre = scale[:, None] * (outputs.double() + 0.5)
    offset = (
        torch.arange(in_size, device=device)[None, :] - start[:, None]
    )  # source pixel - window start
    distance = (offset[:, None, :] + 0.5 - centre[:, :, None]) / support[:, None, None]
    weights = (1 - distance.abs()).clamp_(min=0)
    weights *= ((offset >= 0) & (offset < length[:, None]))[:, None, :]
    return (weights / weights.sum(-1, keepdim=True)).float()


def resample(x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """uint8 (B, C, H, W) -> uint8 (B, C, h, w): ``rows`` (B, h, H) @ x @
    ``cols``ᵀ (B, w, W), in float32, rounded half to even and clamped."""
    out = (
        rows[:, None].to(x.device)
        @ x.float()
        @ cols[:, None].to(x.device).transpose(-1, -2)
    )
    return out.round_().clamp_(0, 255).to(torch.uint8)


def random_resized_crop_boxes(
    n: int, height, width, scale, ratio, generator: torch.Generator, attempts: int = 10
) -> tuple[torch.Tensor, ...]:
    """``n`` crop boxes (top, left, height, width: (n,) int64 tensors on the
    generator's device) drawn as ``RandomResizedCrop.get_params``: up to
    ``attempts`` tries of an area fraction uniform in ``scale`` and a log
    aspect ratio uniform in log ``ratio``, rounded to whole pixels; the
    first try that fits the image wins, at a uniform position; when none
    fits, the centre crop of the whole image clamped to ``ratio``. The
    draws of every try are made for the whole batch at once (a fixed number
    of random numbers per batch, so the same seed gives the same boxes).
    ``height`` and ``width``: ints, or (n,) tensors for images of
    different sizes (a JPEG store's)."""
    device = generator.device
    height = torch.as_tensor(height, device=device).expand(n)[:, None]
    width = torch.as_tensor(width, device=device).expand(n)[:, None]

    def uniform(*shape):
        return torch.rand(
            *shape, generator=generator, device=device, dtype=torch.float64
        )

    target_area = (
        height * width * (scale[0] + (scale[1] - scale[0]) * uniform(n, attempts))
    )
    log_ratio = math.log(ratio[0]) + (
        math.log(ratio[1]) - math.log(ratio[0])
    ) * uniform(n, attempts)
    aspect = log_ratio.exp()
    w = (
        (target_area * aspect).sqrt().round().long()
    )  # round half to even, as Python's round
    h = (target_area / aspect).sqrt().round().long()
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = fits.int().argmax(1, keepdim=True)  # the first try that fits (0 if none)
    found = fits.any(1)
    w, h = w.gather(1, first)[:, 0], h.gather(1, first)[:, 0]

    height, width = height[:, 0], width[:, 0]
    in_ratio = width / height
    narrow, wide = in_ratio < min(ratio), in_ratio > max(ratio)
    fallback_w = torch.where(wide, (height * max(ratio)).round().long(), width)
    fallback_h = torch.where(narrow, (width / min(ratio)).round().long(), height)
    h = torch.where(found, h, fallback_h)
    w = torch.where(found, w, fallback_w)
    top = (uniform(n) * (height - h + 1)).floor().long().minimum(height - h)
    left = (uniform(n) * (width - w + 1)).floor().long().minimum(width - w)
    top = torch.where(found, top, (height - fallback_h) // 2)
    left = torch.where(found, left, (width - fallback_w) // 2)
    return top, left, h, w


def _resize_each(crops, out_h: int, out_w: int, flips=None) -> torch.Tensor:
    """The CPU's path: each crop (1, C, h, w) resized with
    ``F.interpolate(..., antialias=True)`` on uint8 in channels-last, the
    kernel ``transforms.v2`` runs (the same pixels), then flipped where
    ``flips`` says. On the CPU it is about 25x faster than the batched
    products (0.24 against 6.2 ms per 224x224 image on one core): they do
    dense (224 x 256) products where the kernel touches a few pixels."""
    out = []
    for i, crop in enumerate(crops):
        resized = F.interpolate(
            crop.contiguous(memory_format=torch.channels_last),
            size=(out_h, out_w),
            mode="bilinear",
            antialias=True,
            align_corners=False,
        )
        out.append(resized.flip(-1) if flips is not None and flips[i] else resized)
    return torch.cat(out)


def random_resized_crop(
    x: torch.Tensor,
    size: int,
    generator: torch.Generator,
    scale=RRC_SCALE,
    ratio=RRC_RATIO,
    flip: bool = False,
    heights=None,
    widths=None,
    batched: bool | None = None,
) -> torch.Tensor:
    """uint8 (B, C, H, W) -> uint8 (B, C, size, size): a random box per
    image (:func:`random_resized_crop_boxes`) resized to ``size`` (bilinear,
    antialiased); with ``flip``, then flipped horizontally with probability
    1/2 per image (the flip reverses the rows of the column weights: no
    extra pass over the pixels). ``heights``, ``widths``: (B,) sizes of
    images of different sizes zero-padded to H x W (boxes lie inside each
    image, so the padding is never read). ``batched``: the batched
    products (default on a GPU: no per-image loop there), else one
    ``interpolate`` per image (default on the CPU, :func:`_resize_each`);
    the same boxes and flips either way."""
    b, _, height, width = x.shape
    top, left, h, w = random_resized_crop_boxes(
        b,
        height if heights is None else heights.to(generator.device),
        width if widths is None else widths.to(generator.device),
        scale,
        ratio,
        generator,
    )
    if not (x.device.type != "cpu" if batched is None else batched):
        flips = (
            (torch.rand(b, generator=generator, device=generator.device) < 0.5).tolist()
            if flip
            else None
        )
        boxes = zip(top.tolist(), left.tolist(), h.tolist(), w.tolist())
        return _resize_each(
            [
                x[i : i + 1, :, t : t + hh, l : l + ww]
                for i, (t, l, hh, ww) in enumerate(boxes)
            ],
            size,
            size,
            flips,
        )
    rows = resize_weights(height, top, h, size, 0, size)
    cols = resize_weights(width, left, w, size, 0, size)
    if flip:
        flipped = torch.rand(b, generator=generator, device=generator.device) < 0.5
        cols = torch.where(flipped[:, None, None], cols.flip(1), cols)
    return resample(x, rows, cols)


def resize_centre_crop(
    x: torch.Tensor,
    size: int,
    crop_fraction: float = 1.0,
    heights=None,
    widths=None,
    batched: bool | None = None,
) -> torch.Tensor:
    """uint8 (B, C, H, W) -> uint8 (B, C, size, size): the shorter side
    resized to ``floor(size / crop_fraction)`` (bilinear, antialiased), then
    the centre ``size`` x ``size`` crop, as torchvision's ``Resize(s)`` and
    ``CenterCrop(size)`` (the reference recipe: 256 then 224,
    ``crop_fraction`` 0.875). ``x`` itself when that changes nothing.
    ``heights``, ``widths``, ``batched``: as :func:`random_resized_crop`."""
    batched = x.device.type != "cpu" if batched is None else batched
    if heights is not None:
        return _resize_centre_crop_each(
            x, size, crop_fraction, heights.tolist(), widths.tolist(), batched
        )
    b, _, height, width = x.shape
    short = math.floor(
        size / crop_fraction + 1e-9
    )  # as timm's crop_pct; 1e-9 absorbs 224 / (224 / 256)
    if height <= width:
        new_h, new_w = short, int(short * width / height)
    else:
        new_h, new_w = int(short * height / width), short
    if (new_h, new_w) == (height, width) == (size, size):
        return x
    top, left = int(round((new_h - size) / 2.0)), int(round((new_w - size) / 2.0))
    if not batched:
        return _resize_each(x.split(1), new_h, new_w)[
            :, :, top : top + size, left : left + size
        ]
    zero = torch.zeros(b, dtype=torch.long, device=x.device)
    rows = resize_weights(height, zero, zero + height, new_h, top, size)
    cols = resize_weights(width, zero, zero + width, new_w, left, size)
    return resample(x, rows, cols)


def _resize_centre_crop_each(
    x: torch.Tensor,
    size: int,
    crop_fraction: float,
    heights: list[int],
    widths: list[int],
    batched: bool,
) -> torch.Tensor:
    """:func:`resize_centre_crop` of zero-padded images of different sizes:
    each image's own resize and crop (a few integers per image), the pixels
    still in two batched products."""
    short = math.floor(size / crop_fraction + 1e-9)
    geometry = []
    for height, width in zip(heights, widths):
        new_h, new_w = (
            (short, int(short * width / height))
            if height <= width
            else (int(short * height / width), short)
        )
        geometry.append(
            (
                height,
                width,
                new_h,
                new_w,
                int(round((new_h - size) / 2.0)),
                int(round((new_w - size) / 2.0)),
            )
        )
    if not batched:
        return torch.cat(
            [
                _resize_each([x[i : i + 1, :, :height, :width]], new_h, new_w)[
                    :, :, top : top + size, left : left + size
                ]
                for i, (height, width, new_h, new_w, top, left) in enumerate(geometry)
            ]
        )
    height, width, new_h, new_w, top, left = torch.tensor(geometry, device=x.device).T
    zero = torch.zeros_like(height)
    rows = resize_weights(x.shape[2], zero, height, new_h, top, size)
    cols = resize_weights(x.shape[3], zero, width, new_w, left, size)
    return resample(x, rows, cols)


AUGMENTATIONS = ("none", "crop", "crop_flip", "rrc", "rrc_flip")


def augment(
    x: torch.Tensor,
    mode: str,
    padding: int,
    generator: torch.Generator,
    size: int | None = None,
    scale=RRC_SCALE,
    ratio=RRC_RATIO,
    heights=None,
    widths=None,
    batched=None,
) -> torch.Tensor:
    """Apply the configured augmentation (``training.augment``): ``none``;
    ``crop`` (random crop only: for images whose mirror image is another
    class, such as digits); ``crop_flip`` (random crop, then horizontal
    flip: the usual CIFAR recipe); ``rrc`` and ``rrc_flip`` (random resized
    crop to ``size`` with ``scale`` and ``ratio``, then for ``rrc_flip``
    the flip: the ImageNet recipe).

    ``size`` (``training.input_size``): the side of the backbone's input;
    ``none`` and the crops then resize their result to it (the whole image,
    as :func:`resize_centre_crop` with fraction 1). None keeps the stored
    size (for ``rrc*``: the stored images' shorter side).

    ``heights``, ``widths``: (B,) sizes of images of different sizes,
    zero-padded to the batch's H x W (a JPEG store's; ``size`` required):
    ``rrc*`` crops each image's own box; the other modes first resize each
    image's shorter side to ``size`` and take the centre crop, then crop
    and flip at that size. ``batched``: as :func:`random_resized_crop`."""
    if mode in ("rrc", "rrc_flip"):
        return random_resized_crop(
            x,
            size or min(x.shape[-2:]),
            generator,
            scale,
            ratio,
            flip=mode == "rrc_flip",
            heights=heights,
            widths=widths,
            batched=batched,
        )
    if heights is not None:
        x, size = resize_centre_crop(x, size, 1.0, heights, widths, batched), None
    if mode == "none":
        pass
    elif mode == "crop":
        x = random_crop(x, padding, generator)
    elif mode == "crop_flip":
        x = random_flip(random_crop(x, padding, generator), generator)
    else:
        raise ValueError(
            f"training.augment: unknown augmentation {mode!r}; use one of {', '.join(AUGMENTATIONS)}"
        )
    return x if size is None else resize_centre_crop(x, size, batched=batched)


def augment_padded(
    x: torch.Tensor,
    heights: torch.Tensor,
    widths: torch.Tensor,
    generator: torch.Generator,
    **settings,
) -> torch.Tensor:
    """:func:`augment` of images of different sizes zero-padded to one
    (a JPEG store's batch), ``settings`` its other arguments: the transform
    ``workflow.jpeg_store.JpegImages`` runs where it decodes."""
    return augment(x, generator=generator, heights=heights, widths=widths, **settings)

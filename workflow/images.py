"""Image files -> pixels: the helpers that preparing arrays
(:mod:`workflow.prepare`) and JPEG storage (:mod:`workflow.jpeg_store`)
share. :func:`decode_image` decodes one file (checked to be a regular file,
16-bit images scaled to 8 bits, cropped to a published bounding box,
resized and centre-cropped to a square); :func:`to_8bit` and
:func:`crop_to_box` are its steps that re-encoding a JPEG uses too.
"""

from __future__ import annotations

import stat
from pathlib import Path

import numpy as np
from PIL import Image


class UndecodableImageError(ValueError):
    """An image file that Pillow cannot decode."""


def resize_square(image: Image.Image, size: int) -> Image.Image:
    """Shorter side to ``size``, then the centre ``size`` x ``size`` crop."""
    # Imported here: torchvision takes seconds, and decoding without resizing needs none.
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF

    image = TF.resize(
        image, size, interpolation=InterpolationMode.BILINEAR, antialias=True
    )
    return TF.center_crop(image, [size, size])


# Pillow's modes of more than 8 bits per pixel whose values span a known
# range: 16-bit greyscale (PNG, TIFF). ``convert("RGB")`` would clip them
# at 255 (a 16-bit image turns almost white), so they are scaled instead.
SIXTEEN_BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N"}


def to_8bit(image: Image.Image) -> Image.Image:
    """An image of more than 8 bits per channel scaled to 8 bits (the
    16-bit range 0..65535 onto 0..255, ``round(v / 257)``); 8-bit modes are
    returned as they are. A mode without a known range (32-bit integer or
    float pixels, e.g. from a TIFF) raises ValueError, which
    :func:`decode_image` turns into an error naming the file: clipping or
    guessing a range would silently change the image.
    (Pillow itself reads 16-bit RGB PNGs as 8-bit RGB.)"""
    mode = image.mode
    if mode in SIXTEEN_BIT_MODES or (
        mode == "I" and image.format == "PNG"
    ):  # PNG stores I as 16 bits
        values = np.asarray(image).astype(np.float64)
        return Image.fromarray(
            np.clip(np.rint(values / 257.0), 0, 255).astype(np.uint8), mode="L"
        )
    if mode in {"I", "F"} or mode.startswith(("I;", "F;")):
        raise ValueError(
            f"{'32-bit integer' if mode.startswith('I') else 'floating-point'} pixels (Pillow mode {mode}) "
            "have no fixed range to scale to 8 bits; save it as an 8-bit or 16-bit image"
        )
    return image


def crop_to_box(image, box, width: int, height: int):
    """``image`` cropped to ``box`` (left, top, right, bottom in the pixels
    of the ``width`` x ``height`` file; ``image`` may be smaller, drafted),
    clipped to the image; a box outside it raises ValueError."""
    sx, sy = image.size[0] / width, image.size[1] / height  # < 1 after drafting
    left, top = max(0.0, box[0]) * sx, max(0.0, box[1]) * sy
    right, bottom = min(float(width), box[2]) * sx, min(float(height), box[3]) * sy
    if right - left < 1 or bottom - top < 1:
        raise ValueError(
            f"its bounding box {tuple(float(v) for v in box)} lies outside the "
            f"{width}x{height} image"
        )
    return image.crop(
        (
            round(left),
            round(top),
            max(round(right), round(left) + 1),
            max(round(bottom), round(top) + 1),
        )
    )


NOT_REGULAR = [
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
]


def check_image_file(path: Path) -> None:
    """A listed image that is missing raises FileNotFoundError; one that
    is not a regular file (a named pipe, which reading would wait on
    forever, a folder, a device) raises ValueError saying what it is."""
    try:
        mode = path.stat().st_mode  # follows symbolic links
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: image file is missing") from None
    if not stat.S_ISREG(mode):
        kind = next(
            (what for test, what in NOT_REGULAR if test(mode)), "no regular file"
        )
        raise ValueError(
            f"{path}: {kind}, not a regular image file; replace it with the image file or remove it"
        )


def decode_image(path, image_size: int | None, box=None) -> np.ndarray:
    """One image file -> uint8 (H, W, 3). 16-bit images are scaled to 8 bits
    (:func:`to_8bit`); single-channel images are converted to RGB. ``box``
    (left, top, right, bottom in the file's pixels) crops the image first,
    clipped to it. Raises :class:`UndecodableImageError` if Pillow cannot
    read it; a missing file or one that is not a regular file raises
    (:func:`check_image_file`)."""
    path = Path(path)
    check_image_file(path)
    try:
        with Image.open(path) as image:
            width, height = image.size
            if image_size is not None:
                # Drafting shrinks the whole image: ask for a size at which the box still has S pixels a side.
                box_w, box_h = (
                    (1, 1)
                    if box is None
                    else (max(box[2] - box[0], 1), max(box[3] - box[1], 1))
                )
                image.draft(
                    "RGB",
                    (
                        int(
                            np.ceil(
                                image_size * width / (width if box is None else box_w)
                            )
                        ),
                        int(
                            np.ceil(
                                image_size * height / (height if box is None else box_h)
                            )
                        ),
                    ),
                )
            image = to_8bit(image).convert("RGB")
            if box is not None:
                image = crop_to_box(image, box, width, height)
            if image_size is not None:
                image = resize_square(image, image_size)
            return np.asarray(image, dtype=np.uint8)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise UndecodableImageError(
            f"{path}: cannot decode the image ({error})"
        ) from error

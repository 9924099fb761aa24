"""JPEG storage (``datasets.<name>.storage: jpeg``): a dataset's images as
their encoded JPEG bytes in one file, ``images.jpegs``, for datasets that do
not fit on disk or in memory decoded (Places365 train-standard at 256 is
271 GB as a uint8 array, about 24 GB as JPEGs).

Each image keeps its own bytes when it is a JPEG whose shorter side is at
most the storage size ``S`` (``image_size``; Places365's 256x256 JPEGs are
copied as they are) and that every decoder of training takes: a baseline or
progressive Huffman-coded 8-bit JPEG that ``torchvision.io.decode_jpeg``
decodes on the CPU (an arithmetic-coded JPEG, which Pillow reads but nvJPEG
does not, is encoded again); any other image (larger, or PNG, BMP, ... or an array
image) is decoded, its shorter side resized to ``S`` when longer
(bilinear, antialiased; the aspect ratio kept, nothing cropped: the random
resized crop of training sees the whole image) and encoded again at
``QUALITY``. Images therefore keep their own sizes.

Layout (little-endian)::

    MAGIC | JPEG bytes, back to back | index | n (uint64) | index start (uint64) | size (uint64) | MAGIC

where the index holds ``n + 1`` uint64 offsets (relative to the first JPEG
byte), then per image its height, width and the CRC-32 of its bytes
(uint32 each); ``size`` is the storage size (0: none). The trailing magic
shows a file that was cut short; the CRC shows a flipped byte, which a
JPEG decoder often decodes without complaint.

Batches decode with ``torchvision.io.decode_jpeg`` (its batched list form),
on the CPU (DataLoader workers) or with nvJPEG on a CUDA device
(``device="cuda"``); a damaged image stops the job naming the image (its
index and original file name, from ``labels.parquet`` beside the store),
the dataset and what to do.
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
import zlib
from pathlib import Path

import numpy as np
import torch

from workflow.images import crop_to_box, to_8bit

MAGIC = b"CBIRJPG1"
SUFFIX = ".jpegs"
QUALITY = 90  # JPEG quality of re-encoded images (Pillow; FFCV's default too)
FOOTER = 3 * 8 + len(MAGIC)
ADVICE = "Delete it and run Snakemake again: the prepare rule writes it anew."


class DamagedStoreError(ValueError):
    """A JPEG store, or an image in it, that is cut short or corrupt."""


@contextlib.contextmanager
def _quiet():
    """torchvision 0.29 warns on every decode that its codecs are
    deprecated in favour of TorchCodec; they work, and are what the GPU
    machines' torchvision 0.26 has."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="The image decoding and encoding capabilities"
        )
        yield


# ---------------------------------------------------------------- writing


def encode_image(image, size: int | None) -> tuple[bytes, int, int]:
    """A PIL image -> (JPEG bytes at ``QUALITY``, height, width): RGB, the
    shorter side resized to ``size`` when longer."""
    image = to_8bit(image).convert("RGB")
    if size is not None and min(image.size) > size:
        from torchvision.transforms import InterpolationMode
        from torchvision.transforms import functional as TF

        image = TF.resize(
            image, size, interpolation=InterpolationMode.BILINEAR, antialias=True
        )
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=QUALITY)
    return buffer.getvalue(), image.height, image.width


# Start-of-frame markers of the Huffman-coded DCT processes (baseline,
# extended sequential, progressive): the JPEGs that both libjpeg-turbo and
# nvJPEG decode (nvJPEG has no arithmetic, lossless or hierarchical coding).
PORTABLE_FRAMES = (0xC0, 0xC1, 0xC2)


def frame_of(data: bytes) -> tuple[int, int] | None:
    """The start-of-frame marker (0xC0 baseline, 0xC2 progressive, 0xC9
    arithmetic, ...) and sample precision of JPEG bytes; None when no frame
    header comes before the first scan."""
    i = 2
    while i + 4 < len(data) and data[i] == 0xFF:
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if 0xC0 <= marker <= 0xCF and marker not in (
            0xC4,
            0xC8,
            0xCC,
        ):  # not DHT, JPG, DAC
            return marker, data[i + 4]
        if marker in (0xDA, 0xD9):  # a scan or the end before any frame
            return None
        i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
    return None


def decodes_everywhere(data: bytes) -> bool:
    """Whether training can decode these JPEG bytes as they are: an 8-bit
    Huffman-coded DCT frame (:data:`PORTABLE_FRAMES`, for nvJPEG) that
    ``torchvision.io.decode_jpeg`` decodes on the CPU (the workers' decoder;
    libjpeg-turbo builds differ in what else they take)."""
    from torchvision.io import ImageReadMode, decode_jpeg

    if frame_of(data) not in [(marker, 8) for marker in PORTABLE_FRAMES]:
        return False
    with _quiet():
        try:
            decode_jpeg(
                torch.frombuffer(bytearray(data), dtype=torch.uint8),
                mode=ImageReadMode.RGB,
            )
        except RuntimeError:
            return False
    return True


def file_jpeg(path, size: int | None, box=None) -> tuple[bytes, int, int]:
    """An image file -> (JPEG bytes, height, width): the file's own bytes
    when it is an 8-bit RGB or grey JPEG no larger than ``size`` that
    training decodes as it is (:func:`decodes_everywhere`), else
    :func:`encode_image` (a large JPEG is decoded at the smallest DCT scale
    that keeps its shorter side >= ``size``, as ``prepare`` does). ``box``
    (a published bounding box) crops the image first, as ``prepare`` does
    for arrays (:func:`workflow.images.crop_to_box`), and is encoded again."""
    from PIL import Image

    path = Path(path)
    with Image.open(path) as image:
        if box is not None:
            return encode_image(
                crop_to_box(image, box, image.width, image.height), size
            )
        if (
            image.format == "JPEG"
            and image.mode in ("RGB", "L")
            and (size is None or min(image.size) <= size)
        ):
            image.load()  # decodes: a broken JPEG fails here, in prepare, not in training
            data = path.read_bytes()
            if decodes_everywhere(data):
                return data, image.height, image.width
            return encode_image(
                image, size
            )  # e.g. arithmetic-coded: encoded again at QUALITY
        if size is not None:
            image.draft("RGB", (size, size))
        return encode_image(image, size)


def array_jpeg(pixels: np.ndarray, size: int | None) -> tuple[bytes, int, int]:
    """A uint8 (H, W, C) array image -> (JPEG bytes, height, width)."""
    from PIL import Image

    return encode_image(
        Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels), size
    )


class StoreWriter:
    """Appends encoded images to ``tmp`` (a temporary name from
    :func:`workflow.io.atomic_path`: the caller renames it when complete),
    then writes the index and footer."""

    def __init__(self, tmp, size: int | None):
        self.file = open(tmp, "wb")
        self.file.write(MAGIC)
        self.size = size
        self.offsets, self.heights, self.widths, self.crcs = [0], [], [], []

    def add(self, data: bytes, height: int, width: int) -> None:
        self.file.write(data)
        self.offsets.append(self.offsets[-1] + len(data))
        self.heights.append(height)
        self.widths.append(width)
        self.crcs.append(zlib.crc32(data))

    def close(self) -> None:
        """Write index and footer. Without a storage size, images that are
        all square of one side get that side as the store's size (as a
        dataset of one native size keeps it in an ``images.npy``)."""
        if self.size is None and len(set(self.heights) | set(self.widths)) == 1:
            self.size = self.heights[0]
        start = len(MAGIC) + self.offsets[-1]
        self.file.write(np.asarray(self.offsets, dtype="<u8").tobytes())
        for column in (self.heights, self.widths, self.crcs):
            self.file.write(np.asarray(column, dtype="<u4").tobytes())
        self.file.write(
            np.asarray(
                [len(self.heights), start, self.size or 0], dtype="<u8"
            ).tobytes()
            + MAGIC
        )
        self.file.close()


# ---------------------------------------------------------------- reading


class JpegStore:
    """A prepared ``images.jpegs``, read through a memory map. ``store[i]``
    is image i decoded, uint8 (H, W, 3) (for figures); :meth:`read` gives
    batches of encoded bytes and :func:`decode` decodes them. Pickles as
    its path (DataLoader workers map the file again)."""

    def __init__(self, path, dataset: str | None = None):
        self.path = Path(path)
        self.dataset = dataset or self.path.parent.name
        self.data = np.memmap(self.path, dtype=np.uint8, mode="r")
        data = self.data
        if (
            len(data) < len(MAGIC) + FOOTER
            or bytes(data[: len(MAGIC)]) != MAGIC
            or bytes(data[-len(MAGIC) :]) != MAGIC
        ):
            raise DamagedStoreError(
                f"{self.path}: the JPEG store of dataset {self.dataset} is cut short or is no JPEG store "
                f"({len(data)} bytes; it does not begin and end with {MAGIC!r}). {ADVICE}"
            )
        n, start, size = np.frombuffer(
            data[-FOOTER : -len(MAGIC)].tobytes(), dtype="<u8"
        ).tolist()
        index = data[start:-FOOTER]
        if len(index) != 8 * (n + 1) + 12 * n:
            raise DamagedStoreError(
                f"{self.path}: the index of dataset {self.dataset}'s JPEG store is damaged. "
                f"{ADVICE}"
            )
        self.offsets = np.frombuffer(index[: 8 * (n + 1)], dtype="<u8").astype(
            np.int64
        ) + len(MAGIC)
        heights, widths, crcs = np.frombuffer(
            index[8 * (n + 1) :], dtype="<u4"
        ).reshape(3, n)
        self.heights, self.widths, self.crcs = (
            heights.astype(np.int64),
            widths.astype(np.int64),
            crcs,
        )
        self.size = int(size) or None
        if self.offsets[-1] != start:
            raise DamagedStoreError(
                f"{self.path}: the index of dataset {self.dataset}'s JPEG store does not "
                f"match its data. {ADVICE}"
            )

    def __len__(self) -> int:
        return len(self.heights)

    def __reduce__(self):
        return JpegStore, (str(self.path), self.dataset)

    def image_name(self, i: int) -> str:
        """``image 17 (file a/b.jpg)``: the index and, when
        ``labels.parquet`` beside the store names it, the original file."""
        try:
            import pandas as pd

            name = pd.read_parquet(
                self.path.parent / "labels.parquet", columns=["file_id"]
            )["file_id"].iloc[i]
        except Exception:  # noqa: BLE001 - the name is a courtesy; the index is enough
            name = None
        return f"image {i}" + (f" (file {name})" if name else "")

    def damaged(self, i: int, what: str) -> DamagedStoreError:
        return DamagedStoreError(
            f"{self.path}: {self.image_name(i)} of dataset {self.dataset} {what}. {ADVICE}"
        )

    def read(self, rows) -> list[torch.Tensor]:
        """The encoded bytes of images ``rows`` (uint8 1-D tensors, in
        ``rows``' order), each checked against its CRC-32."""
        out = []
        for i in np.asarray(rows).tolist():
            data = bytearray(self.data[self.offsets[i] : self.offsets[i + 1]])
            if zlib.crc32(data) != self.crcs[i]:
                raise self.damaged(
                    i,
                    "is corrupt (its bytes do not match the checksum written by prepare)",
                )
            out.append(torch.frombuffer(data, dtype=torch.uint8))
        return out

    def decode(self, rows, device="cpu") -> list[torch.Tensor]:
        """Images ``rows`` decoded, uint8 (3, H, W) each, on ``device``."""
        return decode(self.read(rows), device, self, np.asarray(rows))

    def __getitem__(self, i: int) -> np.ndarray:
        return self.decode([int(i)])[0].permute(1, 2, 0).numpy()


def decode(
    encoded: list[torch.Tensor],
    device="cpu",
    store: JpegStore | None = None,
    rows: np.ndarray | None = None,
) -> list[torch.Tensor]:
    """``torchvision.io.decode_jpeg`` of a batch (its list form, one call),
    as RGB, on the CPU or with nvJPEG on a CUDA ``device``. An image that
    does not decode is found by decoding one by one and named (``store``
    and ``rows``: where the bytes came from)."""
    from torchvision.io import ImageReadMode, decode_jpeg

    with _quiet():
        try:
            return decode_jpeg(encoded, mode=ImageReadMode.RGB, device=device)
        except RuntimeError as error:
            if store is None:
                raise
            for i, data in zip(rows.tolist(), encoded):
                try:
                    decode_jpeg(data, mode=ImageReadMode.RGB)
                except RuntimeError as one:
                    reason = str(one).splitlines()[0].split(", ")[-1]
                    raise store.damaged(i, f"does not decode ({reason})") from None
            raise error


def pad(images: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Images of different sizes (C, H, W) -> one zero-padded (B, C, Hmax,
    Wmax) batch with their heights and widths ((B,) int64): what the
    batched transforms of :mod:`workflow.augment` take."""
    heights = torch.tensor([im.shape[1] for im in images])
    widths = torch.tensor([im.shape[2] for im in images])
    first = images[0]
    # Channels-last memory: what the CPU's per-image resize reads fastest.
    x = torch.zeros(
        (len(images), int(heights.max()), int(widths.max()), first.shape[0]),
        dtype=first.dtype,
        device=first.device,
    ).permute(0, 3, 1, 2)
    for i, im in enumerate(images):
        x[i, :, : im.shape[1], : im.shape[2]] = im
    return x, heights, widths


def open_images(path, dataset: str | None = None):
    """A prepared images file: ``images.npy`` as a read-only memory map,
    ``images.jpegs`` as a :class:`JpegStore`."""
    path = Path(path)
    if path.suffix == SUFFIX:
        return JpegStore(path, dataset)
    return np.load(path, mmap_mode="r")


# ---------------------------------------------------------------- training


class BatchDecoder(torch.utils.data.Dataset):
    """A DataLoader dataset whose items are whole batches: item
    ``(positions, seed)`` is images ``order[positions]`` of the store
    decoded on the CPU and augmented (``transform(x, heights, widths,
    generator)`` with a generator seeded ``seed``), or with
    ``decode=False`` their encoded bytes and the seed (for nvJPEG in the
    training process)."""

    def __init__(
        self, store: JpegStore, order: np.ndarray, transform=None, decode: bool = True
    ):
        self.store, self.order, self.transform, self.decode = (
            store,
            order,
            transform,
            decode,
        )

    def __getitem__(self, item):
        positions, seed = item
        rows = self.order[positions]
        if not self.decode:
            return self.store.read(rows), seed
        return self.transform(
            *pad(self.store.decode(rows)), torch.Generator().manual_seed(seed)
        )

    def __len__(self) -> int:
        return len(self.order)


class JpegImages:
    """The training images of a JPEG store, read as ``HostImages`` reads
    an ``images.npy``, but decoded and augmented as they are read:
    indexing with a batch of positions gives that batch augmented, uint8
    (B, 3, size, size) on the device, so ``TrainStep`` does not augment it
    again. ``transform(x, heights, widths, generator)`` is the
    augmentation (``TrainStep.augment_batch``: :func:`workflow.augment.augment`
    with the cell's settings, on images zero-padded to one size with their
    own sizes).

    Random draws: per batch, a seed from the cell's augment ``generator``
    (one draw of the whole epoch's seeds in :meth:`prefetch`), and the
    batch's boxes and flips from a CPU generator with that seed. So the
    draws are the same whoever decodes: on the CPU the DataLoader workers
    decode (``decode_jpeg``) and augment (one-thread ``interpolate`` per
    image: in the training process, two OpenMP threads competing with the
    workers for 2 cores made it 20x slower); on a CUDA device the workers
    only read the bytes, which are decoded there with nvJPEG
    (``decode_jpeg(..., device="cuda")``) and augmented by batched
    products. ``shape``: (n, 3, S, S) with S the storage size (or
    ``size`` when the store has none)."""

    def __init__(
        self,
        store: JpegStore,
        order: np.ndarray,
        device: torch.device,
        workers: int = 0,
        size: int | None = None,
    ):
        self.store, self.order, self.device, self.workers = (
            store,
            order,
            device,
            workers,
        )
        side = store.size or size
        self.shape = (len(order), 3, side, side)
        self.decode_on_device = device.type == "cuda"
        self.transform, self.generator = None, None  # set by build_training
        self.pending = None

    def prefetch(self, batches: list[torch.Tensor]) -> None:
        """Draw the epoch's batch seeds; with workers, start reading ahead."""
        seeds = torch.randint(
            0,
            2**62,
            (len(batches),),
            generator=self.generator,
            device=self.generator.device,
        )
        items = [(b.numpy(), seed) for b, seed in zip(batches, seeds.tolist())]
        if self.workers == 0:
            self.pending = iter([(b, item) for b, item in zip(batches, items)])
            return
        loader = torch.utils.data.DataLoader(
            BatchDecoder(
                self.store, self.order, self.transform, decode=not self.decode_on_device
            ),
            batch_size=None,
            sampler=items,
            num_workers=min(self.workers, len(os.sched_getaffinity(0))),
            pin_memory=self.device.type == "cuda",
        )
        self.pending = zip(batches, loader)

    def __getitem__(self, batch: torch.Tensor) -> torch.Tensor:
        positions = batch.cpu()
        if self.pending is None:
            raise RuntimeError(
                "JpegImages: prefetch the epoch's batches first (its seeds are drawn there)"
            )
        expected, item = next(self.pending)
        if not torch.equal(expected, positions):
            raise RuntimeError(
                "JpegImages: batches asked for out of the prefetched order"
            )
        if self.workers == 0:  # read here, as a worker would
            item = BatchDecoder(
                self.store, self.order, self.transform, not self.decode_on_device
            )[item]
        if self.decode_on_device:
            encoded, seed = item
            x, heights, widths = pad(
                decode(encoded, self.device, self.store, self.order[positions.numpy()])
            )
            return self.transform(
                x, heights, widths, torch.Generator().manual_seed(seed)
            )
        if self.device.type == "cuda":
            item = (item if item.is_pinned() else item.pin_memory()).to(
                self.device, non_blocking=True
            )
        return item

    def channel_statistics(
        self, limit: int = 10_000, chunk: int = 256
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel mean and std (ddof 1) of the pixels in [0, 1], in
        float64, over at most ``limit`` training images evenly spaced in
        the store (all when fewer): decoding every image of a large store
        would cost an epoch's decoding before the first step."""
        picked = self.order[
            np.unique(
                np.linspace(0, len(self.order) - 1, min(limit, len(self.order))).astype(
                    int
                )
            )
        ]
        total, squares, count = np.zeros(3), np.zeros(3), 0
        for start in range(0, len(picked), chunk):
            for image in self.store.decode(picked[start : start + chunk]):
                pixels = image.reshape(3, -1).numpy().astype(np.float64) / 255.0
                total += pixels.sum(axis=1)
                squares += (pixels * pixels).sum(axis=1)
                count += pixels.shape[1]
        mean = total / count
        std = np.sqrt(np.maximum((squares - count * mean * mean) / (count - 1), 0.0))
        return torch.from_numpy(mean).float(), torch.from_numpy(std).clamp_min(
            1e-3
        ).float()

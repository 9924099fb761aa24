"""JPEG storage (``datasets.<name>.storage: jpeg``, workflow/jpeg_store.py):
what prepare stores, the batched transforms on images of different sizes
against torchvision image by image, and training from the store (decoded
by DataLoader workers, or as the nvJPEG path does: bytes from the workers,
one batched ``decode_jpeg`` in the training process) with the same bits.
Damaged stores are in the catalogue (tests/test_bad_inputs.py)."""

from __future__ import annotations

import copy
import functools
import io

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TINY_CONFIG
from official_formats import make_imagefolder
from PIL import Image

from workflow.config import Cell, cell_settings
from workflow.config_loader import load_config
from workflow.datasets import load_dataset
from workflow.jpeg_store import QUALITY, JpegImages, JpegStore, decode, pad
from workflow.prepare import write_prepared


def make_store(tmp_path, image_size=24, n_train=6, n_test=2):
    """A generated image folder (JPEG and PNG files of 10..39 pixels a
    side) prepared as a JPEG store; -> (store, the folder, its file names)."""
    root = tmp_path / "img"
    make_imagefolder(root, n_train=n_train, n_test=n_test)
    data = load_dataset("imagefolder", path=str(root))
    out = tmp_path / "data" / "pics"
    write_prepared(
        data,
        out / "images.jpegs",
        out / "labels.parquet",
        out / "classes.json",
        image_size=image_size,
        name="pics",
        storage="jpeg",
    )
    return JpegStore(out / "images.jpegs"), root, list(data.file_ids)


def test_prepare_keeps_small_jpegs_and_encodes_the_rest_at_the_storage_size(tmp_path):
    store, root, names = make_store(tmp_path, image_size=24)
    assert (
        len(store) == len(names) == 24 and store.dataset == "pics" and store.size == 24
    )
    kept = reencoded = 0
    for i, name in enumerate(names):
        path = root / name
        with Image.open(path) as image:
            width, height = image.size
            original = np.asarray(image.convert("RGB"))
        stored = store.read([i])[0].numpy().tobytes()
        if path.suffix == ".jpg" and min(width, height) <= 24:  # its own bytes
            assert stored == path.read_bytes()
            kept += 1
            continue
        reencoded += 1
        short = min(width, height)
        expected = (
            (height, width)
            if short <= 24
            else (int(24 * height / short), int(24 * width / short))
        )
        assert (
            store.heights[i],
            store.widths[i],
        ) == expected  # aspect kept, nothing cropped
        if short <= 24:  # a PNG at its own size: encoded at quality 90, as Pillow does
            buffer = io.BytesIO()
            Image.fromarray(original).save(buffer, format="JPEG", quality=90)
            assert store.read([i])[0].numpy().tobytes() == buffer.getvalue()
    assert kept and reencoded and QUALITY == 90
    assert (
        min(store.heights.min(), store.widths.min()) >= 10
        and np.minimum(store.heights, store.widths).max() <= 24
    )
    assert (
        pd.read_parquet(tmp_path / "data/pics/labels.parquet")["file_id"].tolist()
        == names
    )


def test_a_jpeg_the_cpu_decoder_refuses_is_encoded_again(tmp_path, monkeypatch):
    """torchvision's decode_jpeg took every variant we could generate
    (progressive, arithmetic, CMYK, RGB colour space, restart markers, stray
    bytes); so the refusal is simulated by replacing it."""
    import torchvision.io

    from workflow.jpeg_store import file_jpeg

    path = tmp_path / "a.jpg"
    Image.fromarray(np.arange(12 * 16 * 3, dtype=np.uint8).reshape(12, 16, 3)).save(
        path, quality=75
    )
    assert file_jpeg(path, 24)[0] == path.read_bytes()

    def refuse(*args, **kwargs):
        raise RuntimeError("Unsupported marker type 0xcf")

    monkeypatch.setattr(torchvision.io, "decode_jpeg", refuse)
    data, height, width = file_jpeg(path, 24)
    buffer = io.BytesIO()
    Image.open(path).convert("RGB").save(buffer, format="JPEG", quality=QUALITY)
    assert (data, height, width) == (buffer.getvalue(), 12, 16)


def test_a_dataset_of_one_square_size_keeps_it_as_the_store_size(tmp_path):
    data = load_dataset("sklearn_digits")
    out = tmp_path / "digits"
    write_prepared(
        data,
        out / "images.jpegs",
        out / "labels.parquet",
        out / "classes.json",
        storage="jpeg",
    )
    store = JpegStore(out / "images.jpegs")
    assert store.size == 8 and len(store) == len(data.labels)
    assert store[0].shape == (8, 8, 3)


def _boxes_and_batch(sizes, seed=0):
    rng = np.random.default_rng(seed)
    images = [
        torch.from_numpy(rng.integers(0, 256, (3, h, w), dtype=np.uint8))
        for h, w in sizes
    ]
    return images, *pad(images)


# batched: the GPU's path (two batched products, within 1 level of v2 by
# rounding), run here on the CPU; per image: the CPU's (v2's own kernel).
@pytest.mark.parametrize(
    "batched, tolerance", [(True, 1), (False, 0)], ids=["batched", "per_image"]
)
def test_random_resized_crop_of_images_of_different_sizes_matches_torchvision_image_by_image(
    batched, tolerance
):
    from torchvision.transforms.v2 import functional as F2

    from workflow.augment import random_resized_crop, random_resized_crop_boxes

    sizes = [(40, 64), (64, 40), (33, 33), (20, 90), (90, 20), (57, 31)]
    images, x, heights, widths = _boxes_and_batch(sizes)
    out = random_resized_crop(
        x,
        24,
        torch.Generator().manual_seed(3),
        heights=heights,
        widths=widths,
        batched=batched,
    )
    top, left, h, w = random_resized_crop_boxes(
        len(sizes),
        heights,
        widths,
        (0.08, 1.0),
        (0.75, 4 / 3),
        torch.Generator().manual_seed(3),
    )
    for i, image in enumerate(images):
        assert (
            0 <= top[i]
            and top[i] + h[i] <= sizes[i][0]
            and 0 <= left[i]
            and left[i] + w[i] <= sizes[i][1]
        )
        expected = F2.resized_crop(
            image,
            int(top[i]),
            int(left[i]),
            int(h[i]),
            int(w[i]),
            [24, 24],
            antialias=True,
        )
        assert (out[i].int() - expected.int()).abs().max() <= tolerance, i

    # Images of one size: the same boxes and pixels as the batch of part 1.
    same = torch.randint(
        0,
        256,
        (5, 3, 30, 40),
        dtype=torch.uint8,
        generator=torch.Generator().manual_seed(1),
    )
    n = torch.full((5,), 30), torch.full((5,), 40)
    padded = random_resized_crop(
        same,
        16,
        torch.Generator().manual_seed(7),
        flip=True,
        heights=n[0],
        widths=n[1],
        batched=batched,
    )
    assert torch.equal(
        padded,
        random_resized_crop(
            same, 16, torch.Generator().manual_seed(7), flip=True, batched=batched
        ),
    )


def test_random_resized_crop_falls_back_to_each_images_own_centre_crop():
    """No try fits (scale above 1): each image's centre crop clamped to the
    ratio, from its own aspect ratio (torchvision's fallback)."""
    from workflow.augment import random_resized_crop_boxes

    heights, widths = torch.tensor([20, 90, 40]), torch.tensor([90, 20, 40])
    top, left, h, w = random_resized_crop_boxes(
        3, heights, widths, (2.0, 3.0), (0.75, 4 / 3), torch.Generator().manual_seed(0)
    )
    assert h.tolist() == [20, 27, 40] and w.tolist() == [27, 20, 40]
    assert top.tolist() == [0, 31, 0] and left.tolist() == [31, 0, 0]


@pytest.mark.parametrize(
    "batched, tolerance", [(True, 1), (False, 0)], ids=["batched", "per_image"]
)
def test_resize_and_centre_crop_of_images_of_different_sizes_matches_torchvision(
    batched, tolerance
):
    from torchvision.transforms import v2

    from workflow.augment import resize_centre_crop

    sizes = [(40, 64), (64, 40), (33, 33), (20, 90)]
    images, x, heights, widths = _boxes_and_batch(sizes, seed=1)
    out = resize_centre_crop(x, 16, 0.875, heights, widths, batched=batched)
    recipe = v2.Compose(
        [v2.Resize(18, antialias=True), v2.CenterCrop(16)]
    )  # floor(16 / 0.875) = 18
    for i, image in enumerate(images):
        assert (out[i].int() - recipe(image).int()).abs().max() <= tolerance, i
    same = resize_centre_crop(
        x[:1, :, :40, :64], 16, 0.875, batched=batched
    )  # one size: the batch's own path
    assert (same[0].int() - recipe(images[0]).int()).abs().max() <= tolerance


def test_device_decoding_path_gives_the_batches_of_the_worker_path(tmp_path):
    """What a CUDA device runs (workers read bytes, one batched
    ``decode_jpeg`` in the training process, then the augmentation there,
    batched), here with the CPU as the device: the same seeds, so the same
    boxes and flips, as decoding and augmenting in the workers (within 1
    level: the batched products round differently from ``interpolate``);
    without workers, the same bits as with them."""
    from workflow.augment import augment_padded

    store, _, _ = make_store(tmp_path)
    order = np.arange(0, len(store), 2)
    batches = [torch.tensor([3, 0, 5]), torch.tensor([1, 2])]
    transform = functools.partial(
        augment_padded,
        mode="rrc_flip",
        padding=4,
        size=16,
        scale=(0.08, 1.0),
        ratio=(0.75, 4 / 3),
    )
    outputs = []
    for workers, on_device, batched in [
        (2, False, False),
        (0, False, False),
        (2, True, True),
    ]:
        images = JpegImages(store, order, torch.device("cpu"), workers=workers)
        images.decode_on_device = on_device
        images.transform = functools.partial(transform, batched=batched)
        images.generator = torch.Generator().manual_seed(5)
        images.prefetch(batches)
        outputs.append([images[batch] for batch in batches])
    for a, b, c in zip(*outputs):
        assert a.shape == (len(c), 3, 16, 16) and torch.equal(a, b)
        assert (a.int() - c.int()).abs().max() <= 1
    encoded = store.read(order[:3])
    assert all(
        torch.equal(a, b) for a, b in zip(decode(encoded), store.decode(order[:3]))
    )


def settings(**training):
    config = copy.deepcopy(TINY_CONFIG)
    config["datasets"]["digits"]["storage"] = "jpeg"
    config["losses"] = {"ce": {"impl": "ce"}}
    config["training"] = {"epochs": 3, "batch_size": 16, **training}
    return cell_settings(
        load_config(config), Cell("digits", "full", "small_cnn", "ce", 0)
    )


@pytest.mark.parametrize("augment", ["rrc_flip", "crop_flip"])
def test_training_from_a_store_is_reproducible_with_and_without_workers_and_resumes(
    tmp_path, augment
):
    from workflow.embedding import compute_embeddings
    from workflow.training.loop import train_cell

    store, _, _ = make_store(tmp_path, image_size=24)
    labels = pd.read_parquet(tmp_path / "data/pics/labels.parquet")["label"].to_numpy()
    train = np.arange(len(store))
    s = settings(augment=augment, input_size=16, loader_workers=2)
    with_workers = train_cell(store, labels, train, 3, s, progress=False)
    without = train_cell(
        store,
        labels,
        train,
        3,
        {**s, "training": {**s["training"], "loader_workers": 0}},
        progress=False,
    )
    assert with_workers["image_size"] == 16
    for key, value in with_workers["backbone"].items():
        assert torch.equal(value, without["backbone"][key]), key
    checkpoint = tmp_path / "last.pt"
    assert (
        train_cell(
            store,
            labels,
            train,
            3,
            s,
            progress=False,
            checkpoint_path=checkpoint,
            stop_after_epoch=1,
        )
        is None
    )
    resumed = train_cell(
        store, labels, train, 3, s, progress=False, checkpoint_path=checkpoint
    )
    assert resumed["stats"]["resumed_from_epoch"] == 1
    for key, value in with_workers["backbone"].items():
        assert torch.equal(value, resumed["backbone"][key]), key
    assert resumed["history"] == with_workers["history"]

    embeddings, _, _ = compute_embeddings(with_workers, s, store, np.arange(len(store)))
    assert embeddings.shape == (len(store), 16) and np.isfinite(embeddings).all()


def test_bounding_boxes_crop_the_stored_jpegs_as_they_crop_the_arrays(tmp_path):
    """A dataset with boxes (CUB, Cars with ``bounding_boxes: true``) stored as
    JPEGs keeps each image's box, as the array storage does."""
    from workflow.datasets import ImageFiles
    from workflow.images import decode_image
    from workflow.prepare import write_prepared

    paths = []
    for i in range(2):
        path = tmp_path / f"{i}.jpg"
        Image.fromarray(np.full((30, 40, 3), 60 * i, dtype=np.uint8)).save(
            path, quality=95
        )
        paths.append(path)
    boxes = np.array([[5, 5, 25, 20], [0, 10, 40, 30]], dtype=float)
    files = ImageFiles(
        paths, np.array([0, 1]), ["a", "b"], None, np.array(["0.jpg", "1.jpg"]), boxes
    )
    out = tmp_path / "out"
    write_prepared(
        files,
        out / "images.jpegs",
        out / "labels.parquet",
        out / "classes.json",
        storage="jpeg",
    )
    store = JpegStore(out / "images.jpegs")
    assert [(int(h), int(w)) for h, w in zip(store.heights, store.widths)] == [
        (15, 20),
        (20, 40),
    ]
    assert [decode_image(p, None, b).shape[:2] for p, b in zip(paths, boxes)] == [
        (15, 20),
        (20, 40),
    ]

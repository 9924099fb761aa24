"""Pretrained weights (workflow/backbones/weights.py): records, files verified
like the datasets' (mirror, download cache, checksums, atomic writes), named
errors for bad files, and the weights' own normalisation in training and
embedding. Every weights file here is made by the tests (no network)."""

from __future__ import annotations

import copy
import hashlib
import pickle

import numpy as np
import pytest
import torch
import torchvision

from workflow.backbones import build_backbone, weights
from workflow.backbones.weight_records import (
    RECORDS,
    RESNET18_PLACES365,
    WeightsRecord,
    get_record,
)
from workflow.backbones.weights import (
    UnpinnedWeightsError,
    WeightsChecksumError,
    WeightsError,
    WeightsFileError,
    WeightsMismatchError,
    WeightsMissingError,
    WeightSources,
    input_normalisation,
    resolve,
    weights_file,
)
from workflow.config import Cell, ConfigError, cell_settings
from workflow.config_loader import load_config
from workflow.embedding import compute_embeddings
from workflow.guards import check_config
from workflow.training.loop import train_cell

NAME = "test_places_resnet18"
FILE_NAME = "test_places_resnet18.pth.tar"
# Distinct from any dataset's statistics, so the test sees whose are used.
MEAN, STD = (0.1, 0.2, 0.3), (0.3, 0.2, 0.1)
DEAD_URL = "http://127.0.0.1:9/" + FILE_NAME  # nothing listens on port 9


def sha256_of(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def save_places_style(path):
    """A randomly initialised torchvision resnet18 with a 365-way classifier,
    saved as CSAIL saves its checkpoints (a dict with ``state_dict``, keys
    prefixed ``module.``); returns the model."""
    torch.manual_seed(3)
    reference = torchvision.models.resnet18(num_classes=365)
    state = {f"module.{k}": v for k, v in reference.state_dict().items()}
    torch.save(
        {"epoch": 90, "arch": "resnet18", "state_dict": state, "best_prec1": 54.7}, path
    )
    return reference


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    """A data_mirror folder holding a weights file, a record for it with its
    true sha256 (and an address that cannot answer), and the sources
    pointing at the mirror."""
    folder = tmp_path / "mirror"
    folder.mkdir()
    reference = save_places_style(folder / FILE_NAME)
    record = WeightsRecord(
        name=NAME,
        arch="resnet18",
        url=DEAD_URL,
        file_name=FILE_NAME,
        md5=None,
        sha256=sha256_of(folder / FILE_NAME),
        mean=MEAN,
        std=STD,
        input_size=224,
        num_classes=365,
    )
    monkeypatch.setitem(RECORDS, NAME, record)
    monkeypatch.setattr(
        weights,
        "WEIGHT_SOURCES",
        WeightSources(mirror=folder, cache=tmp_path / "cache"),
    )
    return folder, record, reference


def tiny_cell(pretrained, **params):
    config = {
        "datasets": {
            "rgb": {"source": "sklearn_digits"}
        },  # not read: the images are given
        "regimes": {"full": {}},
        "backbones": {
            "r18": {
                "arch": "resnet18",
                "embedding_size": 8,
                "params": {"pretrained": pretrained, **params},
            }
        },
        "losses": {"ce": {"impl": "ce"}},
        "seeds": [0],
        "training": {"epochs": 1, "batch_size": 8, "device": "cpu"},
    }
    config = load_config(config)
    check_config(config)
    return cell_settings(config, Cell("rgb", "full", "r18", "ce", 0))


def test_a_record_from_the_mirror_loads_and_the_cell_uses_its_normalisation(mirror):
    folder, record, reference = mirror
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(16, 16, 16, 3), dtype=np.uint8)
    labels = np.repeat([0, 1], 8)
    settings = tiny_cell(NAME, freeze_trunk=True)
    model = train_cell(images, labels, np.arange(16), 2, settings, progress=False)
    # The trunk is the file's (frozen), and the inputs were normalised with
    # the record's mean and std, not the training images' statistics.
    assert torch.equal(
        model["backbone"]["model.layer4.1.conv2.weight"],
        reference.layer4[1].conv2.weight,
    )
    assert torch.allclose(model["mean"], torch.tensor(MEAN)) and torch.allclose(
        model["std"], torch.tensor(STD)
    )
    # Embedding reads the checkpoint (weights, mean, std): the weights file is
    # not needed again.
    (folder / FILE_NAME).unlink()
    embeddings, _, _ = compute_embeddings(model, settings, images, np.arange(4))
    assert embeddings.shape == (4, 8) and np.isfinite(embeddings).all()


def test_without_pretrained_weights_the_training_set_statistics_stay():
    assert input_normalisation({}, 3) is None
    assert input_normalisation({"pretrained": None}, 3) is None


def test_grey_images_get_the_mean_of_the_rgb_statistics(mirror):
    mean, std = input_normalisation({"pretrained": NAME}, 1)
    assert torch.allclose(mean, torch.tensor([sum(MEAN) / 3])) and torch.allclose(
        std, torch.tensor([sum(STD) / 3])
    )


def test_a_wrong_checksum_names_the_file_the_expected_and_the_found_checksum(
    mirror, monkeypatch
):
    folder, record, _ = mirror
    wrong = "0" * 64
    monkeypatch.setitem(
        RECORDS, NAME, WeightsRecord(**{**record.__dict__, "sha256": wrong})
    )
    with pytest.raises(WeightsChecksumError) as error:
        build_backbone(
            "resnet18", in_channels=3, image_size=32, embedding_size=8, pretrained=NAME
        )
    message = str(error.value)
    assert (
        str(folder / FILE_NAME) in message
        and wrong in message
        and sha256_of(folder / FILE_NAME) in message
    )
    assert "Put the official file" in message and str(folder) in message


def test_a_pinned_checksum_of_ones_own_file_is_checked(tmp_path):
    path = tmp_path / "mine.pth"
    save_places_style(path)
    pinned = {
        "file": str(path),
        "checksum": "sha256:" + "1" * 64,
        "mean": [0.5],
        "std": [0.25],
    }
    with pytest.raises(
        WeightsChecksumError,
        match=f"{path}.*sha256 is {sha256_of(path)}, expected 1111",
    ) as error:
        build_backbone(
            "resnet18",
            in_channels=1,
            image_size=32,
            embedding_size=8,
            pretrained=pinned,
        )
    assert f"checksum: 'sha256:{sha256_of(path)}'" in str(
        error.value
    )  # what to pin if the change is wanted


def test_a_missing_mirror_file_says_where_to_put_it(mirror):
    folder, record, _ = mirror
    (folder / FILE_NAME).unlink()
    with pytest.raises(
        WeightsMissingError,
        match=f"data_mirror {folder}: {FILE_NAME}.*missing.*{record.sha256}",
    ):
        build_backbone(
            "resnet18", in_channels=3, image_size=32, embedding_size=8, pretrained=NAME
        )


def test_a_download_is_verified_before_it_is_renamed_into_the_cache(tmp_path):
    source = tmp_path / "published" / FILE_NAME
    source.parent.mkdir()
    save_places_style(source)
    good = WeightsRecord(
        name=NAME,
        arch="resnet18",
        url=source.as_uri(),
        file_name=FILE_NAME,
        md5=None,
        sha256=sha256_of(source),
        mean=MEAN,
        std=STD,
        input_size=224,
    )
    cache = tmp_path / "cache"
    bad = WeightsRecord(**{**good.__dict__, "sha256": "f" * 64})
    with pytest.raises(WeightsError, match=f"sha256 is {good.sha256}, expected ffff"):
        weights_file(bad, cache=cache, pause=0)
    assert (
        not cache.exists() or list(cache.iterdir()) == []
    )  # nothing half-written or unverified left
    cache.mkdir(exist_ok=True)
    (cache / FILE_NAME).write_bytes(b"a cut-off earlier download")
    path, how = weights_file(
        good, cache=cache, pause=0
    )  # a cached file that does not match is fetched again
    assert (
        path == cache / FILE_NAME
        and how == source.as_uri()
        and sha256_of(path) == good.sha256
    )
    assert sorted(p.name for p in cache.iterdir()) == [FILE_NAME]
    source.unlink()
    assert weights_file(good, cache=cache, pause=0) == (path, f"cache {path}")


def test_a_record_without_a_published_checksum_must_be_pinned(tmp_path, monkeypatch):
    folder = tmp_path / "mirror"
    folder.mkdir()
    save_places_style(
        folder / RESNET18_PLACES365.file_name
    )  # stands in for CSAIL's file
    found = sha256_of(folder / RESNET18_PLACES365.file_name)
    monkeypatch.setattr(weights, "WEIGHT_SOURCES", WeightSources(mirror=folder))
    with pytest.raises(
        UnpinnedWeightsError,
        match=f"gives no checksum.*sha256 {found}.*checksum: 'sha256:{found}'",
    ):
        build_backbone(
            "resnet18",
            in_channels=3,
            image_size=64,
            embedding_size=8,
            pretrained="resnet18_places365",
        )
    pinned = {"record": "resnet18_places365", "checksum": f"sha256:{found}"}
    build_backbone(
        "resnet18", in_channels=3, image_size=64, embedding_size=8, pretrained=pinned
    )
    mean, std = input_normalisation({"pretrained": pinned}, 3)
    assert tuple(mean.tolist()) == pytest.approx(RESNET18_PLACES365.mean)


def test_wrong_shapes_are_a_named_error(mirror, tmp_path):
    path = tmp_path / "wide.pth"
    state = torchvision.models.resnet18().state_dict()
    state["layer1.0.conv1.weight"] = torch.zeros(32, 64, 3, 3)
    del state["layer4.1.bn2.bias"]
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, path)
    spec = {
        "file": str(path),
        "checksum": f"sha256:{sha256_of(path)}",
        "normalisation": NAME,
    }
    with pytest.raises(WeightsMismatchError) as error:
        build_backbone(
            "resnet18", in_channels=3, image_size=32, embedding_size=8, pretrained=spec
        )
    message = str(error.value)
    assert str(path) in message
    assert (
        "layer1.0.conv1.weight: (32, 64, 3, 3) in the file, (64, 64, 3, 3) in the backbone"
        in message
    )
    assert (
        "missing keys (1): ['layer4.1.bn2.bias']" in message
        and "unexpected keys (1): ['extra.weight']" in message
    )


class NotWeights:
    pass


@pytest.mark.parametrize(
    "content, reason",
    [
        (lambda path: torch.save([torch.zeros(2)], path), "holds a list"),
        (
            lambda path: torch.save({"lr": 0.1, "conv.weight": torch.zeros(2)}, path),
            "not tensors: ['lr']",
        ),
        (
            lambda path: path.write_bytes(np.random.default_rng(0).bytes(4096)),
            "cannot read it",
        ),
        (lambda path: path.write_bytes(pickle.dumps(NotWeights())), "cannot read it"),
    ],
    ids=["list", "dict_of_other_things", "random_bytes", "foreign_pickle"],
)
def test_a_file_that_is_not_a_state_dict_is_a_named_error(tmp_path, content, reason):
    path = tmp_path / "not_weights.pth"
    content(path)
    spec = {
        "file": str(path),
        "checksum": f"sha256:{sha256_of(path)}",
        "mean": [0.5, 0.5, 0.5],
        "std": [0.2, 0.2, 0.2],
    }
    with pytest.raises(WeightsFileError) as error:
        build_backbone(
            "resnet18", in_channels=3, image_size=32, embedding_size=8, pretrained=spec
        )
    message = str(error.value)
    assert (
        str(path) in message
        and reason in message
        and "torch.save(model.state_dict()" in message
    )
    assert "weights_only=False" not in message


def test_torchvision_records_are_torchvision_s_own():
    weights_enum = torchvision.models.ResNet18_Weights.IMAGENET1K_V1
    record = get_record("ResNet18_Weights.IMAGENET1K_V1")
    transforms = weights_enum.transforms()
    assert record.url == weights_enum.url and record.url.startswith("https://")
    assert (
        record.file_name.endswith(f"-{record.sha256}.pth") and len(record.sha256) >= 8
    )
    assert (list(record.mean), list(record.std)) == (transforms.mean, transforms.std)
    assert record.input_size == transforms.crop_size[0] and record.num_classes == 1000
    assert get_record("Swin_T_Weights.IMAGENET1K_V1").arch == "swin_t"
    assert (
        get_record("ResNet18_Weights.DEFAULT") is None
    )  # DEFAULT moves between torchvision versions
    # CSAIL's train_placesCNN.py normalises with ImageNet's statistics.
    assert (RESNET18_PLACES365.mean, RESNET18_PLACES365.std) == (
        record.mean,
        record.std,
    )
    assert (
        RESNET18_PLACES365.md5 is None and RESNET18_PLACES365.sha256 is None
    )  # CSAIL publishes none


@pytest.mark.parametrize(
    "value, fragment",
    [
        (
            "http://places2.csail.mit.edu/models_places365/resnet18_places365.pth.tar",
            "A file of your own is a mapping",
        ),
        (
            "ResNet18_Weights.IMAGENET1K_V9",
            "is not a weights record; records: resnet18_places365",
        ),
        (
            {"file": "mine.pth", "normalisation": "ResNet18_Weights.IMAGENET1K_V1"},
            "checksum: required",
        ),
        (
            {"file": "mine.pth", "checksum": "sha256:" + "a" * 64},
            "needs the normalisation",
        ),
        (
            {"record": "resnet18_places365", "mean": [0.5, 0.5, 0.5]},
            "come from the record",
        ),
        (
            {"record": "resnet18_places365", "checksum": "sha256:abc"},
            "sha256:<64 hex digits>",
        ),
        (
            {
                "record": "ResNet18_Weights.IMAGENET1K_V1",
                "checksum": "sha256:" + "0" * 64,
            },
            "contradicts",
        ),
        ("Swin_T_Weights.IMAGENET1K_V1", "weights of arch swin_t, not resnet18"),
    ],
)
def test_bad_pretrained_values_stop_the_config_check(value, fragment):
    config = copy.deepcopy(
        {
            "datasets": {"d": {"source": "sklearn_digits"}},
            "regimes": {"full": {}},
            "backbones": {"r18": {"arch": "resnet18", "params": {"pretrained": value}}},
            "losses": {"ce": {"impl": "ce"}},
            "seeds": [0],
        }
    )
    with pytest.raises(ConfigError, match="backbones.r18.params.pretrained") as error:
        check_config(load_config(config))
    assert fragment in str(error.value)


def test_the_lm_configs_name_the_places365_record():
    assert resolve("resnet18_places365", "resnet18") is RESNET18_PLACES365
    with pytest.raises(ConfigError, match="not cifar_resnet18"):
        resolve("ResNet18_Weights.IMAGENET1K_V1", "cifar_resnet18")

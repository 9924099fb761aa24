"""The deep-metric-learning datasets (CUB-200-2011, Cars196, SOP, In-Shop)
from generated miniatures in their official layouts, through
download-from-mirror (with user-pinned checksums: a miniature is a
re-packed subset), prepare and the class-disjoint protocol's splits; and a
short real run of that protocol."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import make_workspace, snakemake
from official_formats import (
    make_cars196,
    make_cub200,
    make_inshop,
    make_sop,
    md5,
    tar_gz,
    zip_folder,
)


def _cub(tmp: Path) -> dict:
    make_cub200(tmp / "src")
    tar_gz(
        tmp / "src" / "CUB_200_2011",
        tmp / "mirror" / "CUB_200_2011.tgz",
        "CUB_200_2011",
    )
    return {"source": "cub200", "protocol": "class_disjoint", "train_classes": 2}


def _cars(tmp: Path) -> dict:
    make_cars196(tmp / "src")
    tar_gz(tmp / "src" / "car_ims", tmp / "mirror" / "car_ims.tgz", "car_ims")
    shutil.copy(tmp / "src" / "cars_annos.mat", tmp / "mirror" / "cars_annos.mat")
    return {"source": "cars196", "protocol": "class_disjoint", "train_classes": 2}


def _sop(tmp: Path) -> dict:
    make_sop(tmp / "src")
    zip_folder(
        tmp / "src" / "Stanford_Online_Products",
        tmp / "mirror" / "Stanford_Online_Products.zip",
        "Stanford_Online_Products",
    )
    return {"source": "sop", "protocol": "class_disjoint"}


def _inshop(tmp: Path) -> dict:
    make_inshop(tmp / "src")
    zip_folder(tmp / "src" / "img", tmp / "mirror" / "img.zip", "img")
    shutil.copy(
        tmp / "src" / "list_eval_partition.txt",
        tmp / "mirror" / "list_eval_partition.txt",
    )
    return {"source": "inshop", "protocol": "class_disjoint"}


MINIATURES = {"cub200": _cub, "cars196": _cars, "sop": _sop, "inshop": _inshop}


def pinned(spec: dict, mirror: Path) -> dict:
    """``spec`` with the md5 of every file of the mirror pinned."""
    return {**spec, "checksums": {p.name: md5(p) for p in sorted(mirror.iterdir())}}


@pytest.mark.parametrize("source", sorted(MINIATURES))
def test_mirror_prepare_and_class_disjoint_split(tmp_path, source, capsys):
    from workflow.config import evaluation_spec, training_pool_spec
    from workflow.download import OfficialFile, fetch_files, plan_downloads
    from workflow.prepare import load_prepared, prepare
    from workflow.splits import (
        ALL_AGAINST_ALL,
        make_evaluation_split,
        make_training_split,
    )

    (tmp_path / "mirror").mkdir()
    spec = pinned(MINIATURES[source](tmp_path), tmp_path / "mirror")
    spec["image_size"] = 12
    keys, files = plan_downloads({"d": spec})
    raw = tmp_path / "raw" / keys["d"]
    record = fetch_files(
        [OfficialFile.from_dict(f) for f in files[keys["d"]]],
        raw,
        mirror=tmp_path / "mirror",
        cache=tmp_path / "cache",
    )
    log = capsys.readouterr().err
    for f in record["files"]:
        assert (
            f["checksum"].startswith("USER-PINNED")
            and f"{f['name']} was checked against a USER-PINNED" in log
        )
    assert json.loads((raw / "download.json").read_text()) == record

    out = tmp_path / "data"
    prepare(
        spec,
        out / "images.npy",
        out / "labels.parquet",
        out / "classes.json",
        root=raw,
        name="d",
    )
    images, labels, classes = load_prepared(out)
    assert images.shape[1:] == (12, 12, 3)  # the single-channel images too
    official = pd.read_parquet(out / "labels.parquet")["official_split"].to_numpy()

    for seed in [0, 1]:
        train = make_training_split(
            labels,
            official,
            seed,
            name="d",
            class_names=classes,
            **training_pool_spec(spec),
        )
        evaluation = make_evaluation_split(
            labels,
            official,
            seed,
            name="d",
            class_names=classes,
            **evaluation_spec(spec),
        )
        train_classes = set(labels[train["index"]].tolist())
        test_classes = set(labels[evaluation["index"]].tolist())
        assert train_classes and test_classes and not train_classes & test_classes
        assert train_classes | test_classes == set(
            range(len(classes))
        )  # every image of every class is used
        assert len(train) + len(evaluation) == len(labels)
        if source == "inshop":  # query against gallery, as published
            assert set(evaluation["split"]) == {"query", "database"}
            assert (
                official[evaluation["index"]] == evaluation["split"].to_numpy()
            ).all()
        else:
            assert set(evaluation["split"]) == {ALL_AGAINST_ALL}
    if source in ("cub200", "cars196"):
        assert train_classes == {0, 1}  # train_classes: 2, classes.json order
        few = make_training_split(
            labels, official, 0, train_per_class=2, name="d", **training_pool_spec(spec)
        )
        assert (
            set(labels[few["index"]].tolist()) == {0, 1} and len(few) == 4
        )  # regimes draw from training classes


@pytest.mark.parametrize("source", ["cub200", "cars196"])
def test_bounding_box_crop(tmp_path, source):
    """bounding_boxes: true crops each image to its published box, then
    resizes; the crop equals cropping the decoded file by hand."""
    from PIL import Image

    from workflow.datasets import load_dataset

    expected = (make_cub200 if source == "cub200" else make_cars196)(tmp_path)
    data = load_dataset(source, root=tmp_path, bounding_boxes=True)
    assert np.allclose(data.boxes, expected["boxes"])
    assert load_dataset(source, root=tmp_path).boxes is None  # off by default
    from workflow.images import decode_image

    for i in [0, 1, 5]:
        box = data.boxes[i]
        with Image.open(data.paths[i]) as image:
            by_hand = image.convert("RGB").crop(tuple(int(round(v)) for v in box))
        assert np.array_equal(
            decode_image(data.paths[i], None, box), np.asarray(by_hand)
        )
        # With a size, JPEG drafting decodes at a reduced scale that keeps the box at least that size.
        assert decode_image(data.paths[i], 10, box).shape == (10, 10, 3)


def test_validation_is_class_disjoint_inside_the_training_classes():
    """Selection of a class-disjoint dataset: validation classes are
    training classes, disjoint from the classes trials train on, and
    evaluated all against all."""
    from workflow.splits import ALL_AGAINST_ALL, make_training_split
    from workflow.validation_split import make_validation_split

    labels = np.repeat(np.arange(10), 6)
    official = np.full(len(labels), "none")
    common = dict(protocol="class_disjoint", train_classes=6)
    train = make_training_split(labels, official, 0, **common)
    validation = make_validation_split(
        labels, official, train, 0, class_fraction=0.5, **common
    )
    fit = set(labels[validation.loc[validation["split"] == "train", "index"]].tolist())
    held = set(
        labels[validation.loc[validation["split"] == ALL_AGAINST_ALL, "index"]].tolist()
    )
    assert set(validation["split"]) == {"train", ALL_AGAINST_ALL}
    assert (
        fit and held and not fit & held and fit | held == set(range(6))
    )  # test classes 6-9 never enter


def test_closed_set_settings_are_unchanged():
    """The protocol keys enter a dataset's split settings only when it is
    class-disjoint, so no closed-set cell is trained again."""
    from workflow.config import evaluation_spec, training_pool_spec

    assert training_pool_spec({"source": "sklearn_digits"}) == {
        "test_fraction": 0.3,
        "database_from": "test",
    }
    assert "protocol" not in evaluation_spec(
        {"source": "cub200", "protocol": "closed_set"}
    )
    assert (
        training_pool_spec({"source": "cub200", "protocol": "class_disjoint"})[
            "train_classes"
        ]
        == 100
    )
    assert (
        training_pool_spec({"source": "cars196", "protocol": "class_disjoint"})[
            "train_classes"
        ]
        == 98
    )
    assert (
        training_pool_spec({"source": "sop", "protocol": "class_disjoint"})[
            "train_classes"
        ]
        is None
    )


def test_user_files_are_registry_metadata():
    """Which loader parameter names the user's own files is declared with
    the registration, not probed from the signature."""
    import inspect

    import workflow.datasets as datasets

    for name in datasets.DATASETS.names():
        has_path = "path" in inspect.signature(datasets.DATASETS.get(name)).parameters
        assert (
            datasets.DATASETS.metadata(name).get("user_files") == "path"
        ) == has_path, name
    assert "signature" not in inspect.getsource(datasets.input_fingerprint)


def test_class_disjoint_run(tmp_path):
    """A short real run of the class-disjoint protocol on the CUB
    miniature (from the mirror, checksum pinned): no test class is trained
    on, and the test classes' images are embedded and evaluated all against all."""
    workdir = tmp_path / "run"
    (workdir / "mirror").mkdir(parents=True)
    spec = pinned(_cub(workdir), workdir / "mirror")
    config = {
        "data_mirror": "mirror",
        "datasets": {"cub": {**spec, "image_size": 8}},
        "regimes": {"k2": {"train_per_class": 2}},
        "backbones": {
            "small_cnn": {
                "arch": "small_cnn",
                "embedding_size": 8,
                "params": {"widths": [4, 8]},
            }
        },
        "losses": {"triplet": {"impl": "triplet"}, "cam": {"impl": "cam"}},
        "seeds": [0],
        "training": {"epochs": 1, "batch_size": 4},
    }
    make_workspace(workdir, config)
    cell = "results/cells/cub/k2/small_cnn/triplet/seed0"
    cam = "results/cells/cub/k2/small_cnn/cam/seed0"
    snakemake(workdir, "--cores", "2", f"{cell}/metrics.csv", f"{cam}/metrics.csv")
    labels = pd.read_parquet(workdir / "results/data/cub/labels.parquet")[
        "label"
    ].to_numpy()
    train = pd.read_parquet(workdir / "results/splits/cub/k2/seed0.train.parquet")
    embedded = pd.read_parquet(workdir / f"{cell}/embeddings.parquet")
    assert set(labels[train["index"]].tolist()) == {0, 1} and len(train) == 4
    assert set(embedded["split"]) == {"all"} and set(embedded["label"]) == {2, 3}
    metrics = pd.read_csv(workdir / f"{cell}/metrics.csv").set_index("metric")["value"]
    assert metrics[["map", "map@r", "r_precision"]].between(0, 1).all()
    assert (
        metrics["distance_computations_per_query"] == 11
    )  # each of the 12 test images against the others
    # No evaluation keys: the class-disjoint protocol writes CUB's usual
    # Recall@k cutoffs and NMI/AMI by itself (issue 27).
    assert {"recall@1", "recall@2", "recall@4", "recall@8", "nmi", "ami"} <= set(
        metrics.index
    )
    assert metrics[["recall@1", "nmi", "ami"]].notna().all()
    # CAM learns anchors of the 2 training classes only, not of the 2 test classes.
    model = torch.load(workdir / f"{cam}/model.pt", weights_only=True)
    assert (
        model["num_classes"] == 2
        and model["class_ids"] == [0, 1]
        and model["loss"]["anchors"].shape[0] == 2
    )
    assert pd.read_parquet(workdir / f"{cam}/anchors.parquet")["label"].tolist() == [
        0,
        1,
    ]
    assert "USER-PINNED" in json.dumps(
        json.loads(
            (workdir / "results/raw")
            .glob("cub200-*/download.json")
            .__next__()
            .read_text()
        )
    )


def _digits_cell(loss, classes):
    """A 1-epoch digits cell (conftest's tiny config) trained on the images of ``classes`` only."""
    from conftest import TINY_CONFIG

    from workflow.config import Cell, cell_settings
    from workflow.config_loader import load_config
    from workflow.datasets import load_dataset
    from workflow.training.loop import train_cell

    config = {
        **TINY_CONFIG,
        "training": {**TINY_CONFIG.get("training", {}), "epochs": 1, "batch_size": 32},
    }
    settings = cell_settings(
        load_config(config), Cell("digits", "full", "small_cnn", loss, 0)
    )
    data = load_dataset("sklearn_digits")
    train = np.flatnonzero(np.isin(data.labels, classes))[::4]
    return (
        data,
        settings,
        train_cell(data.images, data.labels, train, 10, settings, progress=False),
    )


@pytest.mark.parametrize(
    "loss, state", [("cam", "anchors"), ("ce", "classifier.weight")]
)
def test_the_loss_sees_only_the_training_classes(loss, state):
    """Class-disjoint training (here classes 1, 4, 7, 8 of ten): the loss
    has one anchor or classifier row per training class, trained on the
    labels remapped to 0..K-1, and model.pt records the mapping, through
    which embed gives predictions and anchors the dataset's labels. In the
    closed set (every class trains) the mapping is the identity."""
    from workflow.cell_files import class_ids
    from workflow.embedding import compute_embeddings
    from workflow.training.inputs import training_classes

    ids, remapped = training_classes(np.array([7, 1, 8, 4, 7]), 10)
    assert ids.tolist() == [1, 4, 7, 8] and remapped.tolist() == [2, 0, 3, 1, 2]
    with pytest.raises(ValueError, match="outside the dataset's 3 classes"):
        training_classes(np.array([0, 3]), 3)

    data, settings, model = _digits_cell(loss, [1, 4, 7, 8])
    assert model["num_classes"] == 4 and model["class_ids"] == [1, 4, 7, 8]
    assert model["loss"][state].shape[0] == 4
    embeddings, predictions, anchors = compute_embeddings(
        model, settings, data.images, np.arange(200)
    )
    assert set(predictions.tolist()) <= {1, 4, 7, 8}
    assert class_ids(model).tolist() == [1, 4, 7, 8] and (
        anchors is None or len(anchors) == 4
    )

    _, _, closed = _digits_cell(loss, list(range(10)))
    assert closed["num_classes"] == 10 and closed["class_ids"] == list(range(10))
    assert closed["loss"][state].shape[0] == 10
    # A model.pt written before the mapping was recorded: the identity.
    assert class_ids({"num_classes": 3}).tolist() == [0, 1, 2]

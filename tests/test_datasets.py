"""Dataset loaders and prepare: the real CIFAR-100 and Tiny ImageNet subset
through the pipeline's own rules (download from the mirror -> prepare ->
split), and SVHN, Food-101, Places365 and image folders on tiny files in
their official formats, including the LM paper's Places365 protocols on a
miniature and the errors for broken data."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile

import numpy as np
import pandas as pd
import pytest
from conftest import REPO, make_workspace, snakemake
from official_formats import (
    FOOD_CLASSES,
    HARD5,
    SHARED_DATASETS,
    jpeg_bytes,
    make_food101,
    make_imagefolder,
    make_places365,
    make_svhn,
)

from workflow.config import ConfigError
from workflow.datasets import DATASETS, RawDataset, load_dataset
from workflow.datasets.arrays import save_npz
from workflow.images import UndecodableImageError
from workflow.prepare import prepare
from workflow.splits import make_split

# ---------------------------------------------------------------- helpers


def run_prepare(tmp_path, spec, root=None, name="ds"):
    out = tmp_path / "data" / name
    prepare(
        spec,
        out / "images.npy",
        out / "labels.parquet",
        out / "classes.json",
        root=root,
        name=name,
        threads=2,
    )
    return (
        np.load(out / "images.npy", mmap_mode="r"),
        pd.read_parquet(out / "labels.parquet"),
        json.loads((out / "classes.json").read_text()),
    )


def split_of(labels: pd.DataFrame, seed=0, **kwargs) -> dict[str, np.ndarray]:
    frame = make_split(
        labels["label"].to_numpy(),
        labels["official_split"].to_numpy(),
        seed=seed,
        **kwargs,
    )
    return {
        s: frame.loc[frame["split"] == s, "index"].to_numpy()
        for s in ["train", "database", "query"]
    }


def per_class(labels: pd.DataFrame, index: np.ndarray, n_classes: int) -> np.ndarray:
    return np.bincount(labels["label"].to_numpy()[index], minlength=n_classes)


def test_every_dataset_is_registered():
    assert {
        "cifar100",
        "svhn",
        "tiny_imagenet",
        "food101",
        "places365",
        "imagefolder",
        "sklearn_digits",
        "npz",
    } <= set(DATASETS.names())


# ---------------------------------------------------------------- real data through Snakemake

REAL_CONFIG = {
    "data_mirror": str(SHARED_DATASETS),
    "datasets": {
        "c100": {"source": "cifar100", "query_per_class": 10, "database_per_class": 50},
        "tiny": {
            "source": "tiny_imagenet",
            "params": {"subset": True},
            "query_per_class": 10,
        },
        "own": {
            "source": "imagefolder",
            "params": {"path": "own_images"},
            "image_size": 16,
            "query_per_class": 1,
        },
        "pool": {
            "source": "npz",
            "params": {"path": "pool/c100.npz"},
            "query_per_class": 10,
            "database_per_class": 50,
        },
    },
    "regimes": {"fewshot5": {"train_per_class": 5}},
    "backbones": {"small_cnn": {"arch": "small_cnn", "embedding_size": 8}},
    "losses": {"ce": {"impl": "ce"}},
    "seeds": [0],
}
TARGETS = [
    path
    for d in REAL_CONFIG["datasets"]
    for path in [
        f"results/splits/{d}/fewshot5/seed0.train.parquet",
        f"results/splits/{d}/seed0.evaluation.parquet",
    ]
]


def read_split(run, dataset: str) -> pd.DataFrame:
    """The fewshot5 training split and the evaluation split of a dataset in one frame."""
    splits = run / "results/splits" / dataset
    return pd.concat(
        [
            pd.read_parquet(splits / "fewshot5/seed0.train.parquet"),
            pd.read_parquet(splits / "seed0.evaluation.parquet"),
        ]
    )


@pytest.fixture(scope="module")
def real_run(tmp_path_factory):
    """download -> prepare -> split with Snakemake for the real CIFAR-100,
    the Tiny ImageNet subset (both from ../shared/datasets) and an image
    folder of generated PNG/JPEG files."""
    workdir = make_workspace(tmp_path_factory.mktemp("real"), REAL_CONFIG)
    make_imagefolder(workdir / "own_images")
    # The CIFAR-100 pool that travels to a GPU machine, exported by the CLI.
    export = subprocess.run(
        [
            sys.executable,
            "-m",
            "workflow.export",
            "cifar100",
            "--root",
            str(SHARED_DATASETS),
            "--train-per-class",
            "7",
            "--out",
            str(workdir / "pool" / "c100.npz"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "10700 images" in export.stdout
    snakemake(workdir, "--cores", "2", *TARGETS)
    return workdir


def test_real_cifar100_checksums_are_verified_by_the_download_rule(real_run):
    raw = real_run / "results" / "raw" / "cifar100"
    record = json.loads((raw / "download.json").read_text())
    assert record["files"][0]["md5"] == "eb9058c3a382ffc7106e4002c42a8d85"
    log = (real_run / "results/logs/download/cifar100.log").read_text()
    assert "verified" in log and str(SHARED_DATASETS) in log
    assert sorted(p.name for p in (raw / "cifar-100-python").iterdir()) == [
        "meta",
        "test",
        "train",
    ]


def test_real_cifar100_prepared_shapes(real_run):
    data = real_run / "results" / "data" / "c100"
    images = np.load(data / "images.npy", mmap_mode="r")
    assert isinstance(images, np.memmap)
    assert images.shape == (60_000, 32, 32, 3) and images.dtype == np.uint8
    labels = pd.read_parquet(data / "labels.parquet")
    assert list(labels.columns) == ["label", "official_split", "file_id"]
    assert (labels["official_split"] == "train").sum() == 50_000
    assert (labels["official_split"] == "test").sum() == 10_000
    classes = json.loads((data / "classes.json").read_text())
    assert len(classes) == 100 and classes[:3] == ["apple", "aquarium_fish", "baby"]
    assert np.array_equal(np.bincount(labels["label"]), np.full(100, 600))
    assert (
        labels["file_id"].iloc[0] == "bos_taurus_s_000507.png"
    )  # first image of the official train file


def test_real_cifar100_few_shot_split(real_run):
    labels = pd.read_parquet(real_run / "results/data/c100/labels.parquet")
    split = read_split(real_run, "c100")
    sets = {
        s: split.loc[split["split"] == s, "index"].to_numpy()
        for s in ["train", "database", "query"]
    }
    assert len(sets["train"]) == 500
    assert np.array_equal(per_class(labels, sets["train"], 100), np.full(100, 5))
    assert np.array_equal(per_class(labels, sets["query"], 100), np.full(100, 10))
    assert np.array_equal(per_class(labels, sets["database"], 100), np.full(100, 50))
    assert not set(sets["database"]) & set(sets["query"])
    official = labels["official_split"].to_numpy()
    assert (official[sets["train"]] == "train").all()
    assert (official[np.concatenate([sets["database"], sets["query"]])] == "test").all()


def test_exported_npz_pool_holds_the_first_training_images_and_the_whole_test_side(
    real_run,
):
    """`python -m workflow.export cifar100 --train-per-class 7` -> the npz
    source -> prepare: the first 7 official training images of each class
    (file order) and all 10,000 test images, pixel for pixel."""
    full = pd.read_parquet(real_run / "results/data/c100/labels.parquet")
    full_images = np.load(real_run / "results/data/c100/images.npy", mmap_mode="r")
    pool = pd.read_parquet(real_run / "results/data/pool/labels.parquet")
    pool_images = np.load(real_run / "results/data/pool/images.npy", mmap_mode="r")
    train = full[full["official_split"] == "train"]
    expected = np.sort(
        np.concatenate(
            [train.index[train["label"] == c][:7] for c in range(100)]
            + [full.index[full["official_split"] == "test"]]
        )
    )
    assert len(pool) == 10_700
    assert list(pool["file_id"]) == list(full["file_id"].iloc[expected])
    assert list(pool["official_split"]) == list(full["official_split"].iloc[expected])
    assert np.array_equal(pool["label"], full["label"].iloc[expected])
    assert np.array_equal(pool_images, full_images[expected])
    assert json.loads(
        (real_run / "results/data/pool/classes.json").read_text()
    ) == json.loads((real_run / "results/data/c100/classes.json").read_text())
    split = read_split(real_run, "pool")
    assert (split["split"] == "train").sum() == 500 and (
        split["split"] == "query"
    ).sum() == 1000


def test_npz_round_trip_and_errors(tmp_path):
    digits = load_dataset("sklearn_digits")
    save_npz(digits, tmp_path / "d.npz", keep=np.arange(0, 1797, 3))
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically
    back = load_dataset("npz", path=tmp_path / "d.npz")
    assert np.array_equal(back.images, digits.images[::3]) and np.array_equal(
        back.labels, digits.labels[::3]
    )
    assert back.class_names == digits.class_names and back.official_split is None
    with pytest.raises(FileNotFoundError, match="npz path .*nowhere.npz: no such file"):
        load_dataset("npz", path=tmp_path / "nowhere.npz")
    np.savez(tmp_path / "bad.npz", images=digits.images)
    with pytest.raises(
        ValueError, match=r"bad.npz: missing the array\(s\) labels, class_names"
    ):
        load_dataset("npz", path=tmp_path / "bad.npz")
    np.savez(
        tmp_path / "objects.npz",
        images=digits.images,
        labels=digits.labels,
        class_names=np.asarray(digits.class_names, dtype=object),
    )
    with pytest.raises(
        ValueError, match="objects.npz: holds an object array"
    ):  # never unpickled
        load_dataset("npz", path=tmp_path / "objects.npz")


def test_real_tiny_imagenet_subset(real_run):
    data = real_run / "results" / "data" / "tiny"
    images = np.load(data / "images.npy", mmap_mode="r")
    labels = pd.read_parquet(data / "labels.parquet")
    classes = json.loads((data / "classes.json").read_text())
    assert images.shape == (30_000, 64, 64, 3)
    assert len(classes) == 200 and classes == sorted(classes)
    assert labels.groupby("official_split").size().to_dict() == {
        "test": 10_000,
        "train": 20_000,
    }
    # Validation labels are those of val_annotations.txt, read here independently.
    with zipfile.ZipFile(SHARED_DATASETS / "tiny-imagenet-200-subset.zip") as z:
        lines = z.read("tiny-imagenet-200/val/val_annotations.txt").decode().split("\n")
    expected = {f"val/images/{l.split()[0]}": l.split()[1] for l in lines if l.strip()}
    val = labels[labels["official_split"] == "test"]
    assert len(expected) == len(val) == 10_000
    assert all(
        classes[label] == expected[f] for f, label in zip(val["file_id"], val["label"])
    )
    train = labels[labels["official_split"] == "train"]
    assert all(
        f.split("/")[1] == classes[label]
        for f, label in zip(train["file_id"], train["label"])
    )
    split = read_split(real_run, "tiny")
    assert (split["split"] == "train").sum() == 1000


def test_imagefolder_through_snakemake(real_run):
    images = np.load(real_run / "results/data/own/images.npy", mmap_mode="r")
    assert images.shape == (30, 16, 16, 3)
    assert json.loads((real_run / "results/data/own/classes.json").read_text()) == [
        "cat",
        "dog",
        "owl",
    ]
    assert not (real_run / "results" / "raw" / "own").exists()  # nothing to download


def test_a_second_run_does_nothing(real_run):
    result = snakemake(real_run, "-n", *TARGETS)
    assert "Nothing to be done" in result.stdout + result.stderr


def test_changing_a_split_setting_does_not_prepare_again(real_run, tmp_path):
    import yaml

    config = yaml.safe_load((real_run / "config.yaml").read_text())
    config["datasets"]["c100"]["query_per_class"] = 20
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump(config))
    result = snakemake(
        real_run,
        "-n",
        *TARGETS,
        "--configfile",
        str(other),
        "--replace-workflow-config",
    )
    out = result.stdout + result.stderr
    assert (
        "rule evaluation_split" in out
        and "rule prepare" not in out
        and "rule download" not in out
    )
    assert (
        "rule train_split" not in out
    )  # the training images do not depend on the queries


# ---------------------------------------------------------------- SVHN


def test_svhn_mat_files(tmp_path):
    generated = make_svhn(tmp_path / "raw", n_train=30, n_test=20)
    data = load_dataset("svhn", root=tmp_path / "raw")
    assert isinstance(data, RawDataset)
    x_train, y_train = generated["train"]
    x_test, y_test = generated["test"]
    assert np.array_equal(
        data.images, np.concatenate([x_train, x_test], axis=3).transpose(3, 0, 1, 2)
    )
    raw_labels = np.concatenate([y_train, y_test]).reshape(-1).astype(np.int64)
    assert np.array_equal(data.labels, np.where(raw_labels == 10, 0, raw_labels))
    assert list(data.official_split) == ["train"] * 30 + ["test"] * 20
    assert data.file_ids[31] == "test_32x32.mat:1"
    images, labels, classes = run_prepare(
        tmp_path, {"source": "svhn", "image_size": 16}, root=tmp_path / "raw"
    )
    assert images.shape == (50, 16, 16, 3) and classes == [str(d) for d in range(10)]


# ---------------------------------------------------------------- Food-101


def test_food101_prepared_at_the_configured_size(tmp_path):
    lists = make_food101(tmp_path / "raw", n_train=4, n_test=2)
    images, labels, classes = run_prepare(
        tmp_path, {"source": "food101", "image_size": 12}, root=tmp_path / "raw"
    )
    assert classes == FOOD_CLASSES
    assert images.shape == (18, 12, 12, 3)
    assert list(labels["file_id"]) == [
        f"{e}.jpg" for e in lists["train"] + lists["test"]
    ]
    assert list(labels["official_split"]) == ["train"] * 12 + ["test"] * 6
    assert all(
        classes[l] == f.split("/")[0]
        for f, l in zip(labels["file_id"], labels["label"])
    )


def test_images_of_mixed_sizes_need_image_size(tmp_path):
    make_food101(tmp_path / "raw")
    with pytest.raises(ValueError, match=r"set datasets\.food\.image_size"):
        run_prepare(tmp_path, {"source": "food101"}, root=tmp_path / "raw", name="food")
    assert (
        not (tmp_path / "data" / "food").exists()
        or list((tmp_path / "data" / "food").iterdir()) == []
    )


def test_resize_keeps_the_centre(tmp_path):
    """Shorter side to S, then the centre crop: a 60x20 image of red, green
    and blue thirds becomes, at S=10, the green third (its border columns
    blend with the neighbours, as bilinear antialiasing does)."""
    from PIL import Image

    from workflow.images import decode_image

    pixels = np.zeros((20, 60, 3), dtype=np.uint8)
    for third in range(3):
        pixels[:, 20 * third : 20 * (third + 1), third] = 255
    Image.fromarray(pixels).save(tmp_path / "wide.png")
    out = decode_image(tmp_path / "wide.png", 10)
    assert out.shape == (10, 10, 3)
    assert (out[:, 1:-1] == [0, 255, 0]).all()
    assert out[:, 0, 0].min() > 0 and out[:, -1, 2].min() > 0


# ---------------------------------------------------------------- Places365


@pytest.fixture(scope="module")
def places(tmp_path_factory):
    root = tmp_path_factory.mktemp("places365")
    lists = make_places365(root, n_train=12, n_val=6)
    return root, lists


def test_places365_layout_and_class_names(places, tmp_path):
    root, lists = places
    images, labels, classes = run_prepare(
        tmp_path, {"source": "places365", "image_size": 8}, root=root
    )
    assert classes == ["airfield", "bazaar/indoor", *HARD5]
    assert images.shape == (7 * 12 + 7 * 6, 8, 8, 3)
    val = labels[labels["official_split"] == "test"]
    assert list(val["file_id"]) == [l.split()[0] for l in lists["val"]]
    assert list(val["label"]) == [int(l.split()[1]) for l in lists["val"]]
    train = labels[labels["official_split"] == "train"]
    assert train["file_id"].iloc[0] == "/a/airfield/00000001.jpg"


def test_places365_table1_protocol_on_a_miniature(places, tmp_path):
    """LM paper Table 1: from the validation set, 80 database and 8 query
    images per class (of 100); training on train-standard. Miniature: 6
    validation images per class, 4 database and 1 query."""
    root, _ = places
    _, labels, classes = run_prepare(
        tmp_path, {"source": "places365", "image_size": 8}, root=root
    )
    sets = split_of(labels, query_per_class=1, database_per_class=4)
    n = len(classes)
    assert np.array_equal(per_class(labels, sets["database"], n), np.full(n, 4))
    assert np.array_equal(per_class(labels, sets["query"], n), np.full(n, 1))
    official = labels["official_split"].to_numpy()
    assert (official[sets["database"]] == "test").all() and (
        official[sets["query"]] == "test"
    ).all()
    assert set(sets["train"]) == set(np.flatnonzero(official == "train"))


def test_places365_table2_protocol_on_a_miniature(places, tmp_path):
    """LM paper Table 2: the five hard classes; 1,000 training and another
    1,000 database images per class from train-standard; all 100 validation
    images per class as queries. Miniature: 12 train-standard images per
    class, 4 database + 4 training, all 6 validation images as queries."""
    root, lists = places
    spec = {"source": "places365", "image_size": 8, "classes": HARD5}
    _, labels, classes = run_prepare(tmp_path, spec, root=root, name="hard5")
    assert classes == HARD5
    assert len(labels) == 5 * (12 + 6)
    sets = split_of(
        labels,
        query_per_class=6,
        database_per_class=4,
        database_from="train",
        train_per_class=4,
    )
    official = labels["official_split"].to_numpy()
    for name, side, k in [
        ("train", "train", 4),
        ("database", "train", 4),
        ("query", "test", 6),
    ]:
        assert np.array_equal(per_class(labels, sets[name], 5), np.full(5, k)), name
        assert (official[sets[name]] == side).all(), name
    assert set(sets["query"]) == set(np.flatnonzero(official == "test"))
    assert not set(sets["train"]) & set(sets["database"])
    # The database depends on (dataset, seed) only, not on the regime.
    full = split_of(
        labels, query_per_class=6, database_per_class=4, database_from="train"
    )
    assert set(full["database"]) == set(sets["database"])
    assert len(full["train"]) == 5 * 8
    # Too few images: the class and the counts are named.
    with pytest.raises(
        ConfigError,
        match=r"class 0 \(roof_garden\) of hard5 has 8 after 4 database images",
    ):
        split_of(
            labels,
            query_per_class=6,
            database_per_class=4,
            database_from="train",
            train_per_class=10,
            name="hard5",
            class_names=classes,
        )


def test_an_unknown_class_name_is_named(places, tmp_path):
    root, _ = places
    with pytest.raises(
        ConfigError,
        match=r"datasets\.hard5\.classes: no class 'roof garden'.*roof_garden",
    ):
        run_prepare(
            tmp_path,
            {"source": "places365", "classes": ["roof garden"]},
            root=root,
            name="hard5",
        )


def test_a_missing_listed_image_is_an_error(places, tmp_path):
    root, _ = places
    copy = tmp_path / "copy"
    import shutil

    shutil.copytree(root, copy)
    (copy / "val_256" / "Places365_val_00000003.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="Places365_val_00000003.jpg"):
        run_prepare(
            tmp_path,
            {"source": "places365", "image_size": 8, "skip_undecodable": True},
            root=copy,
        )


# ---------------------------------------------------------------- image folders


def test_imagefolder_with_train_and_test(tmp_path):
    files = make_imagefolder(tmp_path / "imgs", n_train=6, n_test=4)
    images, labels, classes = run_prepare(
        tmp_path,
        {
            "source": "imagefolder",
            "params": {"path": str(tmp_path / "imgs")},
            "image_size": 8,
        },
    )
    assert classes == ["cat", "dog", "owl"]
    assert images.shape == (30, 8, 8, 3)
    assert list(labels["file_id"]) == files
    assert {f.rsplit(".", 1)[1] for f in files} == {"png", "jpg"}
    assert list(labels["official_split"]) == ["train"] * 18 + ["test"] * 12
    assert all(
        classes[l] == f.split("/")[1]
        for f, l in zip(labels["file_id"], labels["label"])
    )


def test_imagefolder_single_folder_uses_test_fraction(tmp_path):
    make_imagefolder(tmp_path / "imgs", n_train=8, n_test=2, divided=False)
    _, labels, classes = run_prepare(
        tmp_path,
        {
            "source": "imagefolder",
            "params": {"path": str(tmp_path / "imgs")},
            "image_size": 8,
        },
    )
    assert (labels["official_split"] == "none").all() and len(labels) == 30
    sets = split_of(labels, query_per_class=1, test_fraction=0.2)
    assert np.array_equal(per_class(labels, sets["train"], 3), np.full(3, 8))
    assert np.array_equal(per_class(labels, sets["query"], 3), np.full(3, 1))
    assert np.array_equal(per_class(labels, sets["database"], 3), np.full(3, 1))


def test_imagefolder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such folder"):
        load_dataset("imagefolder", path=tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no class folders found"):
        load_dataset("imagefolder", path=tmp_path / "empty")
    make_imagefolder(tmp_path / "imgs", n_train=2, n_test=1)
    (tmp_path / "imgs" / "test" / "dog").rename(tmp_path / "imgs" / "test" / "dogs")
    with pytest.raises(ValueError, match="only in one of them: dog, dogs"):
        load_dataset("imagefolder", path=tmp_path / "imgs")
    (tmp_path / "imgs" / "test" / "dogs").rename(tmp_path / "imgs" / "test" / "dog")
    for f in (tmp_path / "imgs" / "train" / "owl").iterdir():
        f.unlink()
    with pytest.raises(ValueError, match=r"class folder .*train/owl holds no"):
        load_dataset("imagefolder", path=tmp_path / "imgs")


# ---------------------------------------------------------------- undecodable images


def broken_folder(tmp_path):
    make_imagefolder(tmp_path / "imgs", n_train=3, n_test=2)
    bad = tmp_path / "imgs" / "train" / "dog" / "img01.png"
    bad.write_bytes(jpeg_bytes()[:40])  # a cut-off file: not decodable
    return bad


def test_an_undecodable_image_names_the_file_and_writes_nothing(tmp_path):
    bad = broken_folder(tmp_path)
    spec = {
        "source": "imagefolder",
        "params": {"path": str(tmp_path / "imgs")},
        "image_size": 8,
    }
    with pytest.raises(UndecodableImageError) as error:
        run_prepare(tmp_path, spec, name="mine")
    assert str(bad) in str(error.value) and "datasets.mine.skip_undecodable" in str(
        error.value
    )
    out = tmp_path / "data" / "mine"
    assert not out.exists() or list(out.iterdir()) == []


def test_undecodable_images_are_skipped_only_when_asked(tmp_path, capsys):
    broken_folder(tmp_path)
    spec = {
        "source": "imagefolder",
        "params": {"path": str(tmp_path / "imgs")},
        "image_size": 8,
        "skip_undecodable": True,
    }
    images, labels, _ = run_prepare(tmp_path, spec, name="mine")
    assert images.shape == (14, 8, 8, 3) and len(labels) == 14
    assert "train/dog/img01.png" not in set(labels["file_id"])
    assert "skipped 1 undecodable image(s) of 15" in capsys.readouterr().err
    # The kept rows are the images themselves, in order.
    from workflow.images import decode_image

    assert np.array_equal(
        images[13], decode_image(tmp_path / "imgs" / labels["file_id"].iloc[13], 8)
    )


# ---------------------------------------------------------------- the shipped CIFAR-100 config


def test_cifar100_fewshot_config_plans_its_grid(tmp_path):
    """config/cifar100_fewshot.yaml validates and plans one download, one
    prepare and a train/embed/evaluate job per cell; its mirror is the
    offline copy beside the repository."""
    import re

    import yaml
    from conftest import REPO

    path = REPO / "config" / "cifar100_fewshot.yaml"
    config = yaml.safe_load(path.read_text())
    assert (REPO / config["data_mirror"]).resolve() == SHARED_DATASETS.resolve()
    n_cells = len(config["regimes"]) * len(config["losses"]) * len(config["seeds"])
    workdir = make_workspace(tmp_path / "ws", config)
    out = snakemake(
        workdir, "-n", "--configfile", str(path), "--replace-workflow-config"
    ).stdout
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", out, flags=re.M))
    assert counts["download"] == "1" and counts["prepare"] == "1"
    assert counts["train"] == counts["embed"] == counts["evaluate"] == str(n_cells)


def test_cifar100_gpu_config_plans_its_grid_from_the_npz_pool(tmp_path):
    """config/cifar100_fewshot_gpu.yaml (the lent GPU's run) reads the
    exported .npz pool: nothing to download, one prepare, a train/embed/
    evaluate job per cell of the CIFAR ResNet-18 grid."""
    import re

    import yaml

    path = REPO / "config" / "cifar100_fewshot_gpu.yaml"
    config = yaml.safe_load(path.read_text())
    assert config["datasets"]["cifar100"]["source"] == "npz"
    assert list(config["backbones"]) == ["cifar_resnet18"]
    n_cells = len(config["regimes"]) * len(config["losses"]) * len(config["seeds"])
    workdir = make_workspace(tmp_path / "ws", config)
    out = snakemake(
        workdir, "-n", "--configfile", str(path), "--replace-workflow-config"
    ).stdout
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", out, flags=re.M))
    assert "download" not in counts and counts["prepare"] == "1"
    assert (
        counts["train"] == counts["embed"] == counts["evaluate"] == str(n_cells) == "30"
    )

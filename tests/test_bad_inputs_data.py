"""The catalogue of bad inputs (see tests/test_bad_inputs.py), dataset
preparation: ``prepare`` errors (nothing written) and split errors
in-process, wrong outcomes made right (a 16-bit PNG, LaTeX escaping), data
errors in one real ``snakemake -k`` run of several datasets, each broken in
its own way (mirror files, image folders, split sizes; each case's job log
must hold its message and its outputs must not exist), and the DML
datasets' files."""

from __future__ import annotations

import copy
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from bad_inputs import (
    BASE,
    CIFAR_META_MD5,
    _cub_archive,
    _fetch,
    _folder_case,
    _md5_of,
    _npz,
    _npz_case,
    _Planted,
    assert_prepare_error,
    leftovers,
)
from conftest import REPO, make_workspace, read_test_config, snakemake
from official_formats import (
    ARITHMETIC_JPEG,
    SHARED_DATASETS,
    jpeg_bytes,
    make_imagefolder,
)

# ---------------------------------------------------------------- prepare and split errors (in-process)

# (id, dataset (name, config entry) from a tmp folder, message fragments)
PREPARE_CASES = [
    (
        "one_class_dataset",
        lambda tmp: (
            "one",
            {
                "source": "npz",
                "params": {"path": str(_npz(tmp / "one.npz", [0] * 12, ["cat"]))},
            },
        ),
        [
            "dataset one: 1 class with images (class 0 (cat)); retrieval needs at least 2 classes"
        ],
    ),
    (
        "one_class_with_images",
        lambda tmp: (
            "two",
            {
                "source": "npz",
                "params": {
                    "path": str(_npz(tmp / "two.npz", [1] * 12, ["cat", "dog"]))
                },
            },
        ),
        [
            "dataset two: 1 class with images (class 1 (dog)); retrieval needs at least 2 classes"
        ],
    ),
    (
        "fractional_npz_labels",
        lambda tmp: (
            "frac",
            {
                "source": "npz",
                "params": {
                    "path": str(
                        _npz(tmp / "frac.npz", [0.0, 1.0, 0.7, 1.7] * 3, ["a", "b"])
                    )
                },
            },
        ),
        [
            "frac.npz: labels must be integers (class numbers 0..C-1), found 0.7 at position 2 (6 such labels)"
        ],
    ),
    (
        "nan_npz_labels",
        lambda tmp: (
            "nan",
            {
                "source": "npz",
                "params": {
                    "path": str(
                        _npz(tmp / "nan.npz", [0.0, 1.0, np.nan] * 4, ["a", "b"])
                    )
                },
            },
        ),
        [
            "nan.npz: labels must be integers (class numbers 0..C-1), found nan at position 2"
        ],
    ),
    (
        "float32_image_without_a_range",
        lambda tmp: (
            "floats",
            {
                "source": "imagefolder",
                "params": {"path": str(_float_images(tmp / "floats"))},
                "image_size": 4,
            },
        ),
        [
            "cannot decode the image (floating-point pixels (Pillow mode F) have no fixed range to scale to 8 bits"
        ],
    ),
    # npz files: each error names the file, the value found and what is expected.
    (
        "pickle_saved_as_npz",
        lambda tmp: _npz_case(
            tmp,
            "pickled",
            lambda p: p.write_bytes(
                __import__("pickle").dumps(_Planted(tmp / "unpickled"))
            ),
        ),
        [
            "pickled.npz: not an npz archive: it starts with b'\\x80\\x04",
            "not the zip signature",
            "never loaded: unpickling can run code",
            "save the arrays with numpy.savez",
        ],
    ),
    (
        "random_bytes_saved_as_npz",
        lambda tmp: _npz_case(
            tmp, "noise", lambda p: p.write_bytes(b"GIF89a" + bytes(range(200)))
        ),
        [
            "noise.npz: not an npz archive: it starts with b'GIF89a\\x00\\x01'",
            "save the arrays with numpy.savez",
        ],
    ),
    (
        "npz_float_images",
        lambda tmp: _npz_case(
            tmp, "fimg", lambda p: _npz(p, [0, 1] * 6, ["a", "b"], dtype=np.float32)
        ),
        [
            "fimg.npz: images must be uint8 with shape (N, H, W, C), found dtype float32 and shape (12, 4, 4, 1)",
            "store 8-bit pixel values 0..255 as uint8",
        ],
    ),
    (
        "npz_images_without_a_channel_axis",
        lambda tmp: _npz_case(
            tmp, "grey", lambda p: _npz(p, [0, 1] * 6, ["a", "b"], shape=(4, 4))
        ),
        [
            "grey.npz: images must be uint8 with shape (N, H, W, C), found dtype uint8 and shape (12, 4, 4)",
            "add the channel axis",
        ],
    ),
    (
        "npz_label_count",
        lambda tmp: _npz_case(
            tmp, "count", lambda p: _npz(p, [0, 1] * 6, ["a", "b"], n_images=13)
        ),
        [
            "count.npz: labels has shape (12,) for 13 images; one label per image is required"
        ],
    ),
    (
        "npz_label_out_of_range",
        lambda tmp: _npz_case(
            tmp,
            "range",
            lambda p: _npz(p, [0, 1, 0, 5, 1, 0, 1, -1] + [0, 1] * 2, ["a", "b"]),
        ),
        [
            "range.npz: label 5 at position 3 (2 such labels) is no class number: there are 2 class names, "
            "so labels must lie in 0..1"
        ],
    ),
    (
        "npz_official_split_holds_val",
        lambda tmp: _npz_case(
            tmp,
            "val",
            lambda p: _npz(
                p,
                [0, 1] * 6,
                ["a", "b"],
                official_split=np.array(["train", "test", "val"] * 4),
            ),
        ),
        [
            "val.npz: official_split holds 'val'; each image's value must be 'train' or 'test'"
        ],
    ),
    (
        "npz_official_split_length",
        lambda tmp: _npz_case(
            tmp,
            "sides",
            lambda p: _npz(
                p,
                [0, 1] * 6,
                ["a", "b"],
                official_split=np.array(["train", "test"] * 5),
            ),
        ),
        [
            "sides.npz: official_split has shape (10,) for 12 images; one value per image is required"
        ],
    ),
    (
        "empty_npz",
        lambda tmp: _npz_case(tmp, "void", lambda p: _npz(p, [], ["a", "b"])),
        ["void.npz: holds no images (images has shape (0, 4, 4, 1))"],
    ),
    # image folders: nothing is skipped without a word.
    (
        "dangling_image_symlink",
        lambda tmp: _folder_case(
            tmp,
            "dangling",
            lambda r: (r / "train/dog/gone.jpg").symlink_to(r / "nowhere.jpg"),
        ),
        [
            "dangling/train/dog/gone.jpg: a symbolic link whose target is missing or that loops (No such file"
        ],
    ),
    (
        "class_folder_symlink_loop",
        lambda tmp: _folder_case(
            tmp,
            "loop",
            lambda r: [
                (r / side / "eel").symlink_to(r / side / "eel")
                for side in ["train", "test"]
            ],
        ),
        [
            "loop/train/eel: a symbolic link whose target is missing or that loops (Too many levels of symbolic links)"
        ],
    ),
    (
        "subfolder_linked_to_a_folder_above",
        lambda tmp: _folder_case(
            tmp, "cycle", lambda r: (r / "train/dog/up").symlink_to(r / "train")
        ),
        [
            "cycle/train/dog/up: a symbolic link to",
            "cycle/train, a folder it lies in (a loop)",
        ],
    ),
    (
        "folder_beside_train_and_test",
        lambda tmp: _folder_case(
            tmp,
            "sides3",
            lambda r: __import__("shutil").copytree(r / "train", r / "val"),
        ),
        ["sides3: beside train/ and test/ it holds val/, which would not be read"],
    ),
    (
        "image_outside_a_class_folder",
        lambda tmp: _folder_case(
            tmp,
            "stray",
            lambda r: (r / "test" / "owl" / "img00.jpg").rename(r / "test" / "x.JPG"),
        ),
        [
            "stray/test/x.JPG is an image outside any class folder; move it into its class folder"
        ],
    ),
]


def _float_images(root: Path) -> Path:
    """Two class folders of 32-bit float images (TIFF bytes under a .png
    name: Pillow decodes by content)."""
    from PIL import Image

    for name in ["a", "b"]:
        (root / name).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((4, 4), 0.5 * i, dtype=np.float32)).save(
                root / name / f"{i}.png", format="TIFF"
            )
    return root


@pytest.mark.parametrize("case", PREPARE_CASES, ids=[c[0] for c in PREPARE_CASES])
def test_prepare_error(tmp_path, case):
    """prepare stops with the message and writes none of its outputs."""
    assert_prepare_error(tmp_path, case)
    assert not (tmp_path / "unpickled").exists()  # no planted pickle ever runs


# (id, split arguments, message fragments): make_evaluation_split and
# make_training_split must both refuse (they share the pools).
SPLIT_CASES = [
    (
        "held_out_share_rounds_to_zero",
        dict(
            labels=np.array([0] * 10 + [1] * 10 + [2]),
            official_split=np.full(21, "none"),
            test_fraction=0.3,
        ),
        [
            "config key datasets.d.test_fraction: 0.3 of the 1 images of class 2 (owl) rounds to 0 held-out images, "
            "so that class would get no queries",
            "raise test_fraction",
        ],
    ),
    (
        "held_out_share_rounds_to_all",
        dict(
            labels=np.array([0] * 10 + [1] * 10 + [2]),
            official_split=np.full(21, "none"),
            test_fraction=0.6,
        ),
        [
            "config key datasets.d.test_fraction: 0.6 of the 1 images of class 2 (owl) rounds to 1 held-out images, "
            "so that class would keep no training images",
            "lower test_fraction",
        ],
    ),
    (
        "class_missing_on_the_official_test_side",
        dict(
            labels=np.array([0] * 10 + [1] * 10 + [2] * 5),
            official_split=np.array(["train", "test"] * 10 + ["train"] * 5),
        ),
        [
            "dataset d: class 2 (owl) has no images on the official test side, so it would get no queries",
            "config key datasets.d.classes",
        ],
    ),
    (
        "one_class_split",
        dict(labels=np.zeros(20, dtype=int), official_split=np.full(20, "none")),
        [
            "dataset d: 1 class with images (class 0 (cat)); retrieval needs at least 2 classes"
        ],
    ),
    # The class-disjoint protocol (issue 21).
    (
        "class_disjoint_boundary_beyond_the_classes",  # a 3-class subset of CUB at the official boundary of 100
        dict(
            labels=np.repeat([0, 1, 2], 4),
            official_split=np.full(12, "none"),
            protocol="class_disjoint",
            train_classes=100,
        ),
        [
            "config key datasets.d.train_classes: 100 with 3 classes (labels 0..2) leaves no test class",
            "the protocol needs at least 4 classes (2 to train, 2 to test)",
        ],
    ),
    (
        "class_disjoint_official_sides_sharing_a_class",
        dict(
            labels=np.repeat([0, 1, 2], 4),
            official_split=np.array(["train", "test"] * 6),
            protocol="class_disjoint",
        ),
        [
            "dataset d: class 0 (cat) has images on both official sides (train and test)",
            "set config key datasets.d.train_classes: N",
        ],
    ),
    (
        "class_disjoint_without_a_division",
        dict(
            labels=np.repeat([0, 1, 2], 4),
            official_split=np.full(12, "none"),
            protocol="class_disjoint",
        ),
        [
            "dataset d: protocol class_disjoint needs a division of the classes",
            "datasets.d.train_classes: N",
        ],
    ),
    (
        "closed_set_on_class_disjoint_sides",  # SOP's or In-Shop's division read as a closed set
        dict(
            labels=np.repeat([0, 1, 2], 4),
            official_split=np.array(["train"] * 8 + ["test"] * 4),
        ),
        [
            "dataset d: class 0 (cat) has no images on the official test side (2 classes have none)",
            "needs datasets.d.protocol: class_disjoint",
        ],
    ),
]


@pytest.mark.parametrize("case", SPLIT_CASES, ids=[c[0] for c in SPLIT_CASES])
def test_split_error(case):
    from workflow.config import ConfigError
    from workflow.splits import make_evaluation_split, make_training_split

    _, arguments, fragments = case
    common = dict(seed=0, name="d", class_names=["cat", "dog", "owl"], **arguments)
    for make in [
        lambda: make_evaluation_split(query_per_class=1, **common),
        lambda: make_training_split(**common),
    ]:
        with pytest.raises(ConfigError) as error:
            make()
        for fragment in fragments:
            assert fragment in str(error.value), f"{fragment!r} not in {error.value}"


# ---------------------------------------------------------------- wrong outcomes made right


def sixteen_bit_png_is_scaled(tmp_path):
    """A 16-bit greyscale PNG whose values span 0..65535 becomes 0..255
    (round(v / 257)), not clipped to white."""
    from PIL import Image

    from workflow.prepare import decode_image

    values = np.linspace(0, 65535, 64).round().astype(np.uint16).reshape(8, 8)
    Image.fromarray(values).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I;16")
    decoded = decode_image(tmp_path / "deep.png", None)
    assert decoded.dtype == np.uint8 and decoded.shape == (8, 8, 3)
    assert np.array_equal(decoded[..., 0], np.rint(values / 257).astype(np.uint8))
    assert decoded.min() == 0 and decoded.max() == 255 and len(np.unique(decoded)) == 64
    resized = decode_image(tmp_path / "deep.png", 4)[
        ..., 0
    ]  # resized after scaling: still a gradient
    assert (
        resized.min() < 64
        and resized.max() > 192
        and np.all(np.diff(resized.ravel()[::5]) > 0)
    )


# What each LaTeX special character must become: none may reach the .tex as is.
TEX_EXPECTED = {
    "\\": r"\textbackslash{}",
    "{": r"\{",
    "}": r"\}",
    "#": r"\#",
    "$": r"\$",
    "%": r"\%",
    "&": r"\&",
    "_": r"\_",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "<": "$<$",
    ">": "$>$",
    "|": r"\textbar{}",
    "±": r"$\pm$",
}


def latex_captions_are_escaped(tmp_path):
    """Every special character of a caption and of row labels is escaped:
    against the full table, then in a rendered .tex, whose caption and
    rows hold no unescaped special character (no TeX engine is needed)."""

    sys.path.insert(0, str(REPO / "tests"))
    from test_tables import metrics_frame

    from workflow.table_text import render, tex_escape
    from workflow.tables import build_table

    for char, expected in TEX_EXPECTED.items():
        assert tex_escape(f"a{char}b") == f"a{expected}b", char
    nasty = "".join(TEX_EXPECTED)
    assert tex_escape(nasty) == "".join(
        TEX_EXPECTED.values()
    )  # one pass: nothing escaped twice
    decl = {
        "caption": f"Costs: 50% of #1 {nasty}",
        "columns": ["regime"],
        "metrics": ["map"],
        "rows": [
            {"label": "CE #1 {x}", "loss": "ce"},
            {"label": "CAM_$^", "loss": "cam"},
        ],
        "baseline": "CE #1 {x}",
    }
    latex = render("t", decl, build_table("t", decl, metrics_frame()))[2]
    caption = re.search(r"\\caption\{(.*)\}\n", latex).group(1)
    assert caption.startswith(r"Costs: 50\% of \#1 " + "".join(TEX_EXPECTED.values()))
    body = latex.split(r"\midrule")[1].split(r"\bottomrule")[0]
    assert r"CE \#1 \{x\}" in body and r"CAM\_\$\textasciicircum{}" in body
    escaped = r"\\(textbackslash|textasciitilde|textasciicircum|textbar)\{\}|\\[{}#$%&_]|\$(\\pm|<|>)\$"
    labels = [line.split(" & ")[0] for line in body.strip().splitlines()]
    for text in [caption, *labels]:
        assert not set(re.sub(escaped, "", text)) & set("#$%&_~^\\<>|{}"), text


def every_pillow_format_is_read(tmp_path):
    """BMP, GIF, TIFF and WebP files beside PNG and JPEG ones (any case of
    extension, in subfolders too) are read; hidden files and files of other
    extensions are not."""
    from PIL import Image

    from workflow.prepare import prepare

    make_imagefolder(tmp_path / "mixed", n_train=2, n_test=1)
    cat = tmp_path / "mixed" / "train" / "cat"
    for name, value in [
        ("a.bmp", 10),
        ("b.GIF", 20),
        ("c.tif", 30),
        ("deeper/d.webp", 40),
    ]:
        (cat / name).parent.mkdir(exist_ok=True)
        Image.fromarray(np.full((8, 8, 3), value, dtype=np.uint8)).save(cat / name)
    (cat / "README.txt").write_text("not an image")
    (cat / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    out = tmp_path / "data"
    out.mkdir()
    prepare(
        {
            "source": "imagefolder",
            "params": {"path": str(tmp_path / "mixed")},
            "image_size": 8,
        },
        out / "images.npy",
        out / "labels.parquet",
        out / "classes.json",
        name="mixed",
    )
    labels = pd.read_parquet(out / "labels.parquet")
    images = np.load(out / "images.npy")
    assert len(labels) == 13
    read = {f: images[i] for i, f in enumerate(labels["file_id"])}
    for name, value in [
        ("a.bmp", 10),
        ("b.GIF", 20),
        ("c.tif", 30),
        ("deeper/d.webp", 40),
    ]:
        assert np.abs(read[f"train/cat/{name}"].astype(int) - value).max() <= 2, (
            name
        )  # WebP is lossy
    assert not any(f.endswith(("README.txt", ".DS_Store")) for f in read)


def changed_user_files_are_prepared_again(tmp_path):
    """A real run; then, with nothing changed, nothing to be done; then an
    image added to the folder, an image replaced and the .npz replaced:
    both datasets are prepared again and their arrays show the change."""
    from PIL import Image

    config = copy.deepcopy(BASE)
    config["datasets"] = {
        "own": {"source": "imagefolder", "params": {"path": "own"}, "image_size": 8},
        "arr": {"source": "npz", "params": {"path": "arr.npz"}},
    }
    workdir = make_workspace(tmp_path / "work", config)
    make_imagefolder(workdir / "own", n_train=2, n_test=1)
    _npz(workdir / "arr.npz", [0, 1] * 3, ["a", "b"])
    targets = ["results/data/own/images.npy", "results/data/arr/images.npy"]
    snakemake(workdir, "--cores", "2", *targets)
    assert (
        np.load(workdir / targets[0]).shape[0] == 9
        and np.load(workdir / targets[1]).shape[0] == 6
    )
    again = snakemake(workdir, "-n", *targets)
    assert "Nothing to be done" in again.stdout + again.stderr

    Image.fromarray(np.full((8, 8, 3), 77, dtype=np.uint8)).save(
        workdir / "own" / "train" / "cat" / "new.bmp"
    )
    replaced = workdir / "own" / "test" / "dog" / "img00.jpg"
    Image.fromarray(np.full((8, 8, 3), 200, dtype=np.uint8)).save(
        replaced, format="JPEG", quality=100
    )
    _npz(workdir / "arr.npz", [0, 1] * 4, ["a", "b"])
    rerun = snakemake(workdir, "--cores", "2", *targets)
    assert (rerun.stdout + rerun.stderr).count("rule prepare:") == 2
    labels = pd.read_parquet(workdir / "results/data/own/labels.parquet")
    images = np.load(workdir / targets[0])
    assert len(labels) == 10 and "train/cat/new.bmp" in set(labels["file_id"])
    row = list(labels["file_id"]).index("test/dog/img00.jpg")
    assert np.abs(images[row].astype(int) - 200).max() <= 2
    assert np.load(workdir / targets[1]).shape[0] == 8
    again = snakemake(workdir, "-n", *targets)
    assert "Nothing to be done" in again.stdout + again.stderr


def arithmetic_coded_jpeg_is_stored_as_baseline(tmp_path):
    """With ``storage: jpeg``, a JPEG that Pillow reads but a decoder of
    training does not (arithmetic-coded: nvJPEG has no arithmetic decoding)
    is encoded again at prepare, a baseline JPEG of the same pixels;
    baseline JPEGs of at most the storage size keep their own bytes."""
    from PIL import Image

    from workflow.datasets import load_dataset
    from workflow.jpeg_store import JpegStore, frame_of
    from workflow.prepare import write_prepared

    root = tmp_path / "img"
    names = make_imagefolder(root, n_train=2, n_test=2)
    (root / "train/cat/img00.jpg").write_bytes(ARITHMETIC_JPEG)
    with Image.open(root / "train/cat/img00.jpg") as image:
        original = np.asarray(image.convert("RGB"), dtype=float)
    data = load_dataset("imagefolder", path=str(root))
    out = tmp_path / "data" / "pics"
    write_prepared(
        data,
        out / "images.jpegs",
        out / "labels.parquet",
        out / "classes.json",
        image_size=24,
        name="pics",
        storage="jpeg",
    )
    store = JpegStore(out / "images.jpegs")
    i = list(data.file_ids).index("train/cat/img00.jpg")
    stored = store.read([i])[0].numpy().tobytes()
    assert frame_of(ARITHMETIC_JPEG) == (0xC9, 8) and frame_of(stored) == (
        0xC0,
        8,
    )  # baseline now
    assert (store.heights[i], store.widths[i]) == (12, 16)
    assert (
        np.abs(store[i].astype(float) - original).mean() < 3
    )  # quality 90 of the same pixels
    assert len(store.decode(np.arange(len(store)))) == len(names)
    small = [
        k
        for k, name in enumerate(data.file_ids)
        if name.endswith(".jpg") and k != i and min(Image.open(root / name).size) <= 24
    ]
    assert small and all(
        store.read([k])[0].numpy().tobytes() == (root / data.file_ids[k]).read_bytes()
        for k in small
    )


OUTCOME_CASES = [
    ("sixteen_bit_png_is_scaled", sixteen_bit_png_is_scaled),
    (
        "arithmetic_coded_jpeg_is_stored_as_baseline",
        arithmetic_coded_jpeg_is_stored_as_baseline,
    ),
    ("latex_captions_are_escaped", latex_captions_are_escaped),
    ("every_pillow_format_is_read", every_pillow_format_is_read),
    ("changed_user_files_are_prepared_again", changed_user_files_are_prepared_again),
]


@pytest.mark.parametrize("case", OUTCOME_CASES, ids=[c[0] for c in OUTCOME_CASES])
def test_outcome(tmp_path, case):
    case[1](tmp_path)


# ---------------------------------------------------------------- data errors (a real run)

TINY_OFFICIAL_MD5 = "90528d7ca1a48142e341f4ef8d21d0de"
TINY_SUBSET_MD5 = "3720c701c700f824f268e9d6974d016b"


DATA_CONFIG = read_test_config("data_errors")


# (id, dataset, the job log holding the message, outputs that must not exist, fragments)
DATA_CASES = [
    (
        "missing_mirror_file",
        "tiny",
        "download/tiny_imagenet.log",
        ["raw/tiny_imagenet", "data/tiny"],
        [
            "data_mirror mirror: tiny-imagenet-200.zip is missing",
            TINY_OFFICIAL_MD5,
            "Put the official file",
        ],
    ),
    (
        "flipped_byte_in_mirror",
        "c100",
        "download/cifar100.log",
        ["raw/cifar100", "data/c100"],
        [
            "mirror/cifar-100-python/meta: md5 is",
            f"expected {CIFAR_META_MD5}",
            f"Put the official file (md5 {CIFAR_META_MD5}) at mirror/cifar-100-python/meta",
        ],
    ),
    (
        "truncated_archive",
        "tiny_sub",
        "download/{tiny_sub}.log",
        ["raw/{tiny_sub}", "data/tiny_sub"],
        [
            "mirror/tiny-imagenet-200-subset.zip: md5 is",
            f"expected {TINY_SUBSET_MD5}",
            "It is not the official tiny-imagenet-200-subset.zip",
            "into the data_mirror folder mirror",
        ],
    ),
    (
        "undecodable_image",
        "broken",
        "prepare/broken.log",
        ["data/broken"],
        [
            "img/broken/train/dog/img01.png: cannot decode the image",
            "Replace or delete the file",
            "datasets.broken.skip_undecodable: true",
        ],
    ),
    (
        "empty_class_folder",
        "empty_class",
        "prepare/empty_class.log",
        ["data/empty_class"],
        [
            "class folder img/empty_class/train/owl holds no image files (none with an extension Pillow reads",
            "add images to it or remove it",
        ],
    ),
    (
        "pickle_saved_as_npz_in_a_run",
        "pickled",
        "prepare/pickled.log",
        ["data/pickled"],
        [
            "pickled.npz: not an npz archive: it starts with b'\\x80",
            "never loaded: unpickling can run code",
        ],
    ),
    (
        "empty_dataset_folder",
        "empty",
        "prepare/empty.log",
        ["data/empty"],
        [
            "imagefolder img/empty: no class folders found; expected img/empty/train/<class>/"
        ],
    ),
    (
        "missing_dataset_folder",
        "nowhere",
        "prepare/nowhere.log",
        ["data/nowhere"],
        ["imagefolder path img/nowhere: no such folder; set the dataset's params.path"],
    ),
    (
        "k_larger_than_smallest_class",
        "small",
        "train_split/small/k5/seed0.log",
        ["splits/small"],
        [
            "config key regimes.k5.train_per_class: 5 training images per class asked, class 2 (owl) of small has 3",
            "lower it",
        ],
    ),
    (
        "more_queries_than_images",
        "too_many_queries",
        "evaluation_split/too_many_queries/seed0.log",
        ["splits/too_many_queries"],
        [
            "config keys datasets.too_many_queries.query_per_class/database_per_class: class 0 (0) has",
            "fewer than 1000 queries plus 1 database images; lower them",
        ],
    ),
    (
        "database_larger_than_available",
        "too_big_database",
        "evaluation_split/too_big_database/seed0.log",
        ["splits/too_big_database"],
        [
            "config keys datasets.too_big_database.query_per_class/database_per_class: class 0 (0) has",
            "fewer than 10 queries plus 1000 database images",
        ],
    ),
]


def make_data_workspace(workdir: Path) -> None:
    mirror = workdir / "mirror"
    cifar = mirror / "cifar-100-python"
    cifar.mkdir(parents=True)
    for name in ["train", "test"]:
        (cifar / name).symlink_to(SHARED_DATASETS / "cifar-100-python" / name)
    meta = bytearray((SHARED_DATASETS / "cifar-100-python" / "meta").read_bytes())
    meta[len(meta) // 2] ^= 0x01  # one flipped bit
    (cifar / "meta").write_bytes(bytes(meta))
    with open(SHARED_DATASETS / "tiny-imagenet-200-subset.zip", "rb") as f:
        (mirror / "tiny-imagenet-200-subset.zip").write_bytes(
            f.read(1 << 20)
        )  # cut off after 1 MiB
    img = workdir / "img"
    make_imagefolder(img / "broken", n_train=3, n_test=2)
    (img / "broken" / "train" / "dog" / "img01.png").write_bytes(jpeg_bytes()[:40])
    make_imagefolder(img / "empty_class", n_train=3, n_test=2)
    for f in (img / "empty_class" / "train" / "owl").iterdir():
        f.unlink()
    (img / "empty").mkdir()
    import pickle

    (workdir / "pickled.npz").write_bytes(
        pickle.dumps({"images": [1]})
    )  # never unpickled
    make_imagefolder(img / "small", n_train=6, n_test=2)
    for f in sorted((img / "small" / "train" / "owl").iterdir())[3:]:
        f.unlink()  # owl, the smallest class, keeps 3 training images


@pytest.fixture(scope="module")
def data_run(tmp_path_factory) -> dict:
    workdir = make_workspace(tmp_path_factory.mktemp("data_cases"), DATA_CONFIG)
    make_data_workspace(workdir)
    # Each dataset's split that fails: the training split where a regime asks
    # for too many images (small), the evaluation split elsewhere.
    targets = [
        f"results/splits/{d}/k5/seed0.train.parquet"
        if d == "small"
        else f"results/splits/{d}/seed0.evaluation.parquet"
        for d in DATA_CONFIG["datasets"]
    ]
    result = snakemake(workdir, "--cores", "2", "--keep-going", *targets, check=False)
    from workflow.download import plan_downloads

    keys, _ = plan_downloads(DATA_CONFIG["datasets"])
    return {
        "workdir": workdir,
        "result": result,
        "keys": {"tiny_sub": keys["tiny_sub"]},
    }


@pytest.mark.parametrize("case", DATA_CASES, ids=[c[0] for c in DATA_CASES])
def test_data_error(data_run, case):
    name, dataset, log, outputs, fragments = case
    workdir, result = data_run["workdir"], data_run["result"]
    assert result.returncode == 1
    log_path = workdir / "results" / "logs" / log.format(**data_run["keys"])
    text = log_path.read_text()
    for fragment in fragments:
        assert fragment in text, f"{fragment!r} not in {log_path}:\n{text}"
        assert fragment in result.stderr  # Snakemake shows it too
    for output in outputs:
        assert not (workdir / "results" / output.format(**data_run["keys"])).exists(), (
            output
        )
    assert leftovers(workdir / "results") == []


def test_the_data_run_made_only_complete_outputs(data_run):
    """The datasets that could be prepared were; nothing else is in results/
    besides logs and benchmarks, and the download cache holds nothing."""
    results = data_run["workdir"] / "results"
    data = sorted(
        p.relative_to(results).as_posix()
        for p in (results / "data").rglob("*")
        if p.is_file()
    )
    assert data == [
        f"data/{d}/{f}"
        for d in ["small", "too_big_database", "too_many_queries"]
        for f in ["classes.json", "images.npy", "labels.parquet"]
    ]
    assert {p.name for p in results.iterdir()} <= {
        "benchmarks",
        "data",
        "logs",
        "raw",
        "downloads",
        "splits",
    }
    for folder in ["raw", "downloads", "splits"]:
        assert not (results / folder).exists() or not any(
            p.is_file() for p in (results / folder).rglob("*")
        )
    assert leftovers(results) == []


# ---------------------------------------------------------------- the DML datasets' files (issue 21)

CUB_MD5 = "97eceeb196236b17998738112f37df78"
CARS_IMAGES_MD5 = "d5c8f0aa497503f355e17dc7886c3f14"


def _cub_without_boxes(tmp: Path) -> None:
    from workflow.prepare import prepare

    _cub_archive(tmp)
    (tmp / "src" / "CUB_200_2011" / "bounding_boxes.txt").unlink()
    spec = {"source": "cub200", "params": {"bounding_boxes": True}, "image_size": 8}
    prepare(
        spec,
        tmp / "images.npy",
        tmp / "labels.parquet",
        tmp / "classes.json",
        root=tmp / "src",
        name="d",
    )


# (id, what fails, message fragments): each names the file, and its expected checksum where one is known.
DML_DATA_CASES = [
    (
        "cub_archive_missing_from_the_mirror",
        lambda tmp: _fetch("cub200", tmp),
        ["CUB_200_2011.tgz is missing", f"Put the official file (md5 {CUB_MD5})"],
    ),
    (
        "cub_subset_archive_without_a_pinned_checksum",
        lambda tmp: (_cub_archive(tmp), _fetch("cub200", tmp)),
        [
            "mirror/CUB_200_2011.tgz: md5 is",
            f"expected {CUB_MD5}",
            "It is not the official CUB_200_2011.tgz",
        ],
    ),
    (
        "cub_archive_other_than_the_pinned_one",
        lambda tmp: (
            _cub_archive(tmp),
            _fetch("cub200", tmp, {"CUB_200_2011.tgz": "0" * 32}),
        ),
        [
            "mirror/CUB_200_2011.tgz: md5 is",
            "expected " + "0" * 32,
            "It is not the copy pinned in the config",
            "Put your copy of CUB_200_2011.tgz (md5 "
            + "0" * 32
            + " pinned in the config, key checksums)",
        ],
    ),
    (
        "cars_files_without_a_mirror",
        lambda tmp: _fetch("cars196", tmp, mirror=False),
        [
            "car_ims.tgz has no public download address",
            f"md5 {CARS_IMAGES_MD5}",
            "The original address (http://ai.stanford.edu/~jkrause/car196/) no longer serves",
        ],
    ),
    (
        "cars_annotations_missing_from_the_mirror",
        lambda tmp: _fetch("cars196", tmp, {"car_ims.tgz": _md5_of(_cars_images(tmp))}),
        [
            "cars_annos.mat is missing",
            "md5 b407c6086d669747186bd1d764ff9dbc",
            "no longer serves",
        ],
    ),
    (
        "inshop_without_a_pinned_checksum",
        lambda tmp: _fetch("inshop", tmp),
        [
            "config key datasets.d.checksums: img.zip has no published checksum",
            "add img.zip: <its md5 or sha256>",
        ],
    ),
    (
        "checksum_pinned_for_a_file_the_dataset_lacks",
        lambda tmp: _fetch("cub200", tmp, {"CUB_200.tgz": "0" * 32}),
        [
            "config key datasets.d.checksums: 'CUB_200.tgz' is not a file of this dataset; its files are "
            "CUB_200_2011.tgz"
        ],
    ),
    (
        "cub_listing_missing_from_the_archive",
        _cub_without_boxes,
        [
            "CUB_200_2011/bounding_boxes.txt: missing; it is part of the official CUB_200_2011.tgz"
        ],
    ),
]


def _cars_images(tmp: Path) -> Path:
    from official_formats import make_cars196, tar_gz

    make_cars196(tmp / "src")
    (tmp / "mirror").mkdir(exist_ok=True)
    return tar_gz(tmp / "src" / "car_ims", tmp / "mirror" / "car_ims.tgz", "car_ims")


@pytest.mark.parametrize("case", DML_DATA_CASES, ids=[c[0] for c in DML_DATA_CASES])
def test_dml_data_error(tmp_path, case):
    _, fail, fragments = case
    with pytest.raises(Exception) as error:
        fail(tmp_path)
    for fragment in fragments:
        assert fragment in str(error.value), f"{fragment!r} not in {error.value}"
    assert not (tmp_path / "raw").exists() or not any(
        (tmp_path / "raw").iterdir()
    )  # nothing half-assembled
    assert not (tmp_path / "images.npy").exists()


CATALOGUE = [
    PREPARE_CASES,
    SPLIT_CASES,
    OUTCOME_CASES,
    DATA_CASES,
    DML_DATA_CASES,
]

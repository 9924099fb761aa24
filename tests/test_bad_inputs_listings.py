"""The catalogue of bad inputs, continued (issue 30): the published listings
of the downloaded datasets, each generated in its official format
(``official_formats.py``) and then broken, must stop ``prepare`` with a
message naming the file, the line (or record) and the value, and saying to
extract the official files again; and the dataset-side messages that were
unclear: a named pipe among the images, an empty dataset path, class names
that differ only in Unicode normalisation, a checksum's case and form."""

from __future__ import annotations

import copy
import os
import unicodedata
from pathlib import Path

import numpy as np
import pytest
from bad_inputs import (
    BASE,
    _folder_case,
    _npz,
    _npz_case,
    assert_config_error,
    assert_config_error_in_process,
    assert_prepare_error,
    dry_runs,
    leftovers,
)
from conftest import make_workspace, snakemake
from official_formats import (
    make_cars196,
    make_cub200,
    make_food101,
    make_inshop,
    make_places365,
    make_sop,
    make_svhn,
    make_tiny_imagenet,
)

MAKERS = {
    "cub200": make_cub200,
    "cars196": make_cars196,
    "sop": make_sop,
    "inshop": make_inshop,
    "tiny_imagenet": make_tiny_imagenet,
    "food101": make_food101,
    "places365": make_places365,
    "svhn": make_svhn,
}


def edit(relative: str, change):
    """Damage: the text file ``relative`` (under the dataset's folder), its lines passed through ``change``."""

    def damage(root: Path) -> None:
        path = root / relative
        path.write_text("\n".join(change(path.read_text().splitlines())) + "\n")

    return damage


def line(number: int, text: str):
    """A change of lines: line ``number`` (from 1) replaced by ``text``."""
    return lambda lines: lines[: number - 1] + [text] + lines[number:]


def field(number: int, position: int, value: str):
    """A change of lines: field ``position`` of line ``number`` set to ``value``."""

    def change(lines):
        fields = lines[number - 1].split("\t" if "\t" in lines[number - 1] else " ")
        fields = [f for f in fields if f]
        fields[position] = value
        return line(number, ("\t" if "\t" in lines[number - 1] else " ").join(fields))(
            lines
        )

    return change


def both(*damages):
    def damage(root: Path) -> None:
        for d in damages:
            d(root)

    return damage


def annotation(index: int, name: str, value):
    """Damage of Cars196's cars_annos.mat: field ``name`` of annotation ``index`` (from 0) set to ``value``."""

    def damage(root: Path) -> None:
        import scipy.io

        path = root / "cars_annos.mat"
        mat = scipy.io.loadmat(path)
        mat["annotations"][name][0, index] = (
            np.array([value]) if isinstance(value, str) else np.array([[value]])
        )
        scipy.io.savemat(
            path, {"annotations": mat["annotations"], "class_names": mat["class_names"]}
        )

    return damage


def cars_class_name(index: int, value: str):
    def damage(root: Path) -> None:
        import scipy.io

        path = root / "cars_annos.mat"
        mat = scipy.io.loadmat(path)
        mat["class_names"][0, index] = np.array([value])
        scipy.io.savemat(
            path, {"annotations": mat["annotations"], "class_names": mat["class_names"]}
        )

    return damage


def svhn_labels(change):
    def damage(root: Path) -> None:
        import scipy.io

        path = root / "train_32x32.mat"
        mat = scipy.io.loadmat(path)
        scipy.io.savemat(path, {"X": mat["X"], "y": change(mat["y"])})

    return damage


def symlink_out(relative: str):
    """Damage: the image ``relative`` replaced by a symbolic link to a file outside the dataset's folder."""

    def damage(root: Path) -> None:
        outside = root.parent / "outside.jpg"
        outside.write_bytes((root / relative).read_bytes())
        (root / relative).unlink()
        (root / relative).symlink_to(outside)

    return damage


CUB = "CUB_200_2011/"
CUB_FIRST = "001.Black_footed_Albatross/Black_footed_Albatross_0000_1.jpg"
SOP = "Stanford_Online_Products/"
TINY = "tiny-imagenet-200/"
FOOD = "food-101/meta/"
INSHOP_FIRST = "img/WOMEN/Dresses/id_00000001/01_1_front.jpg"

# (id, source, loader params, damage of the generated dataset folder, message fragments)
LISTING_CASES = [
    # CUB-200-2011: the two examples, then each listing's domain.
    (
        "cub_images_listed_twice",
        "cub200",
        {},
        edit(CUB + "images.txt", lambda lines: lines + lines),
        [
            "CUB_200_2011/images.txt, line 25: image id '1' is listed twice (also at",
            "images.txt, line 1)",
        ],
    ),
    (
        "cub_one_file_under_two_ids",
        "cub200",
        {},
        both(
            edit(CUB + "images.txt", lambda lines: lines + [f"25 {CUB_FIRST}"]),
            edit(CUB + "image_class_labels.txt", lambda lines: lines + ["25 1"]),
            edit(CUB + "train_test_split.txt", lambda lines: lines + ["25 0"]),
        ),
        [f"images.txt, line 25: the file '{CUB_FIRST}' is listed twice (also at"],
    ),
    (
        "cub_path_leaving_the_archive",
        "cub200",
        {},
        edit(CUB + "images.txt", line(1, "1 ../../../outside.jpg")),
        [
            "images.txt, line 1: '../../../outside.jpg' is no relative path inside the dataset's folder"
        ],
    ),
    (
        "cub_absolute_path",
        "cub200",
        {},
        edit(CUB + "images.txt", line(1, "1 /etc/hostname")),
        [
            "images.txt, line 1: '/etc/hostname' is no relative path inside the dataset's folder"
        ],
    ),
    (
        "cub_symbolic_link_leaving_the_archive",
        "cub200",
        {},
        symlink_out(CUB + "images/" + CUB_FIRST),
        [
            f"images.txt, line 1: '{CUB_FIRST}' leads through a symbolic link to",
            "outside.jpg, outside the dataset's folder",
        ],
    ),
    (
        "cub_is_training_image_2",
        "cub200",
        {},
        edit(CUB + "train_test_split.txt", line(3, "3 2")),
        ["train_test_split.txt, line 3: is_training_image '2' is not one of 0, 1"],
    ),
    (
        "cub_class_number_beyond_classes_txt",
        "cub200",
        {},
        edit(CUB + "image_class_labels.txt", line(2, "2 5")),
        [
            "image_class_labels.txt, line 2: class number '5' is not a class number of classes.txt"
        ],
    ),
    (
        "cub_labels_of_an_unknown_image",
        "cub200",
        {},
        edit(CUB + "image_class_labels.txt", lambda lines: lines + ["99 1"]),
        ["image_class_labels.txt, line 25: image id '99' is not in images.txt"],
    ),
    (
        "cub_class_number_twice",
        "cub200",
        {},
        edit(CUB + "classes.txt", line(2, "1 002.Laysan_Albatross")),
        [
            "classes.txt, line 2: class number '1' is listed twice (also at",
            "classes.txt, line 1)",
        ],
    ),
    (
        "cub_negative_box_width",
        "cub200",
        {"bounding_boxes": True},
        edit(CUB + "bounding_boxes.txt", line(4, "4 2.0 3.0 -5.0 10.0")),
        [
            "bounding_boxes.txt, line 4: box x y width height '2.0 3.0 -5.0 10.0' is not numbers >= 0"
        ],
    ),
    (
        "cub_row_of_three_fields",
        "cub200",
        {},
        edit(CUB + "images.txt", line(2, "2 a b")),
        ["images.txt, line 2: 3 fields ('2 a b'), expected 2"],
    ),
    # Cars196: the annotations of cars_annos.mat.
    (
        "cars_one_file_twice",
        "cars196",
        {},
        annotation(1, "relative_im_path", "car_ims/000001.jpg"),
        [
            "cars_annos.mat, annotation 2: the file 'car_ims/000001.jpg' is listed twice (also at",
            "cars_annos.mat, annotation 1)",
        ],
    ),
    (
        "cars_path_leaving_the_archive",
        "cars196",
        {},
        annotation(0, "relative_im_path", "car_ims/../../x.jpg"),
        [
            "cars_annos.mat, annotation 1: 'car_ims/../../x.jpg' is no relative path inside the dataset's folder"
        ],
    ),
    (
        "cars_class_0",
        "cars196",
        {},
        annotation(2, "class", 0),
        ["cars_annos.mat, annotation 3: class '0' lies outside 1..4"],
    ),
    (
        "cars_test_flag_2",
        "cars196",
        {},
        annotation(3, "test", 2),
        ["cars_annos.mat, annotation 4: test '2' is not one of 0, 1"],
    ),
    (
        "cars_box_ending_before_it_starts",
        "cars196",
        {"bounding_boxes": True},
        annotation(0, "bbox_x2", 1),
        ["cars_annos.mat, annotation 1: the box 3 2 1", "ends before it starts"],
    ),
    (
        "cars_class_name_twice",
        "cars196",
        {},
        cars_class_name(1, "AM General Hummer SUV 2000"),
        [
            "cars_annos.mat, class_names entry 2: class name 'AM General Hummer SUV 2000' is listed twice"
        ],
    ),
    # Stanford Online Products: Ebay_train.txt and Ebay_test.txt together.
    (
        "sop_image_in_train_and_test",
        "sop",
        {},
        edit(SOP + "Ebay_test.txt", field(2, 3, "chair_final/100001_0.JPG")),
        [
            "Ebay_test.txt, line 2: the file 'chair_final/100001_0.JPG' is listed twice (also at",
            "Ebay_train.txt, line 2)",
        ],
    ),
    (
        "sop_class_on_both_sides",
        "sop",
        {},
        edit(SOP + "Ebay_test.txt", field(2, 1, "1")),
        [
            "Ebay_test.txt, line 2: class id 1 is listed in both Ebay_train.txt and Ebay_test.txt"
        ],
    ),
    (
        "sop_image_id_twice",
        "sop",
        {},
        edit(SOP + "Ebay_test.txt", field(3, 0, "1")),
        ["Ebay_test.txt, line 3: image id '1' is listed twice"],
    ),
    (
        "sop_without_its_header",
        "sop",
        {},
        edit(SOP + "Ebay_train.txt", lambda lines: lines[1:]),
        [
            "Ebay_train.txt, line 1: the header is '1 1 2 chair_final/100001_0.JPG', expected "
            "'image_id class_id super_class_id path'"
        ],
    ),
    (
        "sop_absolute_path",
        "sop",
        {},
        edit(SOP + "Ebay_test.txt", field(4, 3, "/etc/hostname")),
        [
            "Ebay_test.txt, line 4: '/etc/hostname' is no relative path inside the dataset's folder"
        ],
    ),
    # In-Shop: list_eval_partition.txt.
    (
        "inshop_count_other_than_the_rows",
        "inshop",
        {},
        edit("list_eval_partition.txt", line(1, "25")),
        [
            "list_eval_partition.txt, line 1: the image count is '25', but the file lists 24 images"
        ],
    ),
    (
        "inshop_status_val",
        "inshop",
        {},
        edit("list_eval_partition.txt", field(3, 2, "val")),
        [
            "list_eval_partition.txt, line 3: evaluation status 'val' is not one of train, query, gallery"
        ],
    ),
    (
        "inshop_item_trains_and_is_queried",
        "inshop",
        {},
        edit("list_eval_partition.txt", field(7, 1, "id_00000001")),
        [
            "list_eval_partition.txt, line 7: item id_00000001 is listed as gallery here and as train before"
        ],
    ),
    (
        "inshop_file_twice",
        "inshop",
        {},
        edit("list_eval_partition.txt", field(4, 0, INSHOP_FIRST)),
        [
            f"list_eval_partition.txt, line 4: the file '{INSHOP_FIRST}' is listed twice (also at",
            "list_eval_partition.txt, line 3)",
        ],
    ),
    # Tiny ImageNet: wnids.txt and val/val_annotations.txt.
    (
        "tiny_validation_image_twice",
        "tiny_imagenet",
        {},
        edit(TINY + "val/val_annotations.txt", lambda lines: lines + lines[:1]),
        [
            "val_annotations.txt, line 7: the file 'val_0.JPEG' is listed twice (also at",
            "val_annotations.txt, line 1)",
        ],
    ),
    (
        "tiny_wnid_twice",
        "tiny_imagenet",
        {},
        edit(TINY + "wnids.txt", lambda lines: lines + lines[:1]),
        ["wnids.txt, line 4: the class folder 'n01443537' is listed twice"],
    ),
    (
        "tiny_unknown_wnid",
        "tiny_imagenet",
        {},
        edit(TINY + "val/val_annotations.txt", field(1, 1, "n99999999")),
        ["val_annotations.txt, line 1: wnid 'n99999999' is not a wnid of wnids.txt"],
    ),
    (
        "tiny_wnid_leaving_the_archive",
        "tiny_imagenet",
        {},
        edit(TINY + "wnids.txt", line(1, "..")),
        ["wnids.txt, line 1: '..' is no relative path inside the dataset's folder"],
    ),
    (
        "tiny_annotation_without_its_box",
        "tiny_imagenet",
        {},
        edit(TINY + "val/val_annotations.txt", line(2, "val_1.JPEG\tn01629819")),
        [
            "val_annotations.txt, line 2: 2 fields ('val_1.JPEG\\tn01629819'), expected 6"
        ],
    ),
    # Food-101: meta/train.txt, meta/test.txt and meta/classes.txt.
    (
        "food_image_in_train_and_test",
        "food101",
        {},
        edit(FOOD + "test.txt", lambda lines: lines + ["apple_pie/1001"]),
        [
            "meta/test.txt, line 7: the file 'apple_pie/1001.jpg' is listed twice (also at",
            "meta/train.txt, line 1)",
        ],
    ),
    (
        "food_class_missing_from_classes_txt",
        "food101",
        {},
        edit(FOOD + "classes.txt", lambda lines: lines[:2]),
        ["meta/train.txt, line 9: class 'waffles' is not a class of meta/classes.txt"],
    ),
    (
        "food_entry_without_its_class",
        "food101",
        {},
        edit(FOOD + "train.txt", line(1, "1001")),
        ["meta/train.txt, line 1: '1001' is not <class>/<image id>"],
    ),
    # Places365: the devkit's lists.
    (
        "places_label_beyond_the_categories",
        "places365",
        {},
        edit("places365_val.txt", field(1, 1, "7")),
        ["places365_val.txt, line 1: class index '7' lies outside 0..6"],
    ),
    (
        "places_validation_image_twice",
        "places365",
        {},
        edit("places365_val.txt", lambda lines: lines + lines[:1]),
        [
            "places365_val.txt, line 43: the file 'Places365_val_00000001.jpg' is listed twice"
        ],
    ),
    (
        "places_category_index_twice",
        "places365",
        {},
        edit("categories_places365.txt", field(2, 1, "0")),
        ["categories_places365.txt, line 2: class index '0' is listed twice"],
    ),
    (
        "places_path_leaving_the_archive",
        "places365",
        {},
        edit("places365_train_standard.txt", field(1, 0, "/../x.jpg")),
        [
            "places365_train_standard.txt, line 1: '../x.jpg' is no relative path inside the dataset's folder"
        ],
    ),
    # SVHN: the labels of the .mat files (1..10, 10 the digit 0).
    (
        "svhn_label_0",
        "svhn",
        {},
        svhn_labels(lambda y: np.where(np.arange(len(y))[:, None] == 3, 0, y)),
        ["train_32x32.mat: label 0 of image 3 (y, 1 such labels) is not one of 1..10"],
    ),
    (
        "svhn_fewer_labels_than_images",
        "svhn",
        {},
        svhn_labels(lambda y: y[:-2]),
        [
            "train_32x32.mat: X has dtype uint8 and shape (32, 32, 3, 30) and y has 28 labels"
        ],
    ),
]


@pytest.mark.parametrize("case", LISTING_CASES, ids=[c[0] for c in LISTING_CASES])
def test_listing_error(tmp_path, case):
    """prepare stops with the file, line and value, says to extract the
    official files again, and writes none of its outputs."""
    from workflow.datasets.listings import ListingError
    from workflow.prepare import prepare

    _, source, params, damage, fragments = case
    root = tmp_path / "raw"
    MAKERS[source](root)
    damage(root)
    out = tmp_path / "results" / "data" / "d"
    out.mkdir(parents=True)
    with pytest.raises(ListingError) as error:
        prepare(
            {"source": source, "params": params, "image_size": 8},
            out / "images.npy",
            out / "labels.parquet",
            out / "classes.json",
            root=root,
            name="d",
        )
    for fragment in fragments + [
        f"delete {root} so that the download step extracts the official files again"
    ]:
        assert fragment in str(error.value), f"{fragment!r} not in {error.value}"
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("source", sorted(MAKERS))
def test_the_official_formats_pass_the_listing_checks(tmp_path, source):
    """Every generated miniature in its official format loads (no check
    refuses a published listing)."""
    from workflow.datasets import load_dataset

    MAKERS[source](tmp_path)
    data = load_dataset(source, root=tmp_path)
    assert len(data.labels) > 0 and len(set(np.asarray(data.file_ids).tolist())) == len(
        data.labels
    )


# ---------------------------------------------------------------- unclear dataset messages (in prepare)

NFC, NFD = unicodedata.normalize("NFC", "café"), unicodedata.normalize("NFD", "café")


def _twin_folders(tmp: Path, divided: bool) -> tuple[str, dict]:
    """An image folder whose class folders are café (NFC) and café (NFD):
    one on train/, the other on test/ (divided), or side by side."""
    from official_formats import make_imagefolder

    root = tmp / "twins"
    make_imagefolder(
        root,
        classes=(NFC, "owl") if divided else (NFC, NFD, "owl"),
        n_train=2,
        n_test=1,
        divided=divided,
    )
    if divided:
        (root / "test" / NFC).rename(root / "test" / NFD)
    return "twins", {
        "source": "imagefolder",
        "params": {"path": str(root)},
        "image_size": 8,
    }


# (id, dataset (name, config entry) from a tmp folder, message fragments): the shape of test_bad_inputs.PREPARE_CASES
PREPARE_CASES = [
    (
        "named_pipe_among_the_images",
        lambda tmp: _folder_case(
            tmp, "pipe", lambda r: os.mkfifo(r / "train" / "dog" / "img09.jpg")
        ),
        [
            "pipe/train/dog/img09.jpg: a named pipe (FIFO), not a regular image file; replace it with the image file "
            "or remove it"
        ],
    ),
    (
        "device_among_the_images",
        lambda tmp: _folder_case(
            tmp,
            "device",
            lambda r: (r / "test" / "owl" / "null.png").symlink_to("/dev/null"),
        ),
        ["device/test/owl/null.png: a character device, not a regular image file"],
    ),
    (
        "class_folders_differing_in_unicode_normalisation",
        lambda tmp: _twin_folders(tmp, divided=False),
        [
            "the class folders",
            f"look alike: {NFD!r} (NFD: 'cafe\\u0301') and {NFC!r} (NFC: 'caf\\xe9') are the same "
            "name in two Unicode normalisations",
            "rename one to the other",
        ],
    ),
    (
        "train_and_test_class_folders_differing_in_unicode_normalisation",
        lambda tmp: _twin_folders(tmp, divided=True),
        [
            f"twins/train/{NFC} and",
            f"twins/test/{NFD} look alike",
            "the same name in two Unicode normalisations",
        ],
    ),
    (
        "npz_class_names_differing_in_unicode_normalisation",
        lambda tmp: _npz_case(tmp, "names", lambda p: _npz(p, [0, 1] * 6, [NFC, NFD])),
        [
            f"names.npz: class_names: {NFC!r} (NFC: 'caf\\xe9') and {NFD!r} (NFD: 'cafe\\u0301') are the same name in "
            "two Unicode normalisations; class names must differ visibly: rename one"
        ],
    ),
]


@pytest.mark.parametrize("case", PREPARE_CASES, ids=[c[0] for c in PREPARE_CASES])
def test_prepare_error(tmp_path, case):
    """As test_bad_inputs.test_prepare_error: the message, and no output."""
    assert_prepare_error(tmp_path, case)


# ---------------------------------------------------------------- config errors


def _dataset(entry: dict) -> dict:
    return {**copy.deepcopy(BASE), "datasets": {"pics": entry}}


def _folder(path) -> dict:
    return _dataset(
        {"source": "imagefolder", "params": {"path": path}, "image_size": 8}
    )


def _pretrained(checksum) -> dict:
    return {
        **copy.deepcopy(BASE),
        "backbones": {
            "r18": {
                "arch": "resnet18",
                "embedding_size": 8,
                "params": {
                    "pretrained": {"record": "resnet18_places365", "checksum": checksum}
                },
            }
        },
    }


CUB_MD5 = "97eceeb196236b17998738112f37df78"

# (id, config, targets, message fragments): the shape of test_bad_inputs.CONFIG_CASES (snakemake -n)
CONFIG_CASES = [
    (
        "empty_dataset_path",
        _folder(""),
        [],
        [
            "config key datasets.pics.params.path: '' is no path; set it to your dataset's folder or file (a path "
            "relative to the folder Snakemake runs in)"
        ],
    ),
    (
        "dataset_path_of_the_workflow_folder",
        _dataset({"source": "npz", "params": {"path": "."}}),
        [],
        [
            "config key datasets.pics.params.path: '.' is the folder Snakemake runs in, or one above it, which holds the "
            "workflow itself (and results/); set it to your dataset's folder or file"
        ],
    ),
    (
        "dataset_checksum_of_31_digits",
        _dataset({"source": "cub200", "checksums": {"CUB_200_2011.tgz": "0" * 31}}),
        [],
        [
            "config key datasets.pics.checksums.CUB_200_2011.tgz: '"
            + "0" * 31
            + "' does not match the form it takes",
            "`sha256:<64 hex digits>` or `md5:<32 hex digits>` (either case; the prefix may be left out)",
        ],
    ),
]

# The same checks in-process: the shape of test_bad_inputs.IN_PROCESS_CASES.
IN_PROCESS_CASES = [
    (
        "blank_dataset_path",
        _folder("   "),
        [],
        ["config key datasets.pics.params.path: '   ' is no path"],
    ),
    (
        "dataset_path_null",
        _dataset({"source": "npz", "params": {"path": None}}),
        [],
        [
            "config key datasets.pics.params.path: None is no path; set it to your dataset's folder or file"
        ],
    ),
    (
        "dataset_path_above_the_workflow_folder",
        _folder(".."),
        [],
        [
            "config key datasets.pics.params.path: '..' is the folder Snakemake runs in, or one above it"
        ],
    ),
    (
        "dataset_path_of_the_workflow_folder_written_absolute",
        _folder(str(Path.cwd())),
        [],
        ["is the folder Snakemake runs in, or one above it"],
    ),
    (
        "dataset_checksum_sha1",
        _dataset(
            {"source": "cub200", "checksums": {"CUB_200_2011.tgz": "sha1:" + "0" * 40}}
        ),
        [],
        [
            "config key datasets.pics.checksums.CUB_200_2011.tgz: 'sha1:"
            + "0" * 40
            + "' does not match the form"
        ],
    ),
    (
        "pretrained_checksum_of_63_digits",
        _pretrained("A" * 63),
        [],
        [
            "config key backbones.r18.params.pretrained.checksum: '"
            + "A" * 63
            + "' does not match the form it takes",
            "`sha256:<64 hex digits>` or `md5:<32 hex digits>`",
        ],
    ),
    (
        "pretrained_md5_prefixed_as_sha256",
        _pretrained("sha256:" + "a" * 32),
        [],
        [
            "config key backbones.r18.params.pretrained.checksum: 'sha256:"
            + "a" * 32
            + "' does not match the form"
        ],
    ),
]


@pytest.fixture(scope="module")
def config_runs(tmp_path_factory) -> dict:
    return dry_runs(
        make_workspace(tmp_path_factory.mktemp("listing_config_cases"), BASE),
        CONFIG_CASES,
        workers=1,
    )


@pytest.mark.parametrize("case", CONFIG_CASES, ids=[c[0] for c in CONFIG_CASES])
def test_config_error(config_runs, case):
    name, _, _, fragments = case
    assert_config_error(config_runs, name, fragments)


@pytest.mark.parametrize("case", IN_PROCESS_CASES, ids=[c[0] for c in IN_PROCESS_CASES])
def test_config_error_in_process(case):
    _, config, _, fragments = case
    assert_config_error_in_process(config, fragments)


# ---------------------------------------------------------------- outcomes made right


def checksums_in_either_case_and_form(tmp_path):
    """A dataset's checksum and a weights checksum take the same forms:
    md5 or sha256, either case, bare or prefixed; each pins the same
    digest (so the official one shares the official download folder)."""
    from workflow.backbones.weights import resolve
    from workflow.download import plan_downloads

    for written in [CUB_MD5.upper(), "md5:" + CUB_MD5, "md5:" + CUB_MD5.upper()]:
        keys, files = plan_downloads(
            {"d": {"source": "cub200", "checksums": {"CUB_200_2011.tgz": written}}}
        )
        assert keys["d"] == "cub200" and files["cub200"][0]["md5"] == CUB_MD5
    sha = "ab" * 32
    for written in [sha, sha.upper(), "sha256:" + sha.upper()]:
        record = resolve(
            {"record": "resnet18_places365", "checksum": written}, "resnet18", "b"
        )
        assert record.sha256 == sha
    assert (
        resolve(
            {"record": "resnet18_places365", "checksum": CUB_MD5.upper()},
            "resnet18",
            "b",
        ).md5
        == CUB_MD5
    )


def cub_listing_twice_stops_the_real_run(tmp_path):
    """The issue's example as a user meets it: a CUB copy (checksum pinned)
    whose images.txt lists every image twice stops its prepare job (exit
    status 1) with the file and line; no prepared data is left."""
    from official_formats import md5, tar_gz

    workdir = tmp_path / "run"
    make_cub200(workdir / "src")
    edit(CUB + "images.txt", lambda lines: lines + lines)(workdir / "src")
    (workdir / "mirror").mkdir()
    archive = tar_gz(
        workdir / "src" / "CUB_200_2011",
        workdir / "mirror" / "CUB_200_2011.tgz",
        "CUB_200_2011",
    )
    config = {
        **copy.deepcopy(BASE),
        "data_mirror": "mirror",
        "datasets": {
            "cub": {
                "source": "cub200",
                "image_size": 8,
                "checksums": {"CUB_200_2011.tgz": md5(archive)},
            }
        },
    }
    make_workspace(workdir, config)
    result = snakemake(
        workdir, "--cores", "1", "results/data/cub/labels.parquet", check=False
    )
    assert result.returncode == 1
    log = (workdir / "results/logs/prepare/cub.log").read_text()
    assert "CUB_200_2011/images.txt, line 25: image id '1' is listed twice" in log, log
    assert not (workdir / "results/data/cub/labels.parquet").exists() and not leftovers(
        workdir / "results"
    )


OUTCOME_CASES = [
    ("checksums_in_either_case_and_form", checksums_in_either_case_and_form),
    ("cub_listing_twice_stops_the_real_run", cub_listing_twice_stops_the_real_run),
]


@pytest.mark.parametrize("case", OUTCOME_CASES, ids=[c[0] for c in OUTCOME_CASES])
def test_outcome(tmp_path, case):
    case[1](tmp_path)


CATALOGUE = [
    LISTING_CASES,
    PREPARE_CASES,
    CONFIG_CASES,
    IN_PROCESS_CASES,
    OUTCOME_CASES,
]

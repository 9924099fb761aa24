"""The catalogue of bad inputs: each case is one bad config value, target or
file, with the exit status Snakemake must give, a fragment of the message
(which names the culprit: key, file or class, and says what to do) and a
check that nothing partial was written.

Three groups share work to stay fast:

- config errors: ``snakemake -n`` on one workspace, one config file per case,
  run a few at a time; nothing may appear under ``results/``;
- data errors: one real ``snakemake -k`` run of several datasets, each broken
  in its own way (mirror files, image folders, split sizes); each case's job
  log must hold its message and its outputs must not exist;
- planted files: files that a real run would have written, broken on
  purpose (an unreadable Parquet file, anchors of another size, a changed
  CIFAR-100 pickle), given to the rules that read them (``--allowed-rules``);
- in-process: further config errors (``check_config(load_config(...))``,
  the code ``snakemake -n`` runs), ``prepare`` errors (nothing written) and
  split errors, and wrong outcomes made right (a 16-bit PNG, LaTeX
  escaping).

Every group also checks that no temporary file (``*.tmp``, ``*.part``,
``*.partial-*``) is left anywhere under ``results/``.

The last tests inspect the code itself: every writer goes through a
temporary name, nothing unpickles outside files except the checksummed
CIFAR-100 loader, and no rule builds a shell command.
"""

from __future__ import annotations

import ast
import copy
import json
import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from official_formats import SHARED_DATASETS, jpeg_bytes, make_imagefolder

from conftest import REPO, make_workspace, snakemake

BASE = {
    "datasets": {"digits": {"source": "sklearn_digits", "query_per_class": 5}},
    "regimes": {"full": {}},
    "backbones": {"small_cnn": {"arch": "small_cnn", "embedding_size": 8}},
    "losses": {"ce": {"impl": "ce"}, "cam": {"impl": "cam"}},
    "seeds": [0],
}


def leftovers(results: Path) -> list[str]:
    """Temporary or partial files and folders anywhere under ``results``."""
    if not results.exists():
        return []
    return [
        str(p) for p in results.rglob("*")
        if p.name.endswith((".tmp", ".part")) or ".partial-" in p.name or ".compact" in p.name
    ]


def changed(path: tuple, value) -> dict:
    config = copy.deepcopy(BASE)
    node = config
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value
    return config


# ---------------------------------------------------------------- config errors

DUPLICATE_LOSS = """\
datasets: {digits: {source: sklearn_digits}}
regimes: {full: {}}
backbones: {small_cnn: {arch: small_cnn, embedding_size: 8}}
losses:
  cam: {impl: cam}
  ce: {impl: ce}
  cam: {impl: lm, params: {beta: 0.1}}
seeds: [0]
"""

TABLE = {"metrics": ["map"], "rows": ["loss"]}

# (id, config (a dict, or YAML text), targets, message fragments)
CONFIG_CASES = [
    ("unknown_loss", changed(("losses", "cam", "impl"), "camm"), [],
     ["config key losses.cam.impl: unknown loss 'camm'; registered: "]),
    ("unknown_backbone", changed(("backbones", "small_cnn", "arch"), "resnet9000"), [],
     ["config key backbones.small_cnn.arch: unknown backbone 'resnet9000'; registered: "]),
    ("unknown_dataset", changed(("datasets", "digits", "source"), "mnist"), [],
     ["config key datasets.digits.source: unknown dataset 'mnist'; registered: "]),
    ("unknown_regime_target", BASE, ["results/splits/digits/fewshot1/seed0.train.parquet"],
     ["'fewshot1' in the requested target is not in the config key regimes (configured: full)"]),
    ("wrong_type_epochs", changed(("training", "epochs"), "ten"), [],
     ["config key training.epochs: 'ten' is not of type 'integer'", "Number of passes"]),
    ("unknown_compile_mode", changed(("training", "compile"), "fast"), [],
     ["config key training.compile: 'fast' is not one of", "reduce-overhead"]),
    ("zero_batch_size", changed(("training", "batch_size"), 0), [],
     ["config key training.batch_size: 0 is less than the minimum of 2"]),
    ("zero_embedding_size", changed(("backbones", "small_cnn", "embedding_size"), 0), [],
     ["config key backbones.small_cnn.embedding_size: 0 is less than the minimum of 1"]),
    ("negative_train_per_class", changed(("regimes", "full", "train_per_class"), -5), [],
     ["config key regimes.full.train_per_class: -5 is less than the minimum of 1"]),
    ("duplicate_loss_name", DUPLICATE_LOSS, [],
     ["line 7: key 'cam' appears twice in one mapping (first on line 5)", "Rename or remove one"]),
    ("table_missing_metric", {**BASE, "tables": {"t": {**TABLE, "metrics": ["map", "precision@50"]}}}, [],
     ["config key tables.t.metrics: no metric 'precision@50' is computed",
      "precision@1, precision@5, precision@10"]),
    ("table_name_with_slash", {**BASE, "tables": {"../t": TABLE}}, [],
     ["config key tables: '../t' does not match"]),
    ("swept_value_unsafe_in_name", changed(("losses", "cam", "params"), {"margin": ["1;rm"]}), [],
     ["cam-margin1;rm"]),
    ("unknown_loss_parameter", changed(("losses", "cam", "params"), {"margn": 2.0}), [],
     ["config key losses.cam.params.margn: loss 'cam' has no parameter 'margn' (did you mean 'margin'?)"]),
    ("dataset_root_from_config", changed(("datasets", "digits"), {"source": "cifar100", "params": {"root": "/tmp"}}),
     [], ["config key datasets.digits.params: dataset 'cifar100' has no parameter 'root'"]),
    # A seed of 10**30 (a 1 and 30 zeros) would trip Snakemake's periodic-wildcard guard.
    ("seed_beyond_2_to_32", changed(("seeds",), [0, 10**30]), [],
     ["config key seeds.1: 1000000000000000000000000000000 is greater than the maximum of 4294967295",
      "torch and NumPy take seeds below 2**32"]),
    ("negative_cam_margin", changed(("losses", "cam", "params"), {"margin": -1}), [],
     ["config key losses.cam.params.margin: -1 is out of range; loss 'cam' takes a number > 0 for it"]),
    ("table_unknown_baseline", {**BASE, "tables": {"t": {**TABLE, "baseline": "triplet"}}}, [],
     ["config key tables.t.baseline: 'triplet' is no loss this table shows (ce, cam)", "or null for no"]),
]

# The same checks in-process (no exit status, but cheap): further config
# errors of the same mechanisms as above.
IN_PROCESS_CASES = [
    ("unknown_top_level_key", {**BASE, "lossses": {}}, [],
     ["config key (top level): Additional properties are not allowed ('lossses' was unexpected)"]),
    ("wrong_type_seed", changed(("seeds",), ["0"]), [],
     ["config key seeds.0: '0' is not of type 'integer'"]),
    ("zero_image_size", changed(("datasets", "digits", "image_size"), 0), [],
     ["config key datasets.digits.image_size: 0 is less than the minimum of 1"]),
    ("table_misspelt_metric", {**BASE, "tables": {"t": {**TABLE, "metrics": ["mAP"]}}}, [],
     ["config key tables.t.metrics: no metric 'mAP' is computed (did you mean 'map'?)"]),
    ("loss_name_traversal", changed(("losses", "../../etc"), {"impl": "ce"}), [],
     ["config key losses: '../../etc' does not match"]),
    ("pipeline_set_parameter", changed(("losses", "cam", "params"), {"num_classes": 3}), [],
     ["config key losses.cam.params.num_classes: the pipeline sets 'num_classes' itself"]),
    ("unknown_backbone_parameter", changed(("backbones", "small_cnn", "params"), {"width": [8]}), [],
     ["config key backbones.small_cnn.params.width: backbone 'small_cnn' has no parameter 'width' "
      "(did you mean 'widths'?)"]),
    # Names and seeds are wildcard values: bounded so that Snakemake's
    # periodic-wildcard guard (a suffix repeated 20 times) never skips a cell.
    ("name_with_a_periodic_suffix", changed(("regimes",), {"k1" + "0" * 20: {}}), [],
     ["config key regimes: 'k100000000000000000000' does not match", "not ending in a piece repeated 20 times"]),
    ("swept_value_making_a_periodic_name", changed(("losses", "cam", "params"), {"margin": [1, 10**25]}), [],
     ["config key losses: 'cam-margin10000000000000000000000000' does not match", "repeated 20 times"]),
    ("selection_seed_beyond_2_to_32", {**BASE, "selection": {"budget": 1, "seed": 2**32}}, [],
     ["config key selection.seed: 4294967296 is greater than the maximum of 4294967295"]),
    ("one_class_selected", changed(("datasets", "digits", "classes"), ["0"]), [],
     ["config key datasets.digits.classes: ['0'] is too short", "At least 2"]),
    ("same_number_swept_twice", changed(("losses", "cam", "params"), {"margin": [1, 1.0]}), [],
     ["config key losses.cam.params.margin: the sweep has the value 1 twice (as 1 and 1.0)", "remove one"]),
    ("string_loss_parameter", changed(("losses", "cam", "params"), {"margin": "big"}), [],
     ["config key losses.cam.params.margin: 'big' is not a number; loss 'cam' takes a number > 0"]),
    ("swept_loss_parameter_out_of_range", changed(("losses", "cam", "params"), {"min_norm": [1.0, -0.5]}), [],
     ["config key losses.cam.params.min_norm: -0.5 is out of range; loss 'cam' takes a number >= 0"]),
    ("no_conv_widths", changed(("backbones", "small_cnn", "params"), {"widths": []}), [],
     ["config key backbones.small_cnn.params.widths: [] has 0 item(s); backbone 'small_cnn' takes a list of "
      "at least 1 item(s), each an integer >= 1"]),
    ("fractional_conv_width", changed(("backbones", "small_cnn", "params"), {"widths": [8, 2.5]}), [],
     ["config key backbones.small_cnn.params.widths: [8, 2.5] has item 1 = 2.5, which is not an integer"]),
    ("unknown_mining", changed(("losses", "cam"), {"impl": "triplet", "params": {"mining": "hardest"}}), [],
     ["config key losses.cam.params.mining: 'hardest' is not allowed; loss 'triplet' takes one of "
      "'semihard', 'batch_hard'"]),
    ("table_duplicate_row_label",
     {**BASE, "tables": {"t": {**TABLE, "rows": [{"label": "A", "loss": "ce"}, {"label": "A", "loss": "cam"}]}}}, [],
     ["config key tables.t.rows[1].label: rows 0 and 1 are both labelled 'A'"]),
    ("table_row_matching_nothing",
     {**BASE, "tables": {"t": {**TABLE, "rows": [{"label": "A", "loss": "ce"}, {"label": "B", "loss": "lm"}]}}}, [],
     ["config key tables.t.rows[1].loss: 'lm' matches no loss of this config (ce, cam)"]),
    ("table_row_outside_its_select",
     {**BASE, "tables": {"t": {**TABLE, "select": {"loss": "ce"},
                               "rows": [{"label": "A", "loss": "ce"}, {"label": "B", "loss": "cam"}]}}}, [],
     ["config key tables.t.rows[1].loss: cam is not among what tables.t.select.loss keeps (ce)"]),
    ("table_selected_loss_matching_nothing", {**BASE, "tables": {"t": {**TABLE, "select": {"loss": ["ce", "lm"]}}}},
     [], ["config key tables.t.select.loss: 'lm' matches no loss of this config (ce, cam)"]),
    ("table_baseline_not_selected",
     {**BASE, "tables": {"t": {**TABLE, "select": {"loss": ["cam"]}, "baseline": "ce"}}}, [],
     ["config key tables.t.baseline: 'ce' is no loss this table shows (cam)"]),
]


@pytest.fixture(scope="module")
def config_runs(tmp_path_factory) -> dict:
    """``snakemake -n`` for every config case, three at a time, in one workspace."""
    workdir = make_workspace(tmp_path_factory.mktemp("config_cases"), BASE)

    def run(case):
        name, config, targets, _ = case
        path = workdir / f"{name}.yaml"
        path.write_text(config if isinstance(config, str) else yaml.safe_dump(config, sort_keys=False))
        return snakemake(workdir, "-n", "--nolock", "--configfile", path.name, "--replace-workflow-config",
                         *targets, check=False)

    with ThreadPoolExecutor(max_workers=3) as pool:
        results = dict(zip([c[0] for c in CONFIG_CASES], pool.map(run, CONFIG_CASES)))
    return {"workdir": workdir, "results": results}


def catalogue_size() -> int:
    """Every case of the catalogue (README "Bad inputs and guards" gives this number)."""
    return sum(len(cases) for cases in [CONFIG_CASES, IN_PROCESS_CASES, PREPARE_CASES, SPLIT_CASES,
                                        OUTCOME_CASES, DATA_CASES, PLANTED_CASES])


def test_the_catalogue_has_at_least_twenty_cases():
    assert len(CONFIG_CASES) + len(DATA_CASES) + len(PLANTED_CASES) >= 20


def test_the_readme_gives_the_catalogue_size():
    readme = (REPO / "README.md").read_text()
    assert f"holds the catalogue ({catalogue_size()} cases)" in readme


@pytest.mark.parametrize("case", CONFIG_CASES, ids=[c[0] for c in CONFIG_CASES])
def test_config_error(config_runs, case):
    name, _, _, fragments = case
    result = config_runs["results"][name]
    message = result.stdout + result.stderr
    assert result.returncode == 1, message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in:\n{message}"
    assert not (config_runs["workdir"] / "results").exists()


def test_the_base_config_of_the_config_cases_is_valid(config_runs):
    result = snakemake(config_runs["workdir"], "-n", "--nolock", check=False)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("case", IN_PROCESS_CASES, ids=[c[0] for c in IN_PROCESS_CASES])
def test_config_error_in_process(case):
    from workflow.config import ConfigError, load_config
    from workflow.guards import check_config

    _, config, _, fragments = case
    with pytest.raises(ConfigError) as error:
        check_config(load_config(config))
    for fragment in fragments:
        assert fragment in str(error.value)


def test_duplicate_keys_are_found_at_any_depth_and_in_json(tmp_path):
    from workflow.config import ConfigError
    from workflow.guards import check_duplicate_keys

    nested = tmp_path / "nested.yaml"
    nested.write_text("losses:\n  cam:\n    impl: cam\n    params: {margin: 1, margin: 2}\n")
    with pytest.raises(ConfigError, match=rf"{nested}, line 4: key 'margin' appears twice"):
        check_duplicate_keys(nested)
    as_json = tmp_path / "config.json"
    as_json.write_text('{"seeds": [0],\n "seeds": [1]}')
    with pytest.raises(ConfigError, match="line 2: key 'seeds' appears twice"):
        check_duplicate_keys(as_json)
    fine = tmp_path / "fine.yaml"
    fine.write_text(yaml.safe_dump(BASE))
    check_duplicate_keys(fine)


# ---------------------------------------------------------------- prepare and split errors (in-process)

def _npz(path: Path, labels, class_names, **extra) -> Path:
    labels = np.asarray(labels)
    images = np.zeros((len(labels), 4, 4, 1), dtype=np.uint8)
    np.savez(path, images=images, labels=labels, class_names=np.asarray(class_names, dtype=str), **extra)
    return path


# (id, dataset (name, config entry) from a tmp folder, message fragments)
PREPARE_CASES = [
    ("one_class_dataset",
     lambda tmp: ("one", {"source": "npz", "params": {"path": str(_npz(tmp / "one.npz", [0] * 12, ["cat"]))}}),
     ["dataset one: 1 class with images (class 0 (cat)); retrieval needs at least 2 classes"]),
    ("one_class_with_images",
     lambda tmp: ("two", {"source": "npz", "params": {"path": str(_npz(tmp / "two.npz", [1] * 12, ["cat", "dog"]))}}),
     ["dataset two: 1 class with images (class 1 (dog)); retrieval needs at least 2 classes"]),
    ("fractional_npz_labels",
     lambda tmp: ("frac", {"source": "npz",
                           "params": {"path": str(_npz(tmp / "frac.npz", [0.0, 1.0, 0.7, 1.7] * 3, ["a", "b"]))}}),
     ["frac.npz: labels must be integers (class numbers 0..C-1), found 0.7 at position 2 (6 such labels)"]),
    ("nan_npz_labels",
     lambda tmp: ("nan", {"source": "npz",
                          "params": {"path": str(_npz(tmp / "nan.npz", [0.0, 1.0, np.nan] * 4, ["a", "b"]))}}),
     ["nan.npz: labels must be integers (class numbers 0..C-1), found nan at position 2"]),
    ("float32_image_without_a_range",
     lambda tmp: ("floats", {"source": "imagefolder", "params": {"path": str(_float_images(tmp / "floats"))},
                             "image_size": 4}),
     ["cannot decode the image (floating-point pixels (Pillow mode F) have no fixed range to scale to 8 bits"]),
]


def _float_images(root: Path) -> Path:
    """Two class folders of 32-bit float images (TIFF bytes under a .png
    name: Pillow decodes by content)."""
    from PIL import Image

    for name in ["a", "b"]:
        (root / name).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((4, 4), 0.5 * i, dtype=np.float32)).save(root / name / f"{i}.png", format="TIFF")
    return root


@pytest.mark.parametrize("case", PREPARE_CASES, ids=[c[0] for c in PREPARE_CASES])
def test_prepare_error(tmp_path, case):
    """prepare stops with the message and writes none of its outputs."""
    from workflow.prepare import prepare

    _, make, fragments = case
    name, spec = make(tmp_path)
    out = tmp_path / "results" / "data" / name
    out.mkdir(parents=True)
    with pytest.raises((ValueError, OSError)) as error:
        prepare(spec, out / "images.npy", out / "labels.parquet", out / "classes.json", name=name)
    for fragment in fragments:
        assert fragment in str(error.value), f"{fragment!r} not in {error.value}"
    assert list(out.iterdir()) == []  # no output, no temporary file


# (id, split arguments, message fragments): make_evaluation_split and
# make_training_split must both refuse (they share the pools).
SPLIT_CASES = [
    ("held_out_share_rounds_to_zero",
     dict(labels=np.array([0] * 10 + [1] * 10 + [2]), official_split=np.full(21, "none"), test_fraction=0.3),
     ["config key datasets.d.test_fraction: 0.3 of the 1 images of class 2 (owl) rounds to 0 held-out images, "
      "so that class would get no queries", "raise test_fraction"]),
    ("held_out_share_rounds_to_all",
     dict(labels=np.array([0] * 10 + [1] * 10 + [2]), official_split=np.full(21, "none"), test_fraction=0.6),
     ["config key datasets.d.test_fraction: 0.6 of the 1 images of class 2 (owl) rounds to 1 held-out images, "
      "so that class would keep no training images", "lower test_fraction"]),
    ("class_missing_on_the_official_test_side",
     dict(labels=np.array([0] * 10 + [1] * 10 + [2] * 5),
          official_split=np.array(["train", "test"] * 10 + ["train"] * 5)),
     ["dataset d: class 2 (owl) has no images on the official test side, so it would get no queries",
      "config key datasets.d.classes"]),
    ("one_class_split",
     dict(labels=np.zeros(20, dtype=int), official_split=np.full(20, "none")),
     ["dataset d: 1 class with images (class 0 (cat)); retrieval needs at least 2 classes"]),
]


@pytest.mark.parametrize("case", SPLIT_CASES, ids=[c[0] for c in SPLIT_CASES])
def test_split_error(case):
    from workflow.config import ConfigError
    from workflow.splits import make_evaluation_split, make_training_split

    _, arguments, fragments = case
    common = dict(seed=0, name="d", class_names=["cat", "dog", "owl"], **arguments)
    for make in [lambda: make_evaluation_split(query_per_class=1, **common), lambda: make_training_split(**common)]:
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
    resized = decode_image(tmp_path / "deep.png", 4)[..., 0]  # resized after scaling: still a gradient
    assert resized.min() < 64 and resized.max() > 192 and np.all(np.diff(resized.ravel()[::5]) > 0)


# What each LaTeX special character must become: none may reach the .tex as is.
TEX_EXPECTED = {
    "\\": r"\textbackslash{}", "{": r"\{", "}": r"\}", "#": r"\#", "$": r"\$", "%": r"\%", "&": r"\&",
    "_": r"\_", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "<": "$<$", ">": "$>$",
    "|": r"\textbar{}", "±": r"$\pm$",
}


def latex_captions_are_escaped(tmp_path):
    """Every special character of a caption and of row labels is escaped:
    against the full table, then in a rendered .tex, whose caption and
    rows hold no unescaped special character (no TeX engine is needed)."""
    import sys

    sys.path.insert(0, str(REPO / "tests"))
    from test_tables import metrics_frame

    from workflow.tables import build_table, render, tex_escape

    for char, expected in TEX_EXPECTED.items():
        assert tex_escape(f"a{char}b") == f"a{expected}b", char
    nasty = "".join(TEX_EXPECTED)
    assert tex_escape(nasty) == "".join(TEX_EXPECTED.values())  # one pass: nothing escaped twice
    decl = {"caption": f"Costs: 50% of #1 {nasty}", "columns": ["regime"], "metrics": ["map"],
            "rows": [{"label": "CE #1 {x}", "loss": "ce"}, {"label": "CAM_$^", "loss": "cam"}],
            "baseline": "CE #1 {x}"}
    latex = render("t", decl, build_table("t", decl, metrics_frame()))[2]
    caption = re.search(r"\\caption\{(.*)\}\n", latex).group(1)
    assert caption.startswith(r"Costs: 50\% of \#1 " + "".join(TEX_EXPECTED.values()))
    body = latex.split(r"\midrule")[1].split(r"\bottomrule")[0]
    assert r"CE \#1 \{x\}" in body and r"CAM\_\$\textasciicircum{}" in body
    escaped = r"\\(textbackslash|textasciitilde|textasciicircum|textbar)\{\}|\\[{}#$%&_]|\$(\\pm|<|>)\$"
    labels = [line.split(" & ")[0] for line in body.strip().splitlines()]
    for text in [caption, *labels]:
        assert not set(re.sub(escaped, "", text)) & set("#$%&_~^\\<>|{}"), text


OUTCOME_CASES = [
    ("sixteen_bit_png_is_scaled", sixteen_bit_png_is_scaled),
    ("latex_captions_are_escaped", latex_captions_are_escaped),
]


@pytest.mark.parametrize("case", OUTCOME_CASES, ids=[c[0] for c in OUTCOME_CASES])
def test_outcome(tmp_path, case):
    case[1](tmp_path)


# ---------------------------------------------------------------- data errors (a real run)

TINY_OFFICIAL_MD5 = "90528d7ca1a48142e341f4ef8d21d0de"
TINY_SUBSET_MD5 = "3720c701c700f824f268e9d6974d016b"
CIFAR_META_MD5 = "7973b15100ade9c7d40fb424638fde48"

DATA_CONFIG = {
    "data_mirror": "mirror",
    "datasets": {
        "c100": {"source": "cifar100"},
        "tiny": {"source": "tiny_imagenet"},
        "tiny_sub": {"source": "tiny_imagenet", "params": {"subset": True}},
        "broken": {"source": "imagefolder", "params": {"path": "img/broken"}, "image_size": 8},
        "empty_class": {"source": "imagefolder", "params": {"path": "img/empty_class"}, "image_size": 8},
        "empty": {"source": "imagefolder", "params": {"path": "img/empty"}, "image_size": 8},
        "nowhere": {"source": "imagefolder", "params": {"path": "img/nowhere"}, "image_size": 8},
        "small": {"source": "imagefolder", "params": {"path": "img/small"}, "image_size": 8, "query_per_class": 1},
        "too_many_queries": {"source": "sklearn_digits", "query_per_class": 1000},
        "too_big_database": {"source": "sklearn_digits", "database_per_class": 1000},
    },
    "regimes": {"k5": {"train_per_class": 5}},
    "backbones": {"small_cnn": {"arch": "small_cnn", "embedding_size": 8}},
    "losses": {"ce": {"impl": "ce"}},
    "seeds": [0],
}

# (id, dataset, the job log holding the message, outputs that must not exist, fragments)
DATA_CASES = [
    ("missing_mirror_file", "tiny", "download/tiny_imagenet.log", ["raw/tiny_imagenet", "data/tiny"],
     ["data_mirror mirror: tiny-imagenet-200.zip is missing", TINY_OFFICIAL_MD5, "Put the official file"]),
    ("flipped_byte_in_mirror", "c100", "download/cifar100.log", ["raw/cifar100", "data/c100"],
     [f"mirror/cifar-100-python/meta: md5 is", f"expected {CIFAR_META_MD5}",
      f"Put the official file (md5 {CIFAR_META_MD5}) at mirror/cifar-100-python/meta"]),
    ("truncated_archive", "tiny_sub", "download/{tiny_sub}.log", ["raw/{tiny_sub}", "data/tiny_sub"],
     ["mirror/tiny-imagenet-200-subset.zip: md5 is", f"expected {TINY_SUBSET_MD5}",
      "It is not the official tiny-imagenet-200-subset.zip", "into the data_mirror folder mirror"]),
    ("undecodable_image", "broken", "prepare/broken.log", ["data/broken"],
     ["img/broken/train/dog/img01.png: cannot decode the image", "Replace or delete the file",
      "datasets.broken.skip_undecodable: true"]),
    ("empty_class_folder", "empty_class", "prepare/empty_class.log", ["data/empty_class"],
     ["class folder img/empty_class/train/owl holds no .jpg/.jpeg/.png images; add images to it or remove it"]),
    ("empty_dataset_folder", "empty", "prepare/empty.log", ["data/empty"],
     ["imagefolder img/empty: no class folders found; expected img/empty/train/<class>/"]),
    ("missing_dataset_folder", "nowhere", "prepare/nowhere.log", ["data/nowhere"],
     ["imagefolder path img/nowhere: no such folder; set the dataset's params.path"]),
    ("k_larger_than_smallest_class", "small", "train_split/small/k5/seed0.log", ["splits/small"],
     ["config key regimes.k5.train_per_class: 5 training images per class asked, class 2 (owl) of small has 3",
      "lower it"]),
    ("more_queries_than_images", "too_many_queries", "evaluation_split/too_many_queries/seed0.log",
     ["splits/too_many_queries"],
     ["config keys datasets.too_many_queries.query_per_class/database_per_class: class 0 (0) has",
      "fewer than 1000 queries plus 1 database images; lower them"]),
    ("database_larger_than_available", "too_big_database", "evaluation_split/too_big_database/seed0.log",
     ["splits/too_big_database"],
     ["config keys datasets.too_big_database.query_per_class/database_per_class: class 0 (0) has",
      "fewer than 10 queries plus 1000 database images"]),
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
        (mirror / "tiny-imagenet-200-subset.zip").write_bytes(f.read(1 << 20))  # cut off after 1 MiB
    img = workdir / "img"
    make_imagefolder(img / "broken", n_train=3, n_test=2)
    (img / "broken" / "train" / "dog" / "img01.png").write_bytes(jpeg_bytes()[:40])
    make_imagefolder(img / "empty_class", n_train=3, n_test=2)
    for f in (img / "empty_class" / "train" / "owl").iterdir():
        f.unlink()
    (img / "empty").mkdir()
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
        f"results/splits/{d}/k5/seed0.train.parquet" if d == "small" else f"results/splits/{d}/seed0.evaluation.parquet"
        for d in DATA_CONFIG["datasets"]
    ]
    result = snakemake(workdir, "--cores", "2", "--keep-going", *targets, check=False)
    from workflow.download import plan_downloads

    keys, _ = plan_downloads(DATA_CONFIG["datasets"])
    return {"workdir": workdir, "result": result, "keys": {"tiny_sub": keys["tiny_sub"]}}


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
        assert not (workdir / "results" / output.format(**data_run["keys"])).exists(), output
    assert leftovers(workdir / "results") == []


def test_the_data_run_made_only_complete_outputs(data_run):
    """The datasets that could be prepared were; nothing else is in results/
    besides logs and benchmarks, and the download cache holds nothing."""
    results = data_run["workdir"] / "results"
    data = sorted(p.relative_to(results).as_posix() for p in (results / "data").rglob("*") if p.is_file())
    assert data == [f"data/{d}/{f}" for d in ["small", "too_big_database", "too_many_queries"]
                    for f in ["classes.json", "images.npy", "labels.parquet"]]
    assert {p.name for p in results.iterdir()} <= {"benchmarks", "data", "logs", "raw", "downloads", "splits"}
    for folder in ["raw", "downloads", "splits"]:
        assert not (results / folder).exists() or not any(p.is_file() for p in (results / folder).rglob("*"))
    assert leftovers(results) == []


# ---------------------------------------------------------------- planted files

PLANTED_CONFIG = {
    "datasets": {"digits": {"source": "sklearn_digits"}, "c100": {"source": "cifar100"}},
    "regimes": {"full": {}},
    "backbones": {"small_cnn": {"arch": "small_cnn", "embedding_size": 16}},
    "losses": {"ce": {"impl": "ce"}, "cam": {"impl": "cam"}, "lm": {"impl": "lm"}},
    "seeds": [0],
    "evaluation": {"precision_at": [1, 1000]},
}
CELL = "results/cells/digits/full/small_cnn/{}/seed0"

# (id, target, the job log, fragments)
PLANTED_CASES = [
    ("unreadable_parquet", f"{CELL.format('ce')}/metrics.csv", "evaluate/digits/full/small_cnn/ce/seed0.log",
     [f"{CELL.format('ce')}/embeddings.parquet: not a readable Parquet file",
      "Delete it and run Snakemake again"]),
    ("anchors_of_another_size", f"{CELL.format('cam')}/metrics.csv", "evaluate/digits/full/small_cnn/cam/seed0.log",
     [f"{CELL.format('cam')}/anchors.parquet: anchors of size 8, but the embeddings in "
      f"{CELL.format('cam')}/embeddings.parquet have size 16", "Delete both and run Snakemake again"]),
    ("cutoff_beyond_the_database", f"{CELL.format('lm')}/metrics.csv", "evaluate/digits/full/small_cnn/lm/seed0.log",
     ["config key evaluation.precision_at: cutoff 1000 exceeds the database of this cell (40 images)"]),
    ("changed_cifar_pickle", "results/data/c100/images.npy", "prepare/c100.log",
     ["results/raw/cifar100/cifar-100-python/meta: md5 is", f"expected {CIFAR_META_MD5}",
      "not the official CIFAR-100 file, so it is not unpickled"]),
]


def plant(workdir: Path) -> None:
    from workflow.embedding import write_embeddings

    rng = np.random.default_rng(0)
    split = pd.DataFrame({"index": np.arange(50), "split": ["query"] * 10 + ["database"] * 40})
    labels = np.arange(50) % 5

    def cell(loss, size, anchor_size):
        folder = workdir / CELL.format(loss)
        write_embeddings(folder / "embeddings.parquet", folder / "anchors.parquet", split, labels,
                         rng.normal(size=(50, size)).astype(np.float32), np.full(50, -1),
                         rng.normal(size=(5, anchor_size)).astype(np.float32), {"loss": loss})

    cell("ce", 16, 16)
    (workdir / CELL.format("ce") / "embeddings.parquet").write_bytes(b"PAR1 not really parquet")
    cell("cam", 16, 8)
    cell("lm", 16, 16)
    raw = workdir / "results" / "raw" / "cifar100" / "cifar-100-python"
    raw.mkdir(parents=True)
    for name in ["train", "test"]:
        (raw / name).symlink_to(SHARED_DATASETS / "cifar-100-python" / name)
    meta = (SHARED_DATASETS / "cifar-100-python" / "meta").read_bytes()
    (raw / "meta").write_bytes(meta[:-1] + bytes([meta[-1] ^ 0x01]))


@pytest.fixture(scope="module")
def planted_run(tmp_path_factory) -> dict:
    workdir = make_workspace(tmp_path_factory.mktemp("planted_cases"), PLANTED_CONFIG)
    plant(workdir)
    targets = [case[1] for case in PLANTED_CASES]
    result = snakemake(workdir, "--cores", "2", "--keep-going", *targets, "--allowed-rules", "evaluate", "prepare",
                       check=False)
    return {"workdir": workdir, "result": result}


@pytest.mark.parametrize("case", PLANTED_CASES, ids=[c[0] for c in PLANTED_CASES])
def test_planted_file_error(planted_run, case):
    name, target, log, fragments = case
    workdir, result = planted_run["workdir"], planted_run["result"]
    assert result.returncode == 1, result.stderr
    text = (workdir / "results" / "logs" / log).read_text()
    for fragment in fragments:
        assert fragment in text, f"{fragment!r} not in {log}:\n{text}"
    assert not (workdir / target).exists()
    folder = (workdir / target).parent
    assert not (folder / "pr_curve.parquet").exists() and not (folder / "labels.parquet").exists()
    assert leftovers(workdir / "results") == []


# ---------------------------------------------------------------- the code itself

WORKFLOW = REPO / "workflow"
# Calls that write a file at their first argument (or second, for torch.save).
WRITERS = {"to_csv": 0, "to_parquet": 0, "savefig": 0, "write_text": None, "write_bytes": None,
           "write_table": 1, "open_memmap": 0, "save": 0}
# Writes that need no temporary name: the rule's log is streamed on purpose
# (a killed job's log shows how far it got) and is never an input.
STREAMED = {("logs.py", "open")}


def _python_files():
    return sorted(p for p in WORKFLOW.rglob("*.py") if "__pycache__" not in p.parts)


def _calls(path: Path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            yield node, name, ast.get_source_segment(path.read_text(), node)


def _is_temporary(source: str) -> bool:
    """The written path is a temporary name (atomic_path's ``tmp``, a
    ``*_tmp``, the download's ``work`` folder), an open file object or an
    in-memory buffer."""
    return bool(re.search(r"\b(\w*tmp\w*|work|f|fout|out|buffer)\b", source))


def writer_offenders(path: Path) -> list[str]:
    """Calls in ``path`` that write a file under its final name."""
    text = path.read_text()
    offenders = []
    for node, name, source in _calls(path):
        if name == "open":
            modes = [a.value for a in node.args[1:2] if isinstance(a, ast.Constant)]
            modes += [k.value.value for k in node.keywords if k.arg == "mode" and isinstance(k.value, ast.Constant)]
            if any(set(m) & set("wax+") for m in modes) and (path.name, "open") not in STREAMED:
                if not _is_temporary(ast.get_source_segment(text, node.args[0])):
                    offenders.append(f"{path.name}:{node.lineno}: {source}")
            continue
        if name not in WRITERS:
            continue
        owner = getattr(getattr(node.func, "value", None), "id", "")
        if name == "save" and owner not in {"np", "torch"}:
            continue
        position = 1 if (name == "save" and owner == "torch") else WRITERS[name]
        if position is None:  # Path.write_text: the path is the object
            target = ast.get_source_segment(text, node.func.value)
        elif len(node.args) > position:
            target = ast.get_source_segment(text, node.args[position])
        else:
            continue  # to_csv() without a path returns text
        if not _is_temporary(target):
            offenders.append(f"{path.name}:{node.lineno}: {source}")
    return offenders


def test_every_writer_writes_to_a_temporary_name():
    """Outside workflow/io.py (whose atomic_path renames a temporary file
    onto the output when complete), every call that writes a file writes a
    temporary name, and every open() for writing opens one."""
    offenders = [o for path in _python_files() if path.name != "io.py" for o in writer_offenders(path)]
    assert offenders == [], "write through workflow.io (atomic_path, save_*):\n" + "\n".join(offenders)


def test_the_writer_check_finds_writes_in_place(tmp_path):
    module = tmp_path / "bad.py"
    module.write_text(
        "import numpy as np, torch\n"
        "frame.to_csv(output_path, index=False)\n"
        "torch.save(checkpoint, snakemake.output[0])\n"
        "np.save(path, images)\n"
        "open(log_path, 'w').write('x')\n"
        "Path(output).write_text('x')\n"
        "fig.savefig(png_path)\n"
        "frame.to_csv(index=False)\n"  # returns text: fine
        "with atomic_path(output) as tmp:\n    torch.save(checkpoint, tmp)\n"  # fine
    )
    assert sorted(int(o.split(":")[1]) for o in writer_offenders(module)) == [2, 3, 4, 5, 6, 7]


def test_nothing_unpickles_outside_files():
    """torch.load only with weights_only=True, np.load never with
    allow_pickle, no pandas read_pickle or joblib, and pickle.load only in
    the CIFAR-100 loader, which checks each file's official checksum first."""
    offenders = []
    for path in _python_files():
        text = path.read_text()
        for node, name, source in _calls(path):
            func = node.func
            owner = getattr(getattr(func, "value", None), "id", None)
            keywords = {k.arg: k.value for k in node.keywords}
            if owner == "torch" and name == "load":
                value = keywords.get("weights_only")
                if not (isinstance(value, ast.Constant) and value.value is True):
                    offenders.append(f"{path.name}:{node.lineno}: {source}")
            elif owner == "np" and name == "load" and "allow_pickle" in keywords:
                offenders.append(f"{path.name}:{node.lineno}: {source}")
            elif name in {"read_pickle", "loads"} and owner in {"pd", "pickle", "joblib"}:
                offenders.append(f"{path.name}:{node.lineno}: {source}")
            elif owner in {"pickle", "joblib", "dill", "cloudpickle"} and name == "load":
                if path.name != "cifar100.py":
                    offenders.append(f"{path.name}:{node.lineno}: {source}")
        assert "Unpickler" not in text, path
    assert offenders == []


def test_the_cifar_loader_checks_the_checksum_before_unpickling(tmp_path):
    from workflow.datasets.cifar100 import _unpickle

    assert "apple" in _unpickle(SHARED_DATASETS / "cifar-100-python" / "meta")["fine_label_names"]
    import pickle

    evil = tmp_path / "meta"
    evil.write_bytes(pickle.dumps({"fine_label_names": ["x"]}))
    with pytest.raises(ValueError, match="not the official CIFAR-100 file, so it is not unpickled"):
        _unpickle(evil)


def test_no_rule_builds_a_shell_command():
    """Rules run Python (script:/run:), so no config value ever reaches a
    shell; every wildcard that becomes a path segment is constrained."""
    rules = [REPO / "Snakefile", *sorted((REPO / "rules").glob("*.smk"))]
    for path in rules:
        text = path.read_text()
        assert not re.search(r"^\s*shell:", text, flags=re.M), path
        assert "os.system" not in text and "subprocess" not in text, path
    common = (REPO / "rules" / "common.smk").read_text()
    constraints = dict(re.findall(r'^\s+(\w+)="([^"]+)",$', common, flags=re.M))
    used = set()
    for path in rules:
        used |= set(re.findall(r"\{(\w+)\}", path.read_text()))
    for wildcard in used & {"dataset", "regime", "backbone", "loss", "seed", "table", "download"}:
        assert wildcard in constraints, wildcard
        assert not re.fullmatch(constraints[wildcard], ".."), wildcard
        assert not re.fullmatch(constraints[wildcard], "a/b"), wildcard


def test_the_metric_names_of_the_table_check_are_those_evaluate_writes():
    """The config-time check of tables.<name>.metrics uses
    workflow.evaluate.metric_names; it must list exactly what evaluate_cell
    writes (with two-stage retrieval on, whose rows add no new names)."""
    from workflow.evaluate import evaluate_cell, metric_names

    rng = np.random.default_rng(1)
    split = ["query"] * 12 + ["database"] * 30
    labels = np.arange(42) % 3
    frame = pd.DataFrame({"index": np.arange(42), "split": split, "label": labels,
                          "prediction": np.full(42, -1), "embedding": list(rng.normal(size=(42, 4)))})
    anchors = pd.DataFrame({"label": np.arange(3), "anchor": list(rng.normal(size=(3, 4)))})
    evaluation = {"precision_at": [1, 3], "top_k_error": [2], "two_stage": {"classes": [1]}}
    metrics, _ = evaluate_cell(frame, anchors, precision_at=[1, 3], top_k_error=[2],
                               two_stage={"classes": [1], "rest": "follow"})
    assert set(metrics["retrieval"]) == {"exact", "two_stage_c1"}
    assert sorted(set(metrics["metric"])) == sorted(metric_names(evaluation))


def test_every_loss_and_backbone_declares_the_range_of_each_parameter():
    """Parameter ranges are declared once, with the registration
    (``params=``), for every keyword the config may set, so that
    ``snakemake -n`` checks each value (workflow.guards.check_parameters)."""
    import inspect

    from workflow.backbones import BACKBONES
    from workflow.guards import PIPELINE_ARGUMENTS
    from workflow.losses import LOSSES

    for section, registry in [("losses", LOSSES), ("backbones", BACKBONES)]:
        for name in registry.names():
            declared = registry.metadata(name).get("params")
            assert declared is not None, f"{registry.kind} {name!r}: register it with params={{...}}"
            signature = inspect.signature(registry.get(name)).parameters
            settable = {p for p in signature if p not in PIPELINE_ARGUMENTS[section] | {"self"}}
            assert set(declared) == settable, (registry.kind, name, sorted(declared), sorted(settable))
            for param, rule in declared.items():
                default = signature[param].default
                default = list(default) if isinstance(default, tuple) else default
                assert default is None or rule.problem(default) is None, (registry.kind, name, param, default)


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_outputs_are_created_with_the_mode_the_umask_gives(tmp_path, umask, mode):
    # tempfile makes its files 0600 whatever the umask; an output renamed
    # from one must get the mode `open` would give it, so that results/ on a
    # shared cluster is as readable as the user's umask says.
    from workflow.io import save_json

    old = os.umask(umask)
    try:
        save_json(tmp_path / "out.json", {"a": 1})
    finally:
        os.umask(old)
    assert (tmp_path / "out.json").stat().st_mode & 0o777 == mode

"""Pretrained weights: records, verified files, state dicts, and the input
normalisation each checkpoint expects.

Records (:class:`~workflow.backbones.weight_records.WeightsRecord`, one
per published checkpoint, and the list of them) are in
:mod:`workflow.backbones.weight_records`.

``backbones.<name>.params.pretrained`` (resolved by :func:`resolve`):

- a record name: ``pretrained: resnet18_places365``;
- a mapping: ``record`` (a record name) and ``checksum`` (``sha256:<64 hex>``
  or ``md5:<32 hex>``, checked as well as the record's; required where the
  record has none); or, for weights of your own, ``file`` (a path, relative
  to the folder Snakemake runs in, or a URL), ``checksum`` (required) and
  the normalisation they expect: ``normalisation`` (a record name whose
  mean, std and input size apply) or ``mean`` and ``std`` (3 values each,
  or 1 for grey) with an optional ``input_size``. ``file`` next to
  ``record`` reads the record's file from that path or URL instead.

Where the file comes from (:func:`weights_file`): ``file`` when given; else
the folder of the config key ``data_mirror`` (the official file name, no
network); else the record's address, downloaded into
``results/downloads/`` by :func:`workflow.download.download_url` (a
temporary name, the checksum checked, then renamed; three tries). Every file
is checked against the checksums before it is read; a mismatch stops with
the file, the expected and the found checksum, and what to do.

:func:`read_state_dict` loads with ``torch.load(weights_only=True)``
(:func:`workflow.checkpoints.load_checkpoint`);
a file that is not a state dict is a :class:`WeightsFileError`, one that
does not fit the backbone a :class:`WeightsMismatchError` (raised by
``workflow.backbones.torchvision_models``).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from workflow.backbones.weight_records import WeightsRecord, get_record, weights_names
from workflow.checkpoints import CheckpointError, load_checkpoint
from workflow.checksums import CHECKSUM_FORM, CHUNK, file_mismatch, parse_checksum
from workflow.config import ConfigError
from workflow.download import DownloadError, download_url

# ---------------------------------------------------------------- errors


class WeightsError(RuntimeError):
    """Pretrained weights that cannot be used; the message names the file
    and says what to do."""


class WeightsMissingError(WeightsError, FileNotFoundError):
    """The weights file is not where the config or the mirror says."""


class WeightsChecksumError(WeightsError):
    """The file's checksum is not the expected one."""


class UnpinnedWeightsError(WeightsChecksumError):
    """The publisher gives no checksum and the config pins none."""


class WeightsFileError(WeightsError):
    """The file is not a state dict ``torch.load(weights_only=True)`` reads."""


class WeightsMismatchError(WeightsError, ValueError):
    """A state dict whose keys or shapes do not fit the backbone."""


# ---------------------------------------------------------------- config

SPEC_KEYS = ("record", "file", "checksum", "normalisation", "mean", "std", "input_size")


def _named_record(name, key: str) -> WeightsRecord:
    record = get_record(name) if isinstance(name, str) else None
    if record is not None:
        return record
    looks_like_file = isinstance(name, str) and (
        "/" in name or "://" in name or name.endswith((".pth", ".pt", ".tar"))
    )
    hint = (
        f" A file of your own is a mapping: {{file: {name}, checksum: 'sha256:<its sha256>', "
        "normalisation: <the record whose mean and std it expects>}, or mean: [...] and std: [...] "
        "instead of normalisation."
        if looks_like_file
        else ""
    )
    raise ConfigError(
        f"config key {key}: {name!r} is not a weights record; records: {', '.join(weights_names())}.{hint}"
    )


def _pin(record: WeightsRecord, checksum, key: str) -> WeightsRecord:
    parsed = parse_checksum(checksum)
    if parsed is None:
        raise ConfigError(
            f"config key {key}.checksum: {checksum!r} is not {CHECKSUM_FORM}"
        )
    kind, digest = parsed
    known = record.md5 if kind == "md5" else record.sha256
    if known and not digest.startswith(known):
        raise ConfigError(
            f"config key {key}.checksum: {kind} {digest} contradicts the record {record.name}'s {kind} {known}; "
            "remove the checksum, or use a file of your own (key file) instead of the record"
        )
    return replace(record, **{kind: digest})


def _channels(value, what: str, key: str) -> tuple[float, ...]:
    if (
        not isinstance(value, list)
        or len(value) not in (1, 3)
        or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in value
        )
    ):
        raise ConfigError(
            f"config key {key}.{what}: a list of 3 numbers (RGB) or 1 (grey) is required, got {value!r}"
        )
    if what == "std" and min(value) <= 0:
        raise ConfigError(
            f"config key {key}.std: every value must be positive, got {value!r}"
        )
    return tuple(float(v) for v in value)


def resolve(
    value, arch: str | None = None, key: str = "pretrained"
) -> WeightsRecord | None:
    """The record a ``pretrained`` config value stands for (None: random
    initialisation), with the config's pin and file applied. Needs no file
    and no network; a bad value is a :class:`ConfigError` naming ``key``."""
    if value is None:
        return None
    if isinstance(value, str):
        value = {"record": value}
    if not isinstance(value, dict):
        raise ConfigError(
            f"config key {key}: a weights record name or a mapping is required, got {value!r}"
        )
    unknown = sorted(set(value) - set(SPEC_KEYS))
    if unknown:
        raise ConfigError(
            f"config key {key}: unknown keys {unknown}; it takes {', '.join(SPEC_KEYS)}"
        )
    file = value.get("file")
    if file is not None and (not isinstance(file, str) or not file):
        raise ConfigError(
            f"config key {key}.file: a path or URL is required, got {file!r}"
        )
    if value.get("record") is not None:
        record = _named_record(value["record"], f"{key}.record")
        given = [
            k for k in ("normalisation", "mean", "std", "input_size") if k in value
        ]
        if given:
            raise ConfigError(
                f"config key {key}: {', '.join(given)} come from the record {record.name}; remove them "
                "(for other weights, give file instead of record)"
            )
    else:
        if file is None:
            raise ConfigError(
                f"config key {key}: give a record name (record) or a file of your own (file)"
            )
        if value.get("checksum") is None:
            raise ConfigError(
                f"config key {key}.checksum: required for a file of your own, e.g. checksum: 'sha256:<hex>' "
                f"(sha256sum {file} prints it), so that a changed file is noticed"
            )
        if value.get("normalisation") is not None:
            if "mean" in value or "std" in value or "input_size" in value:
                raise ConfigError(
                    f"config key {key}: give normalisation or mean and std, not both"
                )
            source = _named_record(value["normalisation"], f"{key}.normalisation")
            mean, std, input_size = source.mean, source.std, source.input_size
        elif "mean" in value and "std" in value:
            mean, std = (
                _channels(value["mean"], "mean", key),
                _channels(value["std"], "std", key),
            )
            if len(mean) != len(std):
                raise ConfigError(
                    f"config key {key}: mean and std need the same number of values"
                )
            input_size = value.get("input_size")
            if input_size is not None and (
                not isinstance(input_size, int)
                or isinstance(input_size, bool)
                or input_size < 1
            ):
                raise ConfigError(
                    f"config key {key}.input_size: a positive integer is required, got {input_size!r}"
                )
        else:
            raise ConfigError(
                f"config key {key}: a file of your own needs the normalisation it was trained with: "
                "normalisation: <a record name, e.g. ResNet18_Weights.IMAGENET1K_V1>, or mean: [r, g, b] "
                "and std: [r, g, b] (pixels in [0, 1])"
            )
        record = WeightsRecord(
            name=file,
            arch=None,
            url=None,
            file_name=file.rstrip("/").rsplit("/", 1)[-1],
            md5=None,
            sha256=None,
            mean=mean,
            std=std,
            input_size=input_size,
            publisher="your own file",
        )
    if value.get("checksum") is not None:
        record = _pin(record, value["checksum"], key)
    if file is not None:
        record = (
            replace(record, url=file, path=None)
            if "://" in file
            else replace(record, path=file, url=None)
        )
        record = replace(record, file_name=file.rstrip("/").rsplit("/", 1)[-1])
    if arch is not None and record.arch is not None and record.arch != arch:
        raise ConfigError(
            f"config key {key}: {record.name} are weights of arch {record.arch}, not {arch}; use arch "
            f"{record.arch}, or weights for {arch}"
        )
    return record


def input_normalisation(
    params: dict, in_channels: int
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Mean and std per channel (pixels in [0, 1]) that a backbone built
    with ``params`` expects: its pretrained weights' (from their record or
    the config), or None when it starts from random weights (training then
    normalises with the training set's statistics). For grey images the RGB
    values are averaged, as ``adapt_input_channels`` averages the first
    layer's filters."""
    record = resolve((params or {}).get("pretrained"))
    if record is None:
        return None
    mean, std = record.mean, record.std
    if len(mean) != in_channels:
        if in_channels == 1:
            mean, std = (sum(mean) / len(mean),), (sum(std) / len(std),)
        elif len(mean) == 1:
            mean, std = mean * in_channels, std * in_channels
        else:
            raise WeightsError(
                f"weights {record.name} expect {len(mean)} channels; these images have {in_channels}"
            )
    return torch.tensor(mean, dtype=torch.float32), torch.tensor(
        std, dtype=torch.float32
    )


# ---------------------------------------------------------------- files


@dataclass
class WeightSources:
    """Where weights files come from: ``mirror`` (the config key
    ``data_mirror``), else downloads into ``cache``. Set by the train
    rule's script from the config (:func:`set_sources`)."""

    mirror: Path | None = None
    cache: Path = Path("results/downloads")


WEIGHT_SOURCES = WeightSources()


def set_sources(mirror=None, cache="results/downloads") -> None:
    WEIGHT_SOURCES.mirror = Path(mirror) if mirror else None
    WEIGHT_SOURCES.cache = Path(cache)


def file_digests(path) -> tuple[str, str]:
    """(md5, sha256) of a file."""
    md5, sha = hashlib.md5(usedforsecurity=False), hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            md5.update(chunk)
            sha.update(chunk)
    return md5.hexdigest(), sha.hexdigest()


def verify(path: Path, record: WeightsRecord, where: str) -> None:
    """Check ``path`` against the record's checksums; else stop with the
    file, the expected and the found checksum, and what to do. ``where``:
    where the right file belongs ("into <folder>", "at <path>")."""
    if not record.pinned:
        md5, sha = file_digests(path)
        notes = f" {record.notes}" if record.notes else ""
        raise UnpinnedWeightsError(
            f"{path}: the publisher of {record.name} gives no checksum and the config pins none, so nothing "
            f"vouches for these bytes (found md5 {md5}, sha256 {sha}).{notes} Compare them with a copy "
            f"you trust, then pin them in backbones.<name>.params.pretrained: "
            f"{{record: {record.name}, checksum: 'sha256:{sha}'}}."
        )
    problem = file_mismatch(path, record.md5, record.sha256)
    if problem is None:
        return
    if (
        record.arch is None
    ):  # a file of one's own: the config's pin is the only reference
        _, sha = file_digests(path)
        raise WeightsChecksumError(
            f"{path}: {problem}; it is not the file that pretrained.checksum pins. Restore that file, or, "
            f"if you replaced it on purpose, pin the new one: checksum: 'sha256:{sha}' (its cells train again)."
        )
    url = f" (official source: {record.url})" if record.url else ""
    raise WeightsChecksumError(
        f"{path}: {problem}. It is not the official {record.file_name} of {record.name}{url}. "
        f"Put the official file ({record.checksums()}) {where}."
    )


def weights_file(
    record: WeightsRecord, mirror=None, cache="results/downloads", **download_options
) -> tuple[Path, str]:
    """The verified file of ``record`` and where it came from: the config's
    ``file``, else ``mirror`` (no network), else the record's address through
    the download cache (written under a temporary name, renamed only when its
    checksum matches; a cached file that does not match is fetched again)."""
    if record.path is not None:
        path = Path(record.path)
        if not path.is_file():
            raise WeightsMissingError(
                f"pretrained weights {path}: no such file (config key backbones.<name>.params.pretrained.file; "
                "a relative path is relative to the folder Snakemake runs in)"
            )
        verify(path, record, f"at {path} (pretrained.file)")
        return path, f"file {path}"
    if mirror is not None:
        path = Path(mirror) / record.file_name
        if not path.is_file():
            url = f" (official source: {record.url})" if record.url else ""
            raise WeightsMissingError(
                f"data_mirror {mirror}: {record.file_name} (weights {record.name}) is missing. Put the official "
                f"file{url} ({record.checksums()}) into {mirror}, or set data_mirror to null to download it."
            )
        verify(path, record, f"into the data_mirror folder {mirror}")
        return path, f"mirror {path}"
    if record.url is None:
        raise WeightsMissingError(
            f"weights {record.name} have no address; put {record.file_name} into data_mirror"
        )
    cached = Path(cache) / record.file_name
    if cached.is_file() and file_mismatch(cached, record.md5, record.sha256) is None:
        how = f"cache {cached}"
    else:
        try:
            download_url(
                record.url, cached, record.md5, record.sha256, **download_options
            )
        except DownloadError as error:
            raise WeightsError(f"weights {record.name}: {error}") from None
        how = record.url
    verify(cached, record, f"into {cache}")
    return cached, how


def read_state_dict(path, label: str = "") -> dict[str, torch.Tensor]:
    """The state dict in ``path`` (``torch.load(weights_only=True)``): a
    ``state_dict`` entry and ``module.`` prefixes (DataParallel) unwrapped.
    Anything else is a :class:`WeightsFileError`."""
    what = f"{path}" + (f" ({label})" if label and label != str(path) else "")
    advice = (
        "Pretrained weights must be a state dict: a file written by torch.save(model.state_dict(), path), "
        "or a checkpoint dict with a 'state_dict' entry; re-save them that way in the program that made them, or replace the file."
    )
    try:
        state = load_checkpoint(path, "state dict", advice=advice)
    except CheckpointError as error:
        raise WeightsFileError(
            str(error).replace(f"{Path(path)}:", f"{what}:", 1)
        ) from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not state:
        held = (
            f"a {type(state).__name__}"
            if state or not isinstance(state, dict)
            else "an empty dict"
        )
        raise WeightsFileError(f"{what}: holds {held}, not a state dict. {advice}")
    bad = sorted(
        str(k)
        for k, v in state.items()
        if not isinstance(k, str) or not isinstance(v, torch.Tensor)
    )
    if bad:
        raise WeightsFileError(
            f"{what}: entries that are not tensors: {bad[:5]} ({len(bad)} in all). {advice}"
        )
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_pretrained(
    value, arch: str
) -> tuple[dict[str, torch.Tensor], WeightsRecord, Path]:
    """The verified state dict of a ``pretrained`` config value, its record
    and its file (from :data:`WEIGHT_SOURCES`)."""
    record = resolve(value, arch)
    path, how = weights_file(record, WEIGHT_SOURCES.mirror, WEIGHT_SOURCES.cache)
    print(
        f"pretrained weights {record.name}: {record.checksums()} verified, from {how}",
        file=sys.stderr,
    )
    return read_state_dict(path, record.name), record, path


# ---------------------------------------------------------------- command line


def main(argv=None) -> None:
    """``python -m workflow.backbones.weights``: list the records; with a
    name, fetch and verify its file (e.g. on a login node with internet),
    printing its checksums."""
    parser = argparse.ArgumentParser(
        prog="python -m workflow.backbones.weights", description=main.__doc__
    )
    parser.add_argument("name", nargs="?", help="record name to fetch")
    parser.add_argument("--checksum", help="pin: sha256:<hex> or md5:<hex>")
    parser.add_argument(
        "--mirror", help="take the file from this folder (like data_mirror)"
    )
    parser.add_argument("--cache", default="results/downloads")
    args = parser.parse_args(argv)
    if args.name is None:
        for name in weights_names():
            r = get_record(name)
            print(
                f"{name}: arch {r.arch}, {r.checksums()}, mean {r.mean}, std {r.std}, input {r.input_size}, {r.url}"
            )
        return
    spec = {
        "record": args.name,
        **({"checksum": args.checksum} if args.checksum else {}),
    }
    record = resolve(spec)
    try:
        path, how = weights_file(record, args.mirror, args.cache)
    except UnpinnedWeightsError as error:
        sys.exit(str(error))
    md5, sha = file_digests(path)
    print(
        f"{path}: md5 {md5}, sha256 {sha} ({record.checksums()} verified, from {how})"
    )


if __name__ == "__main__":
    main()

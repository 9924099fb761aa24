"""Checks of the config's entries (datasets, backbones, losses):

- **names** of datasets, regimes, backbones, losses (also those made by
  sweeps), tables and rankings: they become folder names and Snakemake wildcards, so
  only letters, digits, ``_``, ``.``, ``-``, starting with a letter or
  digit (no ``/``, no ``..``, nothing a shell would interpret);
- **parameters** of losses and backbones: every key of ``params`` must be
  an argument of the registered class or builder (a typo would otherwise
  stop the training job), and every value must lie in the range the entry
  declared with its registration (``workflow/registry.py``); each loss
  setting is also built once on a tiny size;
- **pretrained weights**: ``backbones.<name>.params.pretrained`` must name
  a weights record for the backbone's arch, or a file of your own with its
  checksum and normalisation (``workflow.backbones.weights.resolve``; no
  file is read here).
- **protocols** and **user files** of datasets.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from workflow.config import ConfigError
from workflow.config_schema import number_hint
from workflow.registry import unknown_parameter

# The schema's name rule ($defs/name_pattern): also no suffix repeated 20
# times, which Snakemake's periodic-wildcard guard would take for a runaway
# recursion (and skip the cell), and at most 100 characters.
NAME = re.compile(r"^(?!.*?(.+)\1{19}$)[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
NAMED_SECTIONS = ["datasets", "regimes", "backbones", "losses", "tables", "rankings"]
# Arguments the pipeline passes itself; never from ``params``.
PIPELINE_ARGUMENTS = {
    "losses": {"num_classes", "embedding_size"},
    "backbones": {"in_channels", "image_size", "embedding_size"},
}


def check_protocols(config: dict) -> None:
    """A dataset's ``train_classes`` needs protocol class_disjoint, which
    takes no database from the training pool (``workflow/splits.py``)."""
    for name, spec in config["datasets"].items():
        protocol = spec.get("protocol", "closed_set")
        if protocol != "class_disjoint" and spec.get("train_classes") is not None:
            raise ConfigError(
                f"config key datasets.{name}.train_classes: applies only with protocol class_disjoint (it moves "
                f"the boundary between training and test classes); set datasets.{name}.protocol: class_disjoint "
                "or remove it"
            )
        if protocol == "class_disjoint" and spec.get("database_from") == "train":
            raise ConfigError(
                f"config key datasets.{name}.database_from: 'train' would put training classes into the "
                "database; protocol class_disjoint evaluates the test classes among themselves: remove it"
            )


def check_user_files(config: dict) -> None:
    """The loader parameter naming a dataset's own file or folder (its
    registration's ``user_files``: ``path`` of imagefolder and npz) is a
    path, neither empty nor the folder Snakemake runs in or one above it:
    "" and "." would read the workflow itself (its code, ``results/``) as
    the dataset."""
    from workflow.datasets import DATASETS

    for name, spec in config["datasets"].items():
        param, params = (
            DATASETS.metadata(spec["source"]).get("user_files"),
            spec.get("params") or {},
        )
        if param not in params:
            continue
        key, value = f"config key datasets.{name}.params.{param}", params[param]
        advice = "set it to your dataset's folder or file (a path relative to the folder Snakemake runs in)"
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"{key}: {value!r} is no path; {advice}")
        if Path.cwd().resolve().is_relative_to(Path(value).resolve()):
            raise ConfigError(
                f"{key}: {value!r} is the folder Snakemake runs in, or one above it, which holds the workflow "
                f"itself (and results/); {advice}"
            )


def check_names(config: dict) -> None:
    for section in NAMED_SECTIONS:
        for name in config.get(section) or {}:
            if not NAME.match(str(name)):
                raise ConfigError(
                    f"config key {section}.{name}: {name!r} becomes a folder name and a "
                    "wildcard, so it may hold only 1 to 100 letters, digits, '_', '.' and '-', "
                    "starting with a letter or digit and not ending in a piece repeated 20 times; "
                    "rename it"
                    + (
                        " (a swept parameter's value is part of the name)"
                        if section == "losses"
                        else ""
                    )
                )


def _check_arguments(
    key: str, kind: str, builder, params: dict, reserved: set[str]
) -> None:
    signature = inspect.signature(builder).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.values()):
        return  # takes anything
    accepted = [p for p in signature if p not in reserved and p != "self"]
    for name in params:
        if name in reserved:
            raise ConfigError(
                f"config key {key}.{name}: the pipeline sets {name!r} itself; remove it from params"
                + (
                    " (embedding_size belongs to the backbone entry)"
                    if name == "embedding_size"
                    else ""
                )
            )
        if name not in accepted:
            raise ConfigError(
                f"config key {key}.{name}: {kind} {unknown_parameter(name, accepted)}"
            )


def _check_ranges(key: str, kind: str, registry, name: str, params: dict) -> None:
    """The values of ``params`` against the ranges the entry declared with
    its registration (``workflow/registry.py``)."""
    from workflow.registry import ParameterError

    try:
        registry.check_params(name, params)
    except ParameterError as error:
        raise ConfigError(
            f"config key {key}.{error.param}: {error.value!r} {error.problem}{number_hint(error.value)}; "
            f"{kind} takes {error.rule} for it; change the value"
        ) from None


def _loss_entries(config: dict):
    """(config key of its params, entry) of every loss setting that may be
    trained: the losses, and with ``selection`` every trial of each. Swept
    settings are named by the key written in the config."""
    sweeps = config.get("sweeps") or {}
    named = list(config["losses"].items())
    for trials in (config.get("trials") or {}).values():
        named += list(trials.items())
    for name, entry in named:
        base = sweeps.get(name, {}).get("base", name)
        swept = sweeps.get(name, {}).get("values") or {}
        where = (
            f" (the sweep's setting {', '.join(f'{k}={v!r}' for k, v in swept.items())})"
            if swept
            else ""
        )
        yield f"losses.{base}.params", entry, where


def check_parameters(config: dict) -> None:
    """Every ``params`` key is an argument of the loss or backbone, every
    value lies in the range its registration declares, and every loss
    setting builds (on 2 classes and a 2-dimensional embedding: cheap, so
    a constructor's own ValueError or TypeError also stops here, before any
    job, naming the key). Backbones are not built here: a pretrained one
    would read its weights."""
    from workflow.backbones import BACKBONES
    from workflow.losses import LOSSES, build_loss

    for key, entry, where in _loss_entries(config):
        impl, params = entry["impl"], entry.get("params") or {}
        kind = f"loss {impl!r}"
        _check_arguments(
            key, kind, LOSSES.get(impl), params, PIPELINE_ARGUMENTS["losses"]
        )
        _check_ranges(key, kind, LOSSES, impl, params)
        try:
            build_loss(impl, num_classes=2, embedding_size=2, **params)
        except (ValueError, TypeError) as error:
            raise ConfigError(
                f"config key {key}: loss {impl!r} cannot be built with {params!r}{where}: {error}; "
                "change the value"
            ) from None
    for name, entry in config["backbones"].items():
        key, kind, params = (
            f"backbones.{name}.params",
            f"backbone {entry['arch']!r}",
            entry.get("params") or {},
        )
        _check_arguments(
            key,
            kind,
            BACKBONES.get(entry["arch"]),
            params,
            PIPELINE_ARGUMENTS["backbones"],
        )
        _check_ranges(key, kind, BACKBONES, entry["arch"], params)


def check_pretrained(config: dict) -> None:
    from workflow.backbones.weights import resolve

    for name, entry in config["backbones"].items():
        params = entry.get("params") or {}
        if params.get("pretrained") is not None:
            resolve(
                params["pretrained"],
                entry["arch"],
                f"backbones.{name}.params.pretrained",
            )

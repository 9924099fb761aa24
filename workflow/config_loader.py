"""The one config loader: the rules (``rules/common.smk``), the
benchmarks and the tests read a config through :func:`load_config`.

The JSON schema (``workflow/schemas/config.schema.yaml``) checks types and
ranges; the loader checks what the schema cannot know (registered names,
samplers, fair comparisons) and names the offending key in every error;
with ``check`` also everything :mod:`workflow.guards` checks.
"""

from __future__ import annotations

import copy

from workflow.config import (
    FIXED_FACTORS,
    Cell,
    ConfigError,
    candidate_settings,
    cells,
    laid_out,
    training_settings,
)
from workflow.config_schema import check_finite, validate_config
from workflow.guards import check_config
from workflow.guards.files import check_config_files
from workflow.sweeps import expand_sweeps, plan_trials


def load_config(config: dict, files=(), check: bool = False) -> dict:
    """Sweep expansion, schema check with defaults, registry and
    consistency checks: the config every rule reads. First the config
    ``files`` it was read from, if given (PyYAML has merged a duplicate key
    silently, the last one wins); with ``check`` last the checks of
    :mod:`workflow.guards` (``rules/common.smk`` does both)."""
    # First: PyYAML has merged a duplicate key silently (the last one wins).
    check_config_files(files)
    # YAML's .nan and .inf pass every bound of the schema.
    check_finite(config)
    # Sweeps (lists, ranges) expand into loss entries before the schema
    # check, so that every expanded entry is checked like a written one.
    expanded, sweeps = expand_sweeps(config)
    config = prepare_config(validate_config(expanded), sweeps)
    if check:
        check_config(config)
    return config


def prepare_config(config: dict, sweeps: dict | None = None) -> dict:
    """Validated config -> config with sweeps expanded and names checked.

    Returns a deep copy (the schema fills defaults with shared objects)
    with two derived keys: ``sweeps`` (per loss name, its base name and
    swept values) and ``trials`` (with ``selection`` on: per base loss, the
    loss entries tried on the validation split; else empty). With
    selection on, ``losses`` holds the base names, each with its first
    trial's entry; the trained setting is the selected trial's.
    """
    if sweeps is None:
        config, sweeps = expand_sweeps(config)
    config = copy.deepcopy(config)
    config["sweeps"] = sweeps
    config["trials"] = {}
    check_registered(config)
    fill_shipped_defaults(config)
    check_samplers(config)
    check_augment_ranges(config)
    if config.get("selection"):
        plan_trials(config)
    check_fixed_factors(config)
    return config


def check_registered(config: dict) -> None:
    """Every dataset source, backbone arch and loss impl must be registered."""
    from workflow.backbones import BACKBONES
    from workflow.datasets import DATASETS
    from workflow.losses import LOSSES

    checks = [
        ("datasets", "source", DATASETS),
        ("backbones", "arch", BACKBONES),
        ("losses", "impl", LOSSES),
    ]
    for section, key, registry in checks:
        for name, entry in config[section].items():
            if entry[key] not in registry.names():
                raise ConfigError(
                    f"config key {section}.{name}.{key}: unknown {registry.kind} "
                    f"{entry[key]!r}; registered: {', '.join(registry.names())}"
                )


def fill_shipped_defaults(config: dict) -> None:
    """A loss entry gets its loss's shipped defaults
    (:func:`workflow.losses.shipped_defaults`) for the keys it leaves out:
    ``lr_multiplier`` when null, ``params.<name>`` when ``params`` lacks
    the name (a parameter set to anything, null included, stays). Searched
    entries (``-tNN``) already hold their searched values; trial entries
    are the same objects as the loss entries they come from."""
    from workflow.losses import shipped_defaults

    for entry in config["losses"].values():
        for key, shipped in shipped_defaults(entry["impl"]).items():
            if key == "lr_multiplier":
                if entry.get("lr_multiplier") is None:
                    entry["lr_multiplier"] = shipped.value
            else:
                params = entry.get("params") or {}
                params.setdefault(key.removeprefix("params."), shipped.value)
                entry["params"] = params


def check_fixed_factors(config: dict) -> None:
    """Within one declared table, every compared cell has the same backbone,
    embedding size, optimiser, epochs, batch size and augmentation, unless
    the table lays that factor out (names it in ``rows``, ``columns`` or
    ``blocks``; laying out ``backbone`` also allows its embedding size).
    Within one block of a declared ranking likewise, unless the factor is
    one of the ranking's ``blocks``."""
    grid = cells(config)
    for table, decl in (config.get("tables") or {}).items():
        _check_fixed_within(
            config,
            grid,
            f"tables.{table}",
            decl.get("select") or {},
            decl.get("columns", []) + decl.get("blocks", []),
            laid_out(decl),
            "declare {factor!r} in the table's rows, columns or blocks",
        )
    for name, decl in (config.get("rankings") or {}).items():
        _check_fixed_within(
            config,
            grid,
            f"rankings.{name}",
            decl.get("select") or {},
            decl["blocks"],
            set(decl["blocks"]),
            "make {factor!r} one of the ranking's blocks",
            losses=decl.get("losses"),
        )


def _check_fixed_within(
    config: dict,
    grid: list[Cell],
    key: str,
    select: dict,
    grouping: list,
    layout: set,
    hint: str,
    losses: list | None = None,
) -> None:
    """The cells that ``select`` (and ``losses``) keep, grouped by the cell
    attributes of ``grouping``, agree in every fixed factor not in
    ``layout`` (``backbone`` there allows its embedding size too). A
    setting whose factor value ``select`` leaves out is no compared one."""
    if "backbone" in layout:
        layout = layout | {"embedding_size"}

    def wanted(key_: str) -> list[str]:
        value = select[key_]
        return [str(v) for v in (value if isinstance(value, list) else [value])]

    chosen = [
        c
        for c in grid
        if all(
            str(getattr(c, a)) in wanted(a)
            for a in select
            if a in ("dataset", "regime", "backbone", "loss")
        )
        and (not losses or c.loss in losses)
    ]
    groups: dict[tuple, list[Cell]] = {}
    for c in chosen:
        groups.setdefault(
            tuple(
                getattr(c, a)
                for a in grouping
                if a in ("dataset", "regime", "backbone")
            ),
            [],
        ).append(c)
    for group in groups.values():
        settings = [
            (c, s)
            for c in group
            for s in candidate_settings(config, c).values()
            if all(
                str(get(s)) in wanted(f)
                for f, get in FIXED_FACTORS.items()
                if f in select
            )
        ]
        for factor, get in FIXED_FACTORS.items():
            if factor in layout:
                continue
            seen: dict = {}
            for c, s in settings:
                seen.setdefault(get(s), c.loss)
            if len(seen) > 1:
                values = ", ".join(f"{v!r} ({loss})" for v, loss in seen.items())
                raise ConfigError(
                    f"config key {key}: the compared cells differ in {factor} "
                    f"({values}); a fair comparison keeps it fixed: make it the same for "
                    f"every loss, or {hint.format(factor=factor)}"
                )


def check_samplers(config: dict) -> None:
    """A class-balanced sampler's m_per_class must divide the batch size of
    every cell of its loss, with at least two classes per batch. (Whether
    the dataset has batch_size/m classes is checked when training starts.)"""
    for loss, entry in config["losses"].items():
        m = (entry.get("sampler") or {}).get("m_per_class")
        if m is None:
            continue
        for backbone in config["backbones"]:
            batch_size = training_settings(config, backbone, loss)["batch_size"]
            if batch_size % m or batch_size < 2 * m:
                raise ConfigError(
                    f"config key losses.{loss}.sampler.m_per_class: {m} must divide "
                    f"training.batch_size ({batch_size} for backbone {backbone!r}) into "
                    "at least two classes per batch; change one of them"
                )


def check_augment_ranges(config: dict) -> None:
    """``augment_scale`` and ``augment_ratio`` are ranges, ``min`` not
    above ``max`` (the schema checks each bound), wherever they are set."""
    places = [("training", config["training"])]
    for kind in ("backbones", "losses"):
        places += [
            (f"{kind}.{name}.training", entry.get("training") or {})
            for name, entry in config[kind].items()
        ]
    for where, training in places:
        for key in ("augment_scale", "augment_ratio"):
            bounds = training.get(key)
            if bounds is not None and bounds["min"] > bounds["max"]:
                raise ConfigError(
                    f"config key {where}.{key}: min {bounds['min']} is above max {bounds['max']}; "
                    "swap them"
                )

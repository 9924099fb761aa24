"""Config handling that needs no Snakemake: sweep expansion, registry checks,
the list of cells and each cell's resolved settings and hash.

The JSON schema (``workflow/schemas/config.schema.yaml``) checks types and
ranges; this module checks what the schema cannot know (registered names)
and names the offending key in every error.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

SCHEMA = Path(__file__).parent / "schemas" / "config.schema.yaml"


class ConfigError(ValueError):
    """A config value is wrong; the message names its key."""


# A cell's folder below results/cells (and trials', logs', benchmarks'
# folders): the one place the pattern is written. Snakemake fills it in as
# wildcards (rules/common.smk, cell_path); Python fills it in with a cell.
CELL_PATTERN = "{dataset}/{regime}/{backbone}/{loss}/seed{seed}"


@dataclass(frozen=True, order=True)
class Cell:
    dataset: str
    regime: str
    backbone: str
    loss: str
    seed: int

    @property
    def path(self) -> str:
        return CELL_PATTERN.format(**vars(self))


def _value_tag(value) -> str:
    return str(value).replace("/", "_").replace(" ", "")


def sweep_values(key: str, value) -> list | None:
    """The values of a swept setting, or None if ``value`` is not a sweep.

    A sweep is a list (``lr: [0.0001, 0.001]``) or a range with a number of
    points (``lr: {range: [1.0e-4, 1.0e-2], points: 3, scale: log}``; scale
    ``linear`` (default) or ``log``; integer ends on a linear scale give
    integers). Range values are rounded to 6 significant digits so that
    they read well in names.
    """
    if isinstance(value, list):
        if not value:
            raise ConfigError(
                f"config key {key}: an empty list sweeps nothing; give at least one value"
            )
        return _distinct(key, value)
    if not (isinstance(value, dict) and "range" in value):
        return None
    extra = set(value) - {"range", "points", "scale"}
    ends, points, scale = (
        value.get("range"),
        value.get("points"),
        value.get("scale", "linear"),
    )
    if (
        extra
        or not (isinstance(ends, list) and len(ends) == 2)
        or not all(
            isinstance(e, (int, float)) and not isinstance(e, bool) for e in ends
        )
        or not (isinstance(points, int) and points >= 2)
        or scale not in ("linear", "log")
    ):
        raise ConfigError(
            f"config key {key}: a range is {{range: [low, high], points: n >= 2, "
            f"scale: linear or log}}; got {value!r}"
            + "".join(
                dict.fromkeys(
                    number_hint(e) for e in (ends if isinstance(ends, list) else [])
                )
            )
        )
    import numpy as np

    if scale == "log":
        if min(ends) <= 0:
            raise ConfigError(
                f"config key {key}: a log-scale range needs positive ends, got {ends}"
            )
        grid = np.geomspace(ends[0], ends[1], points)
    else:
        grid = np.linspace(ends[0], ends[1], points)
    if scale == "linear" and all(isinstance(e, int) for e in ends):
        return list(dict.fromkeys(int(round(v)) for v in grid))  # distinct, in order
    return _distinct(key, [float(f"{v:.6g}") for v in grid])


def _same_value(a, b) -> bool:
    """Two swept values are the same setting: equal numbers whatever their
    type (``1`` and ``1.0``; booleans are not numbers here), or equal
    values of one type."""

    def number(v):
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    if number(a) and number(b):
        return float(a) == float(b)
    return type(a) is type(b) and a == b


def _distinct(key: str, values: list) -> list:
    """``values`` if no two are the same setting (:func:`_same_value`);
    otherwise a :class:`ConfigError` naming the key: two names for one
    setting would train it twice and, under ``selection``, give that loss
    fewer real trials than the others."""
    for i, value in enumerate(values):
        for earlier in values[:i]:
            if _same_value(value, earlier):
                raise ConfigError(
                    f"config key {key}: the sweep has the value {earlier!r} twice"
                    + (
                        f" (as {earlier!r} and {value!r})"
                        if repr(earlier) != repr(value)
                        else ""
                    )
                    + f" in {values!r}; these are one setting, so remove one of them "
                    "(a range: fewer points, or ends further apart)"
                )
    return values


def expand_sweeps(config: dict) -> tuple[dict, dict]:
    """Expand every sweep (a list or a range, see :func:`sweep_values`) of a
    loss's ``params``, a loss's ``training`` or the top-level ``training``
    into one loss entry per combination of values.

    ``cam: {impl: cam, params: {margin: [1, 2]}, training: {lr: [0.1, 0.01]}}``
    becomes ``cam-margin1-lr0.1``, ``cam-margin1-lr0.01``, ``cam-margin2-lr0.1``
    and ``cam-margin2-lr0.01``. A sweep in the top-level ``training``
    sweeps every loss (a loss's own value of that key wins).

    Returns the expanded config (a copy) and, per resulting loss name,
    ``{"base": <name in the config>, "values": {<key>: <value>}}``.
    Malformed sections are left for the schema to report.
    """
    config = copy.deepcopy(config)
    losses = config.get("losses")
    if not isinstance(losses, dict):
        return config, {}
    training = config.get("training")
    if isinstance(training, dict):
        for key, value in list(training.items()):
            values = sweep_values(f"training.{key}", value)
            if values is None:
                continue
            for name, backbone in (config.get("backbones") or {}).items():
                if isinstance(backbone, dict) and key in (
                    backbone.get("training") or {}
                ):
                    raise ConfigError(
                        f"config key training.{key}: a sweep of every loss cannot be combined "
                        f"with backbones.{name}.training.{key}; sweep it per loss instead"
                    )
            for entry in losses.values():
                if isinstance(entry, dict):
                    overrides = entry.setdefault("training", {})
                    if isinstance(overrides, dict):
                        overrides.setdefault(key, values)
            del training[key]
    expanded, sweeps = {}, {}
    for name, entry in losses.items():
        if not isinstance(entry, dict):
            expanded[name] = entry
            sweeps[name] = {"base": name, "values": {}}
            continue
        if "search" in entry:
            for new_name, new, values in search_trials(
                name, entry, config.get("selection")
            ):
                expanded[new_name] = new
                sweeps[new_name] = {"base": name, "values": values}
            continue
        swept = {}
        for section in ("params", "training"):
            fields = entry.get(section)
            if not isinstance(fields, dict):
                continue
            for key, value in fields.items():
                values = sweep_values(f"losses.{name}.{section}.{key}", value)
                if values is not None:
                    swept[(section, key)] = values
        if not swept:
            expanded[name] = entry
            sweeps[name] = {"base": name, "values": {}}
            continue
        for combination in itertools.product(*swept.values()):
            new = copy.deepcopy(entry)
            for (section, key), value in zip(swept, combination):
                new[section][key] = value
            tag = "-".join(
                f"{key}{_value_tag(v)}" for (_, key), v in zip(swept, combination)
            )
            new_name = f"{name}-{tag}"
            if new_name in losses or new_name in expanded:
                raise ConfigError(
                    f"config key losses.{name}: expanding its sweep gives {new_name!r}, "
                    "which already exists; rename one of them"
                )
            expanded[new_name] = new
            sweeps[new_name] = {
                "base": name,
                "values": {
                    f"{section}.{key}": v
                    for (section, key), v in zip(swept, combination)
                },
            }
    config["losses"] = expanded
    return config, sweeps


def search_trials(name: str, entry: dict, selection) -> list[tuple[str, dict, dict]]:
    """The trials of a loss entry with ``search`` (see :mod:`workflow.search`):
    ``selection.budget`` settings of its space, named ``<name>-t00``,
    ``<name>-t01``, ...; each as (name, loss entry, searched values)."""
    from workflow.search import design, entry_space, set_value

    if not isinstance(selection, dict) or not isinstance(selection.get("budget"), int):
        raise ConfigError(
            f"config key losses.{name}.search: a search needs selection.budget (the number of trials "
            "of every loss) and a validation split; add selection: {budget: 12} or remove the search"
        )
    for section in ("params", "training"):
        for key, value in (entry.get(section) or {}).items():
            if sweep_values(f"losses.{name}.{section}.{key}", value) is not None:
                raise ConfigError(
                    f"config key losses.{name}.{section}.{key}: a sweep cannot be combined with "
                    f"losses.{name}.search; give the range in the search (losses.{name}.search."
                    f"{section}.{key}: {{range: [low, high]}}) or fix one value"
                )
    from workflow.losses import LOSSES

    if entry.get("impl") not in LOSSES.names():
        return [(name, entry, {})]  # the schema or check_registered names it
    space = entry_space(name, entry)
    trials = []
    settings = design(space, selection["budget"], selection.get("seed", 0))
    for i, values in enumerate(settings):
        new = copy.deepcopy(entry)
        del new["search"]
        for key, value in values.items():
            set_value(new, key, value)
        trials.append((f"{name}-t{i:02d}", new, values))
    return trials


def expand_losses(losses: dict) -> dict:
    """The losses of :func:`expand_sweeps` alone (no top-level training)."""
    return expand_sweeps({"losses": losses})[0]["losses"]


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


def validate_config(config: dict) -> dict:
    """Check ``config`` against the schema with ``snakemake.utils.validate``
    and fill in defaults (in place and returned). A violation raises
    :class:`ConfigError` naming the key."""
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate

    try:
        validate(config, str(SCHEMA))
    except WorkflowError as error:
        raise ConfigError(describe_schema_error(error)) from error
    check_integers(config)
    return config


def check_integers(config: dict) -> None:
    """Every value of a key the schema types ``integer`` is an integer, not
    a float such as ``1.0``: JSON Schema counts a float with no fractional
    part as an integer, and it would reach a job as a float (a ``range``
    with a float, a folder ``seed1.0``, a metric ``precision@1.0``). One
    walk of the whole schema (its ``$defs``, arrays, nested sections) with
    a stricter integer type, so no integer key is left out; run after the
    schema check (which reports every other violation)."""
    import jsonschema
    import yaml

    schema = yaml.safe_load(SCHEMA.read_text())
    base = jsonschema.validators.validator_for(schema)
    strict = base.TYPE_CHECKER.redefine(
        "integer",
        lambda _, value: isinstance(value, int) and not isinstance(value, bool),
    )
    validator = jsonschema.validators.extend(base, type_checker=strict)(schema)
    floats = [
        error
        for error in validator.iter_errors(config)
        if error.validator == "type"
        and isinstance(error.instance, float)
        and "integer"
        in (
            error.validator_value
            if isinstance(error.validator_value, list)
            else [error.validator_value]
        )
    ]
    if floats:  # the first by key, whatever order the validator walked in
        error = min(floats, key=lambda e: [str(part) for part in e.absolute_path])
        key = ".".join(str(part) for part in error.absolute_path)
        raise ConfigError(
            f"config key {key}: {error.instance!r} is not an integer; write {int(error.instance)}"
            + (
                f"\n  {key}: {error.schema['description']}"
                if error.schema.get("description")
                else ""
            )
        )


def describe_schema_error(error: Exception) -> str:
    """One line naming the config key of a schema violation (the jsonschema
    error inside Snakemake's WorkflowError), then the schema's description."""
    import jsonschema

    inner = error  # Snakemake raises its WorkflowError while handling it
    while inner is not None and not isinstance(inner, jsonschema.ValidationError):
        inner = inner.__cause__ or inner.__context__
    if inner is None:
        return str(error)
    key = ".".join(str(part) for part in inner.absolute_path) or "(top level)"
    message = f"config key {key}: {inner.message}"
    if inner.validator == "type":
        message += number_hint(inner.instance)
    description = (
        inner.schema.get("description") if isinstance(inner.schema, dict) else None
    )
    if (
        inner.validator == "pattern" and description
    ):  # the description says the form; the regex would not
        message = f"config key {key}: {inner.instance!r} does not match the form it takes (below)"
    if description:
        message += f"\n  {key}: {description}"
    return message


# A number in exponent form that Python reads but YAML 1.1 (PyYAML, so
# Snakemake) does not: YAML 1.1 wants a dot and a signed exponent.
_EXPONENT_FORM = re.compile(r"^([-+]?(?:\d+\.?\d*|\.\d+))[eE]([-+]?)(\d+)$")


def number_hint(value) -> str:
    """For a string where a number is expected: if it is a number in
    exponent form (``1e-3``, which YAML 1.1 reads as a string), how to
    write it; else nothing."""
    match = _EXPONENT_FORM.match(value.strip()) if isinstance(value, str) else None
    if match is None:
        return ""
    mantissa, sign, exponent = match.groups()
    written = (
        f"{mantissa if '.' in mantissa else mantissa + '.0'}e{sign or '+'}{exponent}"
    )
    return (
        f" (YAML 1.1, which Snakemake reads, takes {value} for a string: "
        f"write {written}, with a dot and a signed exponent)"
    )


def check_finite(config, key: str = "") -> None:
    """Every number in the config is finite: YAML's ``.nan`` and ``.inf``
    pass the schema's bounds (any comparison with NaN is false), and a NaN
    learning rate or an infinite weight decay would only fail in a job."""
    if isinstance(config, float) and not math.isfinite(config):
        raise ConfigError(
            f"config key {key or '(top level)'}: {config} is not a finite number; every number in "
            "the config must be finite: write a number"
        )
    items = (
        config.items()
        if isinstance(config, dict)
        else enumerate(config)
        if isinstance(config, list)
        else []
    )
    for name, value in items:
        check_finite(value, f"{key}.{name}" if key else str(name))


def load_config(config: dict) -> dict:
    """Sweep expansion, schema check with defaults, registry and
    consistency checks: the config every rule reads."""
    check_finite(config)
    expanded, sweeps = expand_sweeps(config)
    return prepare_config(validate_config(expanded), sweeps)


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
    check_samplers(config)
    check_augment_ranges(config)
    if config.get("selection"):
        plan_trials(config)
    check_fixed_factors(config)
    return config


def plan_trials(config: dict) -> None:
    """With ``selection`` on: every loss gets exactly ``selection.budget``
    trials (the same tuning budget for every loss, as in Musgrave et al.
    2020). A loss with more settings than the budget keeps a seeded random
    subset of them; one with fewer stops with an error."""
    import numpy as np

    budget = config["selection"]["budget"]
    groups: dict[str, list[str]] = {}
    for name, sweep in config["sweeps"].items():
        groups.setdefault(sweep["base"], []).append(name)
    trials, losses = {}, {}
    for base, names in groups.items():
        if len(names) < budget:
            raise ConfigError(
                f"config key selection.budget: loss {base!r} has {len(names)} setting(s), "
                f"fewer than the budget of {budget} trials per loss; sweep more of its "
                f"values (e.g. losses.{base}.training.lr: [...]) or lower the budget"
            )
        if len(names) > budget:
            rng = np.random.default_rng(config["selection"]["seed"])
            keep = sorted(rng.choice(len(names), size=budget, replace=False))
            names = [names[i] for i in keep]
        trials[base] = {name: config["losses"][name] for name in names}
        losses[base] = config["losses"][names[0]]
    config["trials"] = trials
    config["losses"] = losses


# Factors that must be equal within one comparison table (Musgrave et al.
# 2020): each maps a cell's settings to its value.
FIXED_FACTORS = {
    "backbone": lambda s: s["backbone"],
    "embedding_size": lambda s: s["embedding_size"],
    "optimizer": lambda s: s["training"].get("optimizer"),
    "epochs": lambda s: s["training"].get("epochs"),
    "batch_size": lambda s: s["training"].get("batch_size"),
    "augment": lambda s: s["training"].get("augment", "none"),
}
# What a table may select by and lay out: the cell attributes, distance
# and retrieval, then the fixed factors that results/metrics.csv carries
# as columns (a table that compares cells differing in a factor must lay
# that factor out). Checked before any job (workflow.guards).
TABLE_ATTRIBUTES = [
    "dataset",
    "regime",
    "backbone",
    "loss",
    "distance",
    "retrieval",
    *[factor for factor in FIXED_FACTORS if factor != "backbone"],
]


def cell_factors(config: dict, cell: Cell) -> dict:
    """The fixed factors of a cell (columns of results/metrics.csv)."""
    settings = cell_settings(config, cell)
    return {
        name: get(settings) for name, get in FIXED_FACTORS.items() if name != "backbone"
    }


# Recall@k cutoffs of a class-disjoint dataset that registers none.
DEFAULT_RECALL_AT = [1, 2, 4, 8]


def dataset_evaluation(config: dict, dataset: str) -> dict:
    """The evaluation mapping of every cell of ``dataset``: the config's
    ``evaluation`` (less the speed-up figure's k, so that changing it
    re-evaluates no cell), with ``recall_at`` and ``clustering`` left null
    filled in by the dataset's protocol: under ``class_disjoint`` the
    dataset's registered Recall@k cutoffs (:data:`DEFAULT_RECALL_AT` if it
    registers none) and NMI/AMI, as the literature reports; under
    ``closed_set`` neither."""
    from workflow.datasets import DATASETS

    spec = config["datasets"][dataset]
    evaluation = {
        key: value
        for key, value in config["evaluation"].items()
        if key != "speedup_precision_at"
    }
    disjoint = spec.get("protocol", "closed_set") == "class_disjoint"
    if evaluation.get("recall_at") is None:
        registered = (
            DATASETS.metadata(spec["source"]).get("recall_at") or DEFAULT_RECALL_AT
        )
        evaluation["recall_at"] = list(registered) if disjoint else []
    if evaluation.get("clustering") is None:
        evaluation["clustering"] = disjoint
    if evaluation.get("device", "cpu") == "cpu":
        # The default adds no key, so that no finished cell is evaluated again.
        evaluation.pop("device", None)
    return evaluation


def candidate_settings(config: dict, cell: Cell) -> dict[str, dict]:
    """Every setting a final cell may be trained with: with selection on,
    one per trial of its loss (keyed by trial name); else only its own."""
    trials = config["trials"].get(cell.loss)
    if not trials:
        return {cell.loss: cell_settings(config, cell)}
    return {
        name: cell_settings(config, cell, loss_entry=entry)
        for name, entry in trials.items()
    }


def laid_out(decl: dict) -> set[str]:
    """The attributes a declared table lays out in its rows, columns or blocks."""
    layout = set(decl.get("columns", [])) | set(decl.get("blocks", []))
    for row in decl.get("rows", ["loss"]):
        layout |= set(row) - {"label"} if isinstance(row, dict) else {row}
    return layout


def ranked_losses(config: dict, decl: dict) -> list[str]:
    """The losses a declared ranking ranks, from the config (never from the
    rows a run happens to have): its ``losses``, else every configured loss
    its ``select`` keeps, in config order. The ranking job stops when one of
    them has no value (:func:`workflow.rankings.block_values`)."""
    if decl.get("losses"):
        return [str(loss) for loss in decl["losses"]]
    wanted = (decl.get("select") or {}).get("loss")
    if wanted is None:
        return [str(loss) for loss in config["losses"]]
    wanted = [str(v) for v in (wanted if isinstance(wanted, list) else [wanted])]
    return [str(loss) for loss in config["losses"] if str(loss) in wanted]


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


def cells(config: dict) -> list[Cell]:
    return [
        Cell(*values)
        for values in itertools.product(
            config["datasets"],
            config["regimes"],
            config["backbones"],
            config["losses"],
            config["seeds"],
        )
    ]


def training_settings(config: dict, backbone: str, loss: str | dict) -> dict:
    """Global training settings, overridden by the backbone's, then the
    loss's (``loss``: a name in ``losses`` or a loss entry)."""
    entry = config["losses"][loss] if isinstance(loss, str) else loss
    return {
        **config["training"],
        **config["backbones"][backbone].get("training", {}),
        **entry.get("training", {}),
    }


# Schema defaults of the dataset keys the splits read (configs checked by
# the schema have them filled in already).
SPLIT_DEFAULTS = {
    "test_fraction": 0.3,
    "query_per_class": 10,
    "database_per_class": None,
    "database_from": "test",
}


def _split_key(spec: dict, key: str):
    return spec.get(key, SPLIT_DEFAULTS[key])


def training_pool_spec(spec: dict) -> dict:
    """The keys of a dataset's config entry that decide its training pool
    (and so the training split with the regime's ``train_per_class``):
    ``test_fraction`` (used when the dataset has no official test side),
    ``database_from``, and ``database_per_class`` only when the database is
    drawn from the training pool (``database_from: train``)."""
    pool = {key: _split_key(spec, key) for key in ["test_fraction", "database_from"]}
    if pool["database_from"] == "train":
        pool["database_per_class"] = _split_key(spec, "database_per_class")
    return {**pool, **protocol_spec(spec)}


def evaluation_spec(spec: dict) -> dict:
    """The keys of a dataset's config entry that decide its query and
    database images (the evaluation split)."""
    return {
        **{key: _split_key(spec, key) for key in SPLIT_DEFAULTS},
        **protocol_spec(spec),
    }


def protocol_spec(spec: dict) -> dict:
    """``protocol`` and ``train_classes`` of a class-disjoint dataset (the
    latter from the dataset's registered official boundary, e.g. CUB's
    100, when the entry gives none); {} for the default closed set, so
    the settings of closed-set cells stay as they were."""
    protocol = spec.get("protocol", "closed_set")
    if protocol == "closed_set" and spec.get("train_classes") is None:
        return {}
    train_classes = spec.get("train_classes")
    if train_classes is None and protocol == "class_disjoint":
        from workflow.datasets import (
            DATASETS,  # here: the loaders import workflow.download, which imports this
        )

        train_classes = DATASETS.metadata(spec["source"]).get("train_classes")
    return {"protocol": protocol, "train_classes": train_classes}


PREPARE_DEFAULTS = {
    "params": {},
    "image_size": None,
    "classes": None,
    "skip_undecodable": False,
}


def prepare_settings(spec: dict) -> dict:
    """The part of a dataset's config that determines its prepared arrays
    (so changing, e.g., ``query_per_class`` does not decode again).
    ``storage`` only when it is not the default ``array``: the settings
    (and hashes) of datasets prepared before the key existed stay the same."""
    settings = {
        "source": spec["source"],
        **{k: spec.get(k, v) for k, v in PREPARE_DEFAULTS.items()},
    }
    if spec.get("storage", "array") != "array":
        settings["storage"] = spec["storage"]
    return settings


def training_dataset_spec(spec: dict) -> dict:
    """What training depends on of a dataset's config entry: the keys that
    decide the prepared arrays (:func:`prepare_settings`)
    and the training pool (:func:`training_pool_spec`). Not
    ``query_per_class``, nor ``database_per_class`` unless
    ``database_from: train``: they only decide query and database, so
    changing them re-runs the evaluation split, embed and evaluate, and
    trains nothing again."""
    return {**prepare_settings(spec), **training_pool_spec(spec)}


def cell_settings(config: dict, cell: Cell, loss_entry: dict | None = None) -> dict:
    """Everything that determines a cell's trained model, as plain data
    (``loss_entry`` replaces the loss's config entry, e.g. with a trial's).
    Of the dataset's entry only what training depends on
    (:func:`training_dataset_spec`): these settings are the train rule's
    params (Snakemake's rerun trigger) and their :func:`settings_hash` is
    the resume checkpoint's and the embeddings' ``config_hash``."""
    backbone = config["backbones"][cell.backbone]
    loss = config["losses"][cell.loss] if loss_entry is None else loss_entry
    return {
        "dataset": cell.dataset,
        "regime": cell.regime,
        "backbone": cell.backbone,
        "loss": cell.loss,
        "seed": int(cell.seed),
        "dataset_spec": training_dataset_spec(config["datasets"][cell.dataset]),
        "regime_spec": config["regimes"][cell.regime],
        "arch": backbone["arch"],
        "embedding_size": backbone["embedding_size"],
        "backbone_params": backbone.get("params", {}),
        "loss_impl": loss["impl"],
        "loss_params": loss.get("params", {}),
        "loss_lr_multiplier": loss.get("lr_multiplier", 1.0),
        "sampler": loss.get("sampler"),
        "training": training_settings(config, cell.backbone, loss),
    }


def trial_cells(config: dict) -> list[Cell]:
    """With selection on, the trial cells: every trial of every loss, at the
    selection seeds, trained and evaluated on the validation split."""
    if not config["trials"]:
        return []
    seeds = config["selection"]["seeds"] or config["seeds"][:1]
    names = [name for trials in config["trials"].values() for name in trials]
    return [
        Cell(*values)
        for values in itertools.product(
            config["datasets"], config["regimes"], config["backbones"], names, seeds
        )
    ]


def trial_settings(config: dict, cell: Cell) -> dict:
    """A trial cell's settings (its loss is a trial name)."""
    base = config["sweeps"][cell.loss]["base"]
    final = Cell(cell.dataset, cell.regime, cell.backbone, base, cell.seed)
    settings = cell_settings(
        config, final, loss_entry=config["trials"][base][cell.loss]
    )
    settings["loss"] = cell.loss
    return settings


def settings_hash(settings: dict) -> str:
    """A short stable hash of a cell's settings (recorded in its outputs and
    resume checkpoint); it covers only what training depends on, so it is
    the same for every evaluation setting."""
    blob = json.dumps(settings, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]

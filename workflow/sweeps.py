"""Sweeps of a config: a list or a range of values of a loss's (or the
top-level) ``params``/``training`` key expanded into one loss entry per
combination, searched settings (``search``), and with ``selection`` on the
trials of each loss (the same budget for every loss).
"""

from __future__ import annotations

import copy
import itertools

from workflow.config import ConfigError
from workflow.config_schema import number_hint


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

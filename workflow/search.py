"""Hyperparameter search spaces and the equal-budget trial design.

Every loss declares, with its registration (``search=``), the range and
scale of each tunable parameter and the published value as its centre, and
where the range comes from (the paper, its official code, or "ours").
:data:`COMMON` adds what every loss is tuned over (the backbone's learning
rate and weight decay) and :data:`LOSS_PARAMETER_LR` the learning-rate
multiplier of a loss's own parameters (anchors, proxies, centres, class
weights), for the losses that have any.

With ``losses.<name>.search: default`` (or a mapping that overrides single
dimensions) and ``selection.budget: n``, a loss gets exactly ``n`` trials:
the centre (every dimension at its published value) and ``n - 1`` points of
a scrambled Sobol sequence (``scipy.stats.qmc``, seeded by
``selection.seed``), mapped onto each dimension's scale. The design depends
only on the space, the budget and the seed, so a plan is reproducible and
every loss gets the same budget. Values the loss's entry sets itself
(``params``, ``training``, ``lr_multiplier``) are fixed, not searched.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

# What a dimension's key names in a loss entry: ``params.<name>``,
# ``training.<name>`` or ``lr_multiplier``.
SECTIONS = ("params", "training")


def _round(value: float) -> float:
    """Three significant digits: trial values read well in tables."""
    return float(f"{value:.3g}")


@dataclass(frozen=True)
class Range:
    """A number from ``low`` to ``high`` on a ``log`` or ``linear`` scale,
    centred on ``centre`` (the published value); ``source`` says where
    the range comes from."""

    low: float
    high: float
    centre: float
    source: str
    scale: str = "log"

    def __post_init__(self):
        if self.scale not in ("log", "linear"):
            raise ValueError(f"scale {self.scale!r}: use log or linear")
        if not self.low < self.high or not self.low <= self.centre <= self.high:
            raise ValueError(
                f"range [{self.low}, {self.high}] must be ordered and hold its centre {self.centre}"
            )
        if self.scale == "log" and self.low <= 0:
            raise ValueError(f"a log range needs positive ends, got {self.low}")

    def value(self, u: float) -> float:
        """The value at ``u`` in [0, 1) of the way along the scale."""
        if self.scale == "log":
            return _round(
                math.exp(
                    math.log(self.low) + u * (math.log(self.high) - math.log(self.low))
                )
            )
        return _round(self.low + u * (self.high - self.low))

    def describe(self) -> str:
        return f"{self.low:g} to {self.high:g} ({self.scale}), centre {self.centre:g}"


@dataclass(frozen=True)
class Choice:
    """One of ``values``, each equally likely; ``centre`` is the published one."""

    values: tuple
    centre: object
    source: str

    def __post_init__(self):
        if self.centre not in self.values or len(self.values) < 2:
            raise ValueError(
                f"choices {self.values} must be at least two and hold the centre {self.centre!r}"
            )

    def value(self, u: float):
        return self.values[min(int(u * len(self.values)), len(self.values) - 1)]

    def describe(self) -> str:
        return f"one of {', '.join(map(str, self.values))}, centre {self.centre}"


# Tuned for every loss: the backbone's learning rate and weight decay.
COMMON = {
    "training.lr": Range(
        1.0e-4, 1.0e-2, 1.0e-3, "ours: a decade either side of Adam's default 1e-3"
    ),
    "training.weight_decay": Range(
        1.0e-6, 1.0e-2, 1.0e-4, "ours: four decades around 1e-4"
    ),
}
# Tuned for every loss with parameters of its own (anchors, proxies,
# centres, class weights): their learning rate as a multiple of lr. With
# Adam a parameter moves about lr per step, so anchors that start at norm
# 0.5 barely move in a few hundred steps at 1x.
LOSS_PARAMETER_LR = Range(1.0, 1000.0, 31.6, "ours: 1x to 1000x the backbone's rate")


def loss_space(impl: str) -> dict:
    """The declared search space of loss ``impl``: its own dimensions
    (``search=`` in its registration, keys ``params.<name>`` or
    ``lr_multiplier``), then :data:`COMMON`; ``lr_multiplier`` defaults to
    :data:`LOSS_PARAMETER_LR` for a loss with parameters."""
    from workflow.losses import LOSSES, loss_has_parameters

    own = dict(LOSSES.metadata(impl).get("search") or {})
    if loss_has_parameters(impl):
        own.setdefault("lr_multiplier", LOSS_PARAMETER_LR)
    return {**own, **COMMON}


def dimension_from_config(key: str, value) -> Range | Choice | None:
    """A dimension as a config writes it (``{range: [low, high], scale:
    log, centre: c}`` or ``{choices: [...], centre: c}``), or None for
    ``null`` (the dimension is dropped)."""
    from workflow.config import ConfigError

    if value is None:
        return None
    source = "config"
    try:
        if (
            isinstance(value, dict)
            and set(value) <= {"range", "scale", "centre"}
            and "range" in value
        ):
            ends = value["range"]
            if not (
                isinstance(ends, list)
                and len(ends) == 2
                and all(
                    isinstance(e, (int, float)) and not isinstance(e, bool)
                    for e in ends
                )
            ):
                raise ValueError(f"range must be two numbers [low, high], got {ends!r}")
            low, high = map(float, ends)
            scale = value.get("scale", "log")
            middle = (
                math.sqrt(low * high)
                if scale == "log" and low > 0
                else (low + high) / 2
            )
            return Range(low, high, value.get("centre", middle), source, scale)
        if (
            isinstance(value, dict)
            and set(value) <= {"choices", "centre"}
            and "choices" in value
        ):
            return Choice(
                tuple(value["choices"]),
                value.get("centre", value["choices"][0]),
                source,
            )
    except (TypeError, ValueError) as error:
        raise ConfigError(f"config key {key}: {error}") from error
    raise ConfigError(
        f"config key {key}: a search dimension is {{range: [low, high], scale: log or linear, centre: c}}, "
        f"{{choices: [a, b, ...], centre: a}} or null (not searched); got {value!r}"
    )


def entry_space(name: str, entry: dict) -> dict:
    """The space loss entry ``name`` is searched over: the declared one
    (``search: default``) or it with the entry's ``search`` mapping's
    dimensions replaced, added or dropped (null); less the keys the entry
    sets itself, which stay fixed."""
    from workflow.config import ConfigError

    spec = entry.get("search")
    space = loss_space(entry["impl"])
    if isinstance(spec, dict):
        for key, value in spec.items():
            where = f"losses.{name}.search.{key}"
            section = key.split(".", 1)[0]
            if key != "lr_multiplier" and (section not in SECTIONS or "." not in key):
                raise ConfigError(
                    f"config key {where}: a dimension is params.<name>, training.<name> or lr_multiplier"
                )
            dimension = dimension_from_config(where, value)
            if dimension is None:
                space.pop(key, None)
            else:
                space[key] = dimension
    elif spec != "default":
        raise ConfigError(
            f"config key losses.{name}.search: 'default' (the loss's declared space) or a mapping of "
            f"dimensions; got {spec!r}"
        )
    fixed = {key for key in space if key_value(entry, key) is not None}
    return {key: dim for key, dim in space.items() if key not in fixed}


def key_value(entry: dict, key: str):
    """The value a loss entry sets itself for a dimension's key, or None."""
    if key == "lr_multiplier":
        return entry.get("lr_multiplier")
    section, field = key.split(".", 1)
    fields = entry.get(section)
    return fields.get(field) if isinstance(fields, dict) else None


def design(space: dict, budget: int, seed: int) -> list[dict]:
    """``budget`` settings of ``space``: the centre first, then points of a
    scrambled Sobol sequence (seeded) mapped onto each dimension. An empty
    space has only its centre, so it gives one setting."""
    from scipy.stats import qmc

    keys = list(space)
    settings = [{key: space[key].centre for key in keys}]
    if keys and budget > 1:
        with warnings.catch_warnings():
            # A prefix of a Sobol sequence whose length is no power of 2
            # loses the balance of a full 2^k block; it is still a
            # low-discrepancy design, better spread than random draws.
            warnings.simplefilter("ignore", UserWarning)
            points = qmc.Sobol(len(keys), scramble=True, rng=seed).random(budget - 1)
        settings += [
            {key: space[key].value(u) for key, u in zip(keys, point)}
            for point in points
        ]
    return settings


def set_value(entry: dict, key: str, value) -> None:
    """Set a dimension's value in a loss entry (in place)."""
    if key == "lr_multiplier":
        entry["lr_multiplier"] = value
        return
    section, field = key.split(".", 1)
    entry.setdefault(section, {})[field] = value


def search_table() -> list[dict]:
    """Every loss's declared space, one row per dimension (for
    ``python -m workflow`` and the documentation)."""
    from workflow.losses import LOSSES

    return [
        {"loss": impl, "key": key, "values": dim.describe(), "source": dim.source}
        for impl in LOSSES.names()
        for key, dim in loss_space(impl).items()
    ]

"""A tiny name -> builder registry (the torchvision / timm pattern).

Losses, backbones and datasets each have one. A new entry is a decorated
function or class in a new module of the package; the package imports all of
its modules on first use, so nothing else has to be edited. An entry may
carry metadata, given to the decorator (``@register_loss("triplet",
geometry="cosine")``) and read with :meth:`Registry.metadata`, instead of
being probed for with ``hasattr``; a registry may require some keys and
their allowed values.

**Parameter ranges** are declared once, with the entry, in the metadata key
``params``: a rule per keyword parameter the config may set
(``@register_loss("cam", geometry="euclidean", params={"margin":
Number(gt=0), ...})``). :meth:`Registry.check_params` checks a config's
params against them; the builders (``build_loss``, ``build_backbone``) and
the config check before any job (``workflow.guards``) both call it, so a
nonsensical value (a negative margin, no conv widths, ``margin: big``)
never reaches a constructor.
"""

from __future__ import annotations

import difflib
import importlib
import math
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class Number:
    """A finite real number (an integer with ``integer=True``; booleans and
    strings are not numbers) within the given bounds; also null with
    ``optional=True`` (the entry's own default then applies)."""

    gt: float | None = None
    ge: float | None = None
    lt: float | None = None
    le: float | None = None
    integer: bool = False
    optional: bool = False

    def __str__(self) -> str:
        bounds = [
            f"{op} {v:g}"
            for op, v in [
                (">", self.gt),
                (">=", self.ge),
                ("<", self.lt),
                ("<=", self.le),
            ]
            if v is not None
        ]
        text = ("an integer" if self.integer else "a number") + (
            " " + " and ".join(bounds) if bounds else ""
        )
        return text + (" (or null for the default)" if self.optional else "")

    def problem(self, value) -> str | None:
        if value is None and self.optional:
            return None
        if self.integer and isinstance(value, float) and value.is_integer():
            return f"is not an integer (write {int(value)})"
        if not _is_number(value) or (self.integer and not isinstance(value, int)):
            return f"is not {'an integer' if self.integer else 'a number'}"
        if not math.isfinite(value):
            return "is not finite"
        for _op, bound, ok in [
            (">", self.gt, lambda v, b: v > b),
            (">=", self.ge, lambda v, b: v >= b),
            ("<", self.lt, lambda v, b: v < b),
            ("<=", self.le, lambda v, b: v <= b),
        ]:
            if bound is not None and not ok(value, bound):
                return "is out of range"
        return None


@dataclass(frozen=True)
class OneOf:
    """One of the given values."""

    values: tuple

    def __str__(self) -> str:
        return "one of " + ", ".join(map(repr, self.values))

    def problem(self, value) -> str | None:
        return (
            None
            if any(type(value) is type(v) and value == v for v in self.values)
            else "is not allowed"
        )


@dataclass(frozen=True)
class Flag:
    """true or false."""

    def __str__(self) -> str:
        return "true or false"

    def problem(self, value) -> str | None:
        return None if isinstance(value, bool) else "is not true or false"


@dataclass(frozen=True)
class ListOf:
    """A list of at least ``min_items`` items, each following ``item``."""

    item: Any
    min_items: int = 1

    def __str__(self) -> str:
        return f"a list of at least {self.min_items} item(s), each {self.item}"

    def problem(self, value) -> str | None:
        if not isinstance(value, (list, tuple)):
            return "is not a list"
        if len(value) < self.min_items:
            return f"has {len(value)} item(s)"
        for i, item in enumerate(value):
            problem = self.item.problem(item)
            if problem:
                return f"has item {i} = {item!r}, which {problem}"
        return None


@dataclass(frozen=True)
class CheckedElsewhere:
    """A parameter checked by its own code (named in ``by``)."""

    by: str

    def __str__(self) -> str:
        return f"checked by {self.by}"

    def problem(self, value) -> str | None:
        return None


def did_you_mean(word, choices) -> str:
    """`` (did you mean 'x'?)`` with the choice closest to ``word``
    (difflib), or "" when none is close: the hint of every "unknown name"
    error."""
    close = difflib.get_close_matches(word, choices, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def unknown_parameter(name, accepted: list[str]) -> str:
    """The end of the error for a parameter ``name`` that a loader, loss or
    backbone does not take: the closest one and all it ``accepted``."""
    return f"has no parameter {name!r}{did_you_mean(name, accepted)}; it accepts: {', '.join(accepted) or 'none'}"


class ParameterError(ValueError):
    """A parameter value outside its declared range; ``param`` names it."""

    def __init__(self, kind: str, entry: str, param: str, value, problem: str, rule):
        self.param, self.value, self.problem, self.rule = param, value, problem, rule
        super().__init__(
            f"{kind} {entry!r} parameter {param}: {value!r} {problem}; it must be {rule}"
        )


class Registry(Generic[T]):
    def __init__(
        self, kind: str, package: str, required: dict[str, tuple] | None = None
    ):
        self.kind = kind
        self.package = package
        self.required = required or {}  # metadata key -> allowed values
        self._entries: dict[str, T] = {}
        self._metadata: dict[str, dict] = {}
        self._loaded = False

    def register(self, name: str, **metadata) -> Callable[[T], T]:
        for key, allowed in self.required.items():
            if metadata.get(key) not in allowed:
                raise ValueError(
                    f"{self.kind} {name!r}: register it with {key}= one of "
                    f"{', '.join(map(repr, allowed))} (got {metadata.get(key)!r})"
                )

        def decorator(obj: T) -> T:
            if name in self._entries and self._entries[name] is not obj:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = obj
            self._metadata[name] = dict(metadata)
            return obj

        return decorator

    def metadata(self, name: str) -> dict:
        """The metadata ``name`` was registered with."""
        self.get(name)
        return dict(self._metadata[name])

    def check_params(self, name: str, params: dict) -> None:
        """Raise :class:`ParameterError` for the first value of ``params``
        outside the range ``name`` declared (metadata ``params``); names it
        did not declare are left to the builder's signature."""
        rules = self.metadata(name).get("params") or {}
        for param, value in params.items():
            rule = rules.get(param)
            problem = rule.problem(value) if rule is not None else None
            if problem:
                raise ParameterError(self.kind, name, param, value, problem, rule)

    def _load_all(self) -> None:
        # Import every module of the package so their decorators run.
        if self._loaded:
            return
        pkg = importlib.import_module(self.package)
        for info in pkgutil.iter_modules(pkg.__path__):
            if not info.name.startswith("_"):
                importlib.import_module(f"{self.package}.{info.name}")
        self._loaded = True

    def names(self) -> list[str]:
        self._load_all()
        return sorted(self._entries)

    def get(self, name: str) -> T:
        self._load_all()
        if name not in self._entries:
            raise KeyError(
                f"unknown {self.kind} {name!r}; registered: {', '.join(self.names())}"
            )
        return self._entries[name]

"""A tiny name -> builder registry (the torchvision / timm pattern).

Losses, backbones and datasets each have one. A new entry is a decorated
function or class in a new module of the package; the package imports all of
its modules on first use, so nothing else has to be edited. An entry may
carry metadata, given to the decorator (``@register_loss("triplet",
geometry="cosine")``) and read with :meth:`Registry.metadata`, instead of
being probed for with ``hasattr``; a registry may require some keys and
their allowed values.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Callable, Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str, package: str, required: dict[str, tuple] | None = None):
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

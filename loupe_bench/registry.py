"""A tiny decorator registry, used for datasets, model families, task types, region and pair scorers, proposal
sources, plans and benchmarks. A registry whose modules are imported on first use (they need torch) names them in
a list made by :func:`registering_modules`, which checks at import time, without importing them, that each exists;
:func:`import_registering_modules` imports them. Both fail loudly with the module's name.

Specs are data found through registries, never if/elif chains over names::

    DATASETS = Registry("dataset")

    @DATASETS.register("karpathy")
    class KarpathyLoader: ...

    DATASETS.get("karpathy")   # -> KarpathyLoader
    DATASETS.names()            # sorted names
"""
from __future__ import annotations

import fnmatch
import importlib
import importlib.util
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Tuple, TypeVar

from .errors import SpecError

T = TypeVar("T")


def _not_found(mod: str) -> ImportError:
    return ImportError(f"registration module {mod!r} not found (check the registration list that names it)")


def registering_modules(*modules: str) -> Tuple[str, ...]:
    """The registration list ``modules`` (modules whose import registers entries), each checked to exist without
    importing it (no torch at import time); a name that matches no module is an :class:`ImportError` naming it, at
    the import of the list's own module."""
    for mod in modules:
        try:
            found = importlib.util.find_spec(mod)
        except ModuleNotFoundError:  # a parent package of the name does not exist
            found = None
        if found is None:
            raise _not_found(mod)
    return tuple(modules)


def import_registering_modules(modules: Iterable[str]) -> None:
    """Import each module whose import registers entries (each once). A module that cannot be found or imported
    is an error naming it (a typo in a registration list fails here, not later as an "unknown" entry)."""
    for mod in modules:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as err:
            if err.name != mod and not mod.startswith(f"{err.name}."):
                raise  # the module exists; something it imports is missing: the original error says what
            raise _not_found(mod) from err


class Registry:
    """A name -> object map with a decorator, helpful errors and fnmatch listing."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: Dict[str, Any] = {}
        self._help: Dict[str, str] = {}

    def register(self, name: Optional[str] = None, *, help: Optional[str] = None) -> Callable[[T], T]:
        """Decorator registering a class or function under ``name`` (default: its ``__name__``)."""

        def deco(obj: T) -> T:
            key = name or getattr(obj, "__name__")
            if key in self._items and self._items[key] is not obj:
                raise ValueError(f"{self.kind} {key!r} registered twice")
            self._items[key] = obj
            doc = help or (getattr(obj, "__doc__", None) or "").strip().splitlines()
            self._help[key] = doc if isinstance(doc, str) else (doc[0] if doc else "")
            return obj

        return deco

    def add(self, name: str, obj: Any, help: str = "") -> None:
        """Register ``obj`` under ``name`` without a decorator (used for specs read from files)."""
        self._items[name] = obj
        self._help[name] = help

    def get(self, name: str) -> Any:
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(sorted(self._items)) or "(none)"
            raise SpecError(f"unknown {self.kind} {name!r}; known: {known}") from None

    def __contains__(self, name: str) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))

    def __len__(self) -> int:
        return len(self._items)

    def names(self, pattern: str = "*") -> List[str]:
        return sorted(n for n in self._items if fnmatch.fnmatch(n, pattern))

    def help(self, name: str) -> str:
        return self._help.get(name, "")

"""Calibration observers, one per module in this package, registered by name.

An observer sees every batch of one activation tensor (`update(x)`, streaming: nothing but a running
min/max or a fixed-size histogram is kept) and then proposes the real range `(lo, hi)` that the
tensor's int8 scale / zero point are computed from (`qparams_from_range`).
"""
from __future__ import annotations

import importlib
import pkgutil

from converters.observers.base import (Observer, ObserverConfig, StreamingHistogram,
                                       qparams_from_range)
from edgert.errors import ConversionError

_REGISTRY: dict[str, type[Observer]] = {}
_DISCOVERED = False


def register_observer(cls: type[Observer]) -> type[Observer]:
    if not cls.name:
        raise RuntimeError(f"{cls.__name__} has no name")
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise RuntimeError(f"observer {cls.name} registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def _discover() -> None:
    global _DISCOVERED
    if _DISCOVERED:
        return
    for mod in pkgutil.iter_modules(__path__):
        if mod.name != "base" and not mod.name.startswith("_"):
            importlib.import_module(f"{__name__}.{mod.name}")
    _DISCOVERED = True


def known_observers() -> list[str]:
    _discover()
    return sorted(_REGISTRY)


def get_observer(name: str) -> type[Observer]:
    """The observer class registered as `name`; unknown names raise ConversionError listing the known."""
    _discover()
    cls = _REGISTRY.get(name)
    if cls is None:
        raise ConversionError(f"unknown observer {name!r} (known: {', '.join(sorted(_REGISTRY))})")
    return cls


def make_observer(name: str, config: ObserverConfig | None = None) -> Observer:
    return get_observer(name)(config or ObserverConfig())


__all__ = ["Observer", "ObserverConfig", "StreamingHistogram", "get_observer", "known_observers",
           "make_observer", "qparams_from_range", "register_observer"]

"""Calibration observers, one per module in this package, registered by name.

An observer sees every batch of one activation tensor (`update(x)`, streaming: nothing but a running
min/max or a fixed-size histogram is kept) and then proposes the real range `(lo, hi)` that the
tensor's int8 scale / zero point are computed from (`qparams_from_range`).
"""
from __future__ import annotations

from converters.observers.base import (Observer, ObserverConfig, StreamingHistogram,
                                       qparams_from_range)
from edgert.errors import ConversionError
from edgert.registry import Registry

_OBSERVERS: Registry[Observer] = Registry("observer", __name__, ConversionError)


def register_observer(cls: type[Observer]) -> type[Observer]:
    return _OBSERVERS.register(cls.name, cls)


def known_observers() -> list[str]:
    return _OBSERVERS.known()


def get_observer(name: str) -> type[Observer]:
    """The observer class registered as `name`; unknown names raise ConversionError listing the known."""
    return _OBSERVERS.lookup(name)


def make_observer(name: str, config: ObserverConfig | None = None) -> Observer:
    return get_observer(name)(config or ObserverConfig())


__all__ = ["Observer", "ObserverConfig", "StreamingHistogram", "get_observer", "known_observers",
           "make_observer", "qparams_from_range", "register_observer"]

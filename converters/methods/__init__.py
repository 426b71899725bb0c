"""Weight quantization methods, one per module in this package, registered by name.

A method only decides the scales (one per row of a 2-D view of the weight: per tensor, per output
channel or per group); `quantize_weight` (base.py) does the reshaping, the fp16 rounding of the
scales and the final rounding, the same way for every method."""
from __future__ import annotations

import importlib
import pkgutil

from converters.methods.base import (QuantizedWeight, Scheme, WeightMethod, WeightSpec,
                                     magnitude_mask, nm_mask, quantize_weight, round_scale)
from edgert.errors import ConversionError

_REGISTRY: dict[str, type[WeightMethod]] = {}
_DISCOVERED = False


def register_method(cls: type[WeightMethod]) -> type[WeightMethod]:
    if not cls.name:
        raise RuntimeError(f"{cls.__name__} has no name")
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise RuntimeError(f"method {cls.name} registered twice")
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


def known_methods() -> list[str]:
    _discover()
    return sorted(_REGISTRY)


def get_method(name: str) -> WeightMethod:
    """An instance of the method registered as `name`; unknown names raise ConversionError."""
    _discover()
    cls = _REGISTRY.get(name)
    if cls is None:
        raise ConversionError(f"unknown weight quantization method {name!r} "
                              f"(known: {', '.join(sorted(_REGISTRY))})")
    return cls()


__all__ = ["QuantizedWeight", "Scheme", "WeightMethod", "WeightSpec", "get_method",
           "known_methods", "magnitude_mask", "nm_mask", "quantize_weight", "register_method",
           "round_scale"]

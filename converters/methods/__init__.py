"""Weight quantization methods, one per module in this package, registered by name.

A method only decides the scales (one per row of a 2-D view of the weight: per tensor, per output
channel or per group); `quantize_weight` (base.py) does the reshaping, the fp16 rounding of the
scales and the final rounding, the same way for every method."""
from __future__ import annotations

from converters.methods.base import (QuantizedWeight, Scheme, WeightMethod, WeightSpec,
                                     magnitude_mask, nm_mask, quantize_weight, round_scale)
from edgert.errors import ConversionError
from edgert.registry import Registry

_METHODS: Registry[WeightMethod] = Registry("weight quantization method", __name__, ConversionError)


def register_method(cls: type[WeightMethod]) -> type[WeightMethod]:
    return _METHODS.register(cls.name, cls)


def known_methods() -> list[str]:
    return _METHODS.known()


def get_method(name: str) -> WeightMethod:
    """An instance of the method registered as `name`; unknown names raise ConversionError."""
    return _METHODS.lookup(name)()


__all__ = ["QuantizedWeight", "Scheme", "WeightMethod", "WeightSpec", "get_method",
           "known_methods", "magnitude_mask", "nm_mask", "quantize_weight", "register_method",
           "round_scale"]

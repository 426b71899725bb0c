"""What a layer's weight costs in a package at each width, and the budget forms the CLI takes.

A quantized layer stores its integer codes bit-packed (`bits` per weight, docs/design.md "Weight
encodings") plus one scale per row of its quantization view (per tensor: 1, per channel: the output
channels, per group: params / group_size) at `scale_bytes` each (fp16 = 2).  A float layer stores
float32.  Entropy coding (zstd) of the package comes on top and is not modelled: the budget bounds
the raw weight bytes, and the report gives the package size it led to.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

from edgert.errors import ConversionError

FLOAT = 32                      # the "keep float" option of the allocator, in bits per weight
_UNITS = {"": 1, "b": 1, "kb": 1000, "k": 1000, "mb": 1000 ** 2, "m": 1000 ** 2, "kib": 1024, "mib": 1024 ** 2,
          "gb": 1000 ** 3}


def parse_size(text: str) -> int:
    """'0.6MB' / '600kB' / '614400' / '600KiB' -> bytes."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(text))
    if not m or m[2].lower() not in _UNITS:
        raise ConversionError(f"size budget must look like 0.6MB, 600kB, 600KiB or a byte count, got {text!r}")
    n = float(m[1]) * _UNITS[m[2].lower()]
    if not n > 0:
        raise ConversionError(f"size budget must be positive, got {text!r}")
    return int(round(n))


def layer_bytes(params: int, rows: int, bits: int, scale_bytes: int = 2) -> int:
    """Stored bytes of a weight of `params` values at `bits` (FLOAT = 32: float32, no scales)."""
    if bits == FLOAT:
        return 4 * params
    if not 1 <= bits <= 8:
        raise ConversionError(f"weight width must be 1..8 bits or float, got {bits}")
    return math.ceil(params * bits / 8) + rows * scale_bytes


@dataclass(frozen=True)
class SizeBudget:
    """Either a byte budget for the quantizable weights (`size_bytes`) or an average width over them,
    scales included (`avg_bits`)."""
    size_bytes: int | None = None
    avg_bits: float | None = None

    def __post_init__(self) -> None:
        if (self.size_bytes is None) == (self.avg_bits is None):
            raise ConversionError("give exactly one of a size budget and an average bit width")
        if self.avg_bits is not None and not 1.0 <= self.avg_bits <= 32.0:
            raise ConversionError(f"average bits must be in [1, 32], got {self.avg_bits}")

    def bytes_for(self, total_params: int) -> int:
        if self.size_bytes is not None:
            return self.size_bytes
        return int(self.avg_bits * total_params / 8)       # type: ignore[operator]

    def describe(self) -> str:
        return f"{self.size_bytes:,} B" if self.size_bytes is not None else f"{self.avg_bits:g} bits/weight"

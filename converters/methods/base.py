"""Shared pieces of weight quantization: schemes (docs/design.md "Weight encodings"), the 2-D row
view for tensor / channel / group granularity, scale rounding, and magnitude sparsity masks."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from edgert.errors import ConversionError

_FP16_TINY = float(np.finfo(np.float16).tiny)     # smallest normal fp16: keep scales normal
_FP16_MAX = float(np.finfo(np.float16).max)


@dataclass(frozen=True)
class Scheme:
    """Integer grid of a weight: `symmetric` q ∈ [−(2^(b−1)−1), 2^(b−1)−1]; `midrise` q odd in
    [−(2^b−1), 2^b−1] with real = scale·q (the stored scale is half the step, so 1 bit = ±scale)."""
    bits: int
    kind: str = "symmetric"

    def __post_init__(self) -> None:
        if self.kind == "symmetric" and not 2 <= self.bits <= 8:
            raise ConversionError(f"symmetric weights need 2..8 bits, got {self.bits}")
        if self.kind == "midrise" and not 1 <= self.bits <= 7:
            raise ConversionError(f"midrise weights need 1..7 bits, got {self.bits}")
        if self.kind not in ("symmetric", "midrise"):
            raise ConversionError(f"unknown weight scheme {self.kind!r}")

    @classmethod
    def for_bits(cls, bits: int, midrise_2bit: bool = False) -> "Scheme":
        return cls(bits, "midrise" if bits == 1 or (bits == 2 and midrise_2bit) else "symmetric")

    @property
    def qmax(self) -> int:
        return (1 << (self.bits - 1)) - 1 if self.kind == "symmetric" else (1 << self.bits) - 1

    def scale_for_absmax(self, absmax: np.ndarray) -> np.ndarray:
        """The scale that maps ±absmax to the edge of the grid."""
        if self.kind == "symmetric":
            return absmax / self.qmax
        return absmax / float(1 << self.bits)     # 2^b cells of width 2·scale over [−absmax, absmax]

    def quantize(self, w: np.ndarray, scale: np.ndarray) -> np.ndarray:
        """w / scale to the grid (scale broadcasts against w); returns int8."""
        s = np.asarray(scale, np.float32)
        if self.kind == "symmetric":
            q = np.rint(w / s)
        else:
            q = 2.0 * np.floor(w / (2.0 * s)) + 1.0
        return np.clip(q, -self.qmax, self.qmax).astype(np.int8)


def round_scale(scale: np.ndarray, scale_dtype: str) -> np.ndarray:
    """Scales as they will be stored: fp16-rounded (kept normal and finite) or float32."""
    s = np.asarray(scale, np.float64)
    s = np.where(s > 0, s, 1.0)       # an all-zero row: any positive scale gives q = 0
    if scale_dtype == "fp16":
        s = np.clip(s, _FP16_TINY, _FP16_MAX).astype(np.float16)
    return s.astype(np.float32)


class WeightMethod:
    """Chooses one scale per row of a 2-D weight view."""
    name: ClassVar[str] = ""

    def scales(self, rows: np.ndarray, scheme: Scheme, scale_dtype: str) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__}.scales")


@dataclass(frozen=True)
class WeightSpec:
    bits: int
    granularity: str = "channel"   # "tensor" | "channel" | "group"
    axis: int = 0                  # output-channel axis (channel) or the grouped axis (group)
    group_size: int = 0
    scale_dtype: str = "fp16"
    midrise_2bit: bool = False

    @property
    def scheme(self) -> Scheme:
        return Scheme.for_bits(self.bits, self.midrise_2bit)


@dataclass
class QuantizedWeight:
    q: np.ndarray          # int8, the weight's shape
    scale: np.ndarray      # float32: () | (C,) | the weight's shape with axis divided by group_size
    spec: WeightSpec

    @property
    def scheme(self) -> Scheme:
        return self.spec.scheme

    def dequantize(self) -> np.ndarray:
        s = self.scale
        if self.spec.granularity == "channel":
            shape = [1] * self.q.ndim
            shape[self.spec.axis] = -1
            s = s.reshape(shape)
        elif self.spec.granularity == "group":
            s = np.repeat(s, self.spec.group_size, axis=self.spec.axis)
        return (self.q.astype(np.float32) * s).astype(np.float32)


def _to_rows(w: np.ndarray, spec: WeightSpec) -> np.ndarray:
    if spec.granularity == "tensor":
        return w.reshape(1, -1)
    if spec.granularity == "channel":
        return np.moveaxis(w, spec.axis, 0).reshape(w.shape[spec.axis], -1)
    moved = np.moveaxis(w, spec.axis, -1)
    return moved.reshape(-1, spec.group_size)


def _scale_shape(w: np.ndarray, spec: WeightSpec) -> tuple[int, ...]:
    if spec.granularity == "tensor":
        return ()
    if spec.granularity == "channel":
        return (w.shape[spec.axis],)
    shape = list(w.shape)
    shape[spec.axis] //= spec.group_size
    return tuple(shape)


def _broadcast_scale(scale: np.ndarray, w: np.ndarray, spec: WeightSpec) -> np.ndarray:
    if spec.granularity == "tensor":
        return scale
    if spec.granularity == "channel":
        shape = [1] * w.ndim
        shape[spec.axis] = -1
        return scale.reshape(shape)
    return np.repeat(scale, spec.group_size, axis=spec.axis)


def quantize_weight(w: np.ndarray, spec: WeightSpec, method: WeightMethod,
                    mask: np.ndarray | None = None) -> QuantizedWeight:
    """Quantize a float weight: method picks the scales, they are rounded to the storage dtype
    FIRST, and the weight is quantized with the rounded values.  `mask` (True = keep) zeroes
    pruned weights before the scales are chosen and forces q = 0 there (midrise has no 0 level)."""
    w = np.asarray(w, np.float32)
    if spec.granularity == "group":
        d = w.shape[spec.axis]
        if spec.group_size < 1 or d % spec.group_size:
            raise ConversionError(f"axis {spec.axis} of size {d} is not a multiple of group size "
                                  f"{spec.group_size}")
    if mask is not None:
        w = np.where(mask, w, np.float32(0))
    scheme = spec.scheme
    rows = _to_rows(w, spec)
    scale = round_scale(method.scales(rows, scheme, spec.scale_dtype), spec.scale_dtype)
    if spec.granularity == "group":
        # rows are in the order of moveaxis(w, axis, -1) with the last dim split into groups
        moved_shape = list(np.moveaxis(w, spec.axis, -1).shape)
        moved_shape[-1] //= spec.group_size
        scale = np.moveaxis(scale.reshape(moved_shape), -1, spec.axis)
    else:
        scale = scale.reshape(_scale_shape(w, spec))
    q = scheme.quantize(w, _broadcast_scale(scale, w, spec))
    if mask is not None:
        q = np.where(mask, q, np.int8(0)).astype(np.int8)
    return QuantizedWeight(q=q, scale=np.ascontiguousarray(scale, np.float32), spec=spec)


def magnitude_mask(w: np.ndarray, sparsity: float) -> np.ndarray:
    """Unstructured magnitude pruning: False for the `sparsity` fraction of smallest |w|."""
    k = int(np.floor(sparsity * w.size))
    if k <= 0:
        return np.ones(w.shape, bool)
    flat = np.abs(w).ravel()
    order = np.argpartition(flat, k - 1)[:k]
    keep = np.ones(w.size, bool)
    keep[order] = False
    return keep.reshape(w.shape)


def nm_mask(w: np.ndarray, n: int, m: int) -> np.ndarray:
    """N:M pruning along the last axis (the codec's layout, docs/design.md): in every run of `m`
    consecutive elements of a row (the last run may be shorter) keep the `n` largest |w|."""
    last = w.shape[-1] if w.ndim else 1
    rows = np.abs(w.reshape(-1, last))
    pad = (-last) % m
    padded = np.pad(rows, ((0, 0), (0, pad)), constant_values=-1.0)   # pads are never kept
    runs = padded.reshape(rows.shape[0], -1, m)
    rank = np.argsort(np.argsort(-runs, axis=-1, kind="stable"), axis=-1, kind="stable")
    keep = (rank < n) & (runs >= 0)
    return keep.reshape(rows.shape[0], -1)[:, :last].reshape(w.shape)

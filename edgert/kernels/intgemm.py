"""Exact integer GEMM through blocked float BLAS.

numpy has no BLAS for integer matmul (~1.5 GOP/s here), but float32 represents every integer with
|v| <= 2^24 exactly, so a float32 dot product of integers is exact as long as every partial sum stays
within 2^24 — whatever order the BLAS sums in.  With |a| <= amax and |b| <= bmax, a dot over k terms
is bounded by k·amax·bmax, so we split K into blocks of k_blk = floor(2^24 / (amax·bmax)) (1024 for
int8 x int8, 514 for uint8 x int8), run one float32 GEMM per block and add the block results as
integers.  When blocks would be too small for BLAS to be efficient (int16 operands) the same scheme
runs in float64 (exact to 2^53).  See /work/shared/ANCHORS.md ("Exact integer GEMM through float BLAS").

`PackedB` holds the float copy of a constant right-hand side so ops convert their weights once.
"""
from __future__ import annotations

import numpy as np

_F32_EXACT = 1 << 24          # float32 has a 24-bit significand
_F64_EXACT = 1 << 53          # float64 has a 53-bit significand
_MIN_F32_BLOCK = 256          # below this K-block size float32 GEMM loses to one float64 GEMM
_INT_KINDS = ("i", "u")


def _absmax(x: np.ndarray) -> int:
    """max |x| as a Python int (no int8 overflow of np.abs(-128))."""
    if x.size == 0:
        return 0
    return max(int(x.max()), -int(x.min()))


class PackedB:
    """A right-hand side `b [K, N]` prepared once: float32 (and lazily float64) copies and max |b|."""

    def __init__(self, b: np.ndarray):
        b = np.asarray(b)
        if b.ndim != 2 or b.dtype.kind not in _INT_KINDS or b.dtype.itemsize > 2:
            raise ValueError(f"int_matmul: b must be a 2-D int8/uint8/int16 array, got "
                             f"{b.dtype} {b.shape}")
        self.shape = b.shape
        self.dtype = b.dtype
        self.absmax = _absmax(b)
        self.f32 = np.ascontiguousarray(b, dtype=np.float32)
        self._f64: np.ndarray | None = None

    @property
    def f64(self) -> np.ndarray:
        if self._f64 is None:
            self._f64 = self.f32.astype(np.float64)
        return self._f64


def _plan(k: int, amax: int, bmax: int) -> tuple[type, int]:
    """(float dtype, K-block size) such that every partial sum is exactly representable."""
    per_term = max(amax * bmax, 1)
    blk32 = _F32_EXACT // per_term
    if blk32 >= k or blk32 >= _MIN_F32_BLOCK:
        return np.float32, max(1, min(blk32, k))
    blk64 = _F64_EXACT // per_term
    if blk64 < 1:
        raise ValueError(f"int_matmul: operand magnitudes {amax}·{bmax} are too large to be exact")
    return np.float64, max(1, min(blk64, k))


def int_matmul(a: np.ndarray, b: np.ndarray | PackedB) -> np.ndarray:
    """Exact integer product `a @ b` for `a [..., M, K]`, `b [K, N]` (int8/uint8/int16).

    Returns int32, or int64 when K·max|a|·max|b| could exceed int32."""
    a = np.asarray(a)
    pb = b if isinstance(b, PackedB) else PackedB(b)
    if a.dtype.kind not in _INT_KINDS or a.dtype.itemsize > 2:
        raise ValueError(f"int_matmul: a must be int8/uint8/int16, got {a.dtype}")
    if a.ndim < 1 or a.shape[-1] != pb.shape[0]:
        raise ValueError(f"int_matmul: shapes {a.shape} and {pb.shape} do not align")
    squeeze = a.ndim == 1
    if squeeze:
        a = a[None, :]
    lead, k, n = a.shape[:-1], a.shape[-1], pb.shape[1]
    a2 = a.reshape(-1, k)
    amax = _absmax(a2)
    bound = amax * pb.absmax * k
    out_dtype = np.int32 if bound < (1 << 31) else np.int64
    m = a2.shape[0]
    if bound == 0:
        out = np.zeros((m, n), out_dtype)
    else:
        fdt, blk = _plan(k, amax, pb.absmax)
        af = a2.astype(fdt)                       # one conversion; K-blocks are strided views
        bf = pb.f32 if fdt is np.float32 else pb.f64
        out = None
        tmp = np.empty((m, n), fdt)
        for k0 in range(0, k, blk):               # loop over K-blocks only (1-3 for int8 in practice)
            k1 = min(k, k0 + blk)
            np.matmul(af[:, k0:k1], bf[k0:k1], out=tmp)
            if out is None:
                out = tmp.astype(out_dtype)
            elif out_dtype is np.int32:            # int32 + float -> float64 loop: exact below 2^31
                np.add(out, tmp, out=out, casting="unsafe")
            else:
                out += tmp.astype(np.int64)
    out = out.reshape(*lead, n)
    return out[0] if squeeze else out

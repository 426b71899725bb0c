"""GGUF tensor data -> edgert block-quantized matrices: lossless repacks and a requantizer.

edgert stores a block-quantized matrix as codes in natural column order plus per-block tables
(edgert/llm/config.py, BlockQuantSpec):

    value[r, c] = scale[r, c // block] * (code[r, c] - zero[r, c // block]) + min[r, c // block]

Lossless repacks (ggml/src/ggml-common.h block layouts; the reference dequantizers are
ggml-quants.c `dequantize_row_q4_0/q4_1/q8_0`):
  Q4_0  block of 32: fp16 d, 16 bytes; byte j holds weight j (low nibble) and j+16 (high nibble);
        value = d * (q - 8)                -> codes q, zero 8, scale d, no min
  Q4_1  block of 32: fp16 d, fp16 m, 16 bytes as Q4_0; value = d * q + m
                                           -> codes q, zero 0, scale d, min m
  Q8_0  block of 32: fp16 d, 32 x int8 q; value = d * q
                                           -> codes q + 128 (uint8), zero 128, scale d, 8 bits
In float32 each product is exact in both forms (small integers times an fp16), so edgert's
dequantization equals gguf.quants.dequantize bit for bit (tests/converters/gguf/test_gguf_quants.py).

`requantize(w, bits, group_size)` makes asymmetric codes with an integer zero point per group,
choosing each group's clipping range by a vectorised MSE search (the idea of llama.cpp's
make_qkx2_quants: try shrunken ranges, keep the one with least squared error, then refit the
scale by least squares), always evaluated with the fp16-rounded scale that is stored.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

from edgert.errors import ConversionError

QK = 32                                       # QK4_0 = QK4_1 = QK8_0 (ggml-common.h)
LOSSLESS_TYPES = ("Q4_0", "Q4_1", "Q8_0", "F16", "BF16", "F32")
FLOAT_TYPES = ("F16", "BF16", "F32")
BLOCK_TYPES = {"Q4_0": (4, 8), "Q4_1": (4, 0), "Q8_0": (8, 128)}      # type -> (bits, zero point)
# bytes per block (fp16 d [+ fp16 m] + the quants), from gguf.constants
_BLOCK_BYTES = {t: GGML_QUANT_SIZES[GGMLQuantizationType[t]][1] for t in BLOCK_TYPES}
assert all(GGML_QUANT_SIZES[GGMLQuantizationType[t]][0] == QK for t in BLOCK_TYPES)

# Joint shrink factors of the group's [min, max] range tried first, then per-side refinements of
# the best one.  12 + 4 + 1 evaluations per group keep the whole of SmolLM2-135M under ~15 s on 2 cores.
SHRINK = (1.0, 0.97, 0.94, 0.91, 0.88, 0.85, 0.8, 0.75, 0.7, 0.65, 0.6, 0.5)
SIDE_STEPS = ((1.0, 0.94), (0.94, 1.0), (1.0, 1.06), (1.06, 1.0))   # (min factor, max factor)
CHUNK_ELEMENTS = 1 << 17                      # rows per work item ~ this many weights (cache-sized)
FP16_MAX = float(np.finfo(np.float16).max)
FP16_TINY = float(2.0 ** -24)                 # smallest positive fp16 (subnormal)


@dataclass
class BlockArrays:
    """One matrix in edgert's block-quantized form, ready to become package initializers."""
    bits: int
    block: int
    codes: np.ndarray                  # uint8 [rows, cols], natural column order
    scale: np.ndarray                  # float16 [rows, cols // block]
    min: np.ndarray | None = None      # float16 [rows, cols // block] or None
    zero: int | np.ndarray = 0         # int, or uint8 [rows, cols // block]
    source_type: str = ""              # ggml type for a lossless repack, "requant" otherwise

    @property
    def shape(self) -> tuple[int, int]:
        return self.codes.shape

    def dequantize(self) -> np.ndarray:
        """Float32 [rows, cols], computed as edgert.llm.weights.BlockQuant.dequantize does."""
        rows, cols = self.codes.shape
        nb = cols // self.block
        z = self.zero.astype(np.float32) if isinstance(self.zero, np.ndarray) else np.float32(self.zero)
        z = np.broadcast_to(z, (rows, nb))
        w = (self.codes.reshape(rows, nb, self.block).astype(np.float32) - z[:, :, None]) \
            * self.scale.astype(np.float32)[:, :, None]
        if self.min is not None:
            w += self.min.astype(np.float32)[:, :, None]
        return w.reshape(rows, cols)


def _blocks(raw: np.ndarray, type_name: str, shape: tuple[int, int]) -> np.ndarray:
    rows, cols = shape
    if len(shape) != 2 or cols % QK:
        raise ConversionError(f"{type_name} tensor of shape {list(shape)} is not a matrix with rows of "
                              f"whole {QK}-element blocks")
    need = rows * cols // QK * _BLOCK_BYTES[type_name]
    raw = np.asarray(raw, dtype=np.uint8).reshape(-1)
    if raw.size != need:
        raise ConversionError(f"{type_name} tensor of shape {list(shape)} needs {need} bytes, has {raw.size}")
    return raw.reshape(rows * cols // QK, _BLOCK_BYTES[type_name])


def _fp16_field(blocks: np.ndarray, start: int, shape: tuple[int, int]) -> np.ndarray:
    return np.ascontiguousarray(blocks[:, start:start + 2]).view(np.float16).reshape(shape[0], -1)


def _nibbles(qs: np.ndarray) -> np.ndarray:
    """[n, 16] bytes -> [n, 32] codes: weight j is the low nibble of byte j, weight j+16 the high."""
    out = np.empty((qs.shape[0], QK), dtype=np.uint8)
    np.bitwise_and(qs, 0x0F, out=out[:, :QK // 2])
    np.right_shift(qs, 4, out=out[:, QK // 2:])
    return out


def repack(raw: np.ndarray, type_name: str, shape: tuple[int, int]) -> BlockArrays:
    """Lossless Q4_0 / Q4_1 / Q8_0 -> BlockArrays (ConversionError for other types)."""
    if type_name not in BLOCK_TYPES:
        raise ConversionError(f"{type_name} is not a block type edgert repacks losslessly "
                              f"({', '.join(BLOCK_TYPES)})")
    b = _blocks(raw, type_name, shape)
    rows, cols = shape
    bits, zero = BLOCK_TYPES[type_name]
    scale = _fp16_field(b, 0, shape).copy()
    mn = None
    if type_name == "Q8_0":
        codes = b[:, 2:] ^ np.uint8(0x80)           # int8 q + 128 == q's bits with the sign bit flipped
    elif type_name == "Q4_0":
        codes = _nibbles(b[:, 2:])
    else:
        mn = _fp16_field(b, 2, shape).copy()
        codes = _nibbles(b[:, 4:])
    for name, table in (("scale", scale), ("min", mn)):
        if table is not None and not np.isfinite(table).all():
            raise ConversionError(f"{type_name} tensor has non-finite block {name}s")
    return BlockArrays(bits, QK, codes.reshape(rows, cols), scale, mn, zero, type_name)


def float_matrix(raw: np.ndarray, type_name: str, shape: tuple[int, ...]) -> np.ndarray:
    """F32 / F16 data as it is (a copy-free view), BF16 widened to float32 (lossless)."""
    raw = np.asarray(raw, dtype=np.uint8).reshape(-1)
    if type_name == "F32":
        arr = raw.view(np.float32)
    elif type_name == "F16":
        arr = raw.view(np.float16)
    elif type_name == "BF16":
        arr = (raw.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
    else:
        raise ConversionError(f"{type_name} is not a float type ({', '.join(FLOAT_TYPES)})")
    arr = arr.reshape(shape)
    if not np.isfinite(arr).all():
        raise ConversionError(f"{type_name} tensor has non-finite values")
    return arr


def dequantize(raw: np.ndarray, type_name: str, shape: tuple[int, ...]) -> np.ndarray:
    """Any ggml type -> float32, through gguf.quants (the reference this module is tested against)."""
    from gguf.quants import dequantize as gguf_dequantize

    if type_name in FLOAT_TYPES:
        return np.asarray(float_matrix(raw, type_name, shape), dtype=np.float32)
    try:
        rows = int(np.prod(shape[:-1], dtype=np.int64))
        out = gguf_dequantize(np.asarray(raw, dtype=np.uint8).reshape(rows, -1),
                              GGMLQuantizationType[type_name])
    except (NotImplementedError, KeyError, ValueError) as e:
        raise ConversionError(f"cannot dequantize a {type_name} tensor: {e}") from None
    out = np.asarray(out, dtype=np.float32).reshape(shape)
    if not np.isfinite(out).all():
        raise ConversionError(f"{type_name} tensor dequantizes to non-finite values")
    return out


# -- requantization ---------------------------------------------------------------------------------
def _fp16_scale(s: np.ndarray) -> np.ndarray:
    """Scales as the float32 values of their fp16 rounding, kept positive and finite."""
    return np.clip(s, FP16_TINY, FP16_MAX).astype(np.float16).astype(np.float32)


def _codes(x: np.ndarray, s: np.ndarray, z: np.ndarray, qmax: int) -> np.ndarray:
    """float32 codes clip(rint(x / s + z), 0, qmax) of groups x [g, n] (the one rounding rule)."""
    t = x * (np.float32(1.0) / s)[:, None]
    t += z[:, None]
    np.rint(t, out=t)
    return np.clip(t, 0, qmax, out=t)


def _group_sse(x: np.ndarray, s: np.ndarray, z: np.ndarray, qmax: int) -> np.ndarray:
    """Per-group sum of squared reconstruction errors for scale s, zero z (both [g])."""
    c = _codes(x, s, z, qmax)
    c -= z[:, None]
    c *= s[:, None]
    c -= x
    return np.einsum("ij,ij->i", c, c)


def _candidate(lo: np.ndarray, hi: np.ndarray, qmax: int) -> tuple[np.ndarray, np.ndarray]:
    """(scale, zero) for the range [lo, hi] (lo <= 0 <= hi), with the fp16 scale."""
    s = _fp16_scale((hi - lo) / np.float32(qmax))
    z = np.clip(np.rint(-lo / s), 0, qmax)
    return s, z


def _search(x: np.ndarray, qmax: int, search: bool) -> tuple[np.ndarray, np.ndarray]:
    """Best (scale, zero) per group of x [g, n] (float32)."""
    lo0 = np.minimum(x.min(axis=1), 0)
    hi0 = np.maximum(x.max(axis=1), 0)
    best_s, best_z = _candidate(lo0, hi0, qmax)
    if not search:
        return best_s, best_z
    best_e = _group_sse(x, best_s, best_z, qmax)
    best_a = np.ones_like(lo0)
    best_b = np.ones_like(lo0)

    def consider(a: np.ndarray, b: np.ndarray) -> None:
        nonlocal best_s, best_z, best_e, best_a, best_b
        s, z = _candidate(lo0 * a, hi0 * b, qmax)
        e = _group_sse(x, s, z, qmax)
        better = e < best_e
        best_s, best_z = np.where(better, s, best_s), np.where(better, z, best_z)
        best_e = np.minimum(e, best_e)
        best_a, best_b = np.where(better, a, best_a), np.where(better, b, best_b)

    for f in SHRINK[1:]:
        consider(np.float32(f), np.float32(f))
    a0, b0 = best_a, best_b
    for fa, fb in SIDE_STEPS:
        consider(np.minimum(a0 * np.float32(fa), 1), np.minimum(b0 * np.float32(fb), 1))
    # least-squares refit of the scale for the chosen codes and zero point (make_qkx2_quants' idea)
    c = _codes(x, best_s, best_z, qmax)
    c -= best_z[:, None]
    num = np.einsum("ij,ij->i", c, x)
    den = np.einsum("ij,ij->i", c, c)
    ok = den > 0
    s_ls = _fp16_scale(np.where(ok, num / np.where(ok, den, 1), best_s))
    e = _group_sse(x, s_ls, best_z, qmax)
    better = ok & (e < best_e)
    return np.where(better, s_ls, best_s), best_z


def _by_row_chunks(w: np.ndarray, bits: int, group_size: int, threads: int | None, fit) -> tuple:
    """Check a requantization request, then run `fit(x [groups, group_size] float32, qmax) ->
    (codes, scale, second)` over chunks of rows (threads: numpy releases the GIL in the element-wise
    work); returns (codes uint8 [rows, cols], scale fp16 [rows, ng], second [rows, ng] as fit gave it)."""
    if not isinstance(bits, int) or not 1 <= bits <= 8:
        raise ConversionError(f"requantize: bits must be 1..8, got {bits!r}")
    w = np.asarray(w)
    if w.ndim != 2:
        raise ConversionError(f"requantize: expected a matrix, got shape {list(w.shape)}")
    rows, cols = w.shape
    if group_size < 8 or group_size & (group_size - 1) or cols % group_size:
        raise ConversionError(f"group size {group_size} must be a power of two >= 8 dividing the row "
                              f"length {cols}")
    if not np.isfinite(w).all():
        raise ConversionError("requantize: the weights have non-finite values")
    qmax = (1 << bits) - 1
    ng = cols // group_size
    codes = np.empty((rows, cols), dtype=np.uint8)
    scale = np.empty((rows, ng), dtype=np.float16)
    second = np.empty((rows, ng), dtype=np.float32)
    step = max(1, CHUNK_ELEMENTS // cols)

    def work(r0: int) -> None:
        r1 = min(rows, r0 + step)
        c, sc, sd = fit(np.asarray(w[r0:r1], dtype=np.float32).reshape(-1, group_size), qmax)
        codes[r0:r1] = c.astype(np.uint8).reshape(r1 - r0, cols)
        scale[r0:r1] = sc.astype(np.float16).reshape(r1 - r0, ng)
        second[r0:r1] = sd.reshape(r1 - r0, ng)

    starts = range(0, rows, step)
    n = threads or min(len(starts), os.cpu_count() or 1)
    if n <= 1:
        for r0 in starts:
            work(r0)
    else:
        with ThreadPoolExecutor(n) as pool:
            list(pool.map(work, starts))
    return codes, scale, second


def requantize(w: np.ndarray, bits: int, group_size: int, *, search: bool = True,
               threads: int | None = None) -> BlockArrays:
    """Asymmetric `bits`-bit codes per group of `group_size` columns: value = scale * (code - zero)
    with an integer zero point in [0, 2**bits - 1] (so 0 is exact).  search=False: plain min/max."""
    def fit(x, qmax):
        s, z = _search(x, qmax, search)
        return _codes(x, s, z, qmax), s, z

    codes, scale, zero = _by_row_chunks(w, bits, group_size, threads, fit)
    return BlockArrays(bits, group_size, codes, scale, None, zero.astype(np.uint8), "requant")


def _fit_min(x: np.ndarray, qmax: int, search: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Best (scale, minimum) per group of x [g, n] for value = scale * code + minimum (GGUF Q4_1's
    form, with a float minimum instead of an integer zero point), and its codes.  A grid of shrunk
    [min, max] ranges, then a least-squares refit of scale and minimum for the chosen codes; every
    candidate is scored with both numbers rounded to fp16, as stored."""
    lo0, hi0 = x.min(axis=1), x.max(axis=1)

    def evaluate(lo, hi):
        s = _fp16_scale((hi - lo) / np.float32(qmax))
        m = lo.astype(np.float16).astype(np.float32)
        c = np.clip(np.rint((x - m[:, None]) / s[:, None]), 0, qmax)
        e = np.sum((c * s[:, None] + m[:, None] - x) ** 2, axis=1)
        return s, m, c, e

    best = evaluate(lo0, hi0)
    if search:
        for f in SHRINK[1:]:
            for lo, hi in ((lo0 * f, hi0 * f), (lo0 * f, hi0), (lo0, hi0 * f)):
                cand = evaluate(lo, hi)
                better = cand[3] < best[3]
                best = tuple(np.where(better[:, None] if a.ndim == 2 else better, a, b_)
                             for a, b_ in zip(cand, best))
        # least squares: x ~ s * c + m over each group, for the chosen codes
        s, m, c, e = best
        n = np.float32(x.shape[1])
        sc, sx, scc, scx = c.sum(1), x.sum(1), (c * c).sum(1), (c * x).sum(1)
        det = n * scc - sc * sc
        ok = det > 0
        s_ls = np.where(ok, (n * scx - sc * sx) / np.where(ok, det, 1), s)
        m_ls = np.where(ok, (sx - s_ls * sc) / n, m)
        s_ls = _fp16_scale(np.abs(s_ls))
        m_ls = m_ls.astype(np.float16).astype(np.float32)
        c2 = np.clip(np.rint((x - m_ls[:, None]) / s_ls[:, None]), 0, qmax)
        e2 = np.sum((c2 * s_ls[:, None] + m_ls[:, None] - x) ** 2, axis=1)
        better = ok & (e2 < e)
        best = (np.where(better, s_ls, s), np.where(better, m_ls, m),
                np.where(better[:, None], c2, c), np.minimum(e, e2))
    return best[0], best[1], best[2]


def requantize_min(w: np.ndarray, bits: int, group_size: int, *, search: bool = True,
                   threads: int | None = None) -> BlockArrays:
    """`bits`-bit codes per group of `group_size` columns, value = scale * code + minimum, both fp16
    (GGUF Q4_1's form at any width): finer than an integer zero point at the cost of 16 bits per
    group instead of `bits`; the runtime folds the minimum in exactly (edgert/llm/ort_step.py)."""
    def fit(x, qmax):
        s, m, c = _fit_min(x, qmax, search)
        return c, s, m

    codes, scale, mins = _by_row_chunks(w, bits, group_size, threads, fit)
    return BlockArrays(bits, group_size, codes, scale, mins.astype(np.float16), 0, "requant-min")


def sqnr_db(ref: np.ndarray, approx: np.ndarray) -> float | None:
    """10 log10(signal / noise) in dB; None when the two are identical (lossless)."""
    ref = np.asarray(ref, dtype=np.float64)
    noise = float(np.sum((ref - np.asarray(approx, dtype=np.float64)) ** 2))
    if noise == 0.0:
        return None
    signal = float(np.sum(ref ** 2))
    return round(10.0 * np.log10(max(signal, 1e-300) / noise), 2)

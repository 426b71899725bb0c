"""converters/gguf/quants.py: lossless repacks are bit-exact against gguf.quants (the Python port
of ggml-quants.c), through edgert's own BlockQuant; the requantizer's codes, ranges and errors."""
from __future__ import annotations

import numpy as np
import pytest
from gguf.constants import GGMLQuantizationType
from gguf.quants import dequantize as gguf_dequantize, quantize as gguf_quantize
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from converters.gguf import quants
from edgert.errors import ConversionError
from edgert.llm.weights import BlockQuant
from edgert.package.bitpack import pack_bits

BLOCK_BYTES = {"Q4_0": 18, "Q4_1": 20, "Q8_0": 34}
FP16_FIELDS = {"Q4_0": (0,), "Q4_1": (0, 2), "Q8_0": (0,)}     # byte offsets of d (and m) in a block


def via_runtime(b: quants.BlockArrays) -> np.ndarray:
    """Dequantize the way the runtime does: bit-packed codes -> edgert.llm.weights.BlockQuant."""
    rows, cols = b.codes.shape
    packed = np.frombuffer(pack_bits(b.codes, b.bits), dtype=np.uint8)
    return BlockQuant(b.bits, b.block, rows, cols, packed, b.scale, b.min, b.zero).dequantize()


def check_bit_exact(raw: np.ndarray, qtype: str, rows: int, cols: int) -> None:
    b = quants.repack(raw, qtype, (rows, cols))
    ref = gguf_dequantize(raw.reshape(rows, -1), GGMLQuantizationType[qtype]).astype(np.float32)
    got = via_runtime(b)
    assert got.dtype == np.float32 and np.array_equal(got, ref)
    assert np.array_equal(b.dequantize(), ref)
    blocks = raw.reshape(-1, BLOCK_BYTES[qtype])
    assert np.array_equal(b.scale.view(np.uint16).reshape(-1), blocks[:, 0:2].copy().view(np.uint16)[:, 0])
    if qtype == "Q4_1":
        assert np.array_equal(b.min.view(np.uint16).reshape(-1), blocks[:, 2:4].copy().view(np.uint16)[:, 0])
    else:
        assert b.min is None
    assert int(b.codes.max()) < 1 << b.bits
    assert (b.bits, b.zero) == {"Q4_0": (4, 8), "Q4_1": (4, 0), "Q8_0": (8, 128)}[qtype]


@pytest.mark.parametrize("qtype", ["Q4_0", "Q4_1", "Q8_0"])
def test_repack_of_quantized_weights_is_bit_exact(qtype):
    w = np.random.default_rng(0).standard_normal((48, 256)).astype(np.float32) * 0.05
    check_bit_exact(gguf_quantize(w, GGMLQuantizationType[qtype]), qtype, 48, 256)


finite_fp16 = st.floats(width=16, allow_nan=False, allow_infinity=False)


@settings(max_examples=150, deadline=None)
@given(qtype=st.sampled_from(["Q4_0", "Q4_1", "Q8_0"]), rows=st.integers(1, 4), nb=st.integers(1, 4),
       data=st.data())
def test_repack_of_arbitrary_blocks_is_bit_exact(qtype, rows, nb, data):
    """Any block bytes with finite fp16 fields (zero, subnormal, negative, 65504 included)."""
    n = rows * nb
    raw = data.draw(hnp.arrays(np.uint8, (n, BLOCK_BYTES[qtype])))
    for off in FP16_FIELDS[qtype]:
        raw[:, off:off + 2] = data.draw(hnp.arrays(np.float16, (n,), elements=finite_fp16)) \
            .view(np.uint8).reshape(n, 2)
    check_bit_exact(raw.reshape(-1), qtype, rows, nb * 32)


def test_float_types_and_bf16_widening():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((4, 64)).astype(np.float32)
    for qtype, arr in (("F32", w), ("F16", w.astype(np.float16))):
        raw = arr.reshape(-1).view(np.uint8)
        got = quants.float_matrix(raw, qtype, (4, 64))
        assert got.dtype == arr.dtype and np.array_equal(got, arr)
    bf = gguf_quantize(w, GGMLQuantizationType.BF16)
    got = quants.float_matrix(bf.reshape(-1).view(np.uint8), "BF16", (4, 64))
    assert np.array_equal(got, gguf_dequantize(bf, GGMLQuantizationType.BF16))


def test_non_finite_block_scales_are_refused():
    raw = gguf_quantize(np.ones((1, 32), np.float32), GGMLQuantizationType.Q8_0).reshape(-1).copy()
    raw[0:2] = np.array([np.inf], np.float16).view(np.uint8)
    with pytest.raises(ConversionError, match="non-finite"):
        quants.repack(raw, "Q8_0", (1, 32))


# -- requantize ------------------------------------------------------------------------------------
def weights(rows=64, cols=256, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((rows, cols)).astype(np.float32) * 0.05
    w[:, ::37] *= 6                     # a few outliers, as real weight rows have
    return w


@pytest.mark.parametrize("bits", range(1, 9))
def test_requantize_codes_zero_points_and_scales_are_in_range(bits):
    w = weights()
    b = quants.requantize(w, bits, 32)
    assert b.codes.shape == w.shape and b.codes.dtype == np.uint8
    assert b.scale.shape == b.zero.shape == (64, 8)
    assert b.scale.dtype == np.float16 and b.zero.dtype == np.uint8
    assert int(b.codes.max()) < 1 << bits and int(b.zero.max()) < 1 << bits
    assert np.isfinite(b.scale).all() and (b.scale > 0).all()
    assert np.array_equal(via_runtime(b), b.dequantize())          # what the runtime reads back


def mse(b: quants.BlockArrays, w: np.ndarray) -> float:
    return float(np.mean((b.dequantize().astype(np.float64) - w) ** 2))


def test_requantize_error_falls_with_bits():
    w = weights()
    errors = [mse(quants.requantize(w, bits, 32), w) for bits in range(1, 9)]
    assert all(a > b for a, b in zip(errors, errors[1:])), errors
    power = float(np.mean(w.astype(np.float64) ** 2))
    sqnr = [10 * np.log10(power / e) for e in errors]
    assert sqnr[3] > 18 and sqnr[7] > 40                 # ~6 dB a bit (measured 19.9 and 44.4 dB)


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("group", [32, 64, 128])
def test_mse_search_is_never_worse_than_min_max(bits, group):
    w = weights(seed=bits + group)
    plain = quants.requantize(w, bits, group, search=False)
    best = quants.requantize(w, bits, group)

    def group_sse(b):
        return ((b.dequantize().astype(np.float64) - w) ** 2).reshape(-1, group).sum(axis=1)

    sp, sb = group_sse(plain), group_sse(best)
    assert (sb <= sp * (1 + 1e-5) + 1e-12).all()        # per group (float summation noise only)
    assert sb.sum() < sp.sum()
    if bits <= 4:
        assert sb.sum() < 0.97 * sp.sum()                # clipping pays off at low bit widths


def test_requantize_special_groups():
    w = np.zeros((2, 64), np.float32)
    w[1, 32:] = 0.25                                   # a constant, all-positive group
    b = quants.requantize(w, 4, 32)
    back = b.dequantize()
    assert np.array_equal(back[0], np.zeros(64, np.float32))   # zero is exact (integer zero point)
    assert np.array_equal(back[1, :32], np.zeros(32, np.float32))
    assert np.allclose(back[1, 32:], 0.25, rtol=1e-3)
    huge = np.full((1, 32), 1e6, np.float32)
    huge[0, 0] = -1e6
    assert np.isfinite(quants.requantize(huge, 2, 32).scale).all()   # fp16 scale clamped, not inf


def test_requantize_is_deterministic_across_thread_counts():
    w = weights(rows=700, cols=512)
    a = quants.requantize(w, 3, 64, threads=1)
    b = quants.requantize(w, 3, 64, threads=4)
    assert np.array_equal(a.codes, b.codes) and np.array_equal(a.scale, b.scale) \
        and np.array_equal(a.zero, b.zero)


@pytest.mark.parametrize("bad", [dict(bits=0, group_size=32), dict(bits=9, group_size=32),
                                 dict(bits=4, group_size=48), dict(bits=4, group_size=512)])
def test_requantize_rejects_bad_arguments(bad):
    with pytest.raises(ConversionError):
        quants.requantize(weights(), **bad)


def test_requantize_rejects_non_finite_weights():
    w = weights()
    w[3, 5] = np.nan
    with pytest.raises(ConversionError, match="non-finite"):
        quants.requantize(w, 4, 32)


def test_sqnr():
    w = weights()
    assert quants.sqnr_db(w, w) is None
    s4, s8 = (quants.sqnr_db(w, quants.requantize(w, b, 32).dequantize()) for b in (4, 8))
    assert 15 < s4 < s8


@pytest.mark.parametrize("bits", [2, 3, 4, 6])
def test_requantize_min_is_in_range_and_searched(bits):
    """fp16 group minimum (Q4_1's form at any width): codes in range, values as the runtime reads
    them, and the search beats plain min/max."""
    rng = np.random.default_rng(bits)
    w = (rng.standard_normal((48, 128)) * 0.05 + rng.standard_normal((48, 1)) * 0.02).astype(np.float32)
    b = quants.requantize_min(w, bits, 32)
    plain = quants.requantize_min(w, bits, 32, search=False)
    assert b.min is not None and b.zero == 0 and int(b.codes.max()) < 1 << bits
    err = float(np.sum((b.dequantize() - w) ** 2))
    assert err <= float(np.sum((plain.dequantize() - w) ** 2)) + 1e-12
    # a grid that is exactly representable (Q4_1-style blocks) is reproduced at 4 bits, group 32
    d = rng.uniform(0.01, 0.02, (8, 4)).astype(np.float16).astype(np.float32)
    m = rng.uniform(-0.2, 0.0, (8, 4)).astype(np.float16).astype(np.float32)
    q = rng.integers(0, 16, (8, 4, 32)).astype(np.float32)
    q[..., 0], q[..., 1] = 0, 15                                    # each block spans the full grid
    exact = (q * d[..., None] + m[..., None]).reshape(8, 128)
    got = quants.requantize_min(exact, 4, 32).dequantize()
    assert np.abs(got - exact).max() <= 2e-3 * np.abs(exact).max()

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from converters.methods import (Scheme, WeightSpec, get_method, known_methods, magnitude_mask,
                                nm_mask, quantize_weight, round_scale)
from edgert.errors import ConversionError


def _w(shape=(8, 6, 3, 3), seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def test_registry():
    assert {"rtn", "rtn_mse"} <= set(known_methods())
    with pytest.raises(ConversionError, match="rtn_mse"):
        get_method("gptq-but-not-here")


@pytest.mark.parametrize("bits", range(2, 9))
def test_symmetric_round_trip_bound(bits):
    w = _w()
    qw = quantize_weight(w, WeightSpec(bits, "channel", 0, scale_dtype="fp32"), get_method("rtn"))
    qmax = (1 << (bits - 1)) - 1
    assert qw.q.dtype == np.int8 and np.abs(qw.q).max() <= qmax
    assert qw.scale.shape == (8,)
    err = np.abs(qw.dequantize() - w)
    assert np.all(err <= qw.scale.reshape(-1, 1, 1, 1) / 2 * (1 + 1e-5))


def test_one_bit_is_midrise_plus_minus_half_step():
    w = _w()
    qw = quantize_weight(w, WeightSpec(1, "tensor", scale_dtype="fp32"), get_method("rtn"))
    assert qw.scheme == Scheme(1, "midrise")
    assert set(np.unique(qw.q)) == {-1, 1}
    np.testing.assert_array_equal(qw.q, np.where(w >= 0, 1, -1))
    # 2^1 cells of width 2·scale over [-absmax, absmax]: levels at ±absmax/2 = ±step/2
    step = np.abs(w).max()
    np.testing.assert_allclose(np.unique(qw.dequantize()), [-step / 2, step / 2], rtol=1e-6)


def test_two_bit_midrise_option():
    qw = quantize_weight(_w(), WeightSpec(2, "channel", 0, midrise_2bit=True), get_method("rtn"))
    assert set(np.unique(qw.q)) <= {-3, -1, 1, 3}


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 8])
@pytest.mark.parametrize("gran", ["tensor", "channel"])
def test_mse_clip_never_worse_than_absmax(bits, gran):
    w = _w(seed=bits)
    w[0, 0, 0, 0] = 12.0   # an outlier: clipping pays
    spec = WeightSpec(bits, gran, 0)
    e_abs = np.sum((quantize_weight(w, spec, get_method("rtn")).dequantize() - w) ** 2)
    e_mse = np.sum((quantize_weight(w, spec, get_method("rtn_mse")).dequantize() - w) ** 2)
    assert e_mse <= e_abs * (1 + 1e-6)
    if bits <= 4:
        assert e_mse < e_abs


def test_group_shapes_conv_and_matmul():
    w = _w((8, 32, 3, 3))
    qw = quantize_weight(w, WeightSpec(4, "group", axis=1, group_size=8), get_method("rtn_mse"))
    assert qw.scale.shape == (8, 4, 3, 3) and qw.q.shape == w.shape
    err = np.abs(qw.dequantize() - w)
    assert np.all(err <= np.repeat(qw.scale, 8, axis=1) * 7.5)   # clip <= 50 %: 7 + 1/2 levels
    b = _w((64, 10))
    qb = quantize_weight(b, WeightSpec(4, "group", axis=0, group_size=16), get_method("rtn"))
    assert qb.scale.shape == (4, 10)
    # each group's scale is its own absmax / 7
    np.testing.assert_allclose(qb.scale, round_scale(np.abs(b.reshape(4, 16, 10)).max(1) / 7,
                                                     "fp16"))
    with pytest.raises(ConversionError, match="group size"):
        quantize_weight(b, WeightSpec(4, "group", axis=0, group_size=48), get_method("rtn"))


def test_scales_rounded_to_fp16_first():
    w = _w()
    qw = quantize_weight(w, WeightSpec(8, "channel", 0, scale_dtype="fp16"), get_method("rtn_mse"))
    np.testing.assert_array_equal(qw.scale, qw.scale.astype(np.float16).astype(np.float32))
    # q is exactly the rounding with the stored (rounded) scale
    np.testing.assert_array_equal(
        qw.q, np.clip(np.rint(w / qw.scale.reshape(-1, 1, 1, 1)), -127, 127).astype(np.int8))


def test_zero_rows_get_a_positive_scale():
    w = _w()
    w[3] = 0
    qw = quantize_weight(w, WeightSpec(4, "channel", 0), get_method("rtn_mse"))
    assert np.all(qw.scale > 0) and not qw.q[3].any()


@settings(max_examples=40, deadline=None)
@given(bits=st.integers(1, 8), seed=st.integers(0, 10_000))
def test_q_within_scheme_range(bits, seed):
    w = _w((4, 16), seed)
    qw = quantize_weight(w, WeightSpec(bits, "channel", 0), get_method("rtn_mse"))
    s = qw.scheme
    assert np.abs(qw.q).max() <= s.qmax
    if s.kind == "midrise":
        assert np.all(qw.q % 2 == 1)


def test_magnitude_and_nm_masks():
    w = _w((16, 8))
    m = magnitude_mask(w, 0.5)
    assert m.sum() == w.size // 2
    assert np.abs(w[m]).min() >= np.abs(w[~m]).max()
    nm = nm_mask(w, 2, 4)
    assert np.all(nm.reshape(16, 2, 4).sum(-1) == 2)
    runs = np.abs(w).reshape(16, 2, 4)
    kept = np.where(nm.reshape(16, 2, 4), runs, np.inf).min(-1)
    dropped = np.where(nm.reshape(16, 2, 4), -np.inf, runs).max(-1)
    assert np.all(kept >= dropped)
    odd = nm_mask(_w((3, 3, 3, 3)), 2, 4)      # last axis 3 < m: at most 2 per run
    assert odd.sum(-1).max() <= 2


def test_sparsity_mask_forces_zero_codes_even_for_midrise():
    w = _w((8, 16))
    mask = magnitude_mask(w, 0.5)
    qw = quantize_weight(w, WeightSpec(1, "channel", 0), get_method("rtn_mse"), mask)
    assert np.all(qw.q[~mask] == 0) and np.all(qw.q[mask] != 0)

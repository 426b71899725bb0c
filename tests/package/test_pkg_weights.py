"""Weight codec: every scheme x width x sparsity round-trips bit-exactly; bad input is rejected."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgert import format as F
from edgert.errors import PackageError
from edgert.ir import WeightEncoding
from edgert.package import weights as W

SCHEME_BITS = [(s, b) for s in ("symmetric", "midrise", "asymmetric")
               for b in range(F.SCHEMES[s][0], F.SCHEMES[s][1] + 1)]


def legal_values(rng, scheme: str, bits: int, shape) -> np.ndarray:
    if scheme == "symmetric":
        lim = (1 << (bits - 1)) - 1
        return rng.integers(-lim, lim + 1, shape).astype(np.int8)
    if scheme == "midrise":
        return (2 * rng.integers(0, 1 << bits, shape) - ((1 << bits) - 1)).astype(np.int8)
    return rng.integers(0, 1 << bits, shape).astype(np.uint8)


def round_trip(q: np.ndarray, enc: WeightEncoding) -> np.ndarray:
    payload, nnz = W.encode(q, enc)
    assert len(payload) == W.stored_nbytes(enc, q.shape, nnz)
    out = W.decode(payload, enc, q.shape, nnz)
    assert out.dtype == q.dtype and out.shape == q.shape and not out.flags.writeable
    return out


@pytest.mark.parametrize("scheme,bits", SCHEME_BITS)
@pytest.mark.parametrize("sparsity", [None, "bitmap", "nm"])
def test_scheme_sparsity_round_trip(scheme, bits, sparsity):
    rng = np.random.default_rng(bits * 7 + len(scheme))
    shape = (6, 5, 8)
    q = legal_values(rng, scheme, bits, shape)
    enc = WeightEncoding(bits=bits, scheme=scheme, sparsity=sparsity)
    if sparsity == "bitmap":
        q[rng.random(shape) < 0.6] = 0
    if sparsity == "nm":
        enc.n, enc.m = 2, 4
        keep = np.argsort(rng.random((shape[0] * shape[1] * 2, 4)), axis=1)[:, :2]
        mask = np.zeros((shape[0] * shape[1] * 2, 4), bool)
        np.put_along_axis(mask, keep, True, axis=1)
        q = np.where(mask.reshape(shape), q, 0).astype(q.dtype)
        if scheme != "midrise":           # fewer than n nonzeros in some runs: padded slots
            q[0, 0, :] = 0
    np.testing.assert_array_equal(round_trip(q, enc), q)


@pytest.mark.parametrize("n,m", [(1, 2), (1, 3), (2, 4), (3, 8), (4, 4), (1, 16), (5, 256)])
def test_nm_shapes(n, m):
    rng = np.random.default_rng(n * 100 + m)
    rows = 7
    q = np.zeros((rows, 2 * m), np.int8)
    for r in range(rows):
        for g in range(2):
            pos = rng.choice(m, size=rng.integers(0, n + 1), replace=False)
            q[r, g * m + pos] = rng.integers(1, 8, pos.size)
    np.testing.assert_array_equal(round_trip(q, WeightEncoding(4, "symmetric", "nm", n, m)), q)


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(SCHEME_BITS), st.sampled_from([None, "bitmap"]),
       st.lists(st.integers(0, 5), min_size=0, max_size=3), st.integers(0, 2**32 - 1))
def test_random_shapes(scheme_bits, sparsity, shape, seed):
    scheme, bits = scheme_bits
    rng = np.random.default_rng(seed)
    q = np.asarray(legal_values(rng, scheme, bits, tuple(shape)))
    if sparsity:
        q[rng.random(q.shape) < 0.5] = 0
    np.testing.assert_array_equal(round_trip(q, WeightEncoding(bits, scheme, sparsity)), q)


def test_code_mapping_matches_design():
    # symmetric: code = q + 2^(b-1); midrise: code = (q + 2^b - 1) / 2; 1-bit midrise = +-1
    np.testing.assert_array_equal(W.values_to_codes(np.array([-3, 0, 3]), 3, "symmetric"), [1, 4, 7])
    np.testing.assert_array_equal(W.values_to_codes(np.array([-7, -1, 1, 7]), 3, "midrise"), [0, 3, 4, 7])
    np.testing.assert_array_equal(W.codes_to_values(np.array([0, 1], np.uint8), 1, "midrise"), [-1, 1])


def test_fp16():
    x = np.array([[0.1, -2.5], [65504.0, 1e-3]], np.float32)
    enc = WeightEncoding(16, "fp16")
    payload, _ = W.encode(x, enc)
    assert len(payload) == 8
    out = W.decode(payload, enc, x.shape, None)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, x.astype(np.float16).astype(np.float32))
    with pytest.raises(PackageError, match="overflow"):
        W.encode(np.array([1e6], np.float32), enc)
    with pytest.raises(PackageError):
        W.encode(np.array([1.0], np.float64), enc)


@pytest.mark.parametrize("scheme,bits,bad", [("symmetric", 3, -4), ("symmetric", 8, -128), ("midrise", 3, 2),
                                             ("midrise", 3, 9), ("asymmetric", 3, 8)])
def test_out_of_range_rejected(scheme, bits, bad):
    dtype = np.uint8 if scheme == "asymmetric" else np.int8
    with pytest.raises(PackageError, match="out of range"):
        W.encode(np.array([1, bad], dtype), WeightEncoding(bits, scheme))


@pytest.mark.parametrize("enc", [WeightEncoding(1, "symmetric"), WeightEncoding(8, "midrise"),
                                 WeightEncoding(9, "asymmetric"), WeightEncoding(4, "nope"),
                                 WeightEncoding(4, sparsity="blocks"), WeightEncoding(16, "fp16", "bitmap"),
                                 WeightEncoding(4, sparsity="nm", n=3, m=2),
                                 WeightEncoding(4, sparsity="nm", n=1, m=1),
                                 WeightEncoding(4, sparsity="nm", n=1, m=512)])
def test_bad_encodings(enc):
    with pytest.raises(PackageError):
        W.check_encoding(enc)


def test_nm_encode_errors():
    with pytest.raises(PackageError, match="nonzeros"):
        W.encode(np.array([[1, 1, 1, 0]], np.int8), WeightEncoding(3, sparsity="nm", n=2, m=4))
    with pytest.raises(PackageError, match="divisible"):
        W.encode(np.zeros((2, 6), np.int8), WeightEncoding(3, sparsity="nm", n=2, m=4))
    with pytest.raises(PackageError, match="midrise"):
        W.encode(np.array([[1, 0, 0, 0]], np.int8), WeightEncoding(3, "midrise", "nm", 2, 4))
    with pytest.raises(PackageError, match="int8"):
        W.encode(np.zeros(4, np.int32), WeightEncoding(3))


def test_decode_rejects_bad_payloads():
    enc = WeightEncoding(3)
    with pytest.raises(PackageError, match="code 0"):
        W.decode(bytes([0x00]), enc, (2,), None)                 # two zero codes
    with pytest.raises(PackageError, match="padding"):
        W.decode(bytes([0xC9]), enc, (2,), None)                 # codes 1, 1 + high bits set
    with pytest.raises(PackageError, match="needs"):
        W.decode(bytes(3), enc, (2,), None)
    bm = WeightEncoding(3, sparsity="bitmap")
    payload, nnz = W.encode(np.array([0, 2, 0, -1], np.int8), bm)
    with pytest.raises(PackageError, match="nnz"):
        W.decode(bytes([0b0111]) + payload[1:], bm, (4,), nnz)
    nm = WeightEncoding(4, sparsity="nm", n=2, m=3)
    payload, _ = W.encode(np.array([[0, 2, -1]], np.int8), nm)     # indices 1, 2 (2 bits each)
    with pytest.raises(PackageError, match=">= m"):
        W.decode(payload[:1] + bytes([0b1111]), nm, (1, 3), None)   # indices 3, 3
    with pytest.raises(PackageError, match="increasing"):
        W.decode(payload[:1] + bytes([0b0110]), nm, (1, 3), None)   # indices 2, 1

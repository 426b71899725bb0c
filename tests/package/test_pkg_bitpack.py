"""Bit-exact pack/unpack at every width 1..8 against a plain reference implementation."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgert.package import bitpack
from edgert.package.bitpack import pack_bits, packed_nbytes, padding_is_zero, unpack_bits


def reference_pack(codes: list[int], bits: int) -> bytes:
    """The spec, literally: code i's bit j is stream bit i*bits+j; stream bit k is bit k%8 of byte k//8."""
    out = bytearray(packed_nbytes(len(codes), bits))
    for i, c in enumerate(codes):
        for j in range(bits):
            k = i * bits + j
            out[k // 8] |= ((c >> j) & 1) << (k % 8)
    return bytes(out)


@st.composite
def codes_and_bits(draw):
    bits = draw(st.integers(1, 8))
    codes = draw(st.lists(st.integers(0, (1 << bits) - 1), max_size=200))
    return np.array(codes, dtype=np.uint8), bits


@settings(max_examples=300, deadline=None)
@given(codes_and_bits())
def test_round_trip_matches_reference(cb):
    codes, bits = cb
    packed = pack_bits(codes, bits)
    assert packed == reference_pack(codes.tolist(), bits)
    assert len(packed) == packed_nbytes(codes.size, bits)
    assert padding_is_zero(packed, bits, codes.size)
    np.testing.assert_array_equal(unpack_bits(packed, bits, codes.size), codes)


@pytest.mark.parametrize("bits", range(1, 9))
def test_every_width_all_codes(bits):
    codes = np.arange(1 << bits, dtype=np.uint8).repeat(3)
    packed = pack_bits(codes, bits)
    np.testing.assert_array_equal(unpack_bits(packed, bits, codes.size), codes)


def test_worked_example_from_format_md():
    # docs/format.md §5.4: 3-bit codes 5, 0, 7, 2, 6 -> bytes 0xC5 0x65
    assert pack_bits(np.array([5, 0, 7, 2, 6], dtype=np.uint8), 3) == bytes([0xC5, 0x65])
    np.testing.assert_array_equal(unpack_bits(bytes([0xC5, 0x65]), 3, 5), [5, 0, 7, 2, 6])


def test_worked_3bit_tensor_from_format_md():
    from edgert.ir import WeightEncoding
    from edgert.package import weights
    q = np.array([1, -3, 3, -2, 2], np.int8)
    payload, _ = weights.encode(q, WeightEncoding(3))
    assert payload == bytes([0xCD, 0x65])
    np.testing.assert_array_equal(weights.decode(payload, WeightEncoding(3), (5,), None), q)


def test_nibble_order_is_low_first():
    assert pack_bits(np.array([1, 2], dtype=np.uint8), 4) == bytes([0x21])


@pytest.mark.parametrize("bits", [1, 3, 5, 7])
def test_chunked_path(monkeypatch, bits):
    monkeypatch.setattr(bitpack, "CHUNK", 16)
    rng = np.random.default_rng(bits)
    codes = rng.integers(0, 1 << bits, 16 * 5 + 3).astype(np.uint8)
    packed = pack_bits(codes, bits)
    assert packed == reference_pack(codes.tolist(), bits)
    np.testing.assert_array_equal(unpack_bits(packed, bits, codes.size), codes)


def test_bad_arguments():
    with pytest.raises(ValueError):
        pack_bits(np.array([8], dtype=np.uint8), 3)
    with pytest.raises(ValueError):
        pack_bits(np.array([-1]), 3)
    with pytest.raises(ValueError):
        pack_bits(np.array([0.5]), 3)
    for bits in (0, 9, True):
        with pytest.raises(ValueError):
            pack_bits(np.zeros(1, np.uint8), bits)
    with pytest.raises(ValueError):
        unpack_bits(b"\x00", 3, 3)         # 3 codes x 3 bits need 2 bytes
    assert not padding_is_zero(bytes([0xFF]), 3, 2)

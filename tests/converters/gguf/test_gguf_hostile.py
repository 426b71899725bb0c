"""Malformed and hostile GGUF files: every one is a one-line ConversionError naming the file -- never
a numpy / struct / IndexError traceback, never a huge allocation."""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from converters.gguf import GgufConvertOptions, convert_gguf, read_gguf
from edgert.errors import ConversionError

GGUF_STRING, GGUF_ARRAY, GGUF_UINT32 = 8, 9, 4


def expect_error(path: Path, match: str, *, convert: bool = False, options=None) -> str:
    with pytest.raises(ConversionError) as ei:
        if convert:
            convert_gguf(path, path.with_suffix(".pkg"), options)
        else:
            read_gguf(path)
    msg = str(ei.value)
    assert "\n" not in msg and str(path) in msg, msg
    assert match.lower() in msg.lower(), msg
    return msg


@pytest.fixture(scope="module")
def blob(tiny_gguf) -> bytes:
    return tiny_gguf("Q4_1").read_bytes()


def patched(tmp_path: Path, blob: bytes, edits: list[tuple[int, bytes]], name="bad.gguf") -> Path:
    b = bytearray(blob)
    for pos, data in edits:
        b[pos:pos + len(data)] = data
    p = tmp_path / name
    p.write_bytes(bytes(b))
    return p


def gguf_str(s: str | bytes) -> bytes:
    raw = s.encode() if isinstance(s, str) else s
    return struct.pack("<Q", len(raw)) + raw


def tensor_info(blob: bytes, name: str) -> dict[str, int]:
    """Byte positions of one tensor info's fields (gguf.md: name, n_dims, dims, type, offset)."""
    pos = blob.index(gguf_str(name)) + 8 + len(name)
    n_dims = struct.unpack_from("<I", blob, pos)[0]
    return {"n_dims": pos, "dims": pos + 4, "type": pos + 4 + 8 * n_dims, "offset": pos + 8 + 8 * n_dims}


def kv_value(blob: bytes, key: str) -> int:
    """Position of a key's value type field."""
    return blob.index(gguf_str(key)) + 8 + len(key)


# -- the fixed header --------------------------------------------------------------------------------
@pytest.mark.parametrize("edit,match", [
    ((0, b"GGUX"), "magic"),
    ((4, struct.pack("<I", 1)), "version 1"),
    ((4, struct.pack("<I", 4)), "version 4"),
    ((4, struct.pack(">I", 3)), "big-endian"),
    ((8, struct.pack("<Q", 1 << 63)), "tensor count"),
    ((8, struct.pack("<Q", 1 << 20)), "tensor count"),
    ((16, struct.pack("<Q", 1 << 62)), "metadata count"),
    ((16, struct.pack("<Q", 6000)), "metadata count"),
])
def test_header(tmp_path, blob, edit, match):
    expect_error(patched(tmp_path, blob, [edit]), match)
    expect_error(patched(tmp_path, blob, [edit]), match, convert=True)


def test_counts_that_fit_but_lie(tmp_path, blob):
    n_tensors, n_kv = struct.unpack_from("<QQ", blob, 8)
    expect_error(patched(tmp_path, blob, [(8, struct.pack("<Q", n_tensors + 1))]), "")
    expect_error(patched(tmp_path, blob, [(16, struct.pack("<Q", n_kv + 1))]), "")


def test_tiny_files(tmp_path):
    for data in (b"", b"GGUF", b"GGUF\x03\x00\x00\x00" + bytes(8)):
        p = tmp_path / "short.gguf"
        p.write_bytes(data)
        expect_error(p, "header")


def test_missing_file(tmp_path):
    with pytest.raises(ConversionError, match="cannot read"):
        read_gguf(tmp_path / "missing.gguf")


def test_truncated_at_many_cut_points(tmp_path, blob):
    cuts = list(range(0, 600)) + list(range(600, len(blob), 61)) + [len(blob) - 1]
    for cut in cuts:
        p = tmp_path / "cut.gguf"
        p.write_bytes(blob[:cut])
        expect_error(p, "")


# -- tensor infos --------------------------------------------------------------------------------------
Q = "blk.0.attn_q.weight"


@pytest.mark.parametrize("field,value,match", [
    ("n_dims", struct.pack("<I", 7), "dims"),
    ("n_dims", struct.pack("<I", 0), "dims"),
    ("dims", struct.pack("<Q", 1 << 40), "past the end"),          # huge, still whole blocks
    ("dims", struct.pack("<Q", (1 << 64) - 32), "past the end"),
    ("dims", struct.pack("<QQ", 1 << 32, 1 << 32), "past the end"),   # product overflows 64 bits
    ("dims", struct.pack("<Q", 0), "positive"),
    ("dims", struct.pack("<Q", 48), "block size"),                 # not a multiple of 32
    ("type", struct.pack("<I", 4), "unknown ggml type id 4"),      # the removed Q4_2
    ("type", struct.pack("<I", 1000), "unknown ggml type"),
    ("offset", struct.pack("<Q", 1 << 40), "past the end"),
    ("offset", struct.pack("<Q", (1 << 64) - 32), "past the end"),
])
def test_tensor_info(tmp_path, blob, field, value, match):
    expect_error(patched(tmp_path, blob, [(tensor_info(blob, Q)[field], value)]), match)


def test_misaligned_and_overlapping_offsets(tmp_path, blob):
    info = tensor_info(blob, Q)
    offset = struct.unpack_from("<Q", blob, info["offset"])[0]
    expect_error(patched(tmp_path, blob, [(info["offset"], struct.pack("<Q", offset + 1))]), "alignment")
    other = struct.unpack_from("<Q", blob, tensor_info(blob, "blk.0.attn_k.weight")["offset"])[0]
    expect_error(patched(tmp_path, blob, [(info["offset"], struct.pack("<Q", other))]), "overlaps")


def test_duplicate_tensor_name(tmp_path, blob):
    pos = blob.index(gguf_str("blk.1.attn_v.weight")) + 8
    expect_error(patched(tmp_path, blob, [(pos, b"blk.1.attn_k.weight")]), "duplicate tensor name")


# -- metadata ------------------------------------------------------------------------------------------
def test_duplicate_key(tmp_path, blob):
    pos = blob.index(gguf_str("tokenizer.ggml.bos_token_id")) + 8
    expect_error(patched(tmp_path, blob, [(pos, b"tokenizer.ggml.eos_token_id")]), "duplicate metadata key")


def test_bad_values(tmp_path, blob):
    name = kv_value(blob, "general.name")
    expect_error(patched(tmp_path, blob, [(name, struct.pack("<I", 13))]), "unknown value type 13")
    expect_error(patched(tmp_path, blob, [(name + 4, struct.pack("<Q", 1 << 60))]), "truncated")
    tokens = kv_value(blob, "tokenizer.ggml.tokens")
    expect_error(patched(tmp_path, blob, [(tokens + 8, struct.pack("<Q", 1 << 61))]), "do not fit")
    types = kv_value(blob, "tokenizer.ggml.token_type")
    expect_error(patched(tmp_path, blob, [(types + 8, struct.pack("<Q", 1 << 61))]), "do not fit")
    key = blob.index(gguf_str("general.name")) + 8
    expect_error(patched(tmp_path, blob, [(key, b"\xff")]), "not UTF-8")


def raw_gguf(path: Path, kvs: list[bytes], tensors: list[bytes], data: bytes = b"", align: int = 32) -> Path:
    """A GGUF v3 assembled by hand from encoded key/values and tensor infos."""
    head = struct.pack("<4sIQQ", b"GGUF", 3, len(tensors), len(kvs)) + b"".join(kvs) + b"".join(tensors)
    path.write_bytes(head + bytes(-len(head) % align) + data)
    return path


def kv(key: str, vtype: int, payload: bytes) -> bytes:
    return gguf_str(key) + struct.pack("<I", vtype) + payload


def tinfo(name: str, dims: list[int], ggml_type: int, offset: int) -> bytes:
    return gguf_str(name) + struct.pack(f"<I{len(dims)}QIQ", len(dims), *dims, ggml_type, offset)


def test_hand_made_files(tmp_path):
    arch = kv("general.architecture", GGUF_STRING, gguf_str("llama"))
    f32 = tinfo("output_norm.weight", [8], 0, 0)
    ok = raw_gguf(tmp_path / "ok.gguf", [arch], [f32], bytes(32))
    g = read_gguf(ok)
    assert g.architecture == "llama" and g.tensors["output_norm.weight"].shape == (8,)
    align = lambda v: kv("general.alignment", GGUF_UINT32, struct.pack("<I", v))  # noqa: E731
    expect_error(raw_gguf(tmp_path / "a.gguf", [arch, align(48)], [f32], bytes(64)), "alignment")
    expect_error(raw_gguf(tmp_path / "b.gguf", [arch, align(0)], [f32], bytes(64)), "alignment")
    wrong_type = kv("general.alignment", GGUF_STRING, gguf_str("32"))
    expect_error(raw_gguf(tmp_path / "c.gguf", [arch, wrong_type], [f32], bytes(64)), "alignment")
    long_name = tinfo("x" * 64, [8], 0, 0)
    expect_error(raw_gguf(tmp_path / "d.gguf", [arch], [long_name], bytes(32)), "at most 63")
    # arrays of arrays of arrays
    inner = struct.pack("<IQ", GGUF_UINT32, 1) + struct.pack("<I", 7)
    middle = struct.pack("<IQ", GGUF_ARRAY, 1) + inner
    deep = kv("x.deep", GGUF_ARRAY, struct.pack("<IQ", GGUF_ARRAY, 1) + middle)
    expect_error(raw_gguf(tmp_path / "e.gguf", [arch, deep], [f32], bytes(32)), "nested")
    nested = kv("x.nested", GGUF_ARRAY, middle)
    assert read_gguf(raw_gguf(tmp_path / "f.gguf", [arch, nested], [f32], bytes(32))).metadata[
        "x.nested"][0].tolist() == [7]
    # no architecture key: the converter names it
    expect_error(raw_gguf(tmp_path / "g.gguf", [], [f32], bytes(32)), "general.architecture", convert=True)


# -- what the converter refuses ----------------------------------------------------------------------
def test_unknown_architecture(tmp_path, blob):
    pos = kv_value(blob, "general.architecture") + 4 + 8
    assert blob[pos:pos + 5] == b"llama"
    expect_error(patched(tmp_path, blob, [(pos, b"mamba")]), "architecture 'mamba' is not supported "
                 "(known: llama)", convert=True)


def test_missing_key(tmp_path, blob):
    pos = blob.index(gguf_str("llama.block_count")) + 8
    expect_error(patched(tmp_path, blob, [(pos, b"llama.block_xount")]), "llama.block_count", convert=True)


def test_absurd_hyperparameters(tmp_path, blob):
    pos = kv_value(blob, "llama.context_length") + 4
    expect_error(patched(tmp_path, blob, [(pos, struct.pack("<I", 1 << 31))]), "context_length", convert=True)
    pos = kv_value(blob, "llama.block_count") + 4
    expect_error(patched(tmp_path, blob, [(pos, struct.pack("<I", 1 << 30))]), "block_count", convert=True)
    pos = kv_value(blob, "llama.attention.head_count_kv") + 4
    expect_error(patched(tmp_path, blob, [(pos, struct.pack("<I", 3))]), "head_count", convert=True)


def test_unsupported_quant_type_needs_wbits(tiny_gguf, tmp_path):
    src = tiny_gguf("Q6_K", hidden=256, ffn=512)
    msg = expect_error(src, "has type Q6_K", convert=True)
    assert "edgert repacks Q4_0/Q4_1/Q8_0" in msg and "--wbits" in msg
    convert_gguf(src, tmp_path / "ok.pkg", GgufConvertOptions(wbits=4))     # requantizing is fine


def test_bad_group_size_for_the_rows(tiny_gguf):
    expect_error(tiny_gguf("Q4_1", hidden=96, n_heads=4, n_kv_heads=2), "group size 64", convert=True,
                 options=GgufConvertOptions(wbits=4, group_size=64))


def test_unsupported_tokenizer(tmp_path, blob):
    pos = kv_value(blob, "tokenizer.ggml.pre") + 4 + 8
    assert blob[pos:pos + 6] == b"smollm"
    expect_error(patched(tmp_path, blob, [(pos, b"zzzzzz")]), "pre-tokenizer 'zzzzzz'", convert=True)
    pos = kv_value(blob, "tokenizer.ggml.model") + 4 + 8
    expect_error(patched(tmp_path, blob, [(pos, b"llam")]), "tokenizer model 'llam'", convert=True)


def test_non_finite_weights(tmp_path, blob, tiny_gguf):
    g = read_gguf(tiny_gguf("Q4_1"))
    t = g.tensors["blk.0.attn_norm.weight"]
    expect_error(patched(tmp_path, blob, [(t.offset, np.array([np.nan], np.float32).tobytes())]),
                 "non-finite", convert=True)
    t = g.tensors["blk.0.ffn_up.weight"]
    expect_error(patched(tmp_path, blob, [(t.offset, np.array([np.inf], np.float16).tobytes())]),
                 "non-finite", convert=True)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_corruption_never_escapes(tmp_path, blob, tiny_gguf, data):
    """Overwrite a few bytes of the header region (counts, keys, values, tensor infos): the reader
    and the converter either succeed or raise ConversionError."""
    header_end = min(t.offset for t in read_gguf(tiny_gguf("Q4_1")).tensors.values())
    edits = data.draw(st.lists(st.tuples(st.integers(0, header_end - 1), st.binary(min_size=1, max_size=8)),
                               min_size=1, max_size=4))
    p = patched(tmp_path, blob, edits, "fuzz.gguf")
    try:
        convert_gguf(p, tmp_path / "fuzz.pkg")
    except ConversionError as e:
        assert "\n" not in str(e)


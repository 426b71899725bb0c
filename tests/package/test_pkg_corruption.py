"""Truncated, bit-flipped and hostile packages: only PackageError, with the file and the problem named."""
from __future__ import annotations

import json

import numpy as np
import pytest

from converters.package_writer import WriteOptions, write_package
from edgert import format as F
from edgert.errors import PackageError
from edgert.ir import WeightEncoding
from edgert.package import ReadOptions, read_package
from pkg_helpers import Sec, assemble, conv_graph, manifest_of, parse, patch_entry, patch_header, rehash, \
    with_manifest


def small_graph():
    g = conv_graph(np.random.default_rng(0), channels=2, layers=1)
    g.initializers["sp"] = np.array([[0, 1, 0, -2]], np.int8)
    g.encodings["sp"] = WeightEncoding(3, sparsity="bitmap")
    g.initializers["nm"] = np.array([[0, 1, 0, -2]], np.int8)
    g.encodings["nm"] = WeightEncoding(3, sparsity="nm", n=2, m=4)
    return g


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("pk")
    out = {}
    for compress in ("none", "zstd"):
        p = d / f"{compress}.pkg"
        write_package(p, [small_graph()], WriteOptions(compress=compress, zstd_level=1), extras={"ex": b"abc"})
        out[compress] = p.read_bytes()
    return out


def expect_error(tmp_path, data, match=None, options=ReadOptions()):
    p = tmp_path / "bad.pkg"
    p.write_bytes(data)
    with pytest.raises(PackageError) as ei:
        read_package(p, options)
    msg = str(ei.value)
    assert str(p) in msg and "unexpected" not in msg, msg
    if match:
        assert match in msg, msg
    return msg


def read_bytes(tmp_path, data, options=ReadOptions()):
    p = tmp_path / "ok.pkg"
    p.write_bytes(data)
    return read_package(p, options)


def test_valid_file_reads(tmp_path, files):
    for data in files.values():
        read_bytes(tmp_path, data).close()


@pytest.mark.parametrize("compress", ["none", "zstd"])
def test_truncation_at_every_region_boundary(tmp_path, files, compress):
    data = files[compress]
    header, secs, _ = parse(data)
    cuts = {0, 1, 7, 8, F.HEADER_SIZE - 1, F.HEADER_SIZE, header[6] + len(secs) * F.SECTION_ENTRY_SIZE,
            len(data) - F.FOOTER_SIZE, len(data) - F.FOOTER_SIZE + 1, len(data) - 1}
    for s in secs:
        cuts |= {s.offset - 1, s.offset, s.offset + 1, s.offset + len(s.stored) - 1, s.offset + len(s.stored)}
    for cut in sorted(c for c in cuts if 0 <= c < len(data)):
        expect_error(tmp_path, data[:cut])
    expect_error(tmp_path, data + b"\0")                 # extended is as bad as truncated


@pytest.mark.parametrize("compress", ["none", "zstd"])
def test_every_single_bit_flip_is_caught(tmp_path, files, compress):
    data = files[compress]
    p = tmp_path / "flip.pkg"
    for pos in range(len(data)):
        buf = bytearray(data)
        buf[pos] ^= 1 << (pos % 8)
        p.write_bytes(buf)
        with pytest.raises(PackageError):
            read_package(p)


@pytest.mark.parametrize("compress", ["none", "zstd"])
def test_flips_without_hash_checks_never_escape(tmp_path, files, compress):
    """With verify_hashes=False only the structural checks stand between a flip and the decoder."""
    data = files[compress]
    p = tmp_path / "flip.pkg"
    for pos in range(len(data)):
        buf = bytearray(data)
        buf[pos] ^= 0xFF
        p.write_bytes(buf)
        try:
            read_package(p, ReadOptions(verify_hashes=False)).close()
        except PackageError as e:
            assert "unexpected" not in str(e), (pos, str(e))


# ---- hostile fixed records (hashes recomputed) -------------------------------------------------
@pytest.mark.parametrize("fields,match", [
    ({"magic": b"GGUF\0\0\0\0"}, "magic"),
    ({"major": 2}, "not supported"),
    ({"flags": 0}, "little-endian"),
    ({"flags": 3}, "unknown header flags"),
    ({"hsize": 32}, "header_size"),
    ({"align": 32}, "alignment"),
    ({"esize": 64}, "entry_size"),
    ({"reserved": b"\1" * 16}, "reserved"),
    ({"body_len": 10}, "body length"),
    ({"body_len": 2**64 - 1}, "body length"),
    ({"count": 0}, "section count"),
    ({"count": 2**32 - 1}, "section count"),
    ({"count": 4000}, "runs past"),
    ({"table_off": 2**64 - 64}, "runs past"),
    ({"table_off": 65}, "table offset"),
    ({"table_off": 0}, "table offset"),
])
def test_hostile_header(tmp_path, files, fields, match):
    expect_error(tmp_path, patch_header(files["none"], **fields), match)


@pytest.mark.parametrize("fields,match", [
    ({"offset": 2**64 - 64}, "outside"),
    ({"offset": 65}, "misaligned"),
    ({"offset": 0}, "outside"),
    ({"stored": 2**64 - 1}, "outside"),
    ({"raw": 7}, "raw length"),
    ({"kind": 9}, "unknown kind"),
    ({"codec": 5}, "unknown codec"),
    ({"flags": 1}, "reserved"),
    ({"name": b"weights.0"}, "duplicate section name"),
    ({"name": b""}, "invalid name"),
    ({"name": b"a\0b"}, "invalid name"),
    ({"name": b"\xff\xfe"}, "invalid name"),
    ({"kind": int(F.SectionKind.EXTRA)}, "exactly one manifest"),
])
def test_hostile_section_entry(tmp_path, files, fields, match):
    expect_error(tmp_path, patch_entry(files["none"], 0, **fields), match)


def test_overlapping_sections(tmp_path, files):
    _, secs, _ = parse(files["none"])
    data = patch_entry(files["none"], 1, offset=secs[0].offset)
    expect_error(tmp_path, data, "overlaps")


def test_section_hash_mismatch(tmp_path, files):
    buf = bytearray(files["none"])
    _, secs, _ = parse(files["none"])
    buf[secs[1].offset] ^= 1
    data = rehash(bytes(buf), sections=False)            # body hash right, section hash wrong
    expect_error(tmp_path, data, "SHA-256 mismatch")


def test_unsigned_footer_with_key_bytes(tmp_path, files):
    buf = bytearray(files["none"])
    buf[len(buf) - F.FOOTER_SIZE + 60] = 1
    expect_error(tmp_path, bytes(buf), "unsigned footer")


@pytest.mark.parametrize("offset_in_footer,value,match", [(0, 0x41, "footer magic"), (8, 0x10, "footer size"),
                                                          (12, 0x02, "footer flags"), (159, 1, "reserved")])
def test_hostile_footer(tmp_path, files, offset_in_footer, value, match):
    buf = bytearray(files["none"])
    buf[len(buf) - F.FOOTER_SIZE + offset_in_footer] = value
    expect_error(tmp_path, bytes(buf), match)


# ---- zstd -------------------------------------------------------------------------------------
def zstd_sec(name, kind, payload: bytes, raw_len=None, level=1):
    import zstandard
    return Sec(name, kind, F.Codec.ZSTD, len(payload) if raw_len is None else raw_len,
               zstandard.ZstdCompressor(level=level).compress(payload))


def test_zstd_length_lies(tmp_path, files):
    m = json.dumps(manifest_of(files["none"])).encode()
    _, secs, _ = parse(files["none"])
    for raw_len, match in [(len(m) + 1, "decompresses to"), (len(m) - 1, "more than")]:
        data = assemble([zstd_sec("manifest", F.SectionKind.MANIFEST, m, raw_len)] + secs[1:])
        expect_error(tmp_path, data, match)
    junk = Sec("manifest", F.SectionKind.MANIFEST, F.Codec.ZSTD, len(m), b"\x28\xb5\x2f\xfd" + b"\xff" * 40)
    expect_error(tmp_path, assemble([junk] + secs[1:]), "zstd")


def test_zstd_bomb_is_capped(tmp_path, files):
    _, secs, _ = parse(files["none"])
    bomb = zstd_sec("bomb", F.SectionKind.EXTRA, bytes(64 << 20), level=3)
    data = assemble(secs + [bomb])
    expect_error(tmp_path, data, "cap", ReadOptions(max_decoded_bytes=1 << 20))
    huge = Sec("bomb", F.SectionKind.EXTRA, F.Codec.ZSTD, 2**63, bomb.stored)
    expect_error(tmp_path, assemble(secs + [huge]), "cap")


# ---- hostile manifests --------------------------------------------------------------------------
def mutate_manifest(files, fn):
    m = manifest_of(files["none"])
    fn(m)
    return with_manifest(files["none"], m)


def tensor(m, name):
    return next(t for t in m["graphs"][0]["tensors"] if t["name"] == name)


def _set(path_fn, key, value):
    def fn(m):
        path_fn(m)[key] = value
    return fn


G = lambda m: m["graphs"][0]                     # noqa: E731
T = lambda name: (lambda m: tensor(m, name))     # noqa: E731

HOSTILE = [
    (_set(lambda m: m, "graphs", {}), "must be list"),
    (_set(lambda m: m, "graphs", []), "1.."),
    (_set(lambda m: m, "format_version", [2, 0]), "format_version"),
    (_set(lambda m: m, "format_version", "1.0"), "must be list"),
    (lambda m: m.pop("producer"), "lacks 'producer'"),
    (_set(G, "name", 7), "must be str"),
    (_set(G, "name", ""), "empty"),
    (_set(G, "nodes", [1]), "must be an object"),
    (lambda m: G(m)["nodes"][0].__setitem__("inputs", "x"), "must be list"),
    (lambda m: G(m)["nodes"][0].__setitem__("inputs", ["x", None]), "list of strings"),
    (lambda m: G(m)["nodes"][0].__setitem__("inputs", ["ghost"]), "ghost"),
    (lambda m: G(m)["nodes"][0].__setitem__("op", ""), "op is empty"),
    (lambda m: G(m)["nodes"][0].__setitem__("attrs", []), "must be dict"),
    (lambda m: G(m)["nodes"].reverse(), "not an initializer"),
    (lambda m: G(m)["outputs"][0].__setitem__("name", "nowhere"), "never produced"),
    (lambda m: G(m)["inputs"][0].__setitem__("dtype", "object"), "dtype"),
    (lambda m: G(m)["inputs"][0].__setitem__("shape", [-1]), "shape"),
    (lambda m: G(m)["tensors"].append(dict(G(m)["tensors"][0])), "duplicate tensor names"),
    (lambda m: m["graphs"].append(G(m)), "duplicate graph names"),
    (_set(T("w0"), "offset", 2**63), "outside"),
    (_set(T("w0"), "offset", 1), "misaligned"),
    (_set(T("w0"), "offset", -64), "outside"),
    (_set(T("w0"), "offset", 1.5), "must be int"),
    (_set(T("w0"), "offset", True), "must be int"),
    (_set(T("w0"), "nbytes", 2**64), "nbytes"),
    (_set(T("w0"), "nbytes", 4), "nbytes"),
    (_set(T("w0"), "dtype", "object"), "dtype"),
    (_set(T("w0"), "dtype", "<f4"), "dtype"),
    (_set(T("w0"), "shape", [2**62, 2**62, 0]), "element cap"),
    (_set(T("w0"), "shape", [-2, -9]), "shape"),
    (_set(T("w0"), "shape", [1] * 40), "shape"),
    (_set(T("w0"), "shape", "2x2"), "must be list"),
    (_set(T("w0"), "shape", [3, 3]), "nbytes"),
    (_set(T("w0"), "section", "manifest"), "not a weights section"),
    (_set(T("w0"), "section", "ex"), "not a weights section"),
    (_set(T("w0"), "section", "nope"), "not a weights section"),
    (_set(T("wq"), "encoding", {"bits": 9, "scheme": "symmetric", "sparsity": None}), "2..8 bits"),
    (_set(T("wq"), "encoding", {"bits": 3, "scheme": "eval", "sparsity": None}), "unknown weight scheme"),
    (_set(T("wq"), "encoding", {"bits": "3", "scheme": "symmetric", "sparsity": None}), "bits"),
    (_set(T("wq"), "encoding", {"bits": 3, "scheme": "symmetric", "sparsity": None, "x": 1}), "unknown keys"),
    (_set(T("wq"), "encoding", {"bits": 3, "scheme": ["symmetric"], "sparsity": None}), "strings"),
    (_set(T("wq"), "encoding", [3]), "must be dict"),
    (_set(T("wq"), "encoding", {"bits": 4, "scheme": "symmetric", "sparsity": None}), "nbytes"),
    (_set(T("wq"), "encoding", {"bits": 3, "scheme": "asymmetric", "sparsity": None}), "decodes to uint8"),
    (_set(T("sp"), "encoding", {"bits": 3, "scheme": "symmetric", "sparsity": "bitmap", "nnz": 2**70}), "nnz"),
    (_set(T("sp"), "encoding", {"bits": 3, "scheme": "symmetric", "sparsity": "bitmap", "nnz": 3}), "nbytes"),
    (_set(T("sp"), "encoding", {"bits": 3, "scheme": "symmetric", "sparsity": "bitmap"}), "nnz"),
    (_set(T("nm"), "encoding", {"bits": 3, "scheme": "symmetric", "sparsity": "nm", "n": 5, "m": 4}), "n <= m"),
    (_set(T("nm"), "encoding", {"bits": 3, "scheme": "symmetric", "sparsity": "nm", "n": 1, "m": 4}), "tensor 'nm'"),
    (_set(T("nm"), "encoding", {"bits": 3, "scheme": "symmetric", "sparsity": "nm", "n": 2, "m": 3}), "divisible"),
    (_set(T("nm"), "shape", []), "divisible"),
    (_set(G, "preprocess", {"size": [0, 4]}), "size"),
    (_set(G, "preprocess", {"mean": ["a"]}), "mean"),
    (_set(G, "preprocess", {"channels": 3}), "channels"),
    (_set(G, "preprocess", []), "preprocess"),
    (_set(G, "layers", [{"name": "x"}]), "lacks 'op'"),
    (_set(G, "layers", [{"name": "x", "op": "Conv", "wbits": "3"}]), "wbits"),
    (_set(G, "metadata", "x"), "metadata"),
]


@pytest.mark.parametrize("fn,match", HOSTILE, ids=[str(i) for i in range(len(HOSTILE))])
def test_hostile_manifest(tmp_path, files, fn, match):
    expect_error(tmp_path, mutate_manifest(files, fn), match)


@pytest.mark.parametrize("raw,match", [
    (b"\xff\xfe{}", "UTF-8"),
    (b"{\"graphs\": [", "JSON"),
    (b"[]", "must be an object"),
    (b"null", "must be an object"),
    (b"{\"a\": 1, \"a\": 2}", "duplicate key"),
    (b"{\"a\": NaN}", "NaN"),
    (b"{\"a\": Infinity}", "Infinity"),
    (b"[" * 100000 + b"]" * 100000, "JSON"),
    (b"{\"a\":" + b"[" * 100 + b"]" * 100 + b"}", "deeper"),
    (b"{\"a\": 1" + b"0" * 5000 + b"}", "JSON"),
])
def test_malformed_manifest_json(tmp_path, files, raw, match):
    expect_error(tmp_path, with_manifest(files["none"], raw), match)


def test_manifest_size_cap(tmp_path, files, monkeypatch):
    monkeypatch.setattr(F, "MAX_MANIFEST_BYTES", 100)
    expect_error(tmp_path, files["none"], "over the cap")


def test_bad_tensor_payloads_after_rehash(tmp_path, files):
    m = manifest_of(files["none"])
    _, secs, _ = parse(files["none"])
    w = next(s for s in secs if s.name == "weights.0")
    t = tensor(m, "wq")
    w0 = w.stored
    payload = bytearray(w0)
    payload[t["offset"]:t["offset"] + t["nbytes"]] = bytes(t["nbytes"])       # symmetric code 0
    w.stored = bytes(payload)
    expect_error(tmp_path, assemble(secs), "code 0")
    t = tensor(m, "nm")
    payload = bytearray(w0)
    payload[t["offset"]:t["offset"] + t["nbytes"]] = b"\x00" * (t["nbytes"] - 1) + b"\xff"
    w.stored = bytes(payload)
    expect_error(tmp_path, assemble(secs), "tensor 'nm'")

"""Shared helpers for the package tests: small graphs, and crafting package bytes by hand
(with recomputed hashes, so validation beyond the hashes is exercised)."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np

from edgert import format as F
from edgert.ir import Graph, LayerInfo, Node, Preprocess, ValueInfo, WeightEncoding


def conv_graph(rng: np.random.Generator, name: str = "net", channels: int = 4, layers: int = 2,
               encodings: bool = True) -> Graph:
    """A little Conv/Relu stack with float and packed int8 initializers."""
    nodes, inits, encs = [], {}, {}
    x = "x"
    c = channels
    for i in range(layers):
        w, b = f"w{i}", f"b{i}"
        inits[w] = rng.standard_normal((c, c, 3, 3)).astype(np.float32)
        inits[b] = rng.standard_normal(c).astype(np.float32)
        nodes.append(Node("Conv", f"conv{i}", [x, w, b], [f"c{i}"], {"pads": [1, 1, 1, 1], "group": 1}))
        nodes.append(Node("Relu", f"relu{i}", [f"c{i}"], [f"r{i}"]))
        x = f"r{i}"
    if encodings:
        q = rng.integers(-3, 4, (c, c, 3, 3)).astype(np.int8)
        inits["wq"] = q
        inits["wq_scale"] = rng.random(c).astype(np.float32) + 0.01
        inits["bias_i32"] = rng.integers(-1000, 1000, c).astype(np.int32)
        encs["wq"] = WeightEncoding(bits=3)
        encs["wq_scale"] = WeightEncoding(bits=16, scheme="fp16")
        nodes.append(Node("DequantizeLinear", "dq", ["wq", "wq_scale"], ["wdq"], {"axis": 0}))
        nodes.append(Node("Conv", "convq", [x, "wdq", ""], ["y"], {"pads": [1, 1, 1, 1]}))
    else:
        nodes.append(Node("Identity", "id", [x], ["y"]))
    return Graph(name=name, inputs=[ValueInfo("x", "float32", [1, c, "h", None])],
                 outputs=[ValueInfo("y", "float32", [1, c, "h", None])], nodes=nodes,
                 initializers=inits, encodings=encs,
                 preprocess=Preprocess(size=(8, 8), mean=(0.5, 0.5, 0.5), std=(0.2, 0.2, 0.2)),
                 metadata={"labels": ["a", "b"], "task": "test"},
                 layers=[LayerInfo(name="convq", op="Conv", weight="wq", wbits=3, abits=8,
                                   granularity="channel", sparsity=0.25, sqnr_db=21.5, params=c * c * 9)])


# ---------------------------------------------------------------------------------------------
# Crafting bytes
# ---------------------------------------------------------------------------------------------
@dataclass
class Sec:
    name: str
    kind: int
    codec: int
    raw_len: int
    stored: bytes
    offset: int = 0
    sha: bytes = b""


def parse(data: bytes) -> tuple[tuple, list[Sec], tuple]:
    """Header fields, sections (with their stored bytes), footer fields of a valid package."""
    header = F.HEADER.unpack_from(data, 0)
    table_off, count = header[6], header[7]
    secs = []
    for i in range(count):
        name, kind, codec, _flags, off, stored, raw, sha, _ = F.SECTION_ENTRY.unpack_from(
            data, table_off + i * F.SECTION_ENTRY_SIZE)
        secs.append(Sec(name.rstrip(b"\0").decode(), kind, codec, raw, data[off:off + stored], off, sha))
    footer = F.FOOTER.unpack_from(data, len(data) - F.FOOTER_SIZE)
    return header, secs, footer


def assemble(secs: list[Sec]) -> bytes:
    """A well-formed, unsigned package from sections (hashes and offsets computed here)."""
    data_start = F.align_up(F.HEADER_SIZE + len(secs) * F.SECTION_ENTRY_SIZE)
    body = bytearray(data_start)
    for s in secs:
        body += bytes(F.align_up(len(body)) - len(body))
        s.offset = len(body)
        s.sha = hashlib.sha256(s.stored).digest()
        body += s.stored
    body[:F.HEADER_SIZE] = F.HEADER.pack(F.MAGIC, F.FORMAT_MAJOR, F.FORMAT_MINOR, 1, F.HEADER_SIZE,
                                         F.ALIGNMENT, F.HEADER_SIZE, len(secs), F.SECTION_ENTRY_SIZE,
                                         len(body), bytes(16))
    for i, s in enumerate(secs):
        F.SECTION_ENTRY.pack_into(body, F.HEADER_SIZE + i * F.SECTION_ENTRY_SIZE, s.name.encode(), s.kind,
                                  s.codec, 0, s.offset, len(s.stored), s.raw_len, s.sha, bytes(16))
    return rehash(bytes(body) + bytes(F.FOOTER_SIZE), sections=False)


def rehash(data: bytes, sections: bool = True) -> bytes:
    """Recompute section hashes (where an entry points inside the file) and the footer; unsigned."""
    buf = bytearray(data)
    body_len = len(buf) - F.FOOTER_SIZE
    if sections:
        count = F.HEADER.unpack_from(buf, 0)[7]
        for i in range(min(count, 64)):
            pos = F.HEADER_SIZE + i * F.SECTION_ENTRY_SIZE
            if pos + F.SECTION_ENTRY_SIZE > body_len:
                break
            e = list(F.SECTION_ENTRY.unpack_from(buf, pos))
            if e[4] + e[5] <= body_len:
                e[7] = hashlib.sha256(bytes(buf[e[4]:e[4] + e[5]])).digest()
                F.SECTION_ENTRY.pack_into(buf, pos, *e)
    digest = hashlib.sha256(bytes(buf[:body_len])).digest()
    F.FOOTER.pack_into(buf, body_len, F.FOOTER_MAGIC, F.FOOTER_SIZE, 0, body_len, digest, bytes(32),
                       bytes(64), bytes(8))
    return bytes(buf)


def manifest_of(data: bytes) -> dict:
    _, secs, _ = parse(data)
    s = next(s for s in secs if s.kind == F.SectionKind.MANIFEST)
    if s.codec == F.Codec.ZSTD:
        import zstandard
        return json.loads(zstandard.ZstdDecompressor().decompress(s.stored, max_output_size=s.raw_len))
    assert s.codec == F.Codec.NONE
    return json.loads(s.stored)


def with_manifest(data: bytes, manifest: dict | bytes) -> bytes:
    """Replace the (uncompressed) manifest and re-lay the file out with valid hashes."""
    _, secs, _ = parse(data)
    raw = manifest if isinstance(manifest, bytes) else json.dumps(manifest).encode()
    for s in secs:
        if s.kind == F.SectionKind.MANIFEST:
            s.codec, s.stored, s.raw_len = F.Codec.NONE, raw, len(raw)
    return assemble(secs)


def section_raw(data: bytes, name: str) -> bytes:
    """The raw (decompressed) bytes of the section called `name`."""
    _, secs, _ = parse(data)
    s = next(s for s in secs if s.name == name)
    if s.codec == F.Codec.ZSTD:
        import zstandard
        return zstandard.ZstdDecompressor().decompress(s.stored, max_output_size=s.raw_len)
    return s.stored


def with_section(data: bytes, name: str, raw: bytes) -> bytes:
    """Replace section `name` (stored uncompressed) and re-lay the file out with valid hashes."""
    _, secs, _ = parse(data)
    for s in secs:
        if s.name == name:
            s.codec, s.stored, s.raw_len = F.Codec.NONE, raw, len(raw)
    return assemble(secs)


def patch_entry(data: bytes, index: int, **fields) -> bytes:
    """Change fields of section-table entry `index` (name/kind/codec/flags/offset/stored/raw), then rehash."""
    keys = ["name", "kind", "codec", "flags", "offset", "stored", "raw", "sha", "reserved"]
    buf = bytearray(data)
    pos = F.HEADER_SIZE + index * F.SECTION_ENTRY_SIZE
    e = dict(zip(keys, F.SECTION_ENTRY.unpack_from(buf, pos)))
    e.update(fields)
    F.SECTION_ENTRY.pack_into(buf, pos, *[e[k] for k in keys])
    return rehash(bytes(buf))


def patch_header(data: bytes, **fields) -> bytes:
    keys = ["magic", "major", "minor", "flags", "hsize", "align", "table_off", "count", "esize",
            "body_len", "reserved"]
    buf = bytearray(data)
    h = dict(zip(keys, F.HEADER.unpack_from(buf, 0)))
    h.update(fields)
    F.HEADER.pack_into(buf, 0, *[h[k] for k in keys])
    return rehash(bytes(buf), sections=False)

"""`read_package(path, options) -> Package`: validate a model.pkg completely, then hand out views.

Order (docs/format.md §7): header and footer against the file size -> section table (bounds,
alignment, overlap, unique names) -> SHA-256 of the body and of every section -> signature ->
manifest JSON (size cap, depth cap, the type of every field used) -> tensor records against their
sections -> graph references -> decode packed tensors (which checks their codes).  Only then is a
Package returned.  Raw uncompressed tensors are read-only numpy views of a read-only mmap.

Every problem raises PackageError (SignatureError for signatures) naming the file.  No pickle, no
eval: the manifest is JSON and tensors are numpy dtypes from an allow-list.
"""
from __future__ import annotations

import hashlib
import json
import math
import mmap
import os
import struct
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

from edgert import format as F
from edgert.errors import PackageError, SignatureError
from edgert.ir import Graph, LayerInfo, Node, PackedTensor, Preprocess, ValueInfo, WeightEncoding
from edgert.package.bitpack import padding_is_zero
from edgert.package import weights as W


@dataclass
class ReadOptions:
    verify_hashes: bool = True
    require_signature: bool = False    # implies hash verification
    public_key: bytes | None = None    # raw 32-byte Ed25519 public key; None = the key embedded in the file
    max_decoded_bytes: int = F.DEFAULT_MAX_DECODED_BYTES   # decompressed sections + decoded tensors
    # False: dense asymmetric-coded tensors stay bit-packed (Graph.packed, zero-copy views of the file)
    # instead of being unpacked to one byte per code.  The LLM runtime hands such streams to its
    # kernels as they are (at 2/4/8 bits the stream is ORT MatMulNBits' layout).
    decode_packed: bool = True


@dataclass(frozen=True)
class SectionInfo:
    name: str
    kind: F.SectionKind
    codec: F.Codec
    offset: int
    stored_bytes: int
    raw_bytes: int
    sha256: str


@dataclass
class Package:
    path: str
    size_bytes: int
    manifest: dict[str, Any]
    sections: list[SectionInfo]
    file_sha256: str
    signed: bool
    graphs: dict[str, Graph]
    public_key: bytes | None = None          # embedded signer key when signed
    signature_verified: bool = False
    _data: dict[str, np.ndarray] = field(default_factory=dict, repr=False)   # section raw bytes
    _mm: mmap.mmap | None = field(default=None, repr=False)

    def graph(self, name: str | None = None) -> Graph:
        if name is None:
            return next(iter(self.graphs.values()))
        if name not in self.graphs:
            raise PackageError(f"{self.path}: no graph named {name!r} (have: {', '.join(self.graphs)})")
        return self.graphs[name]

    def extra_names(self) -> list[str]:
        return [s.name for s in self.sections if s.kind == F.SectionKind.EXTRA]

    def extra(self, name: str) -> memoryview:
        """The raw bytes of a named EXTRA section (read-only; zero-copy when stored uncompressed)."""
        info = next((s for s in self.sections if s.name == name and s.kind == F.SectionKind.EXTRA), None)
        if info is None:
            raise PackageError(f"{self.path}: no extra section {name!r} (have: {', '.join(self.extra_names())})")
        return memoryview(self._data[name])

    def close(self) -> None:
        """Drop this package's references to the mapping; it is unmapped once no view is alive."""
        self.graphs, self._data = {}, {}
        mm, self._mm = self._mm, None
        if mm is not None:
            try:
                mm.close()
            except BufferError:
                pass            # arrays handed out still view it; the mapping goes with the last one

    def __enter__(self) -> "Package":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_package(path: str | os.PathLike, options: ReadOptions = ReadOptions()) -> Package:
    path = os.fspath(path)
    r = _Reader(path, options)
    try:
        return r.read()
    except PackageError:
        r.abort()
        raise
    except (IndexError, KeyError, ValueError, TypeError, struct.error, OverflowError, MemoryError,
            RecursionError, UnicodeError, AttributeError) as e:
        # Safety net only: every check above is explicit.  The word "unexpected" lets tests spot
        # an input that slipped past them.
        r.abort()
        raise PackageError(f"{path}: malformed package (unexpected {type(e).__name__}: {e})") from e


# ---------------------------------------------------------------------------------------------
# JSON field helpers (raise PackageError with a path into the manifest)
# ---------------------------------------------------------------------------------------------
def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


class _Fields:
    """Typed access to one JSON object; `where` is its location for messages."""

    def __init__(self, obj: Any, where: str):
        if not isinstance(obj, dict):
            raise PackageError(f"{where} must be an object, got {type(obj).__name__}")
        self.obj, self.where = obj, where

    def get(self, key: str, kind: str, required: bool = True, default: Any = None) -> Any:
        if key not in self.obj:
            if required:
                raise PackageError(f"{self.where} lacks {key!r}")
            return default
        v = self.obj[key]
        ok = {"str": isinstance(v, str), "int": _is_int(v), "num": _is_num(v),
              "list": isinstance(v, list), "dict": isinstance(v, dict), "bool": isinstance(v, bool),
              "str?": v is None or isinstance(v, str), "int?": v is None or _is_int(v),
              "num?": v is None or _is_num(v), "dict?": v is None or isinstance(v, dict),
              "list?": v is None or isinstance(v, list), "any": True}[kind]
        if not ok:
            raise PackageError(f"{self.where}.{key} must be {kind}, got {type(v).__name__}")
        return v


def _str_list(v: Any, where: str) -> list[str]:
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise PackageError(f"{where} must be a list of strings")
    return v


def _json_depth(obj: Any) -> int:
    depth, stack = 0, [(obj, 1)]
    while stack:
        o, d = stack.pop()
        if isinstance(o, (list, dict)):
            depth = max(depth, d)
            if depth > F.MAX_JSON_DEPTH:
                return depth
            stack.extend((x, d + 1) for x in (o.values() if isinstance(o, dict) else o))
    return depth


def _no_dup_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    d = dict(pairs)
    if len(d) != len(pairs):
        raise PackageError("manifest JSON has a duplicate key")
    return d


def _reject_constant(name: str) -> Any:
    raise PackageError(f"manifest JSON uses the non-standard constant {name}")


def check_graph_refs(graph_name: str, inputs: Iterable[str], initializers: Iterable[str],
                     nodes: Iterable[tuple[str, list[str], list[str]]], outputs: Iterable[str]) -> None:
    """Every node input is an initializer, a graph input or an earlier node output; no value has two
    producers; every graph output exists.  Shared with the writer."""
    avail = set(inputs) | set(initializers)
    produced: set[str] = set()
    for name, ins, outs in nodes:
        for i in ins:
            if i and i not in avail:
                raise PackageError(f"graph {graph_name!r}: node {name!r} reads {i!r}, which is not an "
                                   "initializer, a graph input or an earlier node output")
        for o in outs:
            if o and (o in produced or o in avail):
                raise PackageError(f"graph {graph_name!r}: value {o!r} (node {name!r}) is defined twice")
            if o:
                produced.add(o)
                avail.add(o)
    for o in outputs:
        if o not in avail:
            raise PackageError(f"graph {graph_name!r}: output {o!r} is never produced")


# ---------------------------------------------------------------------------------------------
# The reader
# ---------------------------------------------------------------------------------------------
@dataclass
class _TensorPlan:
    name: str
    dtype: str
    shape: tuple[int, ...]
    section: str
    offset: int
    nbytes: int
    encoding: WeightEncoding | None
    nnz: int | None


class _Reader:
    def __init__(self, path: str, options: ReadOptions):
        self.path, self.opt = path, options
        self.mm: mmap.mmap | None = None
        self.data: dict[str, np.ndarray] = {}
        self.budget = options.max_decoded_bytes

    def fail(self, msg: str) -> PackageError:
        return PackageError(f"{self.path}: {msg}")

    def abort(self) -> None:
        self.data = {}
        if self.mm is not None:
            try:
                self.mm.close()
            except BufferError:
                pass

    def spend(self, nbytes: int, what: str) -> None:
        if nbytes > self.budget:
            raise self.fail(f"{what} needs {nbytes} decoded bytes, over the cap "
                            f"(ReadOptions.max_decoded_bytes={self.opt.max_decoded_bytes})")
        self.budget -= nbytes

    # -- top level ---------------------------------------------------------------------------
    def read(self) -> Package:
        try:
            with open(self.path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size < F.HEADER_SIZE + F.FOOTER_SIZE:
                    raise self.fail(f"truncated: {size} bytes, a package has at least "
                                    f"{F.HEADER_SIZE + F.FOOTER_SIZE}")
                self.mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except OSError as e:
            raise self.fail(f"cannot open: {e}") from e
        if len(self.mm) != size:
            raise self.fail("file changed size while opening")
        self.size = size
        table_off, count = self.parse_header()
        footer = self.parse_footer()
        sections = self.parse_table(table_off, count)
        verify = self.opt.verify_hashes or self.opt.require_signature
        digest = self.hash_body() if verify else footer["sha256"]
        if verify and digest != footer["sha256"]:
            raise self.fail("file SHA-256 does not match the footer (corrupted or tampered)")
        if verify:
            for s in sections:
                if self.hash_range(hashlib.sha256(), s.offset, s.stored_bytes).hexdigest() != s.sha256:
                    raise self.fail(f"section {s.name!r}: SHA-256 mismatch (corrupted or tampered)")
        verified = self.check_signature(footer, digest)
        for s in sections:
            self.data[s.name] = self.section_raw(s)
        manifest = self.parse_manifest(sections)
        graphs = self.build_graphs(manifest, {s.name: s for s in sections})
        return Package(path=self.path, size_bytes=size, manifest=manifest, sections=sections,
                       file_sha256=digest.hex(), signed=footer["signed"], graphs=graphs,
                       public_key=footer["public_key"], signature_verified=verified,
                       _data=self.data, _mm=self.mm)

    def view(self, offset: int, length: int) -> np.ndarray:
        """Read-only, zero-copy uint8 view of file bytes (bounds already checked)."""
        if length:
            return np.frombuffer(self.mm, dtype=np.uint8, count=length, offset=offset)
        out = np.zeros(0, dtype=np.uint8)
        out.flags.writeable = False
        return out

    # -- fixed records -----------------------------------------------------------------------
    def parse_header(self) -> tuple[int, int]:
        (magic, major, minor, flags, hsize, align, table_off, count, esize, body_len,
         reserved) = F.HEADER.unpack_from(self.mm, 0)
        if magic != F.MAGIC:
            raise self.fail(f"not an edgert package (magic {magic!r}, expected {F.MAGIC!r})")
        if major != F.FORMAT_MAJOR:
            raise self.fail(f"format version {major}.{minor} is not supported (this reader: "
                            f"{F.FORMAT_MAJOR}.x)")
        if not flags & F.HeaderFlag.LITTLE_ENDIAN:
            raise self.fail("header does not declare little-endian data")
        if flags & ~int(F.KNOWN_HEADER_FLAGS):
            raise self.fail(f"unknown header flags 0x{flags:08x}")
        if hsize != F.HEADER_SIZE or align != F.ALIGNMENT or esize != F.SECTION_ENTRY_SIZE:
            raise self.fail(f"header declares header_size={hsize} alignment={align} entry_size={esize}, "
                            f"expected {F.HEADER_SIZE}/{F.ALIGNMENT}/{F.SECTION_ENTRY_SIZE}")
        if any(reserved):
            raise self.fail("header reserved bytes are not zero")
        if body_len != self.size - F.FOOTER_SIZE:
            raise self.fail(f"header body length {body_len} does not match the file size {self.size} "
                            "(truncated or extended)")
        if not 1 <= count <= F.MAX_SECTIONS:
            raise self.fail(f"section count {count} not in 1..{F.MAX_SECTIONS}")
        if table_off < F.HEADER_SIZE or table_off % F.ALIGNMENT:
            raise self.fail(f"section table offset {table_off} is below the header or not aligned")
        if table_off + count * F.SECTION_ENTRY_SIZE > body_len:
            raise self.fail(f"section table ({count} entries at {table_off}) runs past the body ({body_len})")
        self.body_len = body_len
        return table_off, count

    def parse_footer(self) -> dict[str, Any]:
        (magic, fsize, flags, body_len, sha, pub, sig,
         reserved) = F.FOOTER.unpack_from(self.mm, self.size - F.FOOTER_SIZE)
        if magic != F.FOOTER_MAGIC:
            raise self.fail(f"bad footer magic {magic!r} (truncated or not a package)")
        if fsize != F.FOOTER_SIZE or body_len != self.body_len:
            raise self.fail(f"footer size {fsize} / body length {body_len} disagree with the header")
        if flags & ~int(F.KNOWN_FOOTER_FLAGS):
            raise self.fail(f"unknown footer flags 0x{flags:08x}")
        if any(reserved):
            raise self.fail("footer reserved bytes are not zero")
        signed = bool(flags & F.FooterFlag.SIGNED)
        if not signed and (any(pub) or any(sig)):
            raise self.fail("unsigned footer carries key or signature bytes")
        # An all-zero key is a small-order point that can "verify" an all-zero signature.
        if signed and (not any(pub) or not any(sig)):
            raise self.fail("signed footer has an empty public key or signature")
        return {"sha256": sha, "signed": signed, "public_key": pub if signed else None,
                "signature": sig if signed else None}

    def parse_table(self, table_off: int, count: int) -> list[SectionInfo]:
        out: list[SectionInfo] = []
        names: set[str] = set()
        data_start = F.align_up(table_off + count * F.SECTION_ENTRY_SIZE)
        for i in range(count):
            (raw_name, kind, codec, flags, off, stored, raw, sha,
             reserved) = F.SECTION_ENTRY.unpack_from(self.mm, table_off + i * F.SECTION_ENTRY_SIZE)
            name_b = raw_name.rstrip(b"\0")
            name = name_b.decode("ascii", "replace")
            where = f"section #{i} ({name!r})"
            if not name_b or b"\0" in name_b or not set(name) <= F.SECTION_NAME_CHARS:
                raise self.fail(f"section #{i} has an invalid name {raw_name!r}")
            if name in names:
                raise self.fail(f"duplicate section name {name!r}")
            names.add(name)
            if kind not in F.SectionKind._value2member_map_:
                raise self.fail(f"{where}: unknown kind {kind}")
            if codec not in F.Codec._value2member_map_:
                raise self.fail(f"{where}: unknown codec {codec}")
            if flags or any(reserved):
                raise self.fail(f"{where}: flags / reserved bytes are not zero")
            if off % F.ALIGNMENT or off < data_start or off + stored > self.body_len:
                raise self.fail(f"{where}: offset {off} + length {stored} is misaligned or outside "
                                f"the data area [{data_start}, {self.body_len})")
            if codec == F.Codec.NONE and raw != stored:
                raise self.fail(f"{where}: uncompressed but raw length {raw} != stored length {stored}")
            if codec == F.Codec.ZSTD and raw > self.opt.max_decoded_bytes:
                raise self.fail(f"{where}: raw length {raw} is over the decode cap "
                                f"{self.opt.max_decoded_bytes}")
            out.append(SectionInfo(name, F.SectionKind(kind), F.Codec(codec), off, stored, raw, sha.hex()))
        end = 0
        for s in sorted(out, key=lambda s: s.offset):
            if s.offset < end:
                raise self.fail(f"section {s.name!r} overlaps the previous section")
            end = s.offset + s.stored_bytes
        if sum(s.kind == F.SectionKind.MANIFEST for s in out) != 1:
            raise self.fail("a package has exactly one manifest section")
        return out

    def hash_body(self) -> bytes:
        return self.hash_range(hashlib.sha256(), 0, self.body_len).digest()

    def hash_range(self, h, offset: int, length: int):
        """Feed file bytes [offset, offset + length) to `h` in chunks, and let the kernel drop each
        chunk's pages afterwards: hashing a 100 MB package must not leave 100 MB resident on a Pi
        (pages used later fault back in from the page cache)."""
        step = F.HASH_CHUNK
        with memoryview(self.mm) as mv:
            for start in range(offset, offset + length, step):
                end = min(start + step, offset + length)
                h.update(mv[start:end])
                self.drop_pages(start, end)
        return h

    def drop_pages(self, start: int, end: int) -> None:
        if not hasattr(mmap, "MADV_DONTNEED"):
            return
        lo = start - start % mmap.PAGESIZE
        try:
            self.mm.madvise(mmap.MADV_DONTNEED, lo, end - lo)
        except (OSError, ValueError):
            pass             # advice only

    def check_signature(self, footer: dict[str, Any], digest: bytes) -> bool:
        if not footer["signed"]:
            if self.opt.require_signature:
                raise SignatureError(f"{self.path}: package is not signed (a signature is required)")
            return False
        if not (self.opt.verify_hashes or self.opt.require_signature):
            return False
        from edgert.package import signing
        try:
            signing.crypto()
        except PackageError:
            if self.opt.require_signature:
                raise
            return False            # signed, but nothing here can check it; hashes still hold
        key = footer["public_key"]
        if self.opt.public_key is not None:
            if self.opt.public_key != key:
                raise SignatureError(f"{self.path}: signed by a different key than the one required")
        signing.verify_signature(key, footer["signature"], self.body_len, digest, self.path)
        return True

    # -- section payloads --------------------------------------------------------------------
    def section_raw(self, s: SectionInfo) -> np.ndarray:
        if s.codec == F.Codec.NONE:
            return self.view(s.offset, s.stored_bytes)
        self.spend(s.raw_bytes, f"section {s.name!r}")
        try:
            import zstandard
        except ImportError as e:
            raise self.fail(f"section {s.name!r} is zstd-compressed and the zstandard package is "
                            "missing: pip install zstandard") from e
        base = np.empty(s.raw_bytes + F.ALIGNMENT, dtype=np.uint8)
        start = -base.ctypes.data % F.ALIGNMENT
        out = base[start:start + s.raw_bytes]
        pos = 0
        try:
            src = self.view(s.offset, s.stored_bytes)
            with zstandard.ZstdDecompressor().stream_reader(src, read_across_frames=True) as rd:
                with memoryview(out) as mv:
                    while pos < s.raw_bytes:
                        n = rd.readinto(mv[pos:pos + F.ZSTD_READ_CHUNK])
                        if not n:
                            break
                        pos += n
                tail = rd.read(1)
        except zstandard.ZstdError as e:
            raise self.fail(f"section {s.name!r}: zstd data is corrupt ({e})") from e
        if pos != s.raw_bytes or tail:
            raise self.fail(f"section {s.name!r}: decompresses to {'more than ' if tail else ''}"
                            f"{pos} bytes, the table says {s.raw_bytes}")
        out.flags.writeable = False
        return out

    # -- manifest ----------------------------------------------------------------------------
    def parse_manifest(self, sections: list[SectionInfo]) -> dict[str, Any]:
        s = next(s for s in sections if s.kind == F.SectionKind.MANIFEST)
        if s.raw_bytes > F.MAX_MANIFEST_BYTES:
            raise self.fail(f"manifest is {s.raw_bytes} bytes, over the cap {F.MAX_MANIFEST_BYTES}")
        try:
            text = self.data[s.name].tobytes().decode("utf-8")
            m = json.loads(text, object_pairs_hook=_no_dup_keys, parse_constant=_reject_constant)
        except PackageError as e:
            raise self.fail(str(e)) from e
        except (UnicodeDecodeError, ValueError, RecursionError) as e:
            raise self.fail(f"manifest is not valid UTF-8 JSON ({type(e).__name__}: {e})") from e
        if _json_depth(m) > F.MAX_JSON_DEPTH:
            raise self.fail(f"manifest JSON nests deeper than {F.MAX_JSON_DEPTH}")
        top = self.fields(m, "manifest")
        version = self.call(top.get, "format_version", "list")
        if len(version) != 2 or not all(_is_int(v) for v in version) or version[0] != F.FORMAT_MAJOR:
            raise self.fail(f"manifest format_version {version!r} is not {F.FORMAT_MAJOR}.x")
        self.call(top.get, "producer", "dict")
        graphs = self.call(top.get, "graphs", "list")
        if not 1 <= len(graphs) <= F.MAX_GRAPHS:
            raise self.fail(f"manifest has {len(graphs)} graphs, expected 1..{F.MAX_GRAPHS}")
        return m

    def fields(self, obj: Any, where: str) -> _Fields:
        try:
            return _Fields(obj, where)
        except PackageError as e:
            raise self.fail(str(e)) from e

    def call(self, fn, *args: Any) -> Any:
        try:
            return fn(*args)
        except PackageError as e:
            raise self.fail(str(e)) from e

    # -- graphs ------------------------------------------------------------------------------
    def build_graphs(self, manifest: dict[str, Any], sections: dict[str, SectionInfo]) -> dict[str, Graph]:
        try:
            plans = [self.plan_graph(g, i, sections) for i, g in enumerate(manifest["graphs"])]
        except PackageError as e:
            raise e if str(e).startswith(self.path) else self.fail(str(e))
        names = [p[0]["name"] for p in plans]
        if len(set(names)) != len(names):
            raise self.fail("duplicate graph names")
        return {p[0]["name"]: self.decode_graph(*p) for p in plans}

    def plan_graph(self, g: Any, gi: int, sections: dict[str, SectionInfo]):
        where = f"graphs[{gi}]"
        f = _Fields(g, where)
        name = f.get("name", "str")
        if not name:
            raise PackageError(f"{where}.name is empty")
        where = f"graph {name!r}"
        inputs = [self.value_info(v, f"{where}.inputs[{i}]") for i, v in enumerate(f.get("inputs", "list"))]
        outputs = [self.value_info(v, f"{where}.outputs[{i}]") for i, v in enumerate(f.get("outputs", "list"))]
        nodes = [self.node(n, f"{where}.nodes[{i}]") for i, n in enumerate(f.get("nodes", "list"))]
        tensors = [self.tensor(t, f"{where}.tensors[{i}]", sections)
                   for i, t in enumerate(f.get("tensors", "list"))]
        tnames = [t.name for t in tensors]
        if len(set(tnames)) != len(tnames):
            raise PackageError(f"{where}: duplicate tensor names")
        check_graph_refs(name, [v.name for v in inputs], tnames,
                         [(n.name, n.inputs, n.outputs) for n in nodes], [v.name for v in outputs])
        pp = f.get("preprocess", "dict?", required=False)
        preprocess = self.preprocess(pp, f"{where}.preprocess") if pp is not None else None
        metadata = f.get("metadata", "dict", required=False, default={})
        layers = [self.layer(x, f"{where}.layers[{i}]") for i, x in enumerate(f.get("layers", "list", False, []))]
        info = {"name": name, "inputs": inputs, "outputs": outputs, "nodes": nodes,
                "preprocess": preprocess, "metadata": metadata, "layers": layers}
        return info, tensors

    def value_info(self, v: Any, where: str) -> ValueInfo:
        f = _Fields(v, where)
        dtype = f.get("dtype", "str")
        if dtype not in F.DTYPES:
            raise PackageError(f"{where}.dtype {dtype!r} is not one of {', '.join(F.DTYPES)}")
        shape = f.get("shape", "list")
        if len(shape) > F.MAX_TENSOR_RANK or not all(
                d is None or isinstance(d, str) or (_is_int(d) and d >= 0) for d in shape):
            raise PackageError(f"{where}.shape must be a list of non-negative ints, names or null")
        span = 1
        for d in shape:
            span *= max(d, 1) if _is_int(d) else 1
        if span > F.MAX_TENSOR_ELEMENTS:
            raise PackageError(f"{where}.shape {shape} is over the element cap {F.MAX_TENSOR_ELEMENTS}")
        return ValueInfo(f.get("name", "str"), dtype, list(shape))

    def node(self, n: Any, where: str) -> Node:
        f = _Fields(n, where)
        op = f.get("op", "str")
        if not op:
            raise PackageError(f"{where}.op is empty")
        return Node(op=op, name=f.get("name", "str"), inputs=_str_list(f.get("inputs", "list"), f"{where}.inputs"),
                    outputs=_str_list(f.get("outputs", "list"), f"{where}.outputs"),
                    attrs=f.get("attrs", "dict", required=False, default={}))

    def tensor(self, t: Any, where: str, sections: dict[str, SectionInfo]) -> _TensorPlan:
        f = _Fields(t, where)
        name = f.get("name", "str")
        if not name:
            raise PackageError(f"{where}.name is empty")
        where = f"{where} ({name!r})"
        dtype = f.get("dtype", "str")
        if dtype not in F.DTYPES:
            raise PackageError(f"{where}: dtype {dtype!r} is not one of {', '.join(F.DTYPES)}")
        shape = f.get("shape", "list")
        if len(shape) > F.MAX_TENSOR_RANK or not all(_is_int(d) and d >= 0 for d in shape):
            raise PackageError(f"{where}: shape {shape!r} must be at most {F.MAX_TENSOR_RANK} "
                               "non-negative ints")
        span = 1
        for d in shape:
            span *= max(d, 1)
        if span > F.MAX_TENSOR_ELEMENTS:
            raise PackageError(f"{where}: shape {shape} is over the element cap {F.MAX_TENSOR_ELEMENTS}")
        count = 1
        for d in shape:
            count *= d
        sec_name = f.get("section", "str")
        sec = sections.get(sec_name)
        if sec is None or sec.kind != F.SectionKind.WEIGHTS:
            raise PackageError(f"{where}: section {sec_name!r} is not a weights section of this file")
        offset, nbytes = f.get("offset", "int"), f.get("nbytes", "int")
        if offset < 0 or nbytes < 0 or offset % F.ALIGNMENT or offset + nbytes > sec.raw_bytes:
            raise PackageError(f"{where}: offset {offset} + nbytes {nbytes} is misaligned or outside "
                               f"section {sec_name!r} ({sec.raw_bytes} bytes)")
        enc_rec = f.get("encoding", "dict?", required=False)
        enc, nnz = None, None
        itemsize = np.dtype(F.DTYPES[dtype]).itemsize
        if enc_rec is None:
            if nbytes != count * itemsize:
                raise PackageError(f"{where}: nbytes {nbytes} != {count} elements x {itemsize} bytes")
        else:
            try:
                enc, nnz = W.encoding_from_json(enc_rec)
                if dtype != W.decoded_dtype(enc):
                    raise PackageError(f"{enc.scheme} decodes to {W.decoded_dtype(enc)}, not {dtype}")
                need = W.stored_nbytes(enc, tuple(shape), nnz)
            except PackageError as e:
                raise PackageError(f"{where}: {e}") from e
            if nbytes != need:
                raise PackageError(f"{where}: nbytes {nbytes} != {need} for its encoding and shape")
            self.spend(count * itemsize, where)
        return _TensorPlan(name, dtype, tuple(shape), sec_name, offset, nbytes, enc, nnz)

    def preprocess(self, d: dict[str, Any], where: str) -> Preprocess:
        f = _Fields(d, where)
        size = f.get("size", "list?", required=False)
        if size is not None and (len(size) != 2 or not all(
                _is_int(x) and 0 < x <= F.MAX_PREPROCESS_SIDE for x in size)):
            raise PackageError(f"{where}.size must be null or [height, width] of ints in "
                               f"1..{F.MAX_PREPROCESS_SIDE}")
        for key in ("mean", "std"):
            v = f.get(key, "list", required=False, default=[1.0])
            if len(v) not in (1, 3) or not all(_is_num(x) and math.isfinite(x) and abs(x) <= 1e6
                                               for x in v):
                raise PackageError(f"{where}.{key} must be a list of 1 or 3 finite numbers")
            if key == "std" and not all(abs(x) >= 1e-6 for x in v):
                raise PackageError(f"{where}.std {v} has a (near) zero entry")
        if f.get("channels", "str", required=False, default="rgb") not in ("rgb", "bgr", "gray"):
            raise PackageError(f"{where}.channels must be rgb, bgr or gray")
        if f.get("layout", "str", required=False, default="nchw") not in ("nchw", "nhwc"):
            raise PackageError(f"{where}.layout must be nchw or nhwc")
        if not 1 <= f.get("pad_multiple", "int", required=False, default=1) <= F.MAX_PREPROCESS_SIDE:
            raise PackageError(f"{where}.pad_multiple must be in 1..{F.MAX_PREPROCESS_SIDE}")
        return Preprocess.from_json(d)

    _LAYER_FIELDS = {"name": "str", "op": "str", "weight": "str?", "wbits": "int?", "abits": "int?",
                     "granularity": "str?", "group_size": "int?", "sparsity": "num", "sqnr_db": "num?",
                     "params": "int", "extra": "dict"}

    def layer(self, d: Any, where: str) -> LayerInfo:
        f = _Fields(d, where)
        kw = {k: f.get(k, kind, required=k in ("name", "op")) for k, kind in self._LAYER_FIELDS.items()
              if k in d or k in ("name", "op")}
        return LayerInfo(**kw)

    def decode_graph(self, info: dict[str, Any], tensors: list[_TensorPlan]) -> Graph:
        inits: dict[str, np.ndarray] = {}
        encs: dict[str, WeightEncoding] = {}
        packed: dict[str, PackedTensor] = {}
        for t in tensors:
            buf = self.data[t.section][t.offset:t.offset + t.nbytes]
            if t.encoding is None:
                arr = buf.view(F.DTYPES[t.dtype]).reshape(t.shape) if t.nbytes else \
                    np.zeros(t.shape, dtype=F.DTYPES[t.dtype])
                if t.dtype == "bool" and arr.size and int(buf.max()) > 1:
                    raise self.fail(f"graph {info['name']!r}: bool tensor {t.name!r} has bytes other than 0/1")
                arr.flags.writeable = False
            elif not self.opt.decode_packed and t.encoding.sparsity is None and \
                    t.encoding.scheme == F.Scheme.ASYMMETRIC:
                count = int(np.prod(t.shape, dtype=object))
                if not padding_is_zero(buf, t.encoding.bits, count):
                    raise self.fail(f"graph {info['name']!r}: tensor {t.name!r}: nonzero padding bits "
                                    "after the last code")
                buf.flags.writeable = False
                packed[t.name] = PackedTensor(buf, t.encoding, t.shape)
                encs[t.name] = t.encoding
                continue
            else:
                try:
                    arr = W.decode(buf, t.encoding, t.shape, t.nnz)
                except PackageError as e:
                    raise self.fail(f"graph {info['name']!r}: tensor {t.name!r}: {e}") from e
                encs[t.name] = t.encoding
            inits[t.name] = arr
        return Graph(name=info["name"], inputs=info["inputs"], outputs=info["outputs"], nodes=info["nodes"],
                     initializers=inits, encodings=encs, preprocess=info["preprocess"],
                     metadata=info["metadata"], layers=info["layers"], packed=packed)

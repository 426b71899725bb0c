"""`write_package(path, graphs, options, producer, extras) -> WriteReport`: the model.pkg writer.

One pass, in a fixed order (docs/format.md):
  1. check the input (graph names, references, dtypes, every encoding against its tensor) and encode
     every tensor, laying it out at a 64-byte aligned offset of its graph's weights section;
  2. build the manifest; 3. write header + table placeholders, then each section (64-byte aligned,
     hashed while written, zstd-streamed when compressed); 4. fill in header and table; 5. hash the
     body and append the footer (signed when a key is given); 6. fsync and rename over `path`.
The output goes to a temp file in the destination directory, so `path` is either the old file or
the complete new one.  Any inconsistent input raises PackageError before anything is renamed.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

import edgert
from edgert import format as F
from edgert.errors import PackageError
from edgert.ir import Graph, WeightEncoding
from edgert.package import weights as W
from edgert.package.reader import check_graph_refs


@dataclass
class WriteOptions:
    compress: str = "zstd"        # "none" | "zstd": codec for manifest, weight and extra sections
    zstd_level: int = 19
    signing_key: bytes | None = None   # raw 32-byte Ed25519 private key: sign while writing


@dataclass
class SectionReport:
    name: str
    kind: str
    codec: str
    stored_bytes: int
    raw_bytes: int


@dataclass
class WriteReport:
    path: str
    size_bytes: int
    file_sha256: str
    sections: list[SectionReport] = field(default_factory=list)
    signed: bool = False


_CODECS = {"none": F.Codec.NONE, "zstd": F.Codec.ZSTD}


@dataclass
class _Section:
    name: str
    kind: F.SectionKind
    codec: F.Codec
    chunks: list[Any]            # bytes-likes; zero padding is included
    raw_bytes: int
    # filled while writing
    offset: int = 0
    stored_bytes: int = 0
    sha256: bytes = b""


class _HashingWriter:
    """File-like sink that counts and hashes what goes through it (the zstd writer's destination)."""

    def __init__(self, f):
        self.f, self.h, self.n = f, hashlib.sha256(), 0

    def write(self, data) -> int:
        mv = memoryview(data).cast("B")
        self.f.write(mv)
        self.h.update(mv)
        self.n += len(mv)
        return len(mv)

    def flush(self) -> None:
        pass


def _json_default(o: Any) -> Any:
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, tuple):
        return list(o)
    raise TypeError(f"{type(o).__name__} is not JSON-serialisable")


def _dtype_name(arr: np.ndarray) -> str | None:
    name = arr.dtype.name
    return name if name in F.DTYPES and np.dtype(F.DTYPES[name]) == arr.dtype.newbyteorder("<") else None


def _check_section_name(name: Any, what: str) -> None:
    if (not isinstance(name, str) or not name or len(name.encode("ascii", "replace")) > F.SECTION_NAME_BYTES
            or not set(name) <= F.SECTION_NAME_CHARS):
        raise PackageError(f"{what} {name!r}: names are 1..{F.SECTION_NAME_BYTES} characters of "
                           f"[A-Za-z0-9._-/:+]")


def _layout_graph(g: Graph, gi: int, codec: F.Codec) -> tuple[dict[str, Any], _Section]:
    """Check one graph, encode its tensors; returns (manifest record, weights section)."""
    where = f"graph {g.name!r}"
    if not isinstance(g, Graph):
        raise PackageError(f"graphs[{gi}] is a {type(g).__name__}, not an edgert.ir.Graph")
    for enc_name in g.encodings:
        if enc_name not in g.initializers:
            raise PackageError(f"{where}: encoding given for {enc_name!r}, which is not an initializer")
    for vi in list(g.inputs) + list(g.outputs):
        if vi.dtype not in F.DTYPES:
            raise PackageError(f"{where}: value {vi.name!r} has dtype {vi.dtype!r}, not one of "
                               f"{', '.join(F.DTYPES)}")
    for n in g.nodes:
        if not isinstance(n.op, str) or not n.op or not isinstance(n.name, str):
            raise PackageError(f"{where}: node {n.name!r} needs a non-empty op name")
    check_graph_refs(g.name, [v.name for v in g.inputs], g.initializers,
                     [(n.name, list(n.inputs), list(n.outputs)) for n in g.nodes], [v.name for v in g.outputs])

    sec_name = f"{F.WEIGHTS_SECTION_PREFIX}{gi}"
    chunks: list[Any] = []
    pos = 0
    tensors = []
    for name, arr in g.initializers.items():
        if not isinstance(name, str) or not name:
            raise PackageError(f"{where}: initializer names must be non-empty strings, got {name!r}")
        if not isinstance(arr, np.ndarray):
            raise PackageError(f"{where}: initializer {name!r} is a {type(arr).__name__}, not a numpy array")
        if arr.ndim > F.MAX_TENSOR_RANK:
            raise PackageError(f"{where}: initializer {name!r} has rank {arr.ndim} > {F.MAX_TENSOR_RANK}")
        enc: WeightEncoding | None = g.encodings.get(name)
        try:
            if enc is None:
                dtype = _dtype_name(arr)
                if dtype is None:
                    raise PackageError(f"dtype {arr.dtype} is not storable (allowed: {', '.join(F.DTYPES)})")
                payload: Any = np.ascontiguousarray(arr, dtype=F.DTYPES[dtype]).reshape(-1).view(np.uint8)
                nnz = None
            else:
                payload, nnz = W.encode(arr, enc)
                dtype = W.decoded_dtype(enc)
        except PackageError as e:
            raise PackageError(f"{where}: initializer {name!r}: {e}") from e
        off = F.align_up(pos)
        if off > pos:
            chunks.append(bytes(off - pos))
        chunks.append(payload)
        pos = off + len(payload)
        rec = {"name": name, "dtype": dtype, "shape": [int(d) for d in arr.shape], "section": sec_name,
               "offset": off, "nbytes": len(payload),
               "encoding": None if enc is None else W.encoding_to_json(enc, nnz)}
        tensors.append(rec)
    record = {
        "name": g.name,
        "inputs": [{"name": v.name, "dtype": v.dtype, "shape": list(v.shape)} for v in g.inputs],
        "outputs": [{"name": v.name, "dtype": v.dtype, "shape": list(v.shape)} for v in g.outputs],
        "nodes": [{"op": n.op, "name": n.name, "inputs": list(n.inputs), "outputs": list(n.outputs),
                   "attrs": dict(n.attrs)} for n in g.nodes],
        "tensors": tensors,
        "preprocess": g.preprocess.to_json() if g.preprocess is not None else None,
        "metadata": dict(g.metadata),
        "layers": [{k: v for k, v in vars(layer).items()} for layer in g.layers],
    }
    return record, _Section(sec_name, F.SectionKind.WEIGHTS, codec, chunks, pos)


def _write_section(f, s: _Section, level: int) -> None:
    hw = _HashingWriter(f)
    if s.codec == F.Codec.NONE:
        for c in s.chunks:
            hw.write(c)
    else:
        import zstandard
        cctx = zstandard.ZstdCompressor(level=level)
        with cctx.stream_writer(hw, size=s.raw_bytes, closefd=False) as zw:
            for c in s.chunks:
                zw.write(memoryview(c).cast("B"))
    s.stored_bytes, s.sha256 = hw.n, hw.h.digest()


def write_package(path: str | os.PathLike, graphs: list[Graph], options: WriteOptions = WriteOptions(),
                  producer: dict[str, Any] | None = None,
                  extras: Mapping[str, bytes] | None = None) -> WriteReport:
    """Write `graphs` (and named extra sections) to `path` atomically; see docs/format.md."""
    path = os.fspath(path)
    # -- options and input -------------------------------------------------------------------
    if options.compress not in _CODECS:
        raise PackageError(f"WriteOptions.compress must be one of {', '.join(_CODECS)}, got {options.compress!r}")
    codec = _CODECS[options.compress]
    if not isinstance(options.zstd_level, int) or not 1 <= options.zstd_level <= 22:
        raise PackageError(f"WriteOptions.zstd_level must be 1..22, got {options.zstd_level!r}")
    if options.signing_key is not None:
        from edgert.package import signing
        signing.public_key_of(options.signing_key)          # checks the key (and the dependency) early
    if codec == F.Codec.ZSTD:
        try:
            import zstandard  # noqa: F401
        except ImportError as e:
            raise PackageError("compress='zstd' needs the zstandard package: pip install zstandard") from e
    graphs = list(graphs)
    if not 1 <= len(graphs) <= F.MAX_GRAPHS:
        raise PackageError(f"a package holds 1..{F.MAX_GRAPHS} graphs, got {len(graphs)}")
    names = [getattr(g, "name", None) for g in graphs]
    if not all(isinstance(n, str) and n for n in names) or len(set(names)) != len(names):
        raise PackageError(f"graph names must be unique non-empty strings, got {names!r}")

    records, sections = [], []
    for gi, g in enumerate(graphs):
        rec, sec = _layout_graph(g, gi, codec)
        records.append(rec)
        sections.append(sec)
    for name, blob in (extras or {}).items():
        _check_section_name(name, "extra section")
        if name == F.MANIFEST_SECTION or name.startswith(F.WEIGHTS_SECTION_PREFIX):
            raise PackageError(f"extra section name {name!r} is reserved")
        try:
            mv = memoryview(blob).cast("B")
        except TypeError as e:
            raise PackageError(f"extra section {name!r} must be bytes-like, got {type(blob).__name__}") from e
        sections.append(_Section(name, F.SectionKind.EXTRA, codec, [mv], len(mv)))

    manifest = {"format_version": [F.FORMAT_MAJOR, F.FORMAT_MINOR],
                "producer": {"name": "edgert", "version": edgert.__version__, **(producer or {})},
                "graphs": records}
    try:
        text = json.dumps(manifest, allow_nan=False, ensure_ascii=False, separators=(",", ":"),
                          default=_json_default).encode("utf-8")
    except (TypeError, ValueError) as e:
        raise PackageError(f"{path}: manifest is not JSON-serialisable ({e}); attributes, metadata and "
                           "producer must be plain JSON values (no NaN/inf)") from e
    if len(text) > F.MAX_MANIFEST_BYTES:
        raise PackageError(f"{path}: manifest is {len(text)} bytes, over the cap {F.MAX_MANIFEST_BYTES}")
    sections.insert(0, _Section(F.MANIFEST_SECTION, F.SectionKind.MANIFEST, codec, [text], len(text)))
    if len(sections) > F.MAX_SECTIONS:
        raise PackageError(f"{path}: {len(sections)} sections, over the cap {F.MAX_SECTIONS}")

    # -- bytes ---------------------------------------------------------------------------------
    directory = os.path.dirname(os.path.abspath(path))
    table_off = F.HEADER_SIZE
    data_start = F.align_up(table_off + len(sections) * F.SECTION_ENTRY_SIZE)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w+b") as f:
            f.write(bytes(data_start))
            pos = data_start
            for s in sections:
                aligned = F.align_up(pos)
                f.write(bytes(aligned - pos))
                s.offset = aligned
                _write_section(f, s, options.zstd_level)
                pos = aligned + s.stored_bytes
            body_len = pos
            f.seek(0)
            f.write(F.HEADER.pack(F.MAGIC, F.FORMAT_MAJOR, F.FORMAT_MINOR, int(F.HeaderFlag.LITTLE_ENDIAN),
                                  F.HEADER_SIZE, F.ALIGNMENT, table_off, len(sections), F.SECTION_ENTRY_SIZE,
                                  body_len, bytes(16)))
            for s in sections:
                f.write(F.SECTION_ENTRY.pack(s.name.encode("ascii"), int(s.kind), int(s.codec), 0, s.offset,
                                             s.stored_bytes, s.raw_bytes, s.sha256, bytes(16)))
            f.flush()
            from edgert.package import signing
            digest = signing.sha256_of_prefix(f, body_len)
            if digest is None:
                raise PackageError(f"{path}: short read while hashing the temp file")
            pub = sig = None
            if options.signing_key is not None:
                pub, sig = signing.sign_digest(options.signing_key, body_len, digest)
            f.seek(body_len)
            f.write(signing.pack_footer(body_len, digest, pub, sig))
            f.flush()
            os.fsync(f.fileno())
        # mkstemp makes 0600; keep the mode of the file being replaced, else the usual 0644
        os.chmod(tmp, os.stat(path).st_mode & 0o777 if os.path.exists(path) else 0o644)
        os.replace(tmp, path)
    except OSError as e:
        _unlink(tmp)
        raise PackageError(f"cannot write {path}: {e}") from e
    except BaseException:
        _unlink(tmp)
        raise
    return WriteReport(path=path, size_bytes=body_len + F.FOOTER_SIZE, file_sha256=digest.hex(),
                       sections=[SectionReport(s.name, s.kind.name.lower(), s.codec.name.lower(),
                                               s.stored_bytes, s.raw_bytes) for s in sections],
                       signed=pub is not None)


def _unlink(p: str) -> None:
    try:
        os.unlink(p)
    except FileNotFoundError:
        pass


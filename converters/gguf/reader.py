"""A validating GGUF reader: `read_gguf(path) -> GgufFile` (metadata + zero-copy tensor views).

Everything about the file is checked against its size before anything else is allocated or
handed out (STYLE.md rule 3): magic, version (2 or 3, little-endian), the tensor and key counts
(each entry needs a minimum number of bytes, so a count the file cannot hold is rejected at
once), every string / array length, duplicate keys and tensor names, `general.alignment`, every
tensor's dims (1..4, positive, row length a multiple of its type's block), type (known to
gguf.constants), offset (aligned) and byte range (inside the file, no overlaps).  Any problem is
one `ConversionError` line that names the file and the bad value.

The layout is ggml/docs/gguf.md ("File Structure"); the type ids and block sizes come from the
`gguf` package (gguf.constants, the Python side of llama.cpp).  We parse the header ourselves,
with struct on a read-only mmap, rather than through gguf.GGUFReader: validation has to walk
every field anyway, and GGUFReader builds a numpy view per array element (3.9 s for the 49k-token
vocabulary of SmolLM2-135M; this walk takes ~0.1 s).  tests/converters/gguf checks that both
readers agree on real and synthetic files.
"""
from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from gguf.constants import GGML_QUANT_SIZES, GGUF_DEFAULT_ALIGNMENT, GGUF_MAGIC, GGMLQuantizationType, \
    GGUFValueType

from edgert.errors import ConversionError

SUPPORTED_VERSIONS = (2, 3)
HEADER = struct.Struct("<IIQQ")            # magic, version, tensor_count, metadata_kv_count
MAX_DIMS = 4                               # GGML_MAX_DIMS (ggml/include/ggml.h)
MAX_TENSOR_NAME = 63                       # GGML_MAX_NAME = 64 bytes with the terminating NUL
MAX_KEY_BYTES = 1 << 10                    # real keys are < 100 bytes (gguf.md: at most 65535)
MAX_TENSORS = 1 << 20
MAX_KV = 1 << 20
MAX_ARRAY_DEPTH = 2                        # arrays of arrays are legal; deeper nesting is not used
MAX_ARRAY_OBJECTS = 1 << 22                # strings / sub-arrays in one array (vocabularies are < 1M)
MAX_ALIGNMENT = 1 << 20
# Smallest possible encodings, to bound the counts by the file size before reading them:
# a key/value is a key length (u64), a value type (u32) and at least one value byte; a tensor info
# is a name length (u64), n_dims (u32), one dim (u64), a type (u32) and an offset (u64).
MIN_KV_BYTES = 8 + 4 + 1
MIN_TENSOR_INFO_BYTES = 8 + 4 + 8 + 4 + 8

# GGUF metadata value type -> struct format of one scalar (gguf.md, "gguf_metadata_value_type").
_SCALAR_FMT = {GGUFValueType.UINT8: "<B", GGUFValueType.INT8: "<b", GGUFValueType.UINT16: "<H",
               GGUFValueType.INT16: "<h", GGUFValueType.UINT32: "<I", GGUFValueType.INT32: "<i",
               GGUFValueType.FLOAT32: "<f", GGUFValueType.BOOL: "<B", GGUFValueType.UINT64: "<Q",
               GGUFValueType.INT64: "<q", GGUFValueType.FLOAT64: "<d"}


@dataclass(frozen=True)
class GgufTensor:
    name: str
    type_name: str                 # ggml type, e.g. "Q4_1", "F32", "Q6_K"
    shape: tuple[int, ...]         # numpy order (GGUF dims reversed): a matrix is (rows, cols) = (out, in)
    offset: int                    # absolute file offset of the data
    data: np.ndarray = field(repr=False)   # read-only uint8 view of the n_bytes raw bytes (zero-copy)

    @property
    def n_elements(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def n_bytes(self) -> int:
        return int(self.data.size)


@dataclass
class GgufFile:
    path: str
    version: int
    alignment: int
    size_bytes: int
    metadata: dict[str, Any]       # key -> str | int | float | bool | ndarray (numeric arrays) | list
    tensors: dict[str, GgufTensor]  # in file order

    @property
    def architecture(self) -> str:
        return self.get_str("general.architecture")

    # -- typed metadata access: a missing or mistyped key is one ConversionError naming it ---------
    def _get(self, key: str, required: bool) -> Any:
        if key not in self.metadata and required:
            raise ConversionError(f"{self.path}: GGUF metadata key {key!r} is missing")
        return self.metadata.get(key)

    def get_int(self, key: str, default: int | None = None) -> int:
        v = self._get(key, default is None)
        if v is None:
            return default
        if not isinstance(v, int) or isinstance(v, bool):
            raise ConversionError(f"{self.path}: GGUF metadata {key} = {_short(v)} is not an integer")
        return v

    def get_float(self, key: str, default: float | None = None) -> float:
        v = self._get(key, default is None)
        if v is None:
            return default
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not np.isfinite(v):
            raise ConversionError(f"{self.path}: GGUF metadata {key} = {_short(v)} is not a finite number")
        return float(v)

    def get_str(self, key: str, default: str | None = None) -> str:
        v = self._get(key, default is None)
        if v is None:
            return default
        if not isinstance(v, str):
            raise ConversionError(f"{self.path}: GGUF metadata {key} = {_short(v)} is not a string")
        return v

    def get_bool(self, key: str, default: bool | None = None) -> bool:
        v = self._get(key, default is None)
        if v is None:
            return default
        if not isinstance(v, bool):
            raise ConversionError(f"{self.path}: GGUF metadata {key} = {_short(v)} is not a boolean")
        return v

    def get_str_list(self, key: str) -> list[str]:
        v = self._get(key, True)
        if not isinstance(v, list) or not all(isinstance(s, str) for s in v):
            raise ConversionError(f"{self.path}: GGUF metadata {key} is not an array of strings")
        return v

    def get_int_array(self, key: str) -> np.ndarray | None:
        v = self._get(key, False)
        if v is None:
            return None
        if not isinstance(v, np.ndarray) or v.dtype.kind not in "iu":
            raise ConversionError(f"{self.path}: GGUF metadata {key} is not an array of integers")
        return v


def _short(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


class _Walker:
    """Reads the GGUF header fields in order; every read is bounds-checked against the file."""

    def __init__(self, buf, size: int, path: str):
        self.buf, self.size, self.path, self.pos = buf, size, path, 0

    def fail(self, msg: str) -> ConversionError:
        return ConversionError(f"{self.path}: not a valid GGUF file: {msg}")

    def need(self, n: int, what: str) -> int:
        if n < 0 or self.pos + n > self.size:
            raise self.fail(f"truncated: {what} at byte {self.pos} needs {n} bytes, the file has "
                            f"{self.size}")
        start = self.pos
        self.pos += n
        return start

    def scalar(self, fmt: str, what: str):
        start = self.need(struct.calcsize(fmt), what)
        return struct.unpack_from(fmt, self.buf, start)[0]

    def string(self, what: str, cap: int | None = None) -> str:
        n = self.scalar("<Q", f"{what} length")
        if cap is not None and n > cap:
            raise self.fail(f"{what} is {n} bytes long (at most {cap})")
        start = self.need(n, what)
        try:
            return bytes(self.buf[start:start + n]).decode("utf-8")
        except UnicodeDecodeError as e:
            raise self.fail(f"{what} is not UTF-8 ({e.reason} at byte {e.start})") from None

    def value_type(self, what: str) -> GGUFValueType:
        raw = self.scalar("<I", f"{what} type")
        try:
            return GGUFValueType(raw)
        except ValueError:
            raise self.fail(f"{what} has unknown value type {raw}") from None

    def value(self, vtype: GGUFValueType, what: str, depth: int = 0) -> Any:
        if vtype == GGUFValueType.STRING:
            return self.string(what)
        if vtype in _SCALAR_FMT:
            v = self.scalar(_SCALAR_FMT[vtype], what)
            return bool(v) if vtype == GGUFValueType.BOOL else v
        # an array: element type, count, elements
        if depth >= MAX_ARRAY_DEPTH:
            raise self.fail(f"{what}: arrays nested deeper than {MAX_ARRAY_DEPTH}")
        etype = self.value_type(f"{what} element")
        count = self.scalar("<Q", f"{what} count")
        if etype in _SCALAR_FMT:
            width = struct.calcsize(_SCALAR_FMT[etype])
            if count > (self.size - self.pos) // width:
                raise self.fail(f"{what}: {count} elements of {width} bytes do not fit in the file")
            start = self.need(count * width, what)
            arr = np.frombuffer(self.buf, dtype=_SCALAR_FMT[etype], count=count, offset=start).copy()
            return arr.astype(bool) if etype == GGUFValueType.BOOL else arr
        # strings (8-byte length each) and nested arrays (type + count, 12 bytes) have a minimum size;
        # each becomes a Python object, so their number is capped as well
        if count > (self.size - self.pos) // 8:
            raise self.fail(f"{what}: {count} elements do not fit in the file")
        if count > MAX_ARRAY_OBJECTS:
            raise self.fail(f"{what}: {count} elements (at most {MAX_ARRAY_OBJECTS})")
        return [self.value(etype, f"{what}[{i}]", depth + 1) for i in range(count)]


def read_gguf(path: str | os.PathLike) -> GgufFile:
    """Validate and map a GGUF file; ConversionError (one line) for anything malformed."""
    path = os.fspath(path)
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(HEADER.size)
            if len(head) < HEADER.size:
                raise ConversionError(f"{path}: not a valid GGUF file: {size} bytes is shorter than the "
                                      f"{HEADER.size}-byte header")
            magic, version, n_tensors, n_kv = HEADER.unpack(head)
            _check_header(path, size, magic, version, n_tensors, n_kv)
            mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except OSError as e:
        raise ConversionError(f"cannot read GGUF file {path!r}: {e.strerror or e}") from None
    buf = np.frombuffer(mm, dtype=np.uint8)     # read-only: the mapping is ACCESS_READ
    w = _Walker(buf, size, path)
    w.pos = HEADER.size
    metadata: dict[str, Any] = {}
    for i in range(n_kv):
        key = w.string(f"metadata key #{i}", MAX_KEY_BYTES)
        if key in metadata:
            raise w.fail(f"duplicate metadata key {key!r}")
        metadata[key] = w.value(w.value_type(f"metadata {key!r}"), f"metadata {key!r}")
    alignment = metadata.get("general.alignment", GGUF_DEFAULT_ALIGNMENT)
    if not isinstance(alignment, int) or isinstance(alignment, bool) or alignment <= 0 \
            or alignment & (alignment - 1) or alignment > MAX_ALIGNMENT:
        raise w.fail(f"general.alignment {_short(alignment)} is not a power of two in 1..{MAX_ALIGNMENT}")

    infos = []
    names: set[str] = set()
    for i in range(n_tensors):
        name = w.string(f"tensor #{i} name", MAX_TENSOR_NAME)
        if name in names:
            raise w.fail(f"duplicate tensor name {name!r}")
        names.add(name)
        n_dims = w.scalar("<I", f"tensor {name!r} n_dims")
        if not 1 <= n_dims <= MAX_DIMS:
            raise w.fail(f"tensor {name!r} has {n_dims} dims (1..{MAX_DIMS})")
        dims = [w.scalar("<Q", f"tensor {name!r} dim") for _ in range(n_dims)]
        raw_type = w.scalar("<I", f"tensor {name!r} type")
        offset = w.scalar("<Q", f"tensor {name!r} offset")
        try:
            qtype = GGMLQuantizationType(raw_type)
            block, type_bytes = GGML_QUANT_SIZES[qtype]
        except (ValueError, KeyError):
            raise w.fail(f"tensor {name!r} has unknown ggml type id {raw_type}") from None
        if min(dims) <= 0:
            raise w.fail(f"tensor {name!r} has dims {dims}; every dim must be positive")
        if dims[0] % block:
            raise w.fail(f"tensor {name!r} ({qtype.name}) has rows of {dims[0]} elements, not a "
                         f"multiple of its block size {block}")
        n_elements = 1
        for d in dims:
            n_elements *= d
        n_bytes = n_elements // block * type_bytes           # Python ints: no overflow
        if offset % alignment:
            raise w.fail(f"tensor {name!r} data offset {offset} is not a multiple of the alignment "
                         f"{alignment}")
        infos.append((name, qtype.name, tuple(reversed(dims)), offset, n_bytes))

    data_start = -(-w.pos // alignment) * alignment
    tensors: dict[str, GgufTensor] = {}
    prev_end, prev_name = data_start, None
    for name, type_name, shape, offset, n_bytes in sorted(infos, key=lambda t: t[3]):
        start = data_start + offset
        if start + n_bytes > size:
            raise w.fail(f"tensor {name!r} data [{start}, {start + n_bytes}) runs past the end of the "
                         f"file ({size} bytes)")
        if start < prev_end:
            raise w.fail(f"tensor {name!r} data at byte {start} overlaps tensor {prev_name!r}")
        prev_end, prev_name = start + n_bytes, name
        tensors[name] = GgufTensor(name, type_name, shape, start, buf[start:start + n_bytes])
    tensors = {name: tensors[name] for name, *_ in infos}    # file order
    return GgufFile(path=path, version=version, alignment=alignment, size_bytes=size, metadata=metadata,
                    tensors=tensors)


def _check_header(path: str, size: int, magic: int, version: int, n_tensors: int, n_kv: int) -> None:
    """The fixed header, and counts bounded by what the file could possibly hold."""
    def fail(msg: str) -> ConversionError:
        return ConversionError(f"{path}: not a valid GGUF file: {msg}")

    if magic != GGUF_MAGIC:
        raise fail(f"magic {struct.pack('<I', magic)!r} is not b'GGUF'")
    if version & 0xFFFF == 0 and version:
        raise fail("big-endian GGUF files are not supported")
    if version not in SUPPORTED_VERSIONS:
        raise fail(f"version {version} is not supported (supported: "
                   f"{', '.join(map(str, SUPPORTED_VERSIONS))})")
    room = size - HEADER.size
    if n_kv > MAX_KV or n_kv * MIN_KV_BYTES > room:
        raise fail(f"metadata count {n_kv} is impossible for a {size}-byte file")
    if n_tensors > MAX_TENSORS or n_tensors * MIN_TENSOR_INFO_BYTES + n_kv * MIN_KV_BYTES > room:
        raise fail(f"tensor count {n_tensors} is impossible for a {size}-byte file")

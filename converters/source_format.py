"""What kind of file a model source is, judged by its content (not its suffix).

`edgert convert` reads ONNX only.  `check_source(path)` runs before any other work (calibration
data, import) so that a file of another kind gets one clear error naming what edgert can read.
ONNX is recognised by walking the top-level protobuf fields of a ModelProto without decoding
them (no allocation past a few bytes, however large the model); TFLite and GGUF by their magic
bytes, so that their error says what they are.
"""
from __future__ import annotations

from pathlib import Path

from edgert.errors import ConversionError

READABLE = "ONNX models (.onnx)"      # what `edgert convert` reads

# TFLite: flatbuffer with `file_identifier "TFL3"` (tensorflow/lite/schema/schema.fbs), which a
# flatbuffer stores at bytes 4..8, after the root table offset.
TFLITE_IDENTIFIER = b"TFL3"
TFLITE_IDENTIFIER_OFFSET = 4
# GGUF: the file starts with the magic "GGUF" (ggml/docs/gguf.md, "File Structure").
GGUF_MAGIC = b"GGUF"

# Protobuf wire types (protobuf.dev/programming-guides/encoding): varint, i64, LEN, i32.
_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5
# onnx/onnx.proto3, `message ModelProto`: field number -> wire type.
_MODEL_FIELDS = {1: _VARINT,       # ir_version
                 2: _LEN, 3: _LEN, 4: _LEN,   # producer_name, producer_version, domain
                 5: _VARINT,       # model_version
                 6: _LEN,          # doc_string
                 7: _LEN,          # graph
                 8: _LEN,          # opset_import
                 14: _LEN,         # metadata_props
                 20: _LEN,         # training_info
                 25: _LEN,         # functions
                 26: _LEN}         # configuration
_GRAPH_FIELD = 7
_MAX_TOP_LEVEL_FIELDS = 1 << 16     # real models have tens (repeated opset_import / metadata_props)


def _read_varint(f) -> int | None:
    value = 0
    for shift in range(0, 64, 7):
        b = f.read(1)
        if not b:
            return None
        value |= (b[0] & 0x7F) << shift
        if b[0] < 0x80:
            return value
    return None                       # longer than 10 bytes: not a varint


def _looks_like_onnx(f, size: int) -> bool:
    """Every top-level field is a well-formed ModelProto field inside the file, and a graph is
    among them."""
    f.seek(0)
    seen_graph = False
    for _ in range(_MAX_TOP_LEVEL_FIELDS):
        if f.tell() == size:
            return seen_graph
        key = _read_varint(f)
        if key is None or key >> 3 == 0:
            return False
        number, wire = key >> 3, key & 7
        if number in _MODEL_FIELDS and _MODEL_FIELDS[number] != wire:
            return False
        if wire == _VARINT:
            if _read_varint(f) is None:
                return False
        elif wire in (_I64, _I32):
            f.seek(8 if wire == _I64 else 4, 1)
        elif wire == _LEN:
            n = _read_varint(f)
            if n is None or f.tell() + n > size:
                return False
            f.seek(n, 1)
        else:                         # groups (3, 4) never occur in ModelProto; 6, 7 are invalid
            return False
        if f.tell() > size:
            return False
        seen_graph |= number == _GRAPH_FIELD
    return False


def sniff(path: str | Path) -> str:
    """"onnx", "tflite", "gguf" or "unknown" for the file at `path` (OSError if unreadable)."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if head.startswith(GGUF_MAGIC):
            return "gguf"
        end = TFLITE_IDENTIFIER_OFFSET + len(TFLITE_IDENTIFIER)
        if head[TFLITE_IDENTIFIER_OFFSET:end] == TFLITE_IDENTIFIER:
            return "tflite"
        if size and _looks_like_onnx(f, size):
            return "onnx"
    return "unknown"


def check_source(path: str | Path) -> None:
    """ConversionError (one line) unless `path` is a model `edgert convert` can read."""
    path = Path(path)
    try:
        kind = sniff(path)
    except OSError as e:
        raise ConversionError(f"cannot read model {str(path)!r}: {e.strerror or e}") from None
    if kind == "onnx":
        return
    if kind == "tflite":
        raise ConversionError(f"{path} is a TFLite model; edgert convert reads {READABLE} only "
                              f"(edgert eval scores a .tflite as it is)")
    if kind == "gguf":
        raise ConversionError(f"{path} is a GGUF file; edgert convert reads {READABLE} only")
    raise ConversionError(f"{path} is not a model edgert can read: edgert convert reads {READABLE}")

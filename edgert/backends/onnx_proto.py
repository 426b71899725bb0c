"""A minimal protobuf *encoder* for the subset of ONNX `ModelProto` the ORT backend emits.

The runtime must run where only numpy + onnxruntime are installed (no `onnx`, no `protobuf`), so the
ORT backend serialises its lowered graph with this module.  Field numbers and enum values come from
onnx/onnx.proto (onnx 1.23, IR version 12 schema); the wire format is protobuf's
(https://protobuf.dev/programming-guides/encoding/).  Fields are written in ascending field-number
order and proto2 repeated scalars unpacked (onnx.proto declares them without `packed`), which is what
the reference protobuf serializer does, so for the same content the bytes match `onnx.helper`'s.

Only encoding: nothing here parses protobuf.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

# TensorProto.DataType (onnx.proto) by numpy dtype name.
ONNX_DTYPE: dict[str, int] = {
    "float32": 1, "uint8": 2, "int8": 3, "uint16": 4, "int16": 5, "int32": 6, "int64": 7,
    "bool": 9, "float16": 10, "float64": 11, "uint32": 12, "uint64": 13,
}

# AttributeProto.AttributeType (onnx.proto).
_ATTR_FLOAT, _ATTR_INT, _ATTR_STRING, _ATTR_TENSOR = 1, 2, 3, 4
_ATTR_FLOATS, _ATTR_INTS, _ATTR_STRINGS = 6, 7, 8

# Wire types (protobuf encoding spec).
_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5


# ---------------------------------------------------------------------------------------- wire level
def _varint(v: int) -> bytes:
    if v < 0:                       # int32/int64 negatives: 10-byte two's complement varint
        v += 1 << 64
    out = bytearray()
    while v > 0x7F:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def _tag(field_no: int, wire: int) -> bytes:
    return _varint((field_no << 3) | wire)


def _f_varint(field_no: int, v: int) -> bytes:
    return _tag(field_no, _VARINT) + _varint(int(v))


def _f_bytes(field_no: int, b: bytes | bytearray | memoryview) -> bytes:
    return _tag(field_no, _LEN) + _varint(len(b)) + bytes(b)


def _f_str(field_no: int, s: str) -> bytes:
    return _f_bytes(field_no, s.encode("utf-8"))


def _f_float(field_no: int, v: float) -> bytes:
    return _tag(field_no, _I32) + struct.pack("<f", v)


# ------------------------------------------------------------------------------------------ messages
def tensor_proto(name: str, arr: np.ndarray) -> bytes:
    """TensorProto with dims, data_type, name and little-endian raw_data."""
    arr = np.asarray(arr)
    dt = ONNX_DTYPE.get(arr.dtype.name)
    if dt is None:
        raise ValueError(f"tensor {name!r}: dtype {arr.dtype} has no ONNX encoding here")
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    out = [_f_varint(1, d) for d in arr.shape]          # dims = 1 (repeated int64)
    out.append(_f_varint(2, dt))                         # data_type = 2
    if name:
        out.append(_f_str(8, name))                      # name = 8
    out.append(_f_bytes(9, np.ascontiguousarray(arr).tobytes()))   # raw_data = 9
    return b"".join(out)


def external_tensor_proto(name: str, dtype: str, shape: Sequence[int], location: str) -> bytes:
    """TensorProto whose data lives outside the model (external_data = 13 as key/value entries,
    data_location = 14, EXTERNAL = 1).  The ORT backend supplies such tensors as OrtValues
    (SessionOptions.add_external_initializers), so `location` is never opened."""
    out = [_f_varint(1, d) for d in shape]
    out.append(_f_varint(2, ONNX_DTYPE[np.dtype(dtype).name]))
    out.append(_f_str(8, name))
    out.append(_f_bytes(13, _f_str(1, "location") + _f_str(2, location)))  # StringStringEntryProto
    out.append(_f_varint(14, 1))
    return b"".join(out)


def attribute_proto(name: str, value: Any) -> bytes:
    """AttributeProto from a Python value: int, float, str, bytes, np.ndarray, or lists of those.

    An empty list is encoded as INTS (ONNX has no untyped empty list)."""
    out = [_f_str(1, name)]                                # name = 1
    if isinstance(value, (bool, np.bool_)):
        value = int(value)
    if isinstance(value, np.ndarray):
        out.append(_f_bytes(5, tensor_proto("", value)))   # t = 5
        typ = _ATTR_TENSOR
    elif isinstance(value, (int, np.integer)):
        out.append(_f_varint(3, int(value)))               # i = 3
        typ = _ATTR_INT
    elif isinstance(value, (float, np.floating)):
        out.append(_f_float(2, float(value)))              # f = 2
        typ = _ATTR_FLOAT
    elif isinstance(value, (str, bytes)):
        out.append(_f_bytes(4, value.encode("utf-8") if isinstance(value, str) else value))  # s = 4
        typ = _ATTR_STRING
    elif isinstance(value, (list, tuple)):
        vals = list(value)
        if all(isinstance(v, (int, np.integer, bool)) for v in vals):
            out.extend(_f_varint(8, int(v)) for v in vals)        # ints = 8
            typ = _ATTR_INTS
        elif all(isinstance(v, (int, float, np.integer, np.floating)) for v in vals):
            out.extend(_f_float(7, float(v)) for v in vals)       # floats = 7
            typ = _ATTR_FLOATS
        elif all(isinstance(v, (str, bytes)) for v in vals):
            out.extend(_f_bytes(9, v.encode("utf-8") if isinstance(v, str) else v)
                       for v in vals)                             # strings = 9
            typ = _ATTR_STRINGS
        else:
            raise ValueError(f"attribute {name!r}: mixed list {value!r}")
    else:
        raise ValueError(f"attribute {name!r}: cannot encode {type(value).__name__}")
    out.append(_f_varint(20, typ))                         # type = 20
    return b"".join(out)


def node_proto(op_type: str, inputs: Sequence[str], outputs: Sequence[str], name: str = "",
               attrs: dict[str, Any] | None = None, domain: str = "") -> bytes:
    out = [_f_str(1, i) for i in inputs]                   # input = 1
    out += [_f_str(2, o) for o in outputs]                 # output = 2
    if name:
        out.append(_f_str(3, name))                        # name = 3
    out.append(_f_str(4, op_type))                         # op_type = 4
    for k in sorted(attrs or {}):                          # attribute = 5 (onnx.helper sorts too)
        out.append(_f_bytes(5, attribute_proto(k, attrs[k])))
    if domain:
        out.append(_f_str(7, domain))                      # domain = 7
    return b"".join(out)


def value_info_proto(name: str, dtype: str | int | None,
                     shape: Sequence[int | str | None] | None) -> bytes:
    """ValueInfoProto with TypeProto.tensor_type.

    shape None = unknown rank; a None dim = unknown dim; dtype None = no type at all."""
    if dtype is None:
        return _f_str(1, name)
    elem = dtype if isinstance(dtype, int) else ONNX_DTYPE[np.dtype(dtype).name]
    tensor = [_f_varint(1, elem)]                          # TypeProto.Tensor.elem_type = 1
    if shape is not None:
        dims = []
        for d in shape:
            if d is None:
                dims.append(_f_bytes(1, b""))              # Dimension with neither field set
            elif isinstance(d, str):
                dims.append(_f_bytes(1, _f_str(2, d)))     # dim_param = 2
            else:
                dims.append(_f_bytes(1, _f_varint(1, int(d))))  # dim_value = 1
        tensor.append(_f_bytes(2, b"".join(dims)))         # Tensor.shape = 2; TensorShapeProto.dim = 1
    type_proto = _f_bytes(1, b"".join(tensor))             # TypeProto.tensor_type = 1
    return _f_str(1, name) + _f_bytes(2, type_proto)       # ValueInfoProto.name = 1, type = 2


def graph_proto(name: str, nodes: Sequence[bytes], initializers: Sequence[bytes],
                inputs: Sequence[bytes], outputs: Sequence[bytes],
                value_info: Sequence[bytes] = ()) -> bytes:
    out = [_f_bytes(1, n) for n in nodes]                  # node = 1
    out.append(_f_str(2, name))                            # name = 2
    out += [_f_bytes(5, t) for t in initializers]          # initializer = 5
    out += [_f_bytes(11, v) for v in inputs]               # input = 11
    out += [_f_bytes(12, v) for v in outputs]              # output = 12
    out += [_f_bytes(13, v) for v in value_info]           # value_info = 13
    return b"".join(out)


def opset_proto(domain: str, version: int) -> bytes:
    return _f_str(1, domain) + _f_varint(2, version)      # domain = 1 (set even when ""), version = 2


def model_proto(graph: bytes, opsets: dict[str, int], ir_version: int,
                producer_name: str = "", producer_version: str = "") -> bytes:
    out = [_f_varint(1, ir_version)]                       # ir_version = 1
    if producer_name:
        out.append(_f_str(2, producer_name))               # producer_name = 2
    if producer_version:
        out.append(_f_str(3, producer_version))            # producer_version = 3
    out.append(_f_bytes(7, graph))                         # graph = 7
    out += [_f_bytes(8, opset_proto(d, v)) for d, v in opsets.items()]   # opset_import = 8
    return b"".join(out)


# ------------------------------------------------------------------------------------ a small builder
@dataclass
class ModelBuilder:
    """Accumulates nodes / initializers / value infos and serialises one ModelProto.

    `opsets` maps domain ("" = ai.onnx) to version.  IR version 10 is the one that goes with
    opset 21 (onnx/docs/Versioning.md)."""
    name: str = "graph"
    opsets: dict[str, int] = field(default_factory=lambda: {"": 21})
    ir_version: int = 10
    producer_name: str = "edgert"
    producer_version: str = ""
    nodes: list[bytes] = field(default_factory=list)
    initializers: list[bytes] = field(default_factory=list)
    inputs: list[bytes] = field(default_factory=list)
    outputs: list[bytes] = field(default_factory=list)
    value_info: list[bytes] = field(default_factory=list)

    def node(self, op_type: str, inputs: Sequence[str], outputs: Sequence[str], name: str = "",
             domain: str = "", **attrs: Any) -> None:
        self.nodes.append(node_proto(op_type, inputs, outputs, name, attrs, domain))

    def initializer(self, name: str, arr: np.ndarray) -> None:
        self.initializers.append(tensor_proto(name, arr))

    def input(self, name: str, dtype: str | int | None, shape: Sequence[int | str | None] | None) -> None:
        self.inputs.append(value_info_proto(name, dtype, shape))

    def output(self, name: str, dtype: str | int | None, shape: Sequence[int | str | None] | None) -> None:
        self.outputs.append(value_info_proto(name, dtype, shape))

    def to_bytes(self) -> bytes:
        g = graph_proto(self.name, self.nodes, self.initializers, self.inputs, self.outputs,
                        self.value_info)
        return model_proto(g, self.opsets, self.ir_version, self.producer_name,
                           self.producer_version)

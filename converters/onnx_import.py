"""ONNX model -> edgert float IR (`edgert.ir.Graph`), then the default graph passes.

What the importer does (docs/design.md, "Graph IR"):
* weights come from initializers *and* from `Constant` nodes (PaddleOCR exports keep every weight in
  a Constant node and have no initializers); both end up in `Graph.initializers`;
* attributes become JSON-serialisable Python values; the only tensor attributes accepted are
  `Constant.value*` (-> initializer, node dropped) and `ConstantOfShape.value` (-> scalar `value`
  + numpy dtype name `value_dtype`);
* tensor names are kept exactly (the calibrator captures intermediate tensors by name);
* ONNX shape inference (after pinning dims from `ImportOptions.input_shapes`) fills
  `metadata["value_shapes"]` / `metadata["value_dtypes"]` so later stages know ranks and shapes.

Opsets 11-21 of the default domain are accepted as they are: the IR ops take both the attribute
and the input form of parameters that moved between those opsets.  A newer opset (up to the newest
the installed onnx package knows) is accepted node by node: the op's schema at the model's opset
(`onnx.defs.get_schema(op, opset).since_version`) must be no newer than the version edgert's op
implements (`Op.ONNX_VERSION`, 21 unless the op says more); otherwise UnsupportedOp names the op,
the version the model needs and the model's opset.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgert.errors import ConversionError, UnsupportedOp
from edgert.ir import Dim, Graph, Node, ValueInfo

MIN_OPSET = 11
BASE_OPSET = 21         # every op implements its semantics at opsets MIN_OPSET..BASE_OPSET
_DEFAULT_DOMAINS = ("", "ai.onnx")
_CONSTANT_VALUE_ATTRS = ("value", "value_float", "value_floats", "value_int", "value_ints",
                         "value_string", "value_strings", "sparse_value")


@dataclass
class ImportOptions:
    # Pin (some) input dims: {"x": [1, 3, 64, 96]}; a str keeps a named dynamic dim.
    input_shapes: dict[str, list[int | str]] | None = None
    fold_constants: bool = True
    fold_batchnorm: bool = True
    fuse_conv_affine: bool = True       # per-channel Mul/Add after Conv folded into its weights/bias
    fuse_hardswish: bool = True
    eliminate_identity: bool = True
    dead_code: bool = True
    # Explicit pass list (names in converters.passes.PASSES); None = default_passes() minus the
    # ones switched off above.  [] runs no pass at all.
    passes: list[str] | None = None
    shape_inference: bool = True
    name: str | None = None             # graph name; default: the file stem / ONNX graph name


# ops whose semantics changed at opset 13; the numpy op reads the `opset` attr to pick the old rule
_OPSET13_SEMANTICS = {"Softmax", "LogSoftmax", "Hardmax"}


def import_onnx(path_or_model: str | os.PathLike | Any, options: ImportOptions | None = None
                ) -> Graph:
    """Load an ONNX file (or an in-memory `onnx.ModelProto`) and return the float IR graph."""
    import onnx

    options = options or ImportOptions()
    if isinstance(path_or_model, onnx.ModelProto):
        model = path_or_model
        raw = model.SerializeToString()
        source_file = None
    else:
        path = Path(path_or_model)
        try:
            raw = path.read_bytes()
        except OSError as e:
            raise ConversionError(f"cannot read ONNX model {str(path)!r}: {e}") from e
        try:
            model = onnx.load_model_from_string(raw)
            if any(_uses_external_data(t) for t in _all_tensors(model)):
                onnx.load_external_data_for_model(model, str(path.parent))
        except ConversionError:
            raise
        except Exception as e:   # protobuf DecodeError, missing external data file, ...
            raise ConversionError(f"cannot parse ONNX model {str(path)!r}: {e}") from e
        source_file = path.name

    opset = _check_opset(model)
    for t in _all_tensors(model):
        if _uses_external_data(t):
            raise ConversionError(f"initializer {t.name!r} stores its data externally and the "
                                  f"data was not loaded (pass the file path, not a ModelProto)")

    g = model.graph
    name = options.name or (Path(source_file).stem if source_file else (g.name or "model"))
    metadata: dict[str, Any] = {
        "source_format": "onnx",
        "source_file": source_file,
        "source_sha256": hashlib.sha256(raw).hexdigest(),
        "source_size_bytes": len(raw),
        "producer_name": model.producer_name,
        "producer_version": model.producer_version,
        "opset": opset,
        "onnx_ir_version": int(model.ir_version),
    }

    initializers: dict[str, np.ndarray] = {}
    for t in g.initializer:
        initializers[t.name] = _tensor_to_array(t, f"initializer {t.name!r}")
    for st in g.sparse_initializer:
        raise ConversionError(f"sparse initializer {st.values.name!r} is not supported")

    # Inputs: initializers listed as graph inputs (IR < 4 style) are weights, not inputs.
    declared_inputs = [vi for vi in g.input if vi.name not in initializers]
    pinned = _pin_input_shapes(model, declared_inputs, options.input_shapes)

    shapes: dict[str, list[Dim]] = {}
    dtypes: dict[str, str] = {}
    if options.shape_inference:
        shapes, dtypes, err = _infer_shapes(model, pinned)
        metadata["shape_inference"] = "ok" if err is None else f"failed: {err}"

    nodes: list[Node] = []
    used_names: set[str] = set()
    for idx, pn in enumerate(g.node):
        node_name = pn.name or f"{pn.op_type}_{idx}"
        if node_name in used_names:
            node_name = f"{node_name}__{idx}"
        used_names.add(node_name)
        if pn.domain not in _DEFAULT_DOMAINS:
            raise UnsupportedOp(f"node {node_name!r}: op {pn.op_type!r} of domain {pn.domain!r} is "
                                f"not supported (only the default ONNX domain is)")
        _check_op_version(pn.op_type, node_name, opset)
        if pn.op_type == "Constant":
            if len(pn.output) != 1 or not pn.output[0]:
                raise ConversionError(f"Constant node {node_name!r} must have exactly one output")
            initializers[pn.output[0]] = _constant_value(pn, node_name)
            continue
        attrs = _convert_attrs(pn, node_name)
        if pn.op_type in _OPSET13_SEMANTICS and metadata.get("opset", 13) < 13:
            attrs["opset"] = int(metadata["opset"])   # pre-13 coerce-to-2D semantics (ONNX changelog)
        nodes.append(Node(op=pn.op_type, name=node_name, inputs=list(pn.input),
                          outputs=list(pn.output), attrs=attrs))

    inputs = [_value_info(vi, pinned.get(vi.name), shapes) for vi in declared_inputs]
    outputs = [_value_info(vi, None, shapes) for vi in g.output]
    nodes = _toposort(nodes, {vi.name for vi in inputs} | set(initializers))
    for o in outputs:
        if o.name not in initializers and o.name not in {vi.name for vi in inputs} and \
                not any(o.name in n.outputs for n in nodes):
            raise ConversionError(f"graph output {o.name!r} is produced by no node")

    produced = {o for n in nodes for o in n.outputs if o}
    metadata["value_shapes"] = {k: v for k, v in shapes.items()
                                if k in produced or k in {vi.name for vi in inputs}}
    metadata["value_dtypes"] = {k: v for k, v in dtypes.items() if k in metadata["value_shapes"]}

    graph = Graph(name=name, inputs=inputs, outputs=outputs, nodes=nodes,
                  initializers=initializers, metadata=metadata)

    from converters.passes import default_passes, run_passes
    names = options.passes
    if names is None:
        names = [p for p in default_passes() if getattr(options, p, True)]
    graph = run_passes(graph, names)
    graph.metadata["passes"] = list(names)
    return graph


# ----------------------------------------------------------------------------------------------

def _all_tensors(model: Any):
    yield from model.graph.initializer
    for n in model.graph.node:
        for a in n.attribute:
            if a.HasField("t"):
                yield a.t


def _uses_external_data(t: Any) -> bool:
    import onnx
    return t.data_location == onnx.TensorProto.EXTERNAL


def _check_opset(model: Any) -> int:
    opset = None
    for imp in model.opset_import:
        if imp.domain in _DEFAULT_DOMAINS:
            opset = int(imp.version)
    if opset is None:
        raise ConversionError("the model imports no opset of the default ONNX domain")
    import onnx
    newest = onnx.defs.onnx_opset_version()
    if not MIN_OPSET <= opset <= newest:
        raise ConversionError(f"opset {opset} is not supported (supported: {MIN_OPSET}-{newest}, "
                              f"the newest the installed onnx package knows); re-export the model "
                              f"or run onnx.version_converter first")
    return opset


def _check_op_version(op_type: str, node_name: str, opset: int) -> None:
    """Above BASE_OPSET a node imports only while its op's schema at the model's opset is one the
    edgert op implements (a schema that changed after it may mean other semantics)."""
    if opset <= BASE_OPSET:
        return
    import onnx
    from edgert.ops.base import op_class
    try:
        implemented = op_class(op_type).ONNX_VERSION
    except UnsupportedOp:
        return                          # an unknown op: convert.check_supported names it
    try:
        since = onnx.defs.get_schema(op_type, opset, "").since_version
    except onnx.defs.SchemaError:
        return
    if since > implemented:
        # the newest opset whose schema of this op edgert implements
        fits = next(v for v in range(since - 1, 0, -1)
                    if onnx.defs.get_schema(op_type, v, "").since_version <= implemented)
        have = onnx.defs.get_schema(op_type, implemented, "").since_version
        raise UnsupportedOp(f"node {node_name!r}: op {op_type!r} at the model's opset {opset} is "
                            f"{op_type}-{since}, newer than the {op_type}-{have} edgert "
                            f"implements; re-export the model at opset {fits} or lower")


def _tensor_to_array(t: Any, what: str) -> np.ndarray:
    from onnx import numpy_helper
    try:
        arr = numpy_helper.to_array(t)
    except Exception as e:
        raise ConversionError(f"{what}: cannot decode tensor: {e}") from e
    if arr.dtype == object:
        raise ConversionError(f"{what}: string tensors are not supported")
    return np.ascontiguousarray(arr).reshape(arr.shape)     # ascontiguousarray makes a 0-d array 1-d


def _constant_value(pn: Any, node_name: str) -> np.ndarray:
    present = [a for a in pn.attribute if a.name in _CONSTANT_VALUE_ATTRS]
    if len(present) != 1:
        raise ConversionError(f"Constant node {node_name!r} must set exactly one value attribute")
    a = present[0]
    if a.name == "value":
        return _tensor_to_array(a.t, f"Constant node {node_name!r}")
    if a.name == "value_float":
        return np.array(a.f, dtype=np.float32)
    if a.name == "value_floats":
        return np.array(list(a.floats), dtype=np.float32)
    if a.name == "value_int":
        return np.array(a.i, dtype=np.int64)
    if a.name == "value_ints":
        return np.array(list(a.ints), dtype=np.int64)
    raise UnsupportedOp(f"Constant node {node_name!r}: attribute {a.name!r} is not supported")


def _convert_attrs(pn: Any, node_name: str) -> dict[str, Any]:
    import onnx
    A = onnx.AttributeProto
    out: dict[str, Any] = {}
    for a in pn.attribute:
        if a.ref_attr_name:
            raise UnsupportedOp(f"node {node_name!r}: attribute {a.name!r} refers to a function "
                                f"attribute")
        if a.type == A.FLOAT:
            out[a.name] = float(a.f)
        elif a.type == A.INT:
            out[a.name] = int(a.i)
        elif a.type == A.STRING:
            out[a.name] = _decode(a.s, node_name, a.name)
        elif a.type == A.FLOATS:
            out[a.name] = [float(v) for v in a.floats]
        elif a.type == A.INTS:
            out[a.name] = [int(v) for v in a.ints]
        elif a.type == A.STRINGS:
            out[a.name] = [_decode(s, node_name, a.name) for s in a.strings]
        elif a.type == A.TENSOR and pn.op_type == "ConstantOfShape" and a.name == "value":
            arr = _tensor_to_array(a.t, f"node {node_name!r} attribute 'value'")
            if arr.size != 1:
                raise ConversionError(f"node {node_name!r}: ConstantOfShape value must hold one "
                                      f"element, has shape {list(arr.shape)}")
            out["value"] = arr.reshape(()).item()
            out["value_dtype"] = arr.dtype.name
        elif a.type in (A.GRAPH, A.GRAPHS):
            raise UnsupportedOp(f"node {node_name!r}: op {pn.op_type!r} has a subgraph "
                                f"(attribute {a.name!r}); control flow is not supported")
        else:
            raise UnsupportedOp(f"node {node_name!r}: attribute {a.name!r} of type "
                                f"{A.AttributeType.Name(a.type)} is not supported on op "
                                f"{pn.op_type!r}")
    return out


def _decode(b: bytes, node_name: str, attr: str) -> str:
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConversionError(f"node {node_name!r}: attribute {attr!r} is not utf-8: {e}") from e


def _dims_of(type_proto: Any) -> list[Dim] | None:
    tt = type_proto.tensor_type
    if not tt.HasField("shape"):
        return None
    dims: list[Dim] = []
    for d in tt.shape.dim:
        if d.HasField("dim_value") and d.dim_value >= 0:
            dims.append(int(d.dim_value))
        elif d.HasField("dim_param") and d.dim_param and d.dim_param != "?":
            # a named dim is shared by every tensor using the name; "?" is an exporter's
            # spelling of "unknown" (the cls model has two of them that differ)
            dims.append(d.dim_param)
        else:
            dims.append(None)       # unknown (also exporters' dim_value -1)
    return dims


def _dtype_of(type_proto: Any) -> str | None:
    import onnx
    et = type_proto.tensor_type.elem_type
    if not type_proto.HasField("tensor_type") or et == onnx.TensorProto.UNDEFINED:
        return None
    try:
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(et)).name
    except Exception:
        return None


def _pin_input_shapes(model: Any, declared: list[Any], pins: dict[str, list[int | str]] | None
                      ) -> dict[str, list[Dim]]:
    if not pins:
        return {}
    by_name = {vi.name: vi for vi in declared}
    out: dict[str, list[Dim]] = {}
    for name, dims in pins.items():
        vi = by_name.get(name)
        if vi is None:
            raise ConversionError(f"input_shapes names {name!r}, which is not a model input "
                                  f"(inputs: {', '.join(by_name)})")
        declared_dims = _dims_of(vi.type)
        if declared_dims is not None and len(declared_dims) != len(dims):
            raise ConversionError(f"input_shapes[{name!r}] = {list(dims)} has rank {len(dims)}, "
                                  f"the model declares {declared_dims}")
        for i, d in enumerate(dims):
            if not isinstance(d, (int, str)) or isinstance(d, bool) or (isinstance(d, int) and d < 0):
                raise ConversionError(f"input_shapes[{name!r}][{i}] = {d!r}: need an int >= 0 or a name")
            if declared_dims is not None and isinstance(declared_dims[i], int) and \
                    isinstance(d, int) and d != declared_dims[i]:
                raise ConversionError(f"input_shapes[{name!r}][{i}] = {d}, but the model fixes "
                                      f"that dim to {declared_dims[i]}")
        out[name] = list(dims)
    return out


def _infer_shapes(model: Any, pinned: dict[str, list[Dim]]
                  ) -> tuple[dict[str, list[Dim]], dict[str, str], str | None]:
    """Run ONNX shape inference on a copy with the pinned input dims; never fails the import."""
    import onnx
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for vi in m.graph.input:
        dims = pinned.get(vi.name)
        if dims is None:
            continue
        shape = vi.type.tensor_type.shape
        shape.ClearField("dim")
        for d in dims:
            nd = shape.dim.add()
            if isinstance(d, int):
                nd.dim_value = d
            else:
                nd.dim_param = d
    try:
        inferred = onnx.shape_inference.infer_shapes(m, check_type=False, strict_mode=False,
                                                     data_prop=True)
        err = None
    except Exception as e:   # inference is advisory: a failure only costs us the shapes
        inferred, err = m, str(e).splitlines()[0] if str(e) else type(e).__name__
    shapes: dict[str, list[Dim]] = {}
    dtypes: dict[str, str] = {}
    g = inferred.graph
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        dims = _dims_of(vi.type)
        if dims is not None:
            shapes[vi.name] = dims
        dt = _dtype_of(vi.type)
        if dt is not None:
            dtypes[vi.name] = dt
    return shapes, dtypes, err


def _merge_dims(declared: list[Dim] | None, inferred: list[Dim] | None) -> list[Dim]:
    if not declared:     # unknown (no shape declared; [] is also how we hold that) -> inferred
        return list(inferred or declared or [])
    if inferred is None or len(inferred) != len(declared):
        return list(declared)
    # a fixed size from inference beats a name / unknown from the declaration
    return [i if isinstance(i, int) and not isinstance(d, int) else d
            for d, i in zip(declared, inferred)]


def _value_info(vi: Any, pinned: list[Dim] | None, shapes: dict[str, list[Dim]]) -> ValueInfo:
    dtype = _dtype_of(vi.type)
    if dtype is None:
        raise ConversionError(f"graph input/output {vi.name!r} is not a typed tensor")
    dims = pinned if pinned is not None else _merge_dims(_dims_of(vi.type), shapes.get(vi.name))
    return ValueInfo(name=vi.name, dtype=dtype, shape=list(dims))


def _toposort(nodes: list[Node], available: set[str]) -> list[Node]:
    """Stable topological order (exporters usually emit one already; we check and repair)."""
    producer: dict[str, int] = {}
    for i, n in enumerate(nodes):
        for o in n.outputs:
            if not o:
                continue
            if o in producer or o in available:
                raise ConversionError(f"tensor {o!r} is produced twice (node {n.name!r})")
            producer[o] = i
    for n in nodes:
        for x in n.inputs:
            if x and x not in producer and x not in available:
                raise ConversionError(f"node {n.name!r} ({n.op}) reads {x!r}, which is neither a "
                                      f"graph input, an initializer nor a node output")
    done: set[int] = set()
    order: list[Node] = []
    ready = set(available)
    pending = list(range(len(nodes)))
    while pending:
        progressed = False
        rest = []
        for i in pending:
            if all(not x or x in ready for x in nodes[i].inputs):
                order.append(nodes[i])
                done.add(i)
                ready.update(o for o in nodes[i].outputs if o)
                progressed = True
            else:
                rest.append(i)
        if not progressed:
            raise ConversionError(f"the graph has a cycle through node {nodes[rest[0]].name!r}")
        pending = rest
    return order

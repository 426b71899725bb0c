"""Re-run ONNX shape inference on the IR (not a pass: a helper for passes).

ONNX shape inference cannot see through exporter shape arithmetic such as
`Reshape(x, Concat(Cast(Slice(Shape(y)), to=int32) ...))` (its data propagation stops at the
Cast), so after constant folding has turned those chains into initializers we infer again on the
IR, rebuilt as a throw-away ModelProto.  Results go to `metadata["value_shapes"/"value_dtypes"]`
and sharpen the graph outputs' shapes."""
from __future__ import annotations

from typing import Any

import numpy as np

from edgert.ir import Dim, Graph


def _attr_value(op: str, key: str, value: Any, attrs: dict[str, Any]) -> Any:
    from onnx import numpy_helper
    if op == "ConstantOfShape" and key == "value":
        dtype = np.dtype(attrs.get("value_dtype", "float32"))
        return numpy_helper.from_array(np.array([value], dtype=dtype), "value")
    return value


def graph_to_onnx(graph: Graph, opset: int | None = None) -> Any:
    """A ModelProto equivalent to `graph` (float IR only; good enough for shape inference)."""
    import onnx
    from onnx import helper, numpy_helper

    def vi(v, with_shape=True):
        et = helper.np_dtype_to_tensor_dtype(np.dtype(v.dtype))
        dims = [d if isinstance(d, (int, str)) else None for d in v.shape] if with_shape else None
        return helper.make_tensor_value_info(v.name, et, dims)

    nodes = []
    for n in graph.nodes:
        attrs = {}
        for k, v in n.attrs.items():
            if n.op == "ConstantOfShape" and k == "value_dtype":
                continue
            if isinstance(v, list) and not v:
                continue      # make_attribute cannot type an empty list; ONNX defaults apply
            attrs[k] = _attr_value(n.op, k, v, n.attrs)
        nodes.append(helper.make_node(n.op, n.inputs, n.outputs, name=n.name, **attrs))
    inits = [numpy_helper.from_array(np.asarray(a), k) for k, a in graph.initializers.items()]
    # outputs go without shapes: inference fills them and a stale / unknown one cannot conflict
    g = helper.make_graph(nodes, graph.name or "graph", [vi(v) for v in graph.inputs],
                          [vi(v, with_shape=False) for v in graph.outputs], inits)
    opset = opset or int(graph.metadata.get("opset", 17))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)],
                             ir_version=onnx.IR_VERSION)


def refresh_shapes(graph: Graph) -> bool:
    """Infer shapes on the current graph; True when it worked.  Never raises."""
    import onnx
    from converters.onnx_import import _dims_of, _dtype_of, _merge_dims
    try:
        model = graph_to_onnx(graph)
        inferred = onnx.shape_inference.infer_shapes(model, check_type=False, strict_mode=False,
                                                     data_prop=True)
    except Exception:
        return False
    shapes: dict[str, list[Dim]] = dict(graph.metadata.get("value_shapes") or {})
    dtypes: dict[str, str] = dict(graph.metadata.get("value_dtypes") or {})
    for v in list(inferred.graph.value_info) + list(inferred.graph.output):
        dims = _dims_of(v.type)
        if dims is not None:
            shapes[v.name] = _merge_dims(shapes.get(v.name), dims) if v.name in shapes else dims
        dt = _dtype_of(v.type)
        if dt is not None:
            dtypes[v.name] = dt
    for o in graph.outputs:
        if o.name in shapes:
            o.shape = _merge_dims(o.shape, shapes[o.name])
            shapes[o.name] = list(o.shape)
    graph.metadata["value_shapes"] = shapes
    graph.metadata["value_dtypes"] = dtypes
    return True

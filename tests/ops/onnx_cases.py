"""ONNX's own node test cases (onnx.backend.test.case.node) as edgert Nodes + numpy data.

Used to check every registered op's declaration (attributes, input counts), its static shape
inference (test_infer.py) and its results (test_onnx_conformance.py) against what ONNX expects.
`onnx_case_table()` also lists, with the reason, every case of a registered op that cannot become
an edgert node + numpy arrays at all (sequences, element types edgert does not have)."""
from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np

from edgert.ir import Node


@dataclass
class Case:
    name: str
    node: Node
    inputs: list[np.ndarray | None]
    outputs: list[np.ndarray]          # in the order of the graph outputs
    opset: int
    output_names: list[str] = field(default_factory=list)   # graph output names, same order


@dataclass
class Skipped:
    name: str
    op: str
    reason: str


def _array(a, what: str) -> np.ndarray:
    """A data-set value as numpy; ValueError(reason) for what edgert has no tensor for."""
    from onnx import TensorProto, numpy_helper

    from edgert import format as F
    if isinstance(a, list) or a is None:
        raise ValueError(f"{what} is a sequence / optional value (edgert's IR has tensors only)")
    if isinstance(a, TensorProto):          # exact bits of types numpy lacks (float16 kept)
        a = numpy_helper.to_array(a)
    a = np.asarray(a)
    if a.dtype.name not in F.DTYPES:
        raise ValueError(f"{what} has element type {a.dtype.name}, which edgert does not have")
    return a


def _attrs(pn, name: str) -> dict:
    """Attributes as the importer hands them over; a Constant's tensor `value` becomes the
    tensor literal edgert's Constant op reads (the importer folds Constants instead)."""
    from onnx import AttributeProto, NodeProto

    from converters.onnx_import import _convert_attrs
    if pn.op_type == "Constant":
        lit = {}
        rest = NodeProto()
        rest.CopyFrom(pn)
        del rest.attribute[:]
        for a in pn.attribute:
            if a.type == AttributeProto.TENSOR:
                arr = _array(a.t, f"attribute {a.name!r}")
                lit[a.name] = {"dtype": arr.dtype.name, "data": arr.tolist(),
                               "shape": list(arr.shape)}
            else:
                rest.attribute.append(a)
        return {**_convert_attrs(rest, name), **lit}
    return _convert_attrs(pn, name)


@functools.lru_cache(maxsize=1)
def onnx_case_table() -> tuple[tuple[Case, ...], tuple[Skipped, ...]]:
    """(cases, skipped) over every single-node case of an op edgert registers."""
    import warnings

    from onnx.backend.test.case.node import collect_testcases

    from converters.onnx_import import _OPSET13_SEMANTICS
    from edgert.ops import known_ops

    known = set(known_ops())
    out, skipped = [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = collect_testcases(None)
    for c in cases:
        g = c.model.graph
        if len(g.node) != 1 or g.node[0].op_type not in known or g.node[0].domain not in ("", "ai.onnx"):
            continue
        pn = g.node[0]
        opset = next((i.version for i in c.model.opset_import if i.domain in ("", "ai.onnx")), 21)
        try:
            attrs = _attrs(pn, c.name)
        except Exception as e:     # noqa: BLE001 - attribute kinds edgert does not import
            skipped.append(Skipped(c.name, pn.op_type, f"attributes: {e}"))
            continue
        if pn.op_type in _OPSET13_SEMANTICS and opset < 13:
            attrs["opset"] = int(opset)
        if pn.op_type == "Resize" and opset < 11:
            attrs["opset"] = int(opset)
        if not c.data_sets:
            skipped.append(Skipped(c.name, pn.op_type, "the case has no data set"))
            continue
        ins_data, outs_data = c.data_sets[0]
        try:
            ins = [_array(a, f"input {i}") for i, a in enumerate(ins_data)]
            outs = [_array(a, f"output {i}") for i, a in enumerate(outs_data)]
        except ValueError as e:
            skipped.append(Skipped(c.name, pn.op_type, str(e)))
            continue
        # graph inputs map to node inputs by name; "" stays omitted
        by_name = dict(zip([vi.name for vi in g.input], ins))
        node_ins = [by_name.get(i) if i else None for i in pn.input]
        out.append(Case(c.name, Node(pn.op_type, c.name, list(pn.input), list(pn.output), attrs),
                        node_ins, outs, int(opset), [vi.name for vi in g.output]))
    return tuple(out), tuple(skipped)


def onnx_cases() -> tuple[Case, ...]:
    return onnx_case_table()[0]

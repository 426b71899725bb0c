"""ONNX's own node test cases (onnx.backend.test.case.node) as edgert Nodes + numpy data.

Used to check every registered op's declaration (attributes, input counts) and its static shape
inference against the outputs ONNX expects."""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from edgert.ir import Node


@dataclass
class Case:
    name: str
    node: Node
    inputs: list[np.ndarray | None]
    outputs: list[np.ndarray]
    opset: int


@functools.lru_cache(maxsize=1)
def onnx_cases() -> tuple[Case, ...]:
    import warnings

    from onnx.backend.test.case.node import collect_testcases

    from converters.onnx_import import _OPSET13_SEMANTICS, _convert_attrs
    from edgert.ops import known_ops

    known = set(known_ops())
    out = []
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
            attrs = _convert_attrs(pn, c.name)
        except Exception:          # noqa: BLE001 - attribute kinds edgert does not import
            continue
        if pn.op_type in _OPSET13_SEMANTICS and opset < 13:
            attrs["opset"] = int(opset)
        if pn.op_type == "Resize" and opset < 11:
            attrs["opset"] = int(opset)
        if not c.data_sets:
            continue
        ins_data, outs_data = c.data_sets[0]
        try:
            ins = [np.asarray(a) if not isinstance(a, list) else None for a in ins_data]
            outs = [np.asarray(a) for a in outs_data]
        except Exception:          # noqa: BLE001 - sequences / optionals
            continue
        if any(a is not None and a.dtype == object for a in ins + outs):
            continue
        # graph inputs map to node inputs by name; "" stays omitted
        by_name = dict(zip([vi.name for vi in g.input], ins))
        node_ins = [by_name.get(i) if i else None for i in pn.input]
        out.append(Case(c.name, Node(pn.op_type, c.name, list(pn.input), list(pn.output), attrs),
                        node_ins, outs, int(opset)))
    return tuple(out)

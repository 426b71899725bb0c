"""Every op's declaration (ATTRS / INPUTS / OUTPUTS) accepts ONNX's own valid node test cases, and
its static `infer` agrees with the shapes ONNX expects — given full values, shapes only, or nothing."""
from __future__ import annotations

import numpy as np
import pytest

from edgert.errors import EdgertError, GraphError, UnsupportedOp
from edgert.graphcheck import _check_node_io
from edgert.ops import get_op, known_ops
from edgert.ops._schema import Val, of_array
from edgert.ops.base import Op
from onnx_cases import onnx_cases


def _compatible(v: Val, a: np.ndarray) -> bool:
    if v.dtype is not None and v.dtype != a.dtype.name:
        return False
    if v.shape is None:
        return True
    return len(v.shape) == a.ndim and all(d is None or d == s for d, s in zip(v.shape, a.shape))


def _cases_by_op() -> dict[str, list]:
    out: dict[str, list] = {}
    for c in onnx_cases():
        out.setdefault(c.node.op, []).append(c)
    return out


def test_every_op_declares_infer():
    missing = [name for name in known_ops() if get_op_class(name).infer is Op.infer]
    assert not missing, f"ops without infer: {missing}"


def get_op_class(name):
    from edgert.ops.base import _OPS
    return _OPS.lookup(name)


@pytest.mark.parametrize("op_type", sorted(_cases_by_op()))
def test_infer_matches_onnx_cases(op_type):
    checked = 0
    for c in _cases_by_op()[op_type]:
        try:
            op = get_op(c.node)
            _check_node_io(c.node, op)
        except UnsupportedOp:
            continue
        except GraphError as e:
            # a declaration must not reject what ONNX says is valid
            raise AssertionError(f"{c.name}: declaration rejects an ONNX test case: {e}") from None
        try:
            ran = op.run(*c.inputs)
        except (EdgertError, ValueError, TypeError, IndexError):
            continue                 # a case the oracle does not support; its own tests cover it
        if [r.shape for r in ran[:len(c.outputs)]] != [o.shape for o in c.outputs]:
            continue
        full = [None if a is None else of_array(a) for a in c.inputs]
        shapes = [None if a is None else Val(a.dtype.name, tuple(a.shape)) for a in c.inputs]
        blind = [None if a is None else Val(a.dtype.name, None) for a in c.inputs]
        for mode, ins in (("values", full), ("shapes", shapes), ("nothing", blind)):
            try:
                outs = op.infer(ins)
            except GraphError as e:
                raise AssertionError(f"{c.name} ({mode}): infer rejects a valid case: {e}") from None
            assert len(outs) >= len(c.node.outputs), f"{c.name} ({mode}): too few outputs"
            for v, a in zip(outs, ran):
                assert _compatible(v, a), f"{c.name} ({mode}): inferred {v.dtype} {v.shape}, " \
                                          f"ran {a.dtype} {a.shape}"
                if mode == "values":
                    assert v.known and tuple(v.shape) == a.shape, \
                        f"{c.name}: with every value known, infer gave {v.shape}, ran {a.shape}"
        checked += 1
    if not checked:
        pytest.skip(f"no ONNX case of {op_type} runs on the oracle")

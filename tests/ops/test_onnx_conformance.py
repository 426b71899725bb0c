"""The numpy oracle against ONNX's own node test cases (onnx.backend.test.case.node), for every op
edgert registers: each case runs through `get_op(node).run(*inputs)` and must give ONNX's expected
outputs — same dtype, same shape, values within the tolerance of the dtype (exact for integers and
bools).

Nothing is dropped silently: a case that cannot be expressed with edgert tensors (sequences,
element types edgert lacks) and a case the oracle refuses on purpose (UnsupportedOp) are skips that
carry their reason; a case that runs and differs, or fails any other way, is a failure."""
from __future__ import annotations

import numpy as np
import pytest

from edgert.errors import UnsupportedOp
from edgert.ops import get_op, known_ops
from onnx_cases import onnx_case_table

pytest.importorskip("onnx")

CASES, SKIPPED = onnx_case_table()

# Cases that run but whose expected output edgert deliberately does not reproduce: name -> why.
# Keep it empty unless a case is genuinely out of scope; a listed case that starts passing fails
# (strict xfail), so the list cannot go stale.
OUT_OF_SCOPE: dict[str, str] = {}

# (rtol, atol) per float dtype.  float32: ONNX's own backend runner uses rtol 1e-3 (onnx/backend/
# test/runner); some expected outputs are rounded to 4 decimals (averagepool ..._starts_on_pad).
TOLERANCE = {np.dtype(np.float16): (1e-2, 1e-3), np.dtype(np.float32): (1e-3, 1e-5),
             np.dtype(np.float64): (1e-7, 1e-9)}


def _params():
    for c in CASES:
        marks = ()
        if c.name in OUT_OF_SCOPE:
            marks = (pytest.mark.xfail(strict=True, reason=OUT_OF_SCOPE[c.name]),)
        yield pytest.param(c, id=c.name, marks=marks)


@pytest.mark.parametrize("case", list(_params()))
def test_oracle_matches_onnx_case(case):
    try:
        op = get_op(case.node)
        got = op.run(*case.inputs)
    except UnsupportedOp as e:
        pytest.skip(f"the oracle does not support this variant on purpose: {e}")
    index = {name: i for i, name in enumerate(case.node.outputs) if name}
    assert set(case.output_names) <= set(index), "a graph output the node does not produce"
    for name, want in zip(case.output_names, case.outputs):
        assert index[name] < len(got), f"{case.name}: output {name!r} missing"
        g = np.asarray(got[index[name]])
        what = f"{case.name}: output {name!r}"
        assert g.dtype == want.dtype, f"{what} dtype {g.dtype}, ONNX {want.dtype}"
        assert g.shape == want.shape, f"{what} shape {g.shape}, ONNX {want.shape}"
        if want.dtype.kind == "f":
            rtol, atol = TOLERANCE[want.dtype]
            np.testing.assert_allclose(g, want, rtol=rtol, atol=atol, err_msg=what)
        else:
            np.testing.assert_array_equal(g, want, err_msg=what)


@pytest.mark.parametrize("skipped", SKIPPED, ids=[s.name for s in SKIPPED])
def test_case_not_expressible_with_edgert_tensors(skipped):
    pytest.skip(f"{skipped.op}: {skipped.reason}")


def test_every_registered_op_has_onnx_cases():
    missing = sorted(set(known_ops()) - {c.node.op for c in CASES})
    assert not missing, f"registered ops without any runnable ONNX node case: {missing}"
    assert not set(OUT_OF_SCOPE) - {c.name for c in CASES}, "OUT_OF_SCOPE names no case"

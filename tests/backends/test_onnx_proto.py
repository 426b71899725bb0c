"""The hand-written ONNX protobuf encoder against the `onnx` package: what it writes parses, passes
the checker, and equals (field for field, and byte for byte) what onnx.helper builds."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

onnx = pytest.importorskip("onnx")
from onnx import helper, numpy_helper  # noqa: E402

from edgert.backends import onnx_proto as P  # noqa: E402

DTYPES = ["float32", "float16", "float64", "int8", "uint8", "int16", "uint16", "int32", "int64",
          "uint32", "uint64", "bool"]


def _array(dtype: str, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if dtype == "bool":
        return rng.integers(0, 2, shape).astype(bool)
    if dtype.startswith("float"):
        return rng.standard_normal(shape).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, shape, dtype=np.int64 if info.min < 0 else np.uint64,
                        endpoint=True).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(), (0,), (3,), (2, 3, 4)])
def test_tensor_matches_numpy_helper(dtype, shape):
    arr = _array(dtype, shape)
    mine = onnx.TensorProto.FromString(P.tensor_proto("t", arr))
    ref = numpy_helper.from_array(arr, "t")
    assert mine == ref
    np.testing.assert_array_equal(numpy_helper.to_array(mine), arr)


def test_non_contiguous_and_big_endian_tensors():
    base = _array("float32", (4, 6))
    for arr in (base[:, ::2], base.T, base.astype(">f4")):
        back = numpy_helper.to_array(onnx.TensorProto.FromString(P.tensor_proto("t", arr)))
        np.testing.assert_array_equal(back, arr)
    with pytest.raises(ValueError, match="dtype"):
        P.tensor_proto("c", np.zeros(2, np.complex64))


ATTRS = {"i": 3, "neg": -5, "big": 2 ** 40, "f": 0.25, "s": "hello", "ints": [1, -2, 3],
         "floats": [0.5, -1.5], "strings": ["a", "bc"], "t": np.arange(6, dtype=np.int64)}


def test_attributes_match_helper():
    for k, v in ATTRS.items():
        mine = onnx.AttributeProto.FromString(P.attribute_proto(k, v))
        ref = helper.make_attribute(k, numpy_helper.from_array(v) if isinstance(v, np.ndarray) else v)
        assert mine == ref, k
        assert P.attribute_proto(k, v) == ref.SerializeToString(), k


def _both_models():
    w = _array("float32", (4, 3), 1)
    zp = np.array(3, np.int8)
    b = P.ModelBuilder(name="g", opsets={"": 21, "com.microsoft": 1})
    b.initializer("w", w)
    b.initializer("zp", zp)
    b.input("x", "float32", ["N", 4])
    b.output("y", "float32", ["N", None])
    b.output("q", "int8", None)
    b.node("MatMul", ["x", "w"], ["m"], name="mm")
    b.node("Gelu", ["m"], ["y"], name="gelu", approximate="tanh")
    b.node("QuantizeLinear", ["y", "", "zp"], ["q"], name="ql", axis=1)
    b.node("FusedGemm", ["x", "w"], ["unused"], name="ms", domain="com.microsoft", alpha=1.0)
    b.value_info.append(P.value_info_proto("m", "float32", ["N", 3]))

    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"], name="mm"),
             helper.make_node("Gelu", ["m"], ["y"], name="gelu", approximate="tanh"),
             helper.make_node("QuantizeLinear", ["y", "", "zp"], ["q"], name="ql", axis=1),
             helper.make_node("FusedGemm", ["x", "w"], ["unused"], name="ms",
                              domain="com.microsoft", alpha=1.0)]
    q_out = onnx.ValueInfoProto(name="q")
    q_out.type.tensor_type.elem_type = onnx.TensorProto.INT8
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", 1, ["N", 4])],
                          [helper.make_tensor_value_info("y", 1, ["N", None]), q_out],
                          [numpy_helper.from_array(w, "w"), numpy_helper.from_array(zp, "zp")],
                          value_info=[helper.make_tensor_value_info("m", 1, ["N", 3])])
    ref = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21),
                                              helper.make_opsetid("com.microsoft", 1)],
                            ir_version=10, producer_name="edgert")
    return b.to_bytes(), ref


def test_model_matches_helper_byte_for_byte():
    mine_bytes, ref = _both_models()
    mine = onnx.load_from_string(mine_bytes)
    assert mine == ref
    assert mine_bytes == ref.SerializeToString()


def test_model_passes_checker_and_runs_in_ort():
    ort = pytest.importorskip("onnxruntime")
    b = P.ModelBuilder(name="g")
    b.input("x", "float32", [2, 4])
    b.output("y", "int8", [2, 4])
    b.initializer("s", np.array([[0.1, 0.2], [0.3, 0.4]], np.float32))
    b.initializer("z", np.array([[1, -1], [0, 2]], np.int8))
    b.node("QuantizeLinear", ["x", "s", "z"], ["y"], name="q", axis=1, block_size=2)
    data = b.to_bytes()
    onnx.checker.check_model(onnx.load_from_string(data), full_check=True)
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    y = ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    s = np.repeat(np.array([[0.1, 0.2], [0.3, 0.4]], np.float32), 2, axis=1)
    z = np.repeat(np.array([[1, -1], [0, 2]]), 2, axis=1)
    np.testing.assert_array_equal(y, np.clip(np.rint(x / s) + z, -128, 127).astype(np.int8))


_attr_values = st.one_of(
    st.integers(-2 ** 63, 2 ** 63 - 1),
    st.floats(width=32, allow_nan=False),
    st.text(max_size=20),
    st.lists(st.integers(-2 ** 63, 2 ** 63 - 1), min_size=1, max_size=8),
    st.lists(st.floats(width=32, allow_nan=False), min_size=1, max_size=8),
    st.lists(st.text(max_size=5), min_size=1, max_size=4),
)


@settings(max_examples=200, deadline=None)
@given(name=st.text(min_size=1, max_size=10), value=_attr_values)
def test_attribute_roundtrip_property(name, value):
    assert P.attribute_proto(name, value) == helper.make_attribute(name, value).SerializeToString()


@settings(max_examples=100, deadline=None)
@given(dtype=st.sampled_from(DTYPES), shape=st.lists(st.integers(0, 5), max_size=4),
       seed=st.integers(0, 1000))
def test_tensor_roundtrip_property(dtype, shape, seed):
    arr = _array(dtype, tuple(shape), seed)
    assert P.tensor_proto("w", arr) == numpy_helper.from_array(arr, "w").SerializeToString()


@settings(max_examples=100, deadline=None)
@given(dims=st.lists(st.one_of(st.none(), st.integers(0, 2 ** 40), st.text(min_size=1, max_size=4)),
                     max_size=5), dtype=st.sampled_from(DTYPES))
def test_value_info_property(dims, dtype):
    ref = helper.make_tensor_value_info("v", P.ONNX_DTYPE[dtype], dims)
    assert P.value_info_proto("v", dtype, dims) == ref.SerializeToString()


def test_external_tensor_and_untyped_value_info():
    t = onnx.TensorProto.FromString(P.external_tensor_proto("w", "int8", [3, 4], "mem/w"))
    assert t.data_location == onnx.TensorProto.EXTERNAL and list(t.dims) == [3, 4]
    assert t.data_type == onnx.TensorProto.INT8
    assert {e.key: e.value for e in t.external_data} == {"location": "mem/w"}
    v = onnx.ValueInfoProto.FromString(P.value_info_proto("v", None, None))
    assert v.name == "v" and not v.HasField("type")

"""int8 GEMM: edgert's exact int_matmul (blocked float32 BLAS) vs its anchor, numpy float32 matmul,
and onnxruntime MatMulInteger (u8 x s8) when installed.  Prints one table; not a unit test.

    python benchmarks/int8_gemm.py [--size 2048] [--repeat 5]
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from edgert.kernels.intgemm import PackedB, int_matmul


def best_s(fns: list, repeat: int) -> list[float]:
    """Best time of each fn; rounds interleave the kernels so load from other processes hits all."""
    for fn in fns:
        fn()                                # warm-up (BLAS threads, page faults)
    best = [float("inf")] * len(fns)
    for _ in range(repeat):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter_ns()
            fn()
            best[i] = min(best[i], (time.perf_counter_ns() - t0) * 1e-9)
    return best


def ort_matmulinteger(a_u8: np.ndarray, b_s8: np.ndarray):
    try:
        import onnx
        import onnxruntime as ort
        from onnx import TensorProto, helper
    except ImportError:
        return None
    m, k = a_u8.shape
    n = b_s8.shape[1]
    node = helper.make_node("MatMulInteger", ["a", "b"], ["y"])
    graph = helper.make_graph(
        [node], "mmi", [helper.make_tensor_value_info("a", TensorProto.UINT8, [m, k])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [m, n])],
        initializer=[onnx.numpy_helper.from_array(b_s8, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = min(model.ir_version, 10)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return lambda: sess.run(None, {"a": a_u8})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    s = args.size
    ops = 2 * s ** 3
    rng = np.random.default_rng(0)
    a = rng.integers(-128, 128, (s, s)).astype(np.int8)
    b = rng.integers(-127, 128, (s, s)).astype(np.int8)
    pb = PackedB(b)                        # weights converted once, as the ops do
    af, bf = a.astype(np.float32), b.astype(np.float32)

    check = int_matmul(a[:64], pb)
    assert np.array_equal(check, a[:64].astype(np.int64) @ b.astype(np.int64)), "int_matmul not exact"

    names = ["edgert int_matmul int8 (packed B)", "numpy float32 matmul (anchor)"]
    fns = [lambda: int_matmul(a, pb), lambda: af @ bf]
    ort_fn = ort_matmulinteger((a.astype(np.int16) + 128).astype(np.uint8), b)
    if ort_fn is not None:
        names.append("onnxruntime MatMulInteger u8xs8")
        fns.append(ort_fn)
    times = best_s(fns, args.repeat)
    t_f32 = times[1]
    rows = list(zip(names, times))

    print(f"{s}x{s}x{s}, best of {args.repeat}")
    print(f"{'kernel':40s} {'ms':>9s} {'GOP/s':>9s} {'vs f32':>7s}")
    for name, t in rows:
        print(f"{name:40s} {t * 1e3:9.1f} {ops / t / 1e9:9.1f} {t_f32 / t:7.2f}")


if __name__ == "__main__":
    main()

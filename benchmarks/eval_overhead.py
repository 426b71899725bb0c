"""Harness overhead of `edgert eval` (issue 4 target: <= 2 % of measured time at ~20 ms per image).

The submission is a plain ONNX conv net sized to take roughly 20 ms per 512x512 image on this
machine (random weights; accuracy is not the point).  Two figures, measured in the same run:

1. the harness's own per-image bookkeeping between timed regions (timers, records, energy lookup,
   overlays), as a fraction of the measured end-to-end time per image — the target; and, reported
   beside it, the scoring work every harness must do (label decode, confusion matrix, Dice);
2. the harness-measured `inference` timed region against the anchor: a bare loop calling
   onnxruntime's `session.run` on the same pre-processed inputs (timer and call overhead).

Usage: python benchmarks/eval_overhead.py [--images 32] [--channels 24]
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
import timeit
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def build_model(path: Path, channels: int, classes: int = 14, seed: int = 0) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)

    def w(name, *shape):
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.1).astype(np.float32), name)

    c = channels
    inits = [w("w1", c, 3, 3, 3), w("b1", c), w("w2", c, c, 3, 3), w("b2", c), w("w3", classes, c, 1, 1),
             w("b3", classes), numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], strides=[2, 2]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c2"], ["r2"]),
             helper.make_node("Conv", ["r2", "w3", "b3"], ["c3"]),
             helper.make_node("Resize", ["c3", "", "scales"], ["y"], mode="nearest")]
    graph = helper.make_graph(nodes, "bench", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                             [1, 3, "h", "w"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, classes, "h", "w"])],
                              inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8          # what onnxruntime 1.17+ loads
    onnx.save(model, path)


def bare_loop(model: Path, xs: list[np.ndarray], threads: int) -> np.ndarray:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(model), so, providers=["CPUExecutionProvider"])
    for x in xs[:5]:
        sess.run(None, {"x": x})
    out = []
    for x in xs:
        t0 = time.perf_counter_ns()
        sess.run(None, {"x": x})
        out.append(time.perf_counter_ns() - t0)
    return np.array(out) / 1e6


def confusion_vs_bincount(repeat: int = 30) -> tuple[float, float]:
    """Best-of ms for the harness's confusion matrix on a 512x512 map and for the anchor: the textbook
    np.bincount(label * C + pred) on int64 indices (what the LPCVC 2023 referee's numpy code does)."""
    from edgert.eval.metrics import confusion

    rng = np.random.default_rng(2)
    label = rng.integers(0, 14, (512, 512)).astype(np.uint8)
    pred = rng.integers(0, 14, (512, 512))              # int64, as np.argmax returns
    ours = min(timeit.repeat(lambda: confusion(pred, label, 14), number=1, repeat=repeat))
    anchor = min(timeit.repeat(lambda: np.bincount(label.astype(np.int64).ravel() * 14 + pred.ravel(),
                                                   minlength=196).reshape(14, 14), number=1, repeat=repeat))
    return ours * 1e3, anchor * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--channels", type=int, default=24, help="model width (sets the ms per image)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    from edgert.eval.dataset import open_dataset, read_image
    from edgert.eval.harness import evaluate
    from edgert.eval.submission import open_submission
    from edgert.eval.synthetic import write_synthetic_segmentation
    from edgert.eval.types import EvalOptions

    print(f"machine: {platform.machine()} {os.cpu_count()} cores, python {platform.python_version()}, "
          f"{args.threads} ORT threads")
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        t0 = time.perf_counter()
        data = write_synthetic_segmentation(root / "data", args.images, size=512, seed=3)
        gen_ms = (time.perf_counter() - t0) * 1000 / args.images
        model = root / "bench.onnx"
        build_model(model, args.channels)
        e2e = evaluate(model, data, EvalOptions(warmup=5, threads=args.threads, energy=False)).record
        inf = evaluate(model, data, EvalOptions(warmup=5, threads=args.threads, energy=False,
                                                timed_region="inference")).record
        ds = open_dataset(data)
        pred = open_submission(model, EvalOptions(threads=args.threads))
        xs = [pred.prepare(read_image(s.image)) for s in ds.samples]
        pred.close()
        bare = bare_loop(model, xs, args.threads)

    t = e2e["timing"]
    e2e_ms, over_ms, score_ms = t["mean_s"] * 1000, t["harness_overhead_ms_mean"], t["scoring_ms_mean"]
    inf_ms = inf["timing"]["mean_s"] * 1000
    print(f"{args.images} synthetic 512x512 images; end-to-end {e2e_ms:.2f} ms/image, inference region "
          f"{inf_ms:.2f} ms, bare session.run {bare.mean():.2f} ms")
    print()
    print("| what | measured | target | ratio |")
    print("|---|---|---|---|")
    print(f"| harness bookkeeping per image / end-to-end time | {over_ms:.3f} ms / "
          f"{e2e_ms:.2f} ms = {100 * over_ms / e2e_ms:.2f} % | <= 2 % | {over_ms / e2e_ms / 0.02:.3f}x of target |")
    print(f"| scoring per image (label decode + confusion + Dice) / end-to-end time | {score_ms:.3f} ms / "
          f"{e2e_ms:.2f} ms = {100 * score_ms / e2e_ms:.2f} % | - | - |")
    print(f"| harness `inference` region vs bare `session.run` loop (anchor) | {inf_ms:.2f} vs "
          f"{bare.mean():.2f} ms | - | {inf_ms / bare.mean():.3f}x |")
    ours_ms, anchor_ms = confusion_vs_bincount()
    print(f"| confusion matrix, 512x512, vs int64 np.bincount (anchor) | {ours_ms:.2f} vs {anchor_ms:.2f} ms | "
          f"- | {ours_ms / anchor_ms:.3f}x |")
    print(f"| synthetic 512x512 image + label, generated and written | {gen_ms:.1f} ms | <= 125 ms "
          f"(16 in 2 s) | {gen_ms / 125:.3f}x of target |")


if __name__ == "__main__":
    main()

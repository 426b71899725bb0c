#!/usr/bin/env python
"""Bits per weight against quality (issue 14 §4), one run: edgert's compression methods and their
combinations against ORT's `quantize_static`, on models whose quality is measured on inputs the
calibration never saw.

* PP-OCRv4 rec (1x3x48x320): decoded-string agreement with fp32 (CTC greedy decoding with the model's
  own dictionary), exact and with edge spaces ignored, and the character error rate between the two;
  calibration lines (seed --calib-seed) and two evaluation sets (--eval-seeds) rendered separately.
  Targets: >= 95% at W8A8, >= 90% at <= 5 bits/weight average.
* PP-OCRv4 det (1x3xSxS): probability-map mask IoU at 0.3 against fp32 on rendered pages.
  Target: IoU >= 0.90 at <= 0.45 MB.

Bits per weight = package (or ORT model) file bytes x 8 / the float model's Conv / MatMul / Gemm
weights: everything stored counts (scales, biases, graph), after the package's zstd.  Conversion time
is wall-clock on this machine, including the mixed-precision probes.

    python benchmarks/compression_pareto.py [--quick] [--models rec,det] [--json out.json] [--workdir DIR]
"""
from __future__ import annotations

import argparse
import sys
import time
import traceback
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent.parent), str(Path(__file__).resolve().parent)]

import numpy as np  # noqa: E402

import _common as C  # noqa: E402

REC_HW = (48, 320)
TARGETS = {"rec_w8a8_agree": 0.95, "rec_5bit_agree": 0.90, "det_iou": 0.90, "det_mb": 0.45}
THRESH = 0.3

# (label, convert options) per model; weight-only rows have abits None
REC_ROWS = [
    ("W8A8", dict(wbits=8, abits=8)),
    ("W8 weight-only", dict(wbits=8, abits=None)),
    ("W4 weight-only (dw/small at 8)", dict(wbits=4, abits=None)),
    ("mixed 6 bits/w, weight-only", dict(wbits=8, abits=None, avg_bits=6.0)),
    ("mixed 5 bits/w, weight-only", dict(wbits=8, abits=None, avg_bits=5.0)),
    ("mixed 4 bits/w, weight-only", dict(wbits=8, abits=None, avg_bits=4.0)),
    ("mixed 8.3 bits/w + A8", dict(wbits=8, abits=8, avg_bits=8.3)),
    ("mixed 6 bits/w + A8", dict(wbits=8, abits=8, avg_bits=6.0)),
    ("mixed 5 bits/w + A8", dict(wbits=8, abits=8, avg_bits=5.0)),
    ("W8A8 + qdrop", dict(wbits=8, abits=8, recon="qdrop")),
    ("W8A8 + qdrop-block (100 steps/block)", dict(wbits=8, abits=8, recon="qdrop-block", recon_iters=100,
                                                  recon_batches=32)),
    ("mixed 6 bits/w, weight-only, Hutchinson", dict(wbits=8, abits=None, avg_bits=6.0,
                                                     mixed_sensitivity="hutchinson")),
    ("mixed 5 bits/w, weight-only + brecq", dict(wbits=8, abits=None, avg_bits=5.0, recon="brecq", recon_iters=100,
                                                 recon_batches=32)),
    ("W8A8 + qllm", dict(wbits=8, abits=8, outlier="qllm")),
    ("W8A8 + noisyquant", dict(wbits=8, abits=8, outlier="noisyquant")),
    ("W8A8 + ptq4sam-bimodal", dict(wbits=8, abits=8, outlier="ptq4sam-bimodal")),
    ("W8A8, tokenclip observer", dict(wbits=8, abits=8, observer="tokenclip")),
]
DET_ROWS = [
    ("W8A8", dict(wbits=8, abits=8)),
    ("W4A8 (dw/small at 8)", dict(wbits=4, abits=8)),
    ("W4A8 + qdrop", dict(wbits=4, abits=8, recon="qdrop")),
    ("W3A8 (dw/small at 8)", dict(wbits=3, abits=8)),
    ("W3A8 + qdrop", dict(wbits=3, abits=8, recon="qdrop")),
    ("mixed 0.60 MB + A8", dict(wbits=8, abits=8, size_budget="0.60MB")),
    ("mixed 0.49 MB + A8 + qdrop", dict(wbits=8, abits=8, size_budget="0.49MB", recon="qdrop")),
    ("mixed 0.45 MB + A8", dict(wbits=8, abits=8, size_budget="0.45MB")),
    ("W3A8 + qdrop-block (320 crops, 100 steps/block)", dict(wbits=3, abits=8, recon="qdrop-block", recon_iters=100,
                                                             recon_crop=320, recon_batches=8)),
]


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: fewer lines / pages, fewer rows")
    ap.add_argument("--models", default="rec,det")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--calib-seed", type=int, default=4321)
    ap.add_argument("--eval-seeds", default="56789,97531")
    ap.add_argument("--calib-lines", type=int, default=None, help="default 32 (8 quick)")
    ap.add_argument("--eval-lines", type=int, default=None, help="per eval seed; default 120 (16 quick)")
    ap.add_argument("--det-size", type=int, default=640)
    ap.add_argument("--calib-pages", type=int, default=None, help="default 8 (4 quick)")
    ap.add_argument("--eval-pages", type=int, default=None, help="per eval seed; default 8 (2 quick)")
    ap.add_argument("--mixed-batches", type=int, default=None, help="probe batches; default 4 (rec), 2 (det)")
    ap.add_argument("--rows", default=None,
                    help="only the rows whose label contains one of these comma-separated parts (anchors always run)")
    ap.add_argument("--json")
    ap.add_argument("--workdir")
    args = ap.parse_args(argv)
    return C.fill_defaults(args, {"calib_lines": (32, 8), "eval_lines": (120, 16), "calib_pages": (8, 4),
                                  "eval_pages": (8, 2)})


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _pick(rows, parts: str | None):
    return [r for r in rows if parts is None or any(p in r[0] for p in parts.split(","))]


def weight_count(src: Path) -> int:
    """Conv / MatMul / Gemm weights of the float model (after import: Constant weights folded)."""
    from converters.onnx_import import import_onnx
    g = import_onnx(src)
    return sum(int(g.initializers[n.inputs[1]].size) for n in g.nodes
               if n.op in ("Conv", "ConvTranspose", "MatMul", "Gemm") and len(n.inputs) > 1
               and n.inputs[1] in g.initializers)


def contestants(src: Path, calib_feeds: list, rows, work: Path, stem: str, calib_dir: Path, pp, shape,
                mixed_batches: int, args) -> dict:
    """{name: (runner, file bytes, build seconds)}: ORT fp32, ORT's quantize_static int8 and one edgert
    package per row (a failed row is logged and left out, so it cannot lose the others)."""
    runners = {"ORT fp32": (C.OrtRunner(src, args.threads), src.stat().st_size, 0.0)}
    t0 = time.perf_counter()
    try:
        p = C.ort_quantize_static(src, work / f"{stem}.int8.onnx", calib_feeds, work)
        runners["ORT quantize_static int8 (QDQ per-channel)"] = (C.OrtRunner(p, args.threads), p.stat().st_size,
                                                                 time.perf_counter() - t0)
    except Exception:  # noqa: BLE001
        log(f"ORT quantize_static failed:\n{traceback.format_exc()}")
    for i, (label, kw) in enumerate(rows):
        path = work / f"{stem}.{i:02d}.pkg"
        log(f"{stem}: convert {label}")
        try:
            _, secs = C.edgert_convert(src, path, calib_dir=calib_dir, calib_count=len(calib_feeds), preprocess=pp,
                                       input_shapes={"x": shape}, mixed_batches=mixed_batches, progress=False, **kw)
            runners[f"edgert {label}"] = (C.EdgertRunner(path, "ort", args.threads), path.stat().st_size, secs)
        except Exception:  # noqa: BLE001
            log(f"{stem}: {label} failed:\n{traceback.format_exc()}")
    return runners


def rec_section(args, work) -> tuple[list, dict]:
    from edgert.ir import Preprocess
    from edgert.preprocess import preprocess_array

    src = C.model_path("rec")
    charset = C.rec_charset(src)
    pp = Preprocess(size=REC_HW, mean=(0.5,) * 3, std=(0.5,) * 3, channels="bgr")
    prep = lambda lines: [C.resize_pad_line(np.ascontiguousarray(i), *REC_HW) for i in lines]   # noqa: E731
    calib = prep(C.rendered_lines(args.calib_seed, args.calib_lines, REC_HW[0], REC_HW[1]))
    calib_dir = work / "rec_calib"
    calib_dir.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(calib):
        C.save_png(img, calib_dir / f"line_{i:04d}.png")
    evals = {s: [preprocess_array(i, pp) for i in prep(C.rendered_lines(s, args.eval_lines, REC_HW[0], REC_HW[1]))]
             for s in args.eval_seeds}
    n_w = weight_count(src)
    rows = _pick(REC_ROWS[:2] + REC_ROWS[4:5] if args.quick else REC_ROWS, args.rows)
    runners = contestants(src, [{"x": preprocess_array(i, pp)} for i in calib], rows, work, "rec", calib_dir, pp,
                          [1, 3, *REC_HW], args.mixed_batches or 4, args)
    ref = {s: [C.ctc_greedy_decode(runners["ORT fp32"][0]({"x": x})[0], charset) for x in xs] for s, xs in evals.items()}
    table, raw = [], {}
    for name, (run, size, secs) in runners.items():
        per = {}
        for s, xs in evals.items():
            txt = [C.ctc_greedy_decode(run({"x": x})[0], charset) for x in xs]
            chars = sum(max(1, len(r)) for r in ref[s])
            per[s] = {"agree": float(np.mean([a == b for a, b in zip(txt, ref[s])])),
                      "agree_stripped": float(np.mean([a.strip() == b.strip() for a, b in zip(txt, ref[s])])),
                      "cer": sum(C.edit_distance(a, b) for a, b in zip(txt, ref[s])) / chars}
        raw[name] = {"bytes": size, "bits_per_weight": 8 * size / n_w, "convert_s": secs, "eval": per}
        st = [per[s]["agree_stripped"] for s in evals]
        ex = [per[s]["agree"] for s in evals]
        table.append([name, f"{8 * size / n_w:.2f}", f"{C.mb(size):.2f}", " / ".join(f"{v:.1%}" for v in st),
                      " / ".join(f"{v:.1%}" for v in ex), f"{np.mean([per[s]['cer'] for s in evals]):.2%}",
                      f"{secs:.0f}"])
        log(f"rec {name}: {table[-1][1]} bits/w, stripped {table[-1][3]}")
    return table, raw


def det_section(args, work) -> tuple[list, dict]:
    from converters.synthetic import write_calibration_folder
    from edgert.ir import Preprocess
    from edgert.preprocess import preprocess_file

    src = C.model_path("det")
    size = (args.det_size, args.det_size)
    pp = Preprocess(size=size, mean=(0.5,) * 3, std=(0.5,) * 3, channels="bgr")
    calib_dir = work / "det_calib"
    calib_files = write_calibration_folder(calib_dir, args.calib_pages, seed=args.calib_seed, kind="page")
    evals = {s: [preprocess_file(p, pp) for p in write_calibration_folder(work / f"det_eval_{s}", args.eval_pages,
                                                                          seed=s, kind="page")]
             for s in args.eval_seeds}
    n_w = weight_count(src)
    rows = _pick(DET_ROWS[:2] + DET_ROWS[7:8] if args.quick else DET_ROWS, args.rows)
    runners = contestants(src, [{"x": preprocess_file(f, pp)} for f in calib_files], rows, work, "det", calib_dir, pp,
                          [1, 3, *size], args.mixed_batches or 2, args)
    ref = {s: [runners["ORT fp32"][0]({"x": x}) for x in xs] for s, xs in evals.items()}
    table, raw = [], {}
    for name, (run, nbytes, secs) in runners.items():
        per = {s: [C.mask_iou(run({"x": x}), r, THRESH) for x, r in zip(xs, ref[s])] for s, xs in evals.items()}
        means = [float(np.mean(v)) for v in per.values()]
        raw[name] = {"bytes": nbytes, "bits_per_weight": 8 * nbytes / n_w, "convert_s": secs, "iou": per}
        table.append([name, f"{8 * nbytes / n_w:.2f}", f"{C.mb(nbytes):.3f}", " / ".join(f"{m:.3f}" for m in means),
                      f"{min(min(v) for v in per.values()):.3f}", f"{secs:.0f}"])
        log(f"det {name}: {table[-1][2]} MB, IoU {table[-1][3]}")
    return table, raw


def main() -> int:
    args = parse_args()
    args.eval_seeds = [int(s) for s in args.eval_seeds.split(",")]
    work, cleanup = C.open_workdir(args.workdir, "edgert-pareto-")
    info = C.machine_info(args.threads)
    out = {"machine": info, "args": vars(args), "models": {}}
    print(f"# compression Pareto, {time.strftime('%Y-%m-%d')}\n{C.machine_line(info)}\n")
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if "rec" in models:
        table, raw = rec_section(args, work)
        out["models"]["rec"] = raw
        print(f"## PP-OCRv4 rec: {args.eval_lines} unseen lines per eval seed ({', '.join(map(str, args.eval_seeds))}), "
              f"{args.calib_lines} calibration lines\n")
        print(C.md_table(["model", "bits/weight", "MB", "agreement, edge spaces ignored", "exact", "CER vs fp32",
                          "convert s"], table))
    if "det" in models:
        table, raw = det_section(args, work)
        out["models"]["det"] = raw
        print(f"\n## PP-OCRv4 det at {args.det_size}x{args.det_size}: {args.eval_pages} unseen pages per eval seed, "
              f"{args.calib_pages} calibration pages\n")
        print(C.md_table(["model", "bits/weight", "MB", "mask IoU@0.3 per seed", "min page", "convert s"], table))
    if args.json:
        C.write_json(args.json, out)
    cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())

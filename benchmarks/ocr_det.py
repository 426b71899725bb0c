#!/usr/bin/env python
"""PP-OCRv4 text detection (1x3x640x640): edgert W8A8 / W4A8 against ORT fp32 and ORT int8, one run.

Everything compared is measured here, now, on this machine (STYLE.md rule 12):

* anchors: ORT on the original fp32 model (opset 12) and after `onnx.version_converter` to opset 17
  (the reference ratio - /work/shared/ANCHORS.md measures that one); ORT's own `quantize_static`
  int8 (QDQ, per-channel, MinMax, s8 activations = ORT's default; `--ort-u8` adds the u8-activation
  variant, which is the fast one on x86 without VNNI) calibrated on the same rendered pages;
* edgert: `converters.convert` W8A8 and W4A8 packages (BGR, mean = std = 0.5, 640x640) run on the
  `ort` backend, and the numpy oracle on the W8A8 package for a couple of iterations;
* latency: warm-up, then interleaved blocks (see `_common.time_interleaved`), p50 / p90, ratio to
  ORT fp32 (opset 17);
* size: source ONNX, ORT int8 model, package bytes (MB = 10^6 bytes);
* accuracy: probability-map mask IoU at 0.3 against ORT fp32 (original model) on rendered pages
  drawn with a different seed from the calibration pages.

    python benchmarks/ocr_det.py [--quick] [--json out.json] [--profile] [--workdir DIR]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from pathlib import Path


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 4 calibration pages, 2 eval pages, 6 timed iterations (< 2 min)")
    ap.add_argument("--json", metavar="PATH", help="write the raw numbers here")
    ap.add_argument("--threads", type=int, default=2, help="intra-op threads everywhere (default 2)")
    ap.add_argument("--model", help="PP-OCRv4 det ONNX (default: the one rapidocr-onnxruntime ships)")
    ap.add_argument("--calib-pages", type=int, default=None, help="default 16 (4 with --quick)")
    ap.add_argument("--eval-pages", type=int, default=None, help="default 8 (2 with --quick)")
    ap.add_argument("--rounds", type=int, default=None, help="timing rounds (default 8, 2 quick)")
    ap.add_argument("--block", type=int, default=None, help="timed runs per round (default 5, 3 quick)")
    ap.add_argument("--oracle-iters", type=int, default=None,
                    help="timed numpy-oracle runs (default 2, 1 quick; 0 skips the oracle)")
    ap.add_argument("--calib-seed", type=int, default=1234)
    ap.add_argument("--eval-seed", type=int, default=98765)
    ap.add_argument("--ort-u8", action="store_true",
                    help="also build ORT int8 with u8 activations (ORT's fast x86 path without VNNI)")
    ap.add_argument("--w4-dw8", action="store_true",
                    help="diagnostic: also a W4A8 package whose depthwise convs keep 8-bit weights")
    ap.add_argument("--profile", action="store_true",
                    help="ORT profiler: time per op type for fp32, ORT int8 and edgert W8A8/W4A8")
    ap.add_argument("--workdir", help="keep models, packages and images here (default: a temp dir)")
    args = ap.parse_args(argv)
    q = args.quick
    for name, full, quick in (("calib_pages", 16, 4), ("eval_pages", 8, 2), ("rounds", 8, 2),
                              ("block", 5, 3), ("oracle_iters", 2, 1)):
        if getattr(args, name) is None:
            setattr(args, name, quick if q else full)
    return args


ARGS = parse_args()
# BLAS threads of the numpy oracle follow --threads; must be set before numpy is imported.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, str(ARGS.threads))
REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(Path(__file__).resolve().parent)]

import numpy as np  # noqa: E402

import _common as C  # noqa: E402

THRESH = 0.3                       # PP-OCR DB post-processing `thresh` (rapidocr config.yaml Det.thresh)
SIZE = (640, 640)
TARGETS = {                        # the targets
    "w8a8_ratio": 0.70, "w4a8_ratio": 0.70,
    "w4a8_mb": 0.6, "w8a8_mb": 1.3,
    "w8a8_iou": 0.93, "w4a8_iou": 0.88,
}
ANCHOR_DOC = {"ort_int8_ratio": 0.74, "ort_int8_iou": 0.95, "ort_int8_mb": 1.55, "fp32_ms": 77.0}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def main() -> int:
    args = ARGS
    from converters.synthetic import write_calibration_folder
    from edgert.ir import Preprocess
    from edgert.preprocess import preprocess_file

    t_start = time.perf_counter()
    work, cleanup = C.open_workdir(args.workdir, "edgert-ocrdet-")
    res = C.run_record("benchmarks/ocr_det.py", args, TARGETS, anchor_doc=ANCHOR_DOC)
    machine = res["machine"]

    # ---- inputs: rendered pages, calibration and evaluation from different seeds
    src = C.model_path("det", args.model)
    pp = Preprocess(size=SIZE, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), channels="bgr")
    calib_dir, eval_dir = work / "calib_pages", work / "eval_pages"
    calib_files = write_calibration_folder(calib_dir, args.calib_pages, seed=args.calib_seed, kind="page")
    eval_files = write_calibration_folder(eval_dir, args.eval_pages, seed=args.eval_seed, kind="page")
    overlap = {C.sha256_file(p) for p in calib_files} & {C.sha256_file(p) for p in eval_files}
    if overlap:
        raise SystemExit("evaluation pages repeat calibration pages: pick another --eval-seed")
    calib_x = [preprocess_file(p, pp) for p in calib_files]     # the converter's own path (design.md)
    eval_x = [preprocess_file(p, pp) for p in eval_files]
    in_name = "x"
    log(f"{len(calib_x)} calibration pages (seed {args.calib_seed}), {len(eval_x)} eval pages "
        f"(seed {args.eval_seed}) in {work}")

    # ---- anchors
    models = {"ORT fp32 opset12": src}
    models["ORT fp32 opset17"] = C.convert_opset(src, work / "det.opset17.onnx", 17)
    variants = [("ORT int8 QDQ s8", "s8")] + ([("ORT int8 QDQ u8", "u8")] if args.ort_u8 else [])
    build_s: dict[str, float] = {}
    for name, act in variants:
        t0 = time.perf_counter()
        log(f"{name}: quant_pre_process + quantize_static on {len(calib_x)} pages")
        try:
            models[name] = C.ort_quantize_static(src, work / f"det.int8_{act}.onnx",
                                                 [{in_name: x} for x in calib_x], work, activations=act)
        except Exception as e:  # noqa: BLE001 - report and carry on with the other contestants
            res["errors"][name] = f"{type(e).__name__}: {e}"
            log(f"{name} failed: {e}")
        build_s[name] = time.perf_counter() - t0

    # ---- edgert packages
    pkgs: dict[str, Path] = {}
    convert_reports: dict[str, dict] = {}
    variants_e = [("W8A8", 8, {}), ("W4A8", 4, {})]
    if args.w4_dw8:
        variants_e.append(("W4A8-dw8", 4, {"layer_bits": {n: 8 for n in C.depthwise_convs(src)}}))
    for label, wbits, extra in variants_e:
        name = f"edgert {label} ort"
        log(f"edgert convert {label} (calibrating on {len(calib_x)} pages)")
        try:
            report, secs = C.edgert_convert(
                src, work / f"det.{label.lower()}.pkg", wbits=wbits, abits=8, calib_dir=calib_dir,
                calib_count=len(calib_files), preprocess=pp, input_shapes={in_name: [1, 3, *SIZE]},
                **extra)
            pkgs[label] = report.out_path
            build_s[name] = secs
            convert_reports[label] = report.to_json()
        except Exception as e:  # noqa: BLE001
            res["errors"][name] = f"{type(e).__name__}: {e}"
            log(f"convert {label} failed:\n{traceback.format_exc()}")

    runners: dict = {}
    for name, path in models.items():
        runners[name] = C.OrtRunner(path, args.threads)
    for label, pkg in pkgs.items():
        name = f"edgert {label} ort"
        try:
            runners[name] = C.EdgertRunner(pkg, "ort", args.threads)
        except Exception as e:  # noqa: BLE001
            res["errors"][name] = f"{type(e).__name__}: {e}"
            log(f"load {label} on ort failed: {e}")

    # ---- accuracy: mask IoU of every contestant against the fp32 original on the eval pages
    ref_name = "ORT fp32 opset12"
    outs = {name: [r({in_name: x}) for x in eval_x] for name, r in runners.items()}
    acc: dict[str, dict] = {}
    for name, maps in outs.items():
        ious = [C.mask_iou(m, ref, THRESH) for m, ref in zip(maps, outs[ref_name])]
        diff = [np.abs(m - ref) for m, ref in zip(maps, outs[ref_name])]
        acc[name] = {"iou_mean": float(np.mean(ious)), "iou_min": float(np.min(ious)),
                     "iou_per_page": ious, "max_abs_diff": float(max(d.max() for d in diff)),
                     "mean_abs_diff": float(np.mean([d.mean() for d in diff])),
                     "text_fraction": float(np.mean([(m > THRESH).mean() for m in maps]))}
    log("accuracy done")

    # ---- latency, interleaved, on the first eval page
    feed = {in_name: eval_x[0]}
    lat = C.time_interleaved({n: (lambda r=r: r(feed)) for n, r in runners.items()},
                             rounds=args.rounds, block=args.block)
    log("latency done")

    # ---- numpy oracle on the W8A8 package: a couple of iterations
    oracle = None
    if args.oracle_iters > 0 and "W8A8" in pkgs:
        try:
            orc = C.EdgertRunner(pkgs["W8A8"], "numpy", args.threads)
            first = {}
            t0 = time.perf_counter()
            first["out"] = orc(feed)               # doubles as the warm-up
            first_ms = (time.perf_counter() - t0) * 1e3
            ol = C.time_few(lambda: orc(feed), args.oracle_iters)
            o_out = first["out"]
            ort_w8 = outs.get("edgert W8A8 ort", [None])[0]
            oracle = {"latency": ol, "first_run_ms": first_ms,
                      "iou_vs_fp32": C.mask_iou(o_out, outs[ref_name][0], THRESH),
                      "iou_vs_edgert_ort": (C.mask_iou(o_out, ort_w8, THRESH)
                                            if ort_w8 is not None else None),
                      "max_abs_diff_vs_edgert_ort": (float(np.abs(o_out - ort_w8).max())
                                                     if ort_w8 is not None else None),
                      "mean_abs_diff_vs_edgert_ort": (float(np.abs(o_out - ort_w8).mean())
                                                      if ort_w8 is not None else None)}
            log(f"numpy oracle: {ol.p50_ms:.0f} ms")
        except Exception as e:  # noqa: BLE001
            res["errors"]["edgert W8A8 numpy"] = f"{type(e).__name__}: {e}"
            log(f"numpy oracle failed:\n{traceback.format_exc()}")

    # ---- optional: where the time goes, per op type
    profiles = {}
    if args.profile:
        makers = {n: C.ort_path_session(p) for n, p in models.items() if n != "ORT fp32 opset12"}
        makers.update({f"edgert {lb} ort": C.edgert_lowered_session(p) for lb, p in pkgs.items()})
        for n, mk in makers.items():
            try:
                profiles[n] = C.ort_op_profile(mk, feed, args.threads, 5 if args.quick else 10,
                                               work, tag=n.replace(" ", "_"))
            except Exception as e:  # noqa: BLE001
                res["errors"][f"profile {n}"] = f"{type(e).__name__}: {e}"

    machine["loadavg_end"] = os.getloadavg()
    sizes = {"source ONNX": src.stat().st_size}
    sizes.update({n: Path(p).stat().st_size for n, p in models.items() if n != "ORT fp32 opset12"})
    sizes.update({f"edgert {lb} ort": p.stat().st_size for lb, p in pkgs.items()})
    base = "ORT fp32 opset17"
    res.update(latency=lat, accuracy=acc, sizes_bytes=sizes, oracle=oracle, build_s=build_s,
               convert_reports=convert_reports, profiles=profiles,
               wall_s=time.perf_counter() - t_start)

    # ---- tables
    print(report_markdown(res, lat, acc, sizes, oracle, base, args))
    if args.json:
        C.write_json(args.json, res)
        log(f"raw numbers -> {args.json}")
    cleanup()
    return 0


def report_markdown(res, lat, acc, sizes, oracle, base, args) -> str:
    out = [f"## PP-OCRv4 det, 1×3×{SIZE[0]}×{SIZE[1]}, {args.threads} threads"
           + (" (--quick smoke run)" if args.quick else ""), "",
           C.machine_line(res["machine"]), "", C.load_note(res["machine"]), ""]
    extra = {}
    for n in lat:
        e = {"size MB": f"{C.mb(sizes.get(n, sizes['source ONNX'])):.3f}"}
        if n in acc:
            e["IoU@0.3 mean (min)"] = f"{acc[n]['iou_mean']:.4f} ({acc[n]['iou_min']:.4f})"
        extra[n] = e
    out += [f"### latency (interleaved, {args.rounds} rounds × {args.block}), size, accuracy vs "
            f"ORT fp32 on {args.eval_pages} unseen pages", "", C.latency_table(lat, base, extra), ""]
    if oracle:
        ol = oracle["latency"]
        out += [f"numpy oracle, edgert W8A8: p50 {ol.p50_ms:.0f} ms over {ol.n} run(s) "
                f"(first run {oracle['first_run_ms']:.0f} ms) = {ol.p50_ms / lat[base].p50_ms:.1f}× "
                f"ORT fp32; IoU vs fp32 {oracle['iou_vs_fp32']:.4f}, vs edgert-ort "
                f"{_f(oracle['iou_vs_edgert_ort'])}, |Δp| vs edgert-ort max "
                f"{_f(oracle['max_abs_diff_vs_edgert_ort'])} / mean "
                f"{_f(oracle['mean_abs_diff_vs_edgert_ort'])}", ""]

    def ratio(n):
        return lat[n].p50_ms / lat[base].p50_ms if n in lat else None

    def iou(n):
        return acc[n]["iou_mean"] if n in acc else None

    def size(n):
        return C.mb(sizes[n]) if n in sizes else None

    s8 = "ORT int8 QDQ s8"
    checks = [
        C.Check("edgert W8A8 ort p50 / ORT fp32", ratio("edgert W8A8 ort"), TARGETS["w8a8_ratio"], "<=", "{:.3f}", "×"),
        C.Check("edgert W4A8 ort p50 / ORT fp32", ratio("edgert W4A8 ort"), TARGETS["w4a8_ratio"], "<=", "{:.3f}", "×"),
        C.Check("edgert W8A8 package size", size("edgert W8A8 ort"), TARGETS["w8a8_mb"], "<=", "{:.3f}", " MB"),
        C.Check("edgert W4A8 package size", size("edgert W4A8 ort"), TARGETS["w4a8_mb"], "<=", "{:.3f}", " MB"),
        C.Check("edgert W8A8 mask IoU@0.3 vs fp32", iou("edgert W8A8 ort"), TARGETS["w8a8_iou"], ">=", "{:.4f}"),
        C.Check("edgert W4A8 mask IoU@0.3 vs fp32", iou("edgert W4A8 ort"), TARGETS["w4a8_iou"], ">=", "{:.4f}"),
        C.Check("ORT int8 (anchor) p50 / ORT fp32", ratio(s8), ANCHOR_DOC["ort_int8_ratio"], "<=", "{:.3f}", "×",
                "ANCHORS.md figure, AVX-512 VNNI machine"),
        C.Check("ORT int8 (anchor) mask IoU@0.3", iou(s8), ANCHOR_DOC["ort_int8_iou"], ">=", "{:.4f}",
                note="ANCHORS.md figure"),
    ]
    if "edgert W4A8-dw8 ort" in lat:
        checks += [
            C.Check("diagnostic: W4A8-dw8 mask IoU@0.3", iou("edgert W4A8-dw8 ort"), TARGETS["w4a8_iou"],
                    ">=", "{:.4f}", note="W4A8 with 8-bit depthwise convs"),
            C.Check("diagnostic: W4A8-dw8 package size", size("edgert W4A8-dw8 ort"), TARGETS["w4a8_mb"],
                    "<=", "{:.3f}", " MB")]
    for lb in ("W8A8", "W4A8"):
        n = f"edgert {lb} ort"
        if n in lat and s8 in lat:
            checks.append(C.Check(f"edgert {lb} ort p50 / ORT int8", lat[n].p50_ms / lat[s8].p50_ms,
                                  1.0, "<=", "{:.3f}", "×", "beat ORT's own int8"))
    out += ["### targets", "", C.checks_table(checks), ""]
    out += C.sqnr_lines(res.get("convert_reports", {}))
    if res["errors"]:
        out += ["### errors", ""] + [f"- {k}: {v}" for k, v in res["errors"].items()] + [""]
    if res.get("profiles"):
        out += ["### ORT profile: kernel ms per inference by op type", ""]
        for n, rows in res["profiles"].items():
            out.append(f"**{n}**: " + ", ".join(f"{r['op']} {r['ms']:.1f} ({r['share']:.0%})"
                                                 for r in rows))
        out.append("")
    out.append("build times (s): " + ", ".join(f"{k} {v:.1f}" for k, v in res["build_s"].items())
               + f"; whole run {res['wall_s']:.0f} s")
    return "\n".join(out)


def _f(x) -> str:
    return "n/a" if x is None else f"{x:.4f}"


if __name__ == "__main__":
    sys.exit(main())

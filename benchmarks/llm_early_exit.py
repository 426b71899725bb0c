#!/usr/bin/env python
"""Where to put the early-exit head (issue 12 §1, ProPD early pruning): for each candidate layer e,
distill (tap after layer e, the model's greedy next token) on one part of the pydoc text, train the
head for a fixed budget, and score it on a held-out part -- recall of the model's next token in the
head's top-1/3/5/10 -- beside what the early part of a split step costs (layers 0..e as a share of
the whole step, timed in the same process).  A layer is good when its top-k already holds the
model's token (so pruning by it rarely cuts a node that would have been accepted) while little of
the step has been spent (so a pruned node saves most of its cost).

    python benchmarks/llm_early_exit.py [--layers 4,8,12,16,20] [--minutes 2] [--source continue|corpus]
                                        [--threads 2] [--json out.json]
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

import llm_common as L  # noqa: E402


def pydoc_text() -> str:
    from pydoc_data.topics import topics
    return "\n\n".join(topics[k] for k in sorted(topics))


def split_cost(llm, m: int = 4, reps: int = 15, cache_len: int = 128) -> dict:
    """Median ms of the early part and of the whole split step for m nodes at a cache_len cache."""
    from edgert.llm.step import StepInput

    rng = np.random.default_rng(0)
    early, whole = [], []
    for _ in range(reps):
        llm.reset()
        llm.step.run(StepInput(rng.integers(1000, 40000, cache_len), logits_rows=np.array([cache_len - 1])))
        llm.cache.commit()
        t0 = time.perf_counter()
        st = llm.step.run_early(StepInput(rng.integers(1000, 40000, m), logits_rows=np.array([0])))
        t1 = time.perf_counter()
        llm.step.run_late(st)
        t2 = time.perf_counter()
        early.append(t1 - t0)
        whole.append(t2 - t0)
    return {"early_ms": 1000 * statistics.median(early), "step_ms": 1000 * statistics.median(whole)}


def main() -> int:
    from _common import machine_info

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--layers", default="3,6,9,12,15")
    ap.add_argument("--minutes", type=float, default=2.0, help="training budget per layer")
    ap.add_argument("--positions", type=int, default=16384)
    ap.add_argument("--source", choices=("continue", "corpus"), default="continue",
                    help="rows from the model's own continuations of text prompts, or teacher-forced text")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--gguf", default=None)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    from converters.gguf.convert import convert_gguf
    from converters.llm_heads import DistillOptions
    from converters.llm_heads.early import distill_early, recall_at
    from converters.llm_heads.train import TrainOptions, train_heads
    from edgert.llm.model import LlmOptions, load_llm

    text = pydoc_text()
    train_text, held_text = text[20000:220000], text[260000:300000]     # apart from each other
    info = machine_info(args.threads)
    res = {"machine": info, "source": args.source, "layers": {}}
    with tempfile.TemporaryDirectory() as d:
        pkg = Path(d) / "smol.pkg"
        convert_gguf(L.smollm2_gguf(args.gguf), pkg)
        for e in [int(x) for x in args.layers.split(",")]:
            llm = load_llm(pkg, LlmOptions(threads=args.threads, split_after=e, pad_attention=True))
            cost = split_cost(llm)
            tr = distill_early(llm, train_text, DistillOptions(n_heads=1, max_positions=args.positions,
                                                               source=args.source))
            ho = distill_early(llm, held_text, DistillOptions(n_heads=1, max_positions=4096, source=args.source))
            emb = llm.weights.matrix("token_embd")
            llm.close()
            params, rep = train_heads(tr, emb, TrainOptions(minutes=args.minutes, seed=0))
            import jax.numpy as jnp
            p = {"w": jnp.asarray(params["w"]), "b": jnp.asarray(params["b"])}
            rec = recall_at(p, emb, ho)
            base = recall_at({"w": jnp.zeros_like(p["w"]), "b": jnp.zeros_like(p["b"])}, emb, ho)
            res["layers"][e] = {"recall": rec, "recall_untrained": base, "train_rows": tr.n, "heldout_rows": ho.n,
                                "train_s": rep.seconds, "steps": rep.steps, **cost}
            print(f"layer {e}: recall {rec} (untrained {base}); early part {cost['early_ms']:.2f} of "
                  f"{cost['step_ms']:.2f} ms", file=sys.stderr, flush=True)
    print(f"# early-exit head placement, SmolLM2-135M Q4_1 ({info['cpu_model']}, {' '.join(info['simd'])}, "
          f"{args.threads} threads; {args.minutes:g} min training per layer; rows: {args.source}, "
          f"held-out part of the pydoc text)\n")
    print("| after layer | held-out recall top-1 / 3 / 5 / 10 | untrained (logit lens) top-10 | early part ms "
          "/ whole step ms (M=4) | share of the step a pruned node still costs |")
    print("|---|---|---|---|---|")
    for e, r in res["layers"].items():
        rc = r["recall"]
        print(f"| {e} | {rc[1]:.3f} / {rc[3]:.3f} / {rc[5]:.3f} / {rc[10]:.3f} | {r['recall_untrained'][10]:.3f} | "
              f"{r['early_ms']:.2f} / {r['step_ms']:.2f} | {r['early_ms'] / r['step_ms']:.0%} |")
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

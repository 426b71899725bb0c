#!/usr/bin/env python
"""Speculative decoding against plain decoding and llama.cpp, one run (issue 12 §4, the modes that
exist so far): greedy tok/s of llama.cpp plain, edgert plain and edgert `--speculate lookup` on the
golden prompt suite (prose, code, lists, Q&A, JSON, chat, input-grounded summarise / rewrite), 128 new
tokens each; mean accepted tokens per step, chosen draft sizes, and whether the speculative output is
token-identical to edgert's plain greedy output (it must be).

Every engine decodes with end-of-generation ignored, so each prompt gives exactly --new-tokens tokens
(the issue's "128 new tokens each"); tok/s counts new tokens after the first over the decode time.
llama.cpp runs in its own process (its OpenMP threads and ORT's must not share one); edgert's plain
and lookup runs alternate per prompt, so load drift hits both alike.  `tree` modes need draft heads
(`edgert train-heads`) and are added here when they exist.

    python benchmarks/llm_speculative.py [--threads 2] [--new-tokens 128] [--quick] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

import llm_common as L  # noqa: E402


def prompt_ids() -> list[dict]:
    golden = json.loads((L.GOLDEN_DIR / "smollm2_greedy.json").read_text())
    return [{"name": p["name"], "ids": p["prompt_ids"]} for p in golden["prompts"]]


def llama_child(model: str, prompts: list[dict], n_new: int, threads: int) -> dict:
    llm = L.open_llama(Path(model), n_ctx=512, threads=threads)
    out = {}
    for p in prompts:
        llm.reset()
        llm.eval(list(p["ids"]))
        tok = int(np.argmax(L.llama_last_logits(llm)))
        t0 = time.perf_counter()
        for _ in range(n_new - 1):
            llm.eval([tok])
            tok = int(np.argmax(L.llama_last_logits(llm)))
        out[p["name"]] = (n_new - 1) / (time.perf_counter() - t0)
    return out


def edgert_run(llm, ids: list[int], n_new: int, speculate: str) -> tuple[list[int], float, dict]:
    from edgert.llm.model import GenerateOptions

    got, times = [], []
    for t in llm.generate(ids, options=GenerateOptions(max_tokens=n_new, stop_at_eog=False),
                          speculate=speculate):
        if t.id >= 0:
            got.append(t.id)
            times.append(time.perf_counter())
    rate = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else float("nan")
    info = {}
    if llm.spec is not None:
        st = llm.spec.stats
        info = {"steps": st.steps, "mean_accepted": st.mean_accepted,
                "mean_tree_size": float(np.mean(st.tree_sizes)) if st.tree_sizes else 1.0}
    return got, rate, info


def main() -> int:
    from _common import machine_info

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--quick", action="store_true", help="6 prompts")
    ap.add_argument("--gguf", default=None)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        spec = json.loads(Path(args.child).read_text())
        print(json.dumps(llama_child(spec["model"], spec["prompts"], spec["n_new"], spec["threads"])))
        return 0

    from converters.gguf.convert import convert_gguf
    from edgert.llm.model import LlmOptions, load_llm

    gguf = L.smollm2_gguf(args.gguf)
    prompts = prompt_ids()[:6] if args.quick else prompt_ids()
    info = machine_info(args.threads)
    res: dict = {"machine": info, "new_tokens": args.new_tokens, "prompts": {}}
    with tempfile.TemporaryDirectory() as d:
        spec_path = Path(d) / "spec.json"
        spec_path.write_text(json.dumps({"model": str(gguf), "prompts": prompts, "n_new": args.new_tokens,
                                         "threads": args.threads}))
        llama = None
        if L.llama_cpp_version():
            r = subprocess.run([sys.executable, __file__, "--child", str(spec_path)], capture_output=True,
                               text=True, check=True)
            llama = json.loads(r.stdout.strip().splitlines()[-1])
        pkg = Path(d) / "smol.pkg"
        convert_gguf(gguf, pkg)
        llm = load_llm(pkg, LlmOptions(threads=args.threads, max_seq=1024, pad_attention=True))
        edgert_run(llm, prompts[0]["ids"], 16, "none")                   # warm-up
        for p in prompts:
            plain, r_plain, _ = edgert_run(llm, p["ids"], args.new_tokens, "none")
            spec, r_spec, st = edgert_run(llm, p["ids"], args.new_tokens, "lookup")
            res["prompts"][p["name"]] = {"llama_cpp": llama.get(p["name"]) if llama else None,
                                         "plain": r_plain, "lookup": r_spec, "identical": plain == spec, **st}
    rows = res["prompts"]

    def med(key):
        v = [r[key] for r in rows.values() if r.get(key)]
        return statistics.median(v) if v else float("nan")

    print(f"# speculative decoding, SmolLM2-135M Q4_1, {args.new_tokens} new tokens, greedy: "
          f"{info['cpu_model']}, {info['usable_cpus']} cpus, {' '.join(info['simd'])}, {args.threads} threads, "
          f"onnxruntime {info['onnxruntime']}, llama-cpp-python {L.llama_cpp_version() or 'not installed'}\n")
    print("| prompt | llama.cpp plain tok/s | edgert plain | edgert lookup | lookup / plain | lookup / llama.cpp "
          "| accepted per step | mean draft size | identical to plain |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        lc = r["llama_cpp"]
        print(f"| {name} | {lc or float('nan'):.1f} | {r['plain']:.1f} | {r['lookup']:.1f} | "
              f"{r['lookup'] / r['plain']:.2f}× | {(r['lookup'] / lc) if lc else float('nan'):.2f}× | "
              f"{r.get('mean_accepted', 0):.2f} | {r.get('mean_tree_size', 1):.2f} | {'yes' if r['identical'] else 'NO'} |")
    lc_med = med("llama_cpp")
    print(f"| **median** | {lc_med:.1f} | {med('plain'):.1f} | {med('lookup'):.1f} | "
          f"{statistics.median(r['lookup'] / r['plain'] for r in rows.values()):.2f}× | "
          f"{med('lookup') / lc_med:.2f}× | | | {sum(r['identical'] for r in rows.values())}/{len(rows)} |")
    print("\nstep time vs M (the cost curve the draft budget fits online): benchmarks/llm_step_curve.py")
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

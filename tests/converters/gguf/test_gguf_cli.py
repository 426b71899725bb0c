"""`edgert convert model.gguf`: the GGUF branch of the convert command."""
from __future__ import annotations

import json

from cli_helpers import assert_one_line_error, invoke

from edgert.llm.weights import read_llm


def test_lossless(tiny_gguf, tmp_path):
    out = tmp_path / "m.pkg"
    res = invoke("convert", tiny_gguf("Q4_1"), "-o", out, "--quiet")
    assert res.exit_code == 0, res.output
    assert "lossless" in res.output and "sha256" in res.output
    w = read_llm(out)
    assert w["blk.0.attn_q"].source_type == "Q4_1" and w.config.source["wbits"] is None
    res = invoke("inspect", out)
    assert res.exit_code == 0 and "blk.1.ffn_down" in res.output


def test_requantize_options_and_json(tiny_gguf, tmp_path):
    out = tmp_path / "m.pkg"
    res = invoke("convert", tiny_gguf("Q4_1"), "-o", out, "--wbits", "3", "--group-size", "64",
                 "--embed-bits", "8", "--compress", "zstd", "--json")
    assert res.exit_code == 0, res.output
    report = json.loads(res.output)
    assert report["options"]["wbits"] == 3 and report["size_bytes"] == out.stat().st_size
    assert {s["codec"] for s in report["sections"]} == {"zstd"}
    w = read_llm(out)
    assert (w["blk.0.attn_q"].bits, w["blk.0.attn_q"].block, w["token_embd"].bits) == (3, 64, 8)


def test_gguf_without_the_suffix_is_recognised(tiny_gguf, tmp_path):
    src = tmp_path / "model.bin"
    src.write_bytes(tiny_gguf("Q8_0").read_bytes())
    assert invoke("convert", src, "-o", tmp_path / "m.pkg", "--quiet").exit_code == 0


def test_errors_are_one_line(tiny_gguf, tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(tiny_gguf("Q4_1").read_bytes()[:1000])
    assert_one_line_error(invoke("convert", bad, "-o", tmp_path / "x.pkg"), "bad.gguf",
                          "not a valid GGUF file")
    bad.write_bytes(b"GGUX" + bytes(100))
    assert_one_line_error(invoke("convert", bad, "-o", tmp_path / "x.pkg"), "magic")
    assert_one_line_error(invoke("convert", tiny_gguf("Q6_K", hidden=256, ffn=512), "-o", tmp_path / "x.pkg"),
                          "Q6_K", "--wbits")
    assert_one_line_error(invoke("convert", tiny_gguf("Q4_1"), "-o", tmp_path / "x.pkg",
                                 "--calib-random", "4"), "--calib-random", "ONNX")
    assert_one_line_error(invoke("convert", tmp_path / "missing.gguf", "-o", tmp_path / "x.pkg"), "not found")
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    assert_one_line_error(invoke("convert", notes, "-o", tmp_path / "x.pkg", "--embed-bits", "4"),
                          "--embed-bits")
    assert not (tmp_path / "x.pkg").exists()

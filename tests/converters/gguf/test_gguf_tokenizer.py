"""converters/gguf/tokenizer.py: the `tokenizers` JSON built from GGUF metadata tokenizes as llama.cpp
does -- checked against llama.cpp itself (llama-cpp-python) when it is installed."""
from __future__ import annotations

import random

import pytest
from tokenizers import Tokenizer

from converters.gguf import read_gguf
from converters.gguf.tokenizer import PRE_TOKENIZERS, build_tokenizer

SAMPLES = ["Hello world", "123456", "  spaces\n\ntabs\t", "emoji 😀👍", "中文字符测试",
           "Hello <|im_start|>", "<|im_start|>user\nHi<|im_end|>\n", "don't I'll WE'RE",
           "a  b   c\n\n\nd", "", " ", "\n",
           "<tool_call>x</tool_call>", "<|endoftext|><|endoftext|>", "the world and 1 2 3"]


def encode(tok: Tokenizer, text: str, special: bool) -> list[int]:
    """llama_tokenize(text, add_special=False, parse_special=special)."""
    tok.encode_special_tokens = not special
    return tok.encode(text, add_special_tokens=False).ids


@pytest.fixture(scope="module")
def tiny(tiny_gguf):
    facts = build_tokenizer(read_gguf(tiny_gguf("Q4_1")))
    return facts, Tokenizer.from_str(facts.json)


def test_tiny_tokenizer(tiny):
    from tiny_gguf import tiny_vocab

    facts, tok = tiny
    tokens, _, _ = tiny_vocab()
    assert tok.get_vocab_size() == facts.vocab_size == len(tokens) == 300
    assert (facts.bos_id, facts.eos_id, facts.eog_ids, facts.add_bos) == (1, 2, [0, 2], False)
    hello = encode(tok, "Hello the world", True)
    assert [tokens[i] for i in hello] == ["Hello", "Ġthe", "Ġworld"]
    assert tok.decode(hello) == "Hello the world"
    # control tokens are split out only when special parsing is on ...
    assert encode(tok, "<|im_start|>he", True) == [1, tokens.index("he")]
    plain = encode(tok, "<|im_start|>he", False)
    assert 1 not in plain and tok.decode(plain) == "<|im_start|>he"
    # ... user-defined ones always (llama.cpp's tokenizer_st_partition)
    tool = tokens.index("<tool_call>")
    want = [tokens.index("a"), tool]
    assert encode(tok, "a<tool_call>", True) == encode(tok, "a<tool_call>", False) == want
    # digits are split one by one (smollm pre-tokenizer)
    assert [tokens[i] for i in encode(tok, "1234", True)] == ["1", "2", "3", "4"]


def test_known_pre_tokenizers_build(tiny_gguf):
    """Every pre-tokenizer in the table compiles (tokenizers' onig regex accepts llama.cpp's)."""
    from converters.gguf.tokenizer import _assemble
    from tiny_gguf import tiny_vocab

    tokens, types, merges = tiny_vocab()
    vocab = {t: i for i, t in enumerate(tokens)}
    pairs = [tuple(m.split(" ")) for m in merges]
    for name, pre in PRE_TOKENIZERS.items():
        tok = Tokenizer.from_str(_assemble(tokens, types, vocab, pairs, pre))
        assert tok.decode(tok.encode("Hello 123 world!\n").ids) == "Hello 123 world!\n", name


def llama_vocab(path):
    llama_cpp = pytest.importorskip("llama_cpp")
    return llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)


def random_texts(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    alphabet = list("abcXYZ019 \t\n\r'.,!?-_<|>()[]{}\"") + [
        "é", "ß", "中", "文", "😀", "\u00a0", "\u2003", "Ω", "١", "½", "<|im_start|>", "<|im_end|>",
        "'s", "'LL", "<|endoftext|>", "\u0301", "ｱ", " the", "Hello", "<tool_call>"]
    return SAMPLES + ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30))) for _ in range(n)]


def check_against_llama_cpp(tok: Tokenizer, llm, texts: list[str]) -> None:
    for text in texts:
        for special in (True, False):
            want = llm.tokenize(text.encode("utf-8"), add_bos=False, special=special)
            assert encode(tok, text, special) == want, (text, special)


def test_tiny_matches_llama_cpp(tiny, tiny_gguf):
    check_against_llama_cpp(tiny[1], llama_vocab(tiny_gguf("Q4_1")), random_texts(300, 1))


@pytest.mark.slow
def test_smollm2_matches_llama_cpp(smollm2_gguf):
    facts = build_tokenizer(read_gguf(smollm2_gguf))
    assert (facts.vocab_size, facts.bos_id, facts.eos_id, facts.eog_ids) == (49152, 1, 2, [0, 2])
    tok = Tokenizer.from_str(facts.json)
    assert encode(tok, "Hello <|im_start|>", True) == [19556, 216, 1]
    assert encode(tok, "Hello <|im_start|>", False) == [19556, 2067, 108, 306, 79, 3738, 108, 46]
    check_against_llama_cpp(tok, llama_vocab(smollm2_gguf), random_texts(1500, 0))

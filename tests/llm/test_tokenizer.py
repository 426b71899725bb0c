"""The package tokenizer: BOS handling, special-token parsing, decode, streaming UTF-8."""
from __future__ import annotations

import pytest

from edgert.errors import InputError, PackageError
from edgert.llm.tokenizer import StreamDecoder, Tokenizer
from pkg_builder import tiny_config

tokenizers = pytest.importorskip("tokenizers")

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]     # ids 0, 1, 2


@pytest.fixture(scope="module")
def tok_json() -> str:
    """A byte-level BPE (the GPT-2 / SmolLM2 kind) trained on a few sentences without any emoji."""
    from tokenizers import Tokenizer as HfTokenizer
    from tokenizers import decoders, models, pre_tokenizers, trainers

    tk = HfTokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tk.train_from_iterator(["hello world, the capital of France is Paris. " * 4, "héllo wörld 日本"], trainer)
    return tk.to_str()


def _tok(tok_json: str, **kw) -> Tokenizer:
    return Tokenizer(tok_json, tiny_config(vocab_size=320, bos_id=0, eos_id=0, eog_ids=[2], **kw))


def test_encode_decode_roundtrip(tok_json):
    t = _tok(tok_json)
    for text in ["hello world", "The capital of France is Paris.", "héllo 日本 😀 ok", ""]:
        assert t.decode(t.encode(text)) == text
    assert t.vocab_size == tokenizers.Tokenizer.from_str(tok_json).get_vocab_size() > 256


def test_bos(tok_json):
    plain = _tok(tok_json).encode("hello")
    assert plain[0] != 0
    assert _tok(tok_json).encode("hello", add_bos=True) == [0] + plain
    assert _tok(tok_json, add_bos=True).encode("hello") == [0] + plain
    assert _tok(tok_json, add_bos=True).encode("hello", add_bos=False) == plain
    t = Tokenizer(tok_json, tiny_config(vocab_size=320, bos_id=None))
    with pytest.raises(InputError, match="BOS"):
        t.encode("x", add_bos=True)


def test_special_tokens_are_text_unless_asked(tok_json):
    t = _tok(tok_json)
    text = "<|im_start|>user\nhi<|im_end|>"
    parsed = t.encode(text, special=True)
    assert parsed[0] == 1 and parsed[-1] == 2
    plain = t.encode(text)
    assert 1 not in plain and 2 not in plain and len(plain) > len(parsed)
    assert t.decode(plain) == text == t.decode(parsed)
    assert t.decode(parsed, skip_special=True) == "user\nhi"
    assert t.encode(text, special=True) == parsed          # the flag does not stick either way
    assert t.encode(text) == plain


def test_piece_eog_and_bad_ids(tok_json):
    t = _tok(tok_json)
    assert t.piece(2) == "<|im_end|>" and t.token_text(2) == "<|im_end|>"
    assert t.is_eog(2) and t.is_eog(0) and not t.is_eog(5)     # eos_id 0 counts too
    with pytest.raises(InputError, match="outside"):
        t.decode([320])
    with pytest.raises(InputError):
        t.piece(-1)


def test_stream_decoder_holds_split_characters(tok_json):
    t = _tok(tok_json)
    text = "hello 😀 world 日本!"
    ids = t.encode(text)
    emoji = t.encode("😀")
    assert len(emoji) == 4                                   # one byte per token: the split case
    assert all(t.piece(i) == "\ufffd" for i in emoji)
    s = StreamDecoder(t)
    outs = [s.push(i) for i in ids]
    assert "".join(outs) + s.flush() == text
    assert all("\ufffd" not in o for o in outs)
    start = ids.index(emoji[0])
    assert outs[start:start + 3] == ["", "", ""] and outs[start + 3] == "😀"


def test_stream_decoder_flush_and_invalid_bytes(tok_json):
    t = _tok(tok_json)
    emoji = t.encode("😀")
    s = t.stream()
    assert s.push(emoji[0]) == "" and s.push(emoji[1]) == ""
    assert s.flush() == "\ufffd" and s.flush() == ""          # an unfinished character, given up
    # lone continuation bytes never complete: released after MAX_UTF8_BYTES tokens, not held forever
    s = t.stream()
    outs = [s.push(emoji[3]) for _ in range(6)]
    assert "".join(outs) + s.flush() == t.decode([emoji[3]] * 6)
    assert sum(o != "" for o in outs) >= 1


def test_bad_json():
    with pytest.raises(PackageError, match="tokenizer"):
        Tokenizer("{not json", tiny_config())

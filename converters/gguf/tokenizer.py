"""GGUF tokenizer metadata -> a `tokenizers` (Hugging Face) Tokenizer JSON document.

Only byte-level BPE (`tokenizer.ggml.model == "gpt2"`) is converted.  The pieces follow llama.cpp
(src/llama-vocab.cpp):
  * vocabulary = tokenizer.ggml.tokens (id = index), merges = tokenizer.ggml.merges ("a b", split
    at the first space after the first character, as llm_tokenizer_bpe does);
  * pre-tokenizer = llama.cpp's regex list for tokenizer.ggml.pre (PRE_TOKENIZERS below), each
    regex a Split(..., "isolated") -- llama.cpp keeps both the matches and the text between them
    -- followed by the GPT-2 byte-to-unicode mapping (ByteLevel with use_regex=False);
  * BPE(byte_fallback=False, ignore_merges as llama.cpp sets it per pre type), ByteLevel decoder,
    no normalizer and no post-processor: whether to prepend BOS is LlmConfig.add_bos, done by the
    runtime;
  * token types (tokenizer.ggml.token_type, llama.cpp's llama_token_type): CONTROL (3) tokens are
    added tokens with special=True, USER_DEFINED (4) tokens added tokens with special=False.

Special tokens, as `tokenizers` 0.23 does them.  Every added token is matched in the raw text
before pre-tokenization, *unless* it is special and the Tokenizer's `encode_special_tokens`
property is True: then special tokens are encoded as ordinary text ("<|im_start|>" becomes
"<", "|", "im", "_", "start", ...) while non-special added tokens are still split out.  That is
exactly llama.cpp's `parse_special` switch (tokenizer_st_partition skips CONTROL and UNKNOWN tokens
when parse_special is false, but always splits out USER_DEFINED ones):
    llama_tokenize(text, parse_special=True)  == tok.encode(text, add_special_tokens=False)
                                                 with tok.encode_special_tokens = False (the default)
    llama_tokenize(text, parse_special=False) == the same with tok.encode_special_tokens = True
(`add_special_tokens` only controls the post-processor, of which there is none here.)  Checked
against llama.cpp itself (llama-cpp-python 0.3.36) on SmolLM2: "Hello <|im_start|>" is
[19556, 216, 1] with specials parsed and [19556, 2067, 108, 306, 79, 3738, 108, 46] as plain text,
and 6000 random strings agree both ways (tests/converters/gguf/test_gguf_tokenizer.py).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

from edgert.errors import ConversionError

# llama_token_type (llama.cpp include/llama.h)
TOKEN_NORMAL, TOKEN_UNKNOWN, TOKEN_CONTROL, TOKEN_USER_DEFINED, TOKEN_UNUSED, TOKEN_BYTE = 1, 2, 3, 4, 5, 6

# The GPT-2 split regex as llama.cpp writes it (no trailing `|\s+`: text between matches is kept
# as its own piece anyway).
GPT2_REGEX = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
LLAMA3_REGEX = (r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|"
                r"\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_REGEX = (r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|"
               r"\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


@dataclass(frozen=True)
class PreTokenizer:
    regexes: tuple[str, ...]           # applied in order, each splitting the pieces of the previous
    ignore_merges: bool = False        # llama.cpp: a word already in the vocabulary is one token


# tokenizer.ggml.pre -> how llama.cpp pre-tokenizes (llama_vocab::impl::load and the regex table of
# llm_tokenizer_bpe in src/llama-vocab.cpp).  Names llama.cpp maps to the same LLAMA_VOCAB_PRE_TYPE
# share an entry.
_STARCODER = PreTokenizer((r"\p{N}", GPT2_REGEX))
_GPT2 = PreTokenizer((GPT2_REGEX,))
_LLAMA3 = PreTokenizer((LLAMA3_REGEX,), ignore_merges=True)
_QWEN2 = PreTokenizer((QWEN2_REGEX,))
PRE_TOKENIZERS: dict[str, PreTokenizer] = {
    # LLAMA_VOCAB_PRE_TYPE_DEFAULT
    "default": PreTokenizer((r"[\p{P}\$\+<=>\^~\|]+", GPT2_REGEX, r"\p{N}+", r"[0-9][0-9][0-9]")),
    # LLAMA_VOCAB_PRE_TYPE_STARCODER / REFACT / COMMAND_R / SMOLLM / CODESHELL / EXAONE
    "smollm": _STARCODER, "starcoder": _STARCODER, "refact": _STARCODER, "command-r": _STARCODER,
    "codeshell": _STARCODER, "exaone": _STARCODER,
    # LLAMA_VOCAB_PRE_TYPE_GPT2 / MPT / OLMO / JAIS
    "gpt-2": _GPT2, "phi-2": _GPT2, "jina-es": _GPT2, "jina-de": _GPT2, "jina-v2-es": _GPT2,
    "jina-v2-de": _GPT2, "gigachat": _GPT2, "mpt": _GPT2, "olmo": _GPT2, "jais": _GPT2,
    # LLAMA_VOCAB_PRE_TYPE_LLAMA3 / DBRX / SMAUG
    "llama3": _LLAMA3, "llama-v3": _LLAMA3, "llama-bpe": _LLAMA3, "falcon3": _LLAMA3, "pixtral": _LLAMA3,
    "dbrx": PreTokenizer((LLAMA3_REGEX,)), "smaug-bpe": PreTokenizer((LLAMA3_REGEX,)),
    # LLAMA_VOCAB_PRE_TYPE_QWEN2 / STABLELM2
    "qwen2": _QWEN2, "deepseek-r1-qwen": _QWEN2, "stablelm2": _QWEN2,
}

# Tokens that end generation when present, besides EOS (llama.cpp marks these EOG by name).
EOG_NAMES = ("<|endoftext|>", "<|im_end|>", "<|eot_id|>", "<|eom_id|>", "<end_of_turn>", "<|end|>",
             "<|end_of_text|>")


@dataclass
class TokenizerFacts:
    json: str                          # tokenizers.Tokenizer JSON
    vocab_size: int
    bos_id: int | None = None
    eos_id: int | None = None
    eog_ids: list[int] = field(default_factory=list)
    add_bos: bool = False


def build_tokenizer(g) -> TokenizerFacts:
    """Tokenizer JSON and special ids from a GgufFile's tokenizer.ggml.* metadata."""
    model = g.get_str("tokenizer.ggml.model")
    if model != "gpt2":
        raise ConversionError(f"{g.path}: tokenizer model {model!r} is not supported (known: gpt2, the "
                              "byte-level BPE)")
    pre_name = g.get_str("tokenizer.ggml.pre", "default")
    pre = PRE_TOKENIZERS.get(pre_name)
    if pre is None:
        raise ConversionError(f"{g.path}: pre-tokenizer {pre_name!r} is not supported (known: "
                              f"{', '.join(sorted(PRE_TOKENIZERS))})")
    tokens = g.get_str_list("tokenizer.ggml.tokens")
    n = len(tokens)
    if n == 0:
        raise ConversionError(f"{g.path}: tokenizer.ggml.tokens is empty")
    types = g.get_int_array("tokenizer.ggml.token_type")
    if types is not None and len(types) != n:
        raise ConversionError(f"{g.path}: tokenizer.ggml.token_type has {len(types)} entries for {n} tokens")
    merges = _merges(g, tokens)
    vocab = {t: i for i, t in enumerate(tokens)}        # a repeated token keeps its last id, as in llama.cpp

    try:
        tok = _assemble(tokens, types, vocab, merges, pre)
    except ConversionError as e:
        raise ConversionError(f"{g.path}: {e}") from None
    except Exception as e:              # tokenizers (Rust) raises untyped exceptions
        first = (str(e).splitlines() or [type(e).__name__])[0]
        raise ConversionError(f"{g.path}: cannot build the tokenizer: {first}") from None

    def token_id(key: str) -> int | None:
        v = g.get_int(key, -1)
        if v == -1:
            return None
        if not 0 <= v < n:
            raise ConversionError(f"{g.path}: {key} = {v} is not a token id below {n}")
        return v

    bos, eos = token_id("tokenizer.ggml.bos_token_id"), token_id("tokenizer.ggml.eos_token_id")
    eog = ([eos] if eos is not None else []) + [vocab[t] for t in EOG_NAMES if t in vocab]
    eog = sorted(set(eog))
    return TokenizerFacts(json=tok, vocab_size=n, bos_id=bos, eos_id=eos, eog_ids=eog,
                          add_bos=g.get_bool("tokenizer.ggml.add_bos_token", False))


def _assemble(tokens: list[str], types, vocab: dict[str, int], merges: list[tuple[str, str]],
              pre: PreTokenizer) -> str:
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers

    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, byte_fallback=False,
                               ignore_merges=pre.ignore_merges))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(r), behavior="isolated") for r in pre.regexes]
        + [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    if types is not None:
        added = [AddedToken(tokens[i], special=int(types[i]) == TOKEN_CONTROL, normalized=False)
                 for i in range(len(tokens))
                 if int(types[i]) in (TOKEN_CONTROL, TOKEN_USER_DEFINED) and tokens[i]]
        tok.add_tokens(added)
        for a in added:
            if tok.token_to_id(a.content) != vocab[a.content]:
                raise ConversionError(f"added token {a.content!r} did not keep its id {vocab[a.content]}")
    return tok.to_str()


def _merges(g, tokens: list[str]) -> list[tuple[str, str]]:
    raw = g.get_str_list("tokenizer.ggml.merges") if "tokenizer.ggml.merges" in g.metadata else []
    vocab = set(tokens)
    out = []
    for i, m in enumerate(raw):
        pos = m.find(" ", 1)            # llm_tokenizer_bpe: word.find(' ', 1)
        if pos < 0:
            raise ConversionError(f"{g.path}: tokenizer.ggml.merges[{i}] = {json.dumps(m)[:60]} is not "
                                  "'a b'")
        a, b = m[:pos], m[pos + 1:]
        if a not in vocab or b not in vocab or a + b not in vocab:
            raise ConversionError(f"{g.path}: tokenizer.ggml.merges[{i}] = {json.dumps(m)[:60]} names "
                                  "tokens missing from the vocabulary")
        out.append((a, b))
    return out

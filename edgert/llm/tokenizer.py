"""The tokenizer of an LLM package: a `tokenizers` JSON document plus the config's BOS / EOS facts.

`tokenizers` is imported when a Tokenizer is built, not with edgert.  Encoding never lets the JSON's
post-processor add tokens (add_special_tokens=False); BOS is prepended here, from the config, the
way llama.cpp does (tokenizer.ggml.add_bos_token).  By default special-token text in the input is
plain text (llama.cpp's parse_special=False), so a user cannot inject `<|im_end|>` into a prompt.
"""
from __future__ import annotations

from typing import Iterable

from edgert.errors import BackendUnavailable, InputError, PackageError
from edgert.llm.config import LlmConfig

REPLACEMENT = "\ufffd"          # what a decoder writes for an incomplete UTF-8 sequence
MAX_UTF8_BYTES = 4              # longest UTF-8 sequence (RFC 3629): one character, at most 4 byte tokens


def _tokenizers():
    try:
        import tokenizers
    except ImportError as e:
        raise BackendUnavailable("the LLM tokenizer needs the tokenizers package: pip install tokenizers") from e
    return tokenizers


def _guarded(what: str, fn, *args, **kwargs):
    """Call into the Rust library.  A hostile tokenizer document can make it panic, and pyo3 turns a
    panic into PanicException, a BaseException: only interpreter exits pass through."""
    try:
        return fn(*args, **kwargs)
    except (KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except BaseException as e:   # noqa: BLE001 -- Exception for malformed JSON, PanicException for panics
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise PackageError(f"tokenizer section: {what} failed: {msg}") from e


class Tokenizer:
    def __init__(self, tokenizer_json: str, config: LlmConfig):
        tk = _tokenizers()
        self._tk = _guarded("loading", tk.Tokenizer.from_str, tokenizer_json)
        self.config = config
        self.bos_id, self.eos_id = config.bos_id, config.eos_id
        self.eog_ids = frozenset(config.eog_ids) | ({config.eos_id} if config.eos_id is not None else set())
        self.vocab_size = _guarded("reading the vocabulary", self._tk.get_vocab_size, with_added_tokens=True)
        if self.vocab_size > config.vocab_size:    # the model may pad its vocabulary, never the reverse
            raise PackageError(f"tokenizer section has {self.vocab_size} tokens, the model only {config.vocab_size}")

    def encode(self, text: str, *, add_bos: bool | None = None, special: bool = False) -> list[int]:
        """Token ids of `text`; special=True parses special-token text (`<|im_start|>`) as those
        tokens (chat templates need that); add_bos None = the config's add_bos."""
        if not isinstance(text, str):
            raise InputError(f"text to encode must be a str, got {type(text).__name__}")
        # encode_special_tokens=True means "split special-token text like ordinary text"
        self._tk.encode_special_tokens = not special
        ids = _guarded("encoding", self._tk.encode, text, add_special_tokens=False).ids
        if self.config.add_bos if add_bos is None else add_bos:
            if self.bos_id is None:
                raise InputError("add_bos asked for, but the model has no BOS token")
            ids = [self.bos_id] + ids
        return ids

    def _check(self, ids: Iterable[int]) -> list[int]:
        ids = [int(i) for i in ids]
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise InputError(f"token ids {bad[:4]} are outside the tokenizer's 0..{self.vocab_size - 1}")
        return ids

    def decode(self, ids: Iterable[int], skip_special: bool = False) -> str:
        return _guarded("decoding", self._tk.decode, self._check(ids), skip_special_tokens=skip_special)

    def piece(self, id: int) -> str:
        """The text of one token (a lone part of a multi-byte character shows as U+FFFD)."""
        return self.decode([id])

    def token_text(self, id: int) -> str:
        """The vocabulary entry itself (byte-level form, e.g. 'Ġthe'; '<|im_end|>' for specials)."""
        return _guarded("id_to_token", self._tk.id_to_token, self._check([id])[0]) or ""

    def is_eog(self, id: int) -> bool:
        return int(id) in self.eog_ids

    def stream(self, skip_special: bool = False) -> "StreamDecoder":
        return StreamDecoder(self, skip_special)


class StreamDecoder:
    """Turns generated ids into text as it becomes complete.

    Byte-level BPE can split one UTF-8 character over several tokens; a decode that ends in U+FFFD
    is held back until the character completes (or MAX_UTF8_BYTES tokens show it never will).  Only
    a short window is decoded each time: the text of ids[prefix:] minus that of ids[prefix:read],
    so decoders that treat a sequence's first token specially still produce the right suffix."""

    def __init__(self, tokenizer: Tokenizer, skip_special: bool = False):
        self.tokenizer, self.skip_special = tokenizer, skip_special
        self.ids: list[int] = []
        self._prefix = 0      # window start: decoded for context only
        self._read = 0        # everything before this has been emitted

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, self.skip_special)

    def push(self, id: int) -> str:
        """Add one id; returns the newly completed text ('' while a character is incomplete)."""
        self.ids.append(int(id))
        done = self._decode(self.ids[self._prefix:self._read])
        text = self._decode(self.ids[self._prefix:])
        if text.endswith(REPLACEMENT) and len(self.ids) - self._read < MAX_UTF8_BYTES:
            return ""
        new = text[len(done):]
        self._prefix, self._read = self._read, len(self.ids)
        return new

    def flush(self) -> str:
        """Whatever is held back (an incomplete character decodes as U+FFFD)."""
        if self._read == len(self.ids):
            return ""
        done = self._decode(self.ids[self._prefix:self._read])
        text = self._decode(self.ids[self._prefix:])
        self._prefix = self._read = len(self.ids)
        return text[len(done):]

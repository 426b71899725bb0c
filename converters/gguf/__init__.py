"""GGUF (llama.cpp) -> edgert LLM package: a validating reader, lossless block repacks and a
requantizer, the tokenizer, and `convert_gguf`.  Needs the `gguf` and `tokenizers` packages
(`pip install edgert[llm]`); nothing under edgert/ imports this."""
from __future__ import annotations

from converters.gguf.convert import GgufConvertOptions, convert_gguf
from converters.gguf.reader import GgufFile, GgufTensor, read_gguf

__all__ = ["GgufConvertOptions", "GgufFile", "GgufTensor", "convert_gguf", "read_gguf"]

"""LLM decoding: GGUF-converted packages, a KV-cache decoder step (ORT and the numpy oracle),
tokenizer, chat template, sampling.  Nothing heavy is imported here: onnxruntime loads with the ORT
step, `tokenizers` with the tokenizer, jinja2 with the chat template."""
from __future__ import annotations


def load_llm(path, options=None, **kwargs):
    """Load an LLM package; see edgert.llm.model.Llm and LlmOptions."""
    from edgert.llm.model import load_llm as _load
    return _load(path, options, **kwargs)


__all__ = ["load_llm"]

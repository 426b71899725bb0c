"""Small real packages for the agent tests (the graph lives in tests/tiny_pkg.py)."""
from __future__ import annotations

from pathlib import Path

import pytest

from tiny_pkg import write_tiny_package


@pytest.fixture()
def make_pkg(tmp_path):
    """make_pkg(name, seed=0, preprocess=True, signing_key=None) -> path of a fresh package."""
    out_dir = tmp_path / "built"
    out_dir.mkdir()

    def make(name: str = "m", seed: int = 0, preprocess: bool = True,
             signing_key: bytes | None = None) -> Path:
        return write_tiny_package(out_dir / f"{name}.pkg", seed, preprocess, signing_key)

    return make

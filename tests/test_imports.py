"""`import edgert` must stay cheap: a Pi with numpy (+ onnxruntime) imports it and runs a package."""
from __future__ import annotations

import subprocess
import sys

HEAVY = {"onnx", "onnxruntime", "converters", "PIL", "cv2", "cryptography", "zstandard", "torch",
         "paho", "tqdm", "rich", "click"}


def _imported_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys\n"
                          "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))"],
                         capture_output=True, text=True, check=True).stdout
    return set(out.split())


def test_import_edgert_is_cheap():
    assert not (_imported_after("import edgert") & HEAVY)


def test_numpy_runtime_does_not_import_converter_code():
    mods = _imported_after("import edgert.runtime, edgert.backends.numpy_ref, edgert.package")
    assert not (mods & (HEAVY - {"zstandard"}))


def test_devices_imports_are_cheap():
    """`import devices` and every sensor module: no psutil, smbus2 or numpy at import time."""
    mods = _imported_after("import devices, devices.meter, devices.thermal, devices.sensors\n"
                           "devices.sensors.sensor_names()")      # imports every sensor module
    assert not (mods & {"psutil", "smbus2", "numpy", "onnx", "onnxruntime"})


def test_llm_runtime_needs_no_converter_side_deps(tmp_path):
    """Loading an LLM package and generating on ORT: numpy + onnxruntime + tokenizers only (no gguf,
    onnx, jinja2 unless a chat template is rendered, no torch / jax, no converter code)."""
    import pytest
    pytest.importorskip("gguf.constants")
    pytest.importorskip("tokenizers")
    from converters.gguf.convert import convert_gguf
    from tests.llm.tiny_gguf import write_tiny_llama_gguf

    pkg = tmp_path / "tiny.pkg"
    convert_gguf(write_tiny_llama_gguf(tmp_path / "tiny.gguf"), pkg)
    mods = _imported_after(f"import edgert\nllm = edgert.load_llm({str(pkg)!r})\n"
                           "list(llm.generate('hello', 4))")
    assert "onnxruntime" in mods and "tokenizers" in mods
    assert not (mods & {"gguf", "onnx", "jinja2", "torch", "jax", "converters", "llama_cpp"})


def test_bev_runtime_and_scheduler_imports_are_light():
    """The rig, recordings, frame sources and the scheduler: no jax, no training code, no converter,
    no OpenCV or matplotlib until a world is rendered or a report drawn."""
    mods = _imported_after("import edgert.bev.rig, edgert.bev.recording, edgert.bev.schema, edgert.sources\n"
                           "import scheduler.session, scheduler.metrics, scheduler.sim_stages")
    assert not (mods & (HEAVY | {"jax", "zoo", "matplotlib", "optax"}))

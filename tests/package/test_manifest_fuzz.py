"""Structure-aware fuzzing of packages whose hashes are valid (issue: fail closed on hostile
manifests).  Each case mutates one to three manifest values of a real W6 package (the PP-OCR
direction classifier) or of a small hand-built one, rebuilds the file with valid hashes, loads it on
the numpy oracle and on ONNX Runtime and runs one inference: the only acceptable outcomes are
success and an EdgertError raised by a check (not by a safety net).  benchmarks/fuzz_packages.py
runs the same harness for tens of thousands of cases in isolated workers."""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzz_manifest import DrawChooser, Target, build_cls_seed, build_tiny_seed, default_dims_of

BACKENDS = ("numpy", "ort")
CASES = settings(max_examples=120, deadline=None, derandomize=False,
                 suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture(scope="module")
def targets(tmp_path_factory, rapidocr_models) -> dict[str, Target]:
    d = tmp_path_factory.mktemp("seeds")
    cls, tiny = build_cls_seed(d), build_tiny_seed(d)
    return {"cls": Target("cls", cls.read_bytes(), default_dims_of(cls)),
            "tiny": Target("tiny", tiny.read_bytes(), default_dims_of(tiny)),
            "cls-bytes": Target("cls-bytes", cls.read_bytes(), default_dims_of(cls), mode="bytes")}


def _exercise(target: Target, data, tmp_path) -> None:
    mutant, changes = target.mutant(DrawChooser(data))
    p = tmp_path / "m.pkg"
    p.write_bytes(mutant)
    for o in target.exercise(p, BACKENDS):
        assert not o.bad, f"{target.name} mutant {changes}: {o.backend} -> {o.kind}: {o.message}\n{o.trace}"


def test_seeds_run_unmutated(targets, tmp_path):
    for t in targets.values():
        p = tmp_path / f"{t.name}.pkg"
        p.write_bytes(t.seed)
        assert [o.kind for o in t.exercise(p, BACKENDS)] == ["ok", "ok"]


@pytest.mark.slow
@CASES
@given(data=st.data())
def test_cls_manifest_mutants_fail_closed(targets, tmp_path, data):
    _exercise(targets["cls"], data, tmp_path)


@settings(CASES, max_examples=100)
@given(data=st.data())
def test_tiny_manifest_mutants_fail_closed(targets, tmp_path, data):
    _exercise(targets["tiny"], data, tmp_path)


@pytest.mark.slow
@settings(CASES, max_examples=60, print_blob=False)
@given(data=st.data())
def test_cls_byte_mutants_fail_closed(targets, tmp_path, data):
    _exercise(targets["cls-bytes"], data, tmp_path)


@pytest.fixture(scope="module")
def ocr_target(tmp_path_factory, det_model, cls_model, rec_model) -> Target:
    """A small W8A8 OCR bundle: its `ocr/config` and `ocr/keys` sections are fuzzed by structure."""
    from converters.ocr_bundle import OcrConvertOptions, convert_ocr
    from converters.synthetic import write_calibration_folder
    from fuzz_manifest import run_ocr_case

    d = tmp_path_factory.mktemp("ocr-seed")
    write_calibration_folder(d / "calib", 2, seed=77, kind="page")
    out = d / "ocr.pkg"
    convert_ocr(det_model, cls_model, rec_model, out,
                OcrConvertOptions(wbits=8, abits=8, calib_dir=d / "calib", det_calib_side=320,
                                  max_calib_lines=12, sqnr_batches=0, progress=False))
    return Target("ocr-sections", out.read_bytes(), {}, mode="ocr-sections", run=run_ocr_case)


@pytest.mark.slow
@settings(CASES, max_examples=25)
@given(data=st.data())
def test_ocr_section_mutants_fail_closed(ocr_target, tmp_path, data):
    _exercise(ocr_target, data, tmp_path)


@pytest.fixture(scope="module")
def llm_target(tmp_path_factory) -> Target:
    """A tiny GGUF-converted llama: manifest (llm record), tokenizer JSON and chat template fuzzed."""
    pytest.importorskip("tokenizers")
    pytest.importorskip("jinja2")
    pytest.importorskip("gguf.constants")
    from fuzz_manifest import build_llm_seed, run_llm_case

    out = build_llm_seed(tmp_path_factory.mktemp("llm-seed"))
    return Target("llm", out.read_bytes(), {}, mode="llm", run=run_llm_case)


@settings(CASES, max_examples=60, print_blob=False)
@given(data=st.data())
def test_llm_package_mutants_fail_closed(llm_target, tmp_path, data):
    _exercise(llm_target, data, tmp_path)

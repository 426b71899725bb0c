from __future__ import annotations

from pathlib import Path

import pytest


def _rapidocr_models() -> Path | None:
    try:
        import rapidocr_onnxruntime
    except ImportError:
        return None
    return Path(rapidocr_onnxruntime.__file__).parent / "models"


@pytest.fixture(scope="session")
def rapidocr_models() -> Path:
    d = _rapidocr_models()
    if d is None or not d.is_dir():
        pytest.skip("rapidocr-onnxruntime (the real OCR models) is not installed")
    return d


@pytest.fixture(scope="session")
def det_model(rapidocr_models) -> Path:
    return rapidocr_models / "ch_PP-OCRv4_det_infer.onnx"


@pytest.fixture(scope="session")
def rec_model(rapidocr_models) -> Path:
    return rapidocr_models / "ch_PP-OCRv4_rec_infer.onnx"


@pytest.fixture(scope="session")
def cls_model(rapidocr_models) -> Path:
    return rapidocr_models / "ch_ppocr_mobile_v2.0_cls_infer.onnx"

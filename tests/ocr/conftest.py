"""Shared fixtures of the OCR bundle tests: one W8A8 bundle of the real PP-OCR models per session,
calibrated on 4 rendered pages, and RapidOCR's own results on the evaluation pages."""
from __future__ import annotations

from pathlib import Path

import pytest

EVAL_SEEDS = (100, 101, 102, 103)


@pytest.fixture(scope="session")
def ocr_bundle(tmp_path_factory, det_model, cls_model, rec_model) -> Path:
    from PIL import Image

    from converters.ocr_bundle import OcrConvertOptions, convert_ocr
    from ocr_pages import render_page

    work = tmp_path_factory.mktemp("ocr_bundle")
    calib = work / "pages"
    calib.mkdir()
    for seed in range(4):
        Image.fromarray(render_page(seed)[0]).save(calib / f"page_{seed}.png")
    out = work / "ocr.pkg"
    # small det calibration (short side 320 instead of 736) and few lines keep this ~20 s
    convert_ocr(det_model, cls_model, rec_model, out,
                OcrConvertOptions(wbits=8, abits=8, calib_dir=calib, det_calib_side=320,
                                  max_calib_lines=24, sqnr_batches=0, progress=False))
    return out


@pytest.fixture(scope="session")
def eval_pages() -> list:
    from ocr_pages import render_page
    return [render_page(seed) for seed in EVAL_SEEDS]


@pytest.fixture(scope="session")
def rapidocr_results(eval_pages, rapidocr_models) -> list:
    """RapidOCR (its defaults) on each page: [[box 4x2, text, score], ...] per page."""
    from rapidocr_onnxruntime import RapidOCR

    engine = RapidOCR()
    # an ndarray goes in as-is and is taken as BGR (rapidocr utils/load_image.py)
    return [engine(img[:, :, ::-1].copy())[0] or [] for img, _ in eval_pages]

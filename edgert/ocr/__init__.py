"""PP-OCR text spotting (det -> cls -> rec) from one edgert package: `load_ocr(path)(image_rgb)`.

Submodules: `config` (the `ocr/config` and `ocr/keys` sections), `stages` (image-side steps shared
with the converter's calibration), `pipeline` (loading and running).  Nothing here imports the
converter; OpenCV is imported only when a pipeline runs."""
from __future__ import annotations

from edgert.ocr.config import CONFIG_SECTION, KEYS_SECTION, OcrConfig
from edgert.ocr.pipeline import Line, OcrLoadOptions, OcrPipeline, OcrResult, is_ocr_package, load_ocr

__all__ = ["load_ocr", "is_ocr_package", "OcrPipeline", "OcrResult", "Line", "OcrConfig",
           "OcrLoadOptions", "CONFIG_SECTION", "KEYS_SECTION"]

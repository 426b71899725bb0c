"""`edgert convert-ocr`: a calibrated bundle from the command line, and one-line exit-2 errors."""
from __future__ import annotations

import json

import pytest
from cli_helpers import assert_one_line_error, invoke

from edgert.ocr import OcrLoadOptions, is_ocr_package, load_ocr
from ocr_pages import render_page, squash


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    from PIL import Image
    d = tmp_path_factory.mktemp("cli_pages")
    for seed in (7, 8):
        Image.fromarray(render_page(seed)[0]).save(d / f"page_{seed}.png")
    return d


@pytest.mark.slow
def test_convert_ocr_writes_a_signed_bundle(tmp_path, pages, det_model, cls_model, rec_model):
    pytest.importorskip("cryptography")
    from edgert.package.signing import generate_keypair, write_keypair

    priv, pub = generate_keypair()
    key_path, _ = write_keypair(tmp_path / "signer", priv, pub)
    out = tmp_path / "ocr.pkg"
    res = invoke("convert-ocr", "--det", det_model, "--cls", cls_model, "--rec", rec_model, "-o", out,
                 "--wbits", 8, "--abits", 8, "--det-wbits", 4, "--calib", pages, "--det-calib-side", 256,
                 "--max-calib-lines", 8, "--sqnr-batches", 0, "--sign-key", key_path, "--quiet", "--json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    bits = {n: (s["layers"][0]["wbits"], s["layers"][0]["abits"]) for n, s in doc["stages"].items()}
    assert set(bits) == {"det", "cls", "rec"} and bits["rec"] == (8, 8)
    assert max(li["wbits"] or 0 for li in doc["stages"]["det"]["layers"]) == 8      # mixed: dw at 8
    assert 4 in {li["wbits"] for li in doc["stages"]["det"]["layers"]}
    assert doc["calib_pages"] == 2 and 0 < doc["calib_lines"] <= 8 and doc["keys"] == 6623
    assert doc["signed"] and is_ocr_package(out)
    img, truth = render_page(100)
    with load_ocr(out, options=OcrLoadOptions(require_signature=True, public_key=pub)) as pipe:
        got = [squash(ln.text) for ln in pipe(img).lines]
    assert len(got) == len(truth)


def test_convert_ocr_missing_model_is_one_line(tmp_path, pages):
    res = invoke("convert-ocr", "--det", tmp_path / "det.onnx", "--cls", tmp_path / "cls.onnx",
                 "--rec", tmp_path / "rec.onnx", "-o", tmp_path / "o.pkg", "--calib", pages)
    assert_one_line_error(res, "--det", "det.onnx")
    assert not (tmp_path / "o.pkg").exists()


def test_convert_ocr_cls_flags(tmp_path, det_model, rec_model, cls_model):
    res = invoke("convert-ocr", "--det", det_model, "--rec", rec_model, "-o", tmp_path / "o.pkg")
    assert_one_line_error(res, "--cls")
    res = invoke("convert-ocr", "--det", det_model, "--cls", cls_model, "--no-cls", "--rec", rec_model,
                 "-o", tmp_path / "o.pkg")
    assert_one_line_error(res, "--no-cls")


def test_convert_ocr_missing_calibration_is_one_line(tmp_path, det_model, cls_model, rec_model):
    base = ["convert-ocr", "--det", det_model, "--cls", cls_model, "--rec", rec_model,
            "-o", tmp_path / "o.pkg"]
    assert_one_line_error(invoke(*base), "calibration pages")
    assert_one_line_error(invoke(*base, "--calib", tmp_path / "nowhere"), "calibration folder not found")


def test_convert_ocr_bad_keys_is_one_line(tmp_path, pages, det_model, cls_model, rec_model):
    base = ["convert-ocr", "--det", det_model, "--cls", cls_model, "--rec", rec_model, "-o",
            tmp_path / "o.pkg", "--calib", pages, "--quiet"]
    keys = tmp_path / "keys.txt"
    keys.write_text("a\n\nb\n", encoding="utf-8")
    assert_one_line_error(invoke(*base, "--keys", keys), "entry 1")
    keys.write_text("a\nb\nc\n", encoding="utf-8")          # valid, but rec has 6625 classes
    assert_one_line_error(invoke(*base, "--keys", keys), "5 classes", "6625")
    assert not (tmp_path / "o.pkg").exists()


def test_convert_ocr_per_stage_compression_flags(tmp_path, det_model, cls_model, rec_model):
    from converters.ocr_bundle import OcrConvertOptions, StageOptions
    from edgert.ocr import stages as S
    opts = OcrConvertOptions(rec=StageOptions(avg_bits=8.3), det=StageOptions(recon="qdrop", outlier="os+"))
    rec, det, cls = (opts.convert_options(n, S.DEFAULT_PREPROCESS) for n in ("rec", "det", "cls"))
    assert rec.avg_bits == 8.3 and det.recon == "qdrop" and det.outlier == "os+"
    assert cls.avg_bits is None and cls.recon is None
    base = ["convert-ocr", "--det", det_model, "--cls", cls_model, "--rec", rec_model, "-o", tmp_path / "o.pkg"]
    assert_one_line_error(invoke(*base, "--det-pass", "gptq"), "unknown --pass 'gptq'")

"""The `ocr/config` and `ocr/keys` sections: round trips, and every hostile value is a PackageError
naming the field -- in the parser and when `load_ocr` opens a package carrying it."""
from __future__ import annotations

import json

import pytest

from edgert.errors import PackageError
from edgert.ocr import is_ocr_package, load_ocr
from edgert.ocr.config import (CONFIG_SECTION, KEYS_SECTION, MAX_KEYS, OcrConfig, charset, keys_to_bytes,
                               parse_config, parse_keys)


def _doc(**patch) -> bytes:
    d = OcrConfig().to_json()
    for path, value in patch.items():
        sec, _, key = path.partition("__")
        if key:
            d[sec][key] = value
        else:
            d[sec] = value
    return json.dumps(d).encode()


def test_config_round_trip_keeps_rapidocr_defaults():
    cfg = parse_config(OcrConfig().to_bytes())
    assert cfg == OcrConfig()
    assert (cfg.det.limit_side_len, cfg.det.limit_type, cfg.det.thresh, cfg.det.box_thresh,
            cfg.det.unclip_ratio, cfg.det.max_candidates) == (736, "min", 0.3, 0.5, 1.6, 1000)
    assert (cfg.cls.image_shape, cfg.cls.batch, cfg.cls.thresh) == ((3, 48, 192), 6, 0.9)
    assert (cfg.rec.image_shape, cfg.rec.batch, cfg.rec.text_score) == ((3, 48, 320), 6, 0.5)


def test_missing_fields_take_defaults():
    assert parse_config(b'{"version": 1}') == OcrConfig()


HOSTILE = {
    "det.thresh": _doc(det__thresh=2.0),
    "det.limit_side_len": _doc(det__limit_side_len=True),          # a bool is not an int
    "det.max_candidates": _doc(det__max_candidates=10 ** 9),
    "det.limit_type": _doc(det__limit_type="both"),
    "det.score_mode": _doc(det__score_mode=1),
    "det.use_dilation": _doc(det__use_dilation=1),
    "det.unclip_ratio": _doc(det__unclip_ratio="1.6"),
    "cls.image_shape": _doc(cls__image_shape=[3, 0, 192]),
    "cls.batch": _doc(cls__batch=0),
    "cls.labels": _doc(cls__labels=["0", "0"]),
    "rec.image_shape": _doc(rec__image_shape=[1, 48, 320]),
    "rec.max_width": _doc(rec__max_width=100),                     # below image_shape's width
    "rec.text_score": _doc(rec__text_score=-0.1),
    "page.width_height_ratio": _doc(page__width_height_ratio=0.5),
    "page.min_side_len": _doc(page__min_side_len=4000, page__max_side_len=100),
    "version": _doc(version=2),
    "rec": _doc(rec=[1, 2]),
    "bogus": _doc(bogus={}),                                       # unknown top-level field
    "det.bogus": _doc(det__bogus=1),
    "NaN": b'{"version": 1, "det": {"thresh": NaN}}',
    "duplicate": b'{"version": 1, "version": 1}',
    "UTF-8": b'{"version": 1, "x": "\xff"}',
    "JSON object": b"[1, 2]",
    "valid JSON": b'{"version": 1,',
    "cap": b'{"version": 1, "pad": "' + b"x" * 70000 + b'"}',
}


@pytest.mark.parametrize("field", sorted(HOSTILE))
def test_hostile_config_names_the_field(field):
    with pytest.raises(PackageError) as e:
        parse_config(HOSTILE[field], "pkg: ocr/config")
    assert field in str(e.value) and str(e.value).startswith("pkg: ocr/config")


def test_keys_round_trip_and_charset():
    keys = ["a", "b", "中", "'"]
    assert parse_keys(keys_to_bytes(keys)) == keys
    assert parse_keys("a\nb".encode()) == ["a", "b"]              # final newline optional
    cs = charset(keys, OcrConfig().rec)
    assert cs[0] == "" and cs[1:5] == keys and cs[-1] == " "      # blank first, space last


@pytest.mark.parametrize("data, needle", [
    (b"", "0 entries"),
    (b"a\n\nb\n", "entry 1"),
    (b"a\r\nb\n", "entry 0"),
    (b"\xff\xfe\n", "UTF-8"),
    (b"x" * 17 + b"\n", "entry 0"),
    (b"a\n" * (MAX_KEYS + 1), "entries"),
])
def test_hostile_keys_rejected(data, needle):
    with pytest.raises(PackageError) as e:
        parse_keys(data, "pkg: ocr/keys")
    assert needle in str(e.value)


def _package_with(tmp_path, extras: dict[str, bytes]):
    from tiny_pkg import tiny_graph

    from converters.package_writer import WriteOptions, write_package
    p = tmp_path / "bundle.pkg"
    write_package(p, [tiny_graph()], WriteOptions(compress="none"), extras=extras)
    return p


@pytest.mark.parametrize("config, keys, needle", [
    (HOSTILE["det.thresh"], b"a\nb\n", "det.thresh"),
    (HOSTILE["NaN"], b"a\nb\n", "NaN"),
    (OcrConfig().to_bytes(), b"a\n\nb\n", "ocr/keys"),
    (OcrConfig().to_bytes(), b"a\nb\n", "missing det, cls, rec"),      # sections fine, graphs not
])
def test_load_ocr_rejects_hostile_sections(tmp_path, config, keys, needle):
    p = _package_with(tmp_path, {CONFIG_SECTION: config, KEYS_SECTION: keys})
    assert is_ocr_package(p)
    with pytest.raises(PackageError) as e:
        load_ocr(p)
    assert needle in str(e.value) and str(p) in str(e.value)


def test_not_an_ocr_package(tmp_path):
    p = _package_with(tmp_path, {})
    assert not is_ocr_package(p)
    assert not is_ocr_package(tmp_path / "missing.pkg")
    (tmp_path / "junk.pkg").write_bytes(b"EDGERTPK" + b"\xff" * 100)
    assert not is_ocr_package(tmp_path / "junk.pkg")
    with pytest.raises(PackageError, match="not an OCR bundle"):
        load_ocr(p)


def test_import_edgert_ocr_is_cheap():
    """The runtime side never imports converter code; OpenCV only when a pipeline runs."""
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-c", "import edgert.ocr, sys; "
                          "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))"],
                         capture_output=True, text=True, check=True).stdout.split()
    assert not set(out) & {"converters", "cv2", "onnx", "onnxruntime", "PIL", "tqdm"}

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


# -- a real Mosquitto broker (tests/mqtt_broker.py) ------------------------------------------------
# tests/ has no __init__.py: helpers are imported by module name (`from mqtt_broker import Mosquitto`),
# as tests/package does with pkg_helpers.  pytest's default import mode already puts tests/ on
# sys.path for this conftest; inserting it here keeps that true under --import-mode=importlib too.
import sys as _sys

_TESTS_DIR = str(Path(__file__).resolve().parent)
if _TESTS_DIR not in _sys.path:
    _sys.path.insert(0, _TESTS_DIR)
# ... and the repo root before it: tests/devices (no __init__.py) would otherwise be found as a
# namespace package `devices` before the editable install's finder runs, under a bare `pytest`
_REPO_DIR = str(Path(__file__).resolve().parents[1])
if _REPO_DIR in _sys.path:
    _sys.path.remove(_REPO_DIR)
_sys.path.insert(0, _REPO_DIR)


@pytest.fixture
def mosquitto(tmp_path):
    """A started anonymous Mosquitto on a free loopback port, in tmp_path; stopped afterwards."""
    from mqtt_broker import Mosquitto, require_mosquitto

    require_mosquitto()
    broker = Mosquitto(tmp_path / "mosquitto")
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def bev_seq(tmp_path_factory):
    """(directory, world): a 0.5 s PNG recording (6 samples) of a small-image synthetic drive."""
    pytest.importorskip("cv2")
    from edgert.bev.recording import RecordOptions, record
    from edgert.bev.rig import nuscenes_like_rig
    from edgert.bev.world import World, WorldOptions

    d = tmp_path_factory.mktemp("bev") / "seq"
    world = World(nuscenes_like_rig(64, 48), WorldOptions(seed=2))
    record(world, d, RecordOptions(seconds=0.5, image_format="png"))
    return d, world

"""All three rapidocr models convert (W8A8, calibrated on rendered text) and run on both backends."""
from __future__ import annotations

import numpy as np
import pytest

import edgert
from converters.convert import convert
from converters.options import ConvertOptions
from converters.synthetic import write_calibration_folder
from edgert.ir import Preprocess
from edgert.preprocess import preprocess_file

CASES = {  # model fixture -> (input H, W, calibration image kind)
    "det_model": ((160, 160), "page"),
    "rec_model": ((48, 320), "line"),
    "cls_model": ((48, 192), "line"),
}


@pytest.mark.slow
@pytest.mark.parametrize("fixture", sorted(CASES))
def test_real_model_converts_and_runs_on_both_backends(fixture, request, tmp_path):
    import onnxruntime as ort

    src = request.getfixturevalue(fixture)
    (h, w), kind = CASES[fixture]
    calib = tmp_path / "calib"
    write_calibration_folder(calib, 3, seed=5, kind=kind, size=(h, w), height=h)
    pp = Preprocess(size=(h, w), mean=(0.5,) * 3, std=(0.5,) * 3, channels="bgr")
    out = tmp_path / "m.pkg"
    report = convert(src, out, ConvertOptions(wbits=8, abits=8, calib_dir=calib, preprocess=pp,
                                              progress=False))
    assert report.package_bytes < src.stat().st_size / 3
    x = preprocess_file(sorted(calib.iterdir())[0], pp)
    ref = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    outs = {}
    for backend in ("numpy", "ort"):
        sess = edgert.load(out, backend=backend)
        outs[backend] = next(iter(sess.run(x).values()))
        assert outs[backend].shape == ref.shape and np.isfinite(outs[backend]).all()
    # the two backends agree closely; both stay close to the float model
    assert np.abs(outs["numpy"] - outs["ort"]).mean() < 0.02
    for y in outs.values():
        assert np.abs(y - ref).mean() < 0.05
    if fixture != "det_model":   # class decisions (cls: direction; rec: per-step characters)
        agree = (outs["ort"].argmax(-1) == ref.argmax(-1)).mean()
        assert agree >= 0.8, agree

"""YOLO / SSD decoding with hand-made outputs, and a tiny real ONNX detector converted with
`edgert convert --task detection` and run through edgert.load -> Session.task.postprocess."""
from __future__ import annotations

import json

import numpy as np
import pytest

from edgert.tasks import FrameMeta, get_task
from edgert.tasks.detection import Detection, decode_yolo

# source frame 96 x 128 (H x W) stretched to a 64 x 64 model input: x scales by 2, y by 1.5
META = FrameMeta(image_hw=(96, 128), input_hw=(64, 64))


def _yolo_candidates() -> np.ndarray:
    """[N, 4 + 2]: cx, cy, w, h (input pixels), two class scores."""
    return np.array([
        [20, 20, 10, 10, 0.9, 0.1],     # class 0, best
        [21, 21, 10, 10, 0.8, 0.2],     # class 0, overlaps the first: suppressed
        [21, 20, 10, 10, 0.1, 0.7],     # class 1, overlaps but another class: kept (class-aware)
        [50, 40, 8, 6, 0.05, 0.2],      # below score_thresh 0.25
        [50, 40, 8, 6, 0.3, 0.1],       # class 0 elsewhere
    ], np.float32)


def _boxes(res):
    return [(d["class"], round(d["score"], 4), [round(v, 3) for v in d["box"]]) for d in res["boxes"]]


@pytest.mark.parametrize("layout", ["yolov8", "transposed"])
def test_yolo_v8_decoding(layout):
    x = _yolo_candidates()
    out = x.T[None] if layout == "yolov8" else x[None]          # [1, 6, 5] or [1, 5, 6]
    task = get_task("detection").from_json({"format": "yolo", "labels": ["cat", "dog"]})
    res = task.postprocess({"output0": out}, META)
    assert _boxes(res) == [
        (0, 0.9, [30.0, 22.5, 50.0, 37.5]),          # (15..25) x 2, (15..25) x 1.5
        (1, 0.7, [32.0, 22.5, 52.0, 37.5]),
        (0, 0.3, [92.0, 55.5, 108.0, 64.5]),
    ]
    assert [d["label"] for d in res["boxes"]] == ["cat", "dog", "cat"]
    json.dumps(res)


# hand-made outputs have fewer candidates than values per candidate, so the label count tells the
# layout apart (real models: N >> 4 + C, the shorter axis is the attribute axis)
LABELS = ("cat", "dog")


def test_yolo_class_agnostic_and_max_det():
    out = _yolo_candidates().T[None]
    agn = Detection(Detection.Params(class_agnostic=True, labels=LABELS))
    assert [d["class"] for d in agn.postprocess({"y": out}, META)["boxes"]] == [0, 0]
    one = Detection(Detection.Params(max_det=1, labels=LABELS))
    assert len(one.postprocess({"y": out}, META)["boxes"]) == 1
    strict = Detection(Detection.Params(score_thresh=0.75, labels=LABELS))
    assert [d["score"] for d in strict.postprocess({"y": out}, META)["boxes"]] == pytest.approx([0.9])


def test_yolo_v5_objectness():
    x = np.array([
        [20, 20, 10, 10, 0.9, 0.9, 0.1],    # 0.81 class 0
        [40, 40, 10, 10, 0.2, 0.1, 0.9],    # 0.18 < 0.25: dropped
        [40, 10, 20, 4, 0.5, 0.2, 0.8],     # 0.40 class 1
    ], np.float32)[None]                      # [1, N, 5 + C]
    task = get_task("detection").from_json({"objectness": True, "labels": list(LABELS)})
    res = task.postprocess({"y": x}, META)
    assert _boxes(res) == [(0, 0.81, [30.0, 22.5, 50.0, 37.5]), (1, 0.4, [60.0, 12.0, 100.0, 18.0])]


def test_yolo_boxes_clipped_to_the_frame_and_nan_dropped():
    x = np.array([[2, 60, 10, 10, 0.9, 0.0], [30, 30, np.nan, 5, 0.9, 0.0]], np.float32).T[None]
    res = Detection(Detection.Params(labels=LABELS)).postprocess({"y": x}, META)
    assert _boxes(res) == [(0, 0.9, [0.0, 82.5, 14.0, 96.0])]


def test_yolo_layout():
    # 5 candidates of 4 + 2 values laid out [N, 4 + C]: the label count finds the attribute axis
    x = np.zeros((5, 6), np.float32)
    x[0] = [10, 10, 4, 4, 0.9, 0.0]
    boxes, scores, cls = decode_yolo(x[None], objectness=False, num_classes=2)
    assert scores[0] == pytest.approx(0.9) and boxes[0].tolist() == [8, 8, 12, 12]
    # without labels the shorter axis is the attribute axis (YOLOv8 [1, 84, 8400])
    big = np.zeros((84, 100), np.float32)
    big[:, 3] = 0.0
    big[:4, 3] = [30, 30, 10, 10]
    big[4 + 7, 3] = 0.95
    boxes, scores, cls = decode_yolo(big[None], objectness=False)
    assert boxes.shape == (100, 4) and cls[3] == 7 and scores[3] == pytest.approx(0.95)
    boxes, scores, cls = decode_yolo(big.T[None], objectness=False)
    assert boxes.shape == (100, 4) and cls[3] == 7


def test_ssd_decoding():
    boxes = np.array([[[0.1, 0.2, 0.5, 0.6],      # y1, x1, y2, x2 normalised
                       [0.1, 0.2, 0.5, 0.61],
                       [0.6, 0.6, 0.9, 0.9]]], np.float32)
    scores = np.array([[[0.1, 0.8, 0.1],            # background, person, car
                        [0.1, 0.7, 0.2],
                        [0.2, 0.1, 0.7]]], np.float32)
    task = get_task("detection").from_json({"format": "ssd", "labels": ["bg", "person", "car"]})
    res = task.postprocess({"scores": scores, "boxes": boxes}, META)
    assert _boxes(res) == [(1, 0.8, [25.6, 9.6, 76.8, 48.0]), (2, 0.7, [76.8, 57.6, 115.2, 86.4])]
    assert [d["label"] for d in res["boxes"]] == ["person", "car"]
    xyxy = get_task("detection").from_json({"format": "ssd", "box_order": "xyxy"})
    res = xyxy.postprocess({"boxes": boxes[:, :1], "scores": scores[:, :1]}, META)
    assert _boxes(res) == [(1, 0.8, [12.8, 19.2, 64.0, 57.6])]


def test_ssd_background_only_scores_are_never_a_detection():
    boxes = np.array([[[0.1, 0.1, 0.5, 0.5]]], np.float32)
    scores = np.array([[[0.99, 0.01]]], np.float32)
    task = Detection(Detection.Params(format="ssd"))
    assert task.postprocess({"b": boxes, "s": scores}, META)["boxes"] == []


def test_bad_outputs_raise_input_error():
    from edgert.errors import InputError
    with pytest.raises(InputError):
        Detection().postprocess({"y": np.zeros((1, 2, 3, 4), np.float32)}, META)
    with pytest.raises(InputError):      # 4 values per candidate: no class scores
        Detection().postprocess({"y": np.zeros((1, 4, 30), np.float32)}, META)
    with pytest.raises(InputError):
        Detection(Detection.Params(format="ssd")).postprocess({"y": np.zeros((1, 5, 3), np.float32)}, META)


def test_render_draws_boxes():
    task = get_task("detection").from_json({"labels": ["cat", "dog"]})
    res = task.postprocess({"y": _yolo_candidates().T[None]}, META)
    img = np.full((96, 128, 3), 40, np.uint8)
    out = task.render(img, res)
    assert out.shape == img.shape and out.dtype == np.uint8 and (img == 40).all()
    assert (out != 40).any(axis=2)[56, 92:109].all()          # top edge of the box at y 55.5 .. 64.5
    assert (out != 40).any(axis=2)[56:65, 108].all()          # its right edge


# --------------------------------------------------------------------------- a tiny real detector
def _tiny_detector(path, candidates: np.ndarray) -> None:
    """x [1, 3, 32, 32] -> y = ReduceMean(x) * 0 + candidates: a YOLOv8-shaped [1, 4 + C, N] output
    whose values we choose, computed by a real graph."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    c = numpy_helper.from_array(candidates.astype(np.float32), "cand")
    zero = numpy_helper.from_array(np.zeros(1, np.float32), "zero")
    nodes = [helper.make_node("ReduceMean", ["x"], ["m"], axes=[1, 2, 3], keepdims=0),
             helper.make_node("Mul", ["m", "zero"], ["z"]),
             helper.make_node("Add", ["z", "cand"], ["y"])]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 32])
    g = helper.make_graph(nodes, "tinydet", [x],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(candidates.shape))],
                          [c, zero])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.save(m, str(path))


def test_convert_records_the_task_and_load_runs_it(tmp_path):
    from cli_helpers import invoke

    import edgert

    cand = np.array([[8, 8, 8, 8, 0.9, 0.0],
                     [9, 8, 8, 8, 0.6, 0.0],         # suppressed by the first
                     [24, 20, 6, 10, 0.1, 0.8]], np.float32).T[None]     # [1, 6, 3]
    src = tmp_path / "det.onnx"
    _tiny_detector(src, cand)
    labels = tmp_path / "labels.txt"
    labels.write_text("cat\ndog\n\n")
    pkg = tmp_path / "det.pkg"
    res = invoke("convert", src, "-o", pkg, "--calib-random", "2", "--size", "32x32", "--quiet",
                 "--task", "detection", "--labels", labels, "--task-param", "iou_thresh=0.5",
                 "--task-param", "score_thresh=0.3", "--task-param", "format=yolo")
    assert res.exit_code == 0, res.output
    sess = edgert.load(pkg, backend="numpy")
    try:
        task = sess.task
        assert task.to_json() == {"name": "detection", "format": "yolo", "objectness": False,
                                  "box_order": "yxyx", "score_thresh": 0.3, "iou_thresh": 0.5,
                                  "max_det": 300, "labels": ["cat", "dog"], "class_agnostic": False}
        assert sess.graph.metadata["task"] == task.to_json()
        x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
        outs = sess.run({"x": x})
        out = task.postprocess(outs, FrameMeta.from_preprocess((64, 48), sess.preprocess))
    finally:
        sess.close()
    got = [(d["label"], round(d["score"], 2), [round(v, 1) for v in d["box"]]) for d in out["boxes"]]
    # input 32 x 32 -> source 64 x 48 (H x W): x * 1.5, y * 2
    assert got == [("cat", 0.9, [6.0, 8.0, 18.0, 24.0]), ("dog", 0.8, [31.5, 30.0, 40.5, 50.0])]

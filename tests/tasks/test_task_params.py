"""Task records are manifest input: from_json / task_of / edgert.load reject hostile ones with
PackageError naming the field; `edgert convert --task` records them."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgert.errors import EdgertError, PackageError
from edgert.tasks import get_task, known_tasks, read_labels, task_of
from edgert.tasks.base import MAX_LABELS

TASKS = ["raw", "classification", "segmentation", "detection", "text-detection"]


def test_known_tasks():
    assert sorted(known_tasks()) == sorted(TASKS)


@pytest.mark.parametrize("name", TASKS)
def test_defaults_round_trip_through_json(name):
    task = get_task(name)()
    rec = json.loads(json.dumps(task.to_json()))
    assert rec["name"] == name
    again = get_task(name).from_json(rec)
    assert again.to_json() == task.to_json() and again.params == task.params


BAD = [
    ("classification", "top_k", 0), ("classification", "top_k", 101), ("classification", "top_k", -3),
    ("classification", "top_k", True), ("classification", "top_k", 2.5), ("classification", "top_k", "5"),
    ("classification", "softmax", "yes"), ("classification", "softmax", 1),
    ("classification", "labels", "cat"), ("classification", "labels", [1, 2]),
    ("classification", "labels", ["x" * 10_000]), ("classification", "labels", ["a"] * (MAX_LABELS + 1)),
    ("classification", "labels", {"a": 1}),
    ("segmentation", "alpha", float("nan")), ("segmentation", "alpha", 1.5), ("segmentation", "alpha", None),
    ("detection", "format", "yolov9"), ("detection", "format", ["yolo"]), ("detection", "score_thresh", -0.1),
    ("detection", "iou_thresh", float("inf")), ("detection", "max_det", 0), ("detection", "max_det", 10**30),
    ("detection", "objectness", "true"), ("detection", "class_agnostic", 0),
    ("detection", "box_order", "xywh"),
    ("text-detection", "thresh", float("nan")), ("text-detection", "box_thresh", 2),
    ("text-detection", "unclip_ratio", -1.6), ("text-detection", "unclip_ratio", 10**400),
    ("text-detection", "max_candidates", 0), ("text-detection", "max_candidates", 1e3),
    ("text-detection", "min_size", -1), ("text-detection", "use_dilation", "no"),
    ("text-detection", "score_mode", "exact"),
]


@pytest.mark.parametrize("name,key,value", BAD, ids=[f"{n}.{k}={str(v)[:12]}" for n, k, v in BAD])
def test_from_json_rejects_hostile_fields(name, key, value):
    with pytest.raises(PackageError, match=key):
        get_task(name).from_json({"name": name, key: value})


def test_from_json_rejects_unknown_keys_wrong_name_and_non_objects():
    with pytest.raises(PackageError, match="unknown parameter.*'topk'"):
        get_task("classification").from_json({"topk": 3})
    with pytest.raises(PackageError, match="unknown parameter.*'labels'"):
        get_task("text-detection").from_json({"labels": ["a"]})
    with pytest.raises(PackageError, match="name"):
        get_task("classification").from_json({"name": "detection"})
    with pytest.raises(PackageError, match="object"):
        get_task("classification").from_json(["top_k", 3])


def test_task_of_forms():
    from edgert.ir import Graph
    g = Graph("g", [], [], [], {})
    assert task_of(g).name == "raw"
    g.metadata["task"] = "classification"                         # legacy: a bare name
    assert task_of(g).to_json() == get_task("classification")().to_json()
    g.metadata["task"] = "test"                    # legacy free-form note: nothing to post-process
    assert task_of(g).name == "raw"
    g.metadata["task"] = "x" * 100_000
    assert task_of(g).name == "raw"
    g.metadata["task"] = {"name": "classification", "top_k": 2}
    assert task_of(g).params.top_k == 2
    for bad, needle in [({"name": "pose"}, "unknown task 'pose'.*known: classification"),
                        ({"name": "x" * 100_000}, "at most 64"), ({"top_k": 2}, "no name"),
                        (5, "object"), ({"name": ["raw"]}, "task name"),
                        ({"name": "classification", "top_k": float("nan")}, "metadata.task.top_k")]:
        g.metadata["task"] = bad
        with pytest.raises(PackageError, match=needle) as e:
            task_of(g)
        assert str(e.value).startswith("graph 'g': metadata.task") and len(str(e.value)) < 400


_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                     lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=6), c, max_size=4),
                     max_leaves=10)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(TASKS), st.dictionaries(
    st.sampled_from(["name", "top_k", "labels", "softmax", "alpha", "format", "objectness", "box_order",
                     "score_thresh", "iou_thresh", "max_det", "class_agnostic", "thresh", "box_thresh",
                     "unclip_ratio", "max_candidates", "min_size", "use_dilation", "score_mode", "x"]),
    _json, max_size=4))
def test_any_record_parses_or_raises_package_error(name, rec):
    from edgert.ir import Graph
    g = Graph("g", [], [], [], {}, metadata={"task": {"name": name, **rec}})
    try:
        task = task_of(g)
    except PackageError:
        return
    assert json.loads(json.dumps(task.to_json())) == task.to_json()


# --------------------------------------------------------------------------- load
def _package(tmp_path, task_record):
    from tiny_pkg import tiny_graph

    from converters.package_writer import WriteOptions, write_package
    g = tiny_graph()
    if task_record is not None:
        g.metadata["task"] = task_record
    path = tmp_path / "m.pkg"
    write_package(path, [g], WriteOptions(zstd_level=1))
    return path


def test_load_exposes_the_task(tmp_path):
    import edgert
    sess = edgert.load(_package(tmp_path, {"name": "segmentation", "alpha": 0.25}), backend="numpy")
    try:
        assert sess.task.name == "segmentation" and sess.task.params.alpha == 0.25
    finally:
        sess.close()
    sess = edgert.load(_package(tmp_path, None), backend="numpy")
    try:
        assert sess.task.name == "raw"
    finally:
        sess.close()


@pytest.mark.parametrize("record", [{"name": "segmentation", "alpha": -1}, {"name": "nope"}, [1, 2],
                                    {"name": "classification", "labels": ["a"] * (MAX_LABELS + 1)}])
def test_load_rejects_a_hostile_task_record(tmp_path, record):
    import edgert
    with pytest.raises(PackageError, match="metadata.task"):
        edgert.load(_package(tmp_path, record), backend="numpy")


def test_import_does_not_load_opencv():
    code = ("import sys, edgert.tasks as t\nt.known_tasks()\n"
            "import edgert.tasks.text_detection\nprint('cv2' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


# --------------------------------------------------------------------------- the convert CLI
def test_read_labels(tmp_path):
    p = tmp_path / "l.txt"
    p.write_text(" cat \r\ndog\n\nbird\n\n\n", encoding="utf-8")
    assert read_labels(p) == ("cat", "dog", "", "bird")
    with pytest.raises(EdgertError):
        read_labels(tmp_path / "missing.txt")


@pytest.mark.parametrize("args,needle", [
    (["--task", "pose"], "unknown task 'pose'"),
    (["--labels", "L"], "need --task"),
    (["--task-param", "top_k=3"], "need --task"),
    (["--task", "classification", "--task-param", "top_k"], "KEY=VALUE"),
    (["--task", "classification", "--task-param", "top_k=0"], "top_k"),
    (["--task", "classification", "--task-param", "top_k=NaN"], "top_k"),
    (["--task", "detection", "--task-param", "format=yolo9"], "format"),
    (["--task", "text-detection", "--labels", "L"], "labels"),
    (["--task", "raw", "--task-param", "x=1"], "unknown parameter"),
])
def test_convert_rejects_bad_task_options(tmp_path, args, needle):
    from cli_helpers import assert_one_line_error, invoke
    src = _classifier_onnx(tmp_path / "m.onnx")
    (tmp_path / "L").write_text("a\nb\n")
    args = [str(tmp_path / "L") if a == "L" else a for a in args]
    res = invoke("convert", src, "-o", tmp_path / "o.pkg", "--calib-random", "1", *args)
    assert_one_line_error(res, needle)
    assert not (tmp_path / "o.pkg").exists()


def _classifier_onnx(path):
    """x [1, 3, 8, 8] -> mean colour -> 4 scores (red, green, blue, none)."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.eye(3, 4, dtype=np.float32) * 4, "w")
    nodes = [helper.make_node("GlobalAveragePool", ["x"], ["p"]),
             helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("MatMul", ["f", "w"], ["y"])]
    g = helper.make_graph(nodes, "cls", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], [w])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.save(m, str(path))
    return path


def test_convert_round_trip_classification(tmp_path):
    """--task classification --labels --task-param -> metadata that Session.task reads back."""
    from cli_helpers import invoke

    import edgert
    src = _classifier_onnx(tmp_path / "cls.onnx")
    labels = tmp_path / "labels.txt"
    labels.write_text("red\ngreen\nblue\nnone\n")
    pkg = tmp_path / "cls.pkg"
    res = invoke("convert", src, "-o", pkg, "--calib-random", "2", "--size", "8x8", "--quiet",
                 "--task", "classification", "--labels", labels, "--task-param", "top_k=2",
                 "--task-param", "softmax=true")
    assert res.exit_code == 0, res.output
    sess = edgert.load(pkg, backend="numpy")
    try:
        assert sess.task.to_json() == {"name": "classification", "top_k": 2,
                                       "labels": ["red", "green", "blue", "none"], "softmax": True}
        x = np.zeros((1, 3, 8, 8), np.float32)
        x[0, 1] = 1.0                                           # green
        from edgert.tasks import FrameMeta
        out = sess.task.postprocess(sess.run({"x": x}), FrameMeta((8, 8), (8, 8)))
    finally:
        sess.close()
    assert [t["label"] for t in out["top"]] == ["green", "red"]

"""Writer -> reader round trips, zero-copy views, atomic writes and writer input checks."""
from __future__ import annotations

import mmap
import os
import subprocess
import sys

import numpy as np
import pytest

from converters.package_writer import WriteOptions, write_package
from edgert import format as F
from edgert.errors import PackageError
from edgert.ir import Node, WeightEncoding
from edgert.package import ReadOptions, read_package
from pkg_helpers import conv_graph, parse


def assert_same_graph(a, b):
    assert (a.name, a.inputs, a.outputs, a.nodes) == (b.name, b.inputs, b.outputs, b.nodes)
    assert a.preprocess == b.preprocess and a.metadata == b.metadata and a.layers == b.layers
    assert set(a.initializers) == set(b.initializers)
    for k, v in a.initializers.items():
        w = b.initializers[k]
        if a.encodings.get(k) and a.encodings[k].scheme == "fp16":
            np.testing.assert_array_equal(w, v.astype(np.float16).astype(np.float32))
        else:
            np.testing.assert_array_equal(w, v)
        assert w.dtype == v.dtype and w.shape == v.shape and not w.flags.writeable
    assert b.encodings == a.encodings


@pytest.mark.parametrize("compress", ["none", "zstd"])
def test_round_trip_multi_graph_with_extras(tmp_path, compress):
    rng = np.random.default_rng(1)
    g1, g2 = conv_graph(rng, "detector"), conv_graph(rng, "classifier", channels=3, layers=1, encodings=False)
    # every storage flavour in one graph
    g1.initializers["sparse"] = np.array([[0, 3, 0, -5], [7, 0, 0, 0]], np.int8)
    g1.encodings["sparse"] = WeightEncoding(4, sparsity="bitmap")
    g1.initializers["nm"] = np.array([[0, 3, 0, -5], [1, 0, 0, 0]], np.int8)
    g1.encodings["nm"] = WeightEncoding(5, sparsity="nm", n=2, m=4)
    g1.initializers["zp"] = np.array([3, 0, 7], np.uint8)
    g1.encodings["zp"] = WeightEncoding(3, "asymmetric")
    g1.initializers["mid"] = np.array([-1, 1, 1], np.int8)
    g1.encodings["mid"] = WeightEncoding(1, "midrise")
    g1.initializers["empty"] = np.zeros((0, 4), np.float32)
    g1.initializers["scalar"] = np.array(0.5, np.float32)
    g1.initializers["flags"] = np.array([True, False])
    g1.initializers["shape"] = np.array([1, -1], np.int64)
    extras = {"tokenizer.json": b'{"vocab": {}}', "draft/heads": np.arange(10, dtype=np.float32).tobytes(),
              "empty": b""}
    path = tmp_path / "m.pkg"
    report = write_package(path, [g1, g2], WriteOptions(compress=compress, zstd_level=3),
                           producer={"tool": "pytest"}, extras=extras)
    assert report.size_bytes == os.path.getsize(path)
    assert [s.name for s in report.sections] == ["manifest", "weights.0", "weights.1", *extras]
    assert all(s.codec == compress for s in report.sections)
    with read_package(path) as pkg:
        assert pkg.file_sha256 == report.file_sha256 and not pkg.signed
        assert list(pkg.graphs) == ["detector", "classifier"]
        assert_same_graph(g1, pkg.graph())
        assert_same_graph(g2, pkg.graph("classifier"))
        assert pkg.manifest["producer"]["tool"] == "pytest"
        assert pkg.extra_names() == list(extras)
        for k, v in extras.items():
            assert bytes(pkg.extra(k)) == v
            assert pkg.extra(k).readonly
        with pytest.raises(PackageError, match="no extra section"):
            pkg.extra("nope")
        with pytest.raises(PackageError, match="no graph"):
            pkg.graph("nope")
        for s in pkg.sections:
            assert s.offset % F.ALIGNMENT == 0


def test_raw_tensors_are_zero_copy_views_of_the_mmap(tmp_path):
    g = conv_graph(np.random.default_rng(2))
    path = tmp_path / "m.pkg"
    write_package(path, [g], WriteOptions(compress="none"))
    pkg = read_package(path)
    w = pkg.graph().initializers["w0"]
    assert not w.flags.owndata and not w.flags.writeable
    assert w.ctypes.data % F.ALIGNMENT == 0
    base = w
    while isinstance(base, np.ndarray):
        base = base.base
    if isinstance(base, memoryview):     # np.frombuffer wraps the exporter in a memoryview
        base = base.obj
    assert isinstance(base, mmap.mmap)
    with pytest.raises(ValueError):
        w[...] = 0
    pkg.close()
    assert float(w.sum()) == float(g.initializers["w0"].sum())   # views keep the mapping alive


def test_zstd_sections_decode_to_aligned_buffers(tmp_path):
    g = conv_graph(np.random.default_rng(3))
    write_package(tmp_path / "m.pkg", [g], WriteOptions(compress="zstd", zstd_level=1))
    pkg = read_package(tmp_path / "m.pkg")
    w = pkg.graph().initializers["w0"]
    assert w.ctypes.data % F.ALIGNMENT == 0 and not w.flags.writeable


def test_deterministic_output(tmp_path):
    g = conv_graph(np.random.default_rng(4))
    write_package(tmp_path / "a.pkg", [g])
    write_package(tmp_path / "b.pkg", [g])
    assert (tmp_path / "a.pkg").read_bytes() == (tmp_path / "b.pkg").read_bytes()


def test_layout_matches_spec(tmp_path):
    write_package(tmp_path / "m.pkg", [conv_graph(np.random.default_rng(5))], WriteOptions(compress="none"))
    data = (tmp_path / "m.pkg").read_bytes()
    header, secs, footer = parse(data)
    assert header[:6] == (b"EDGERTPK", 1, 0, 1, 64, 64)
    assert header[6] == 64 and header[9] == len(data) - 160
    assert footer[0] == b"EDGERTFT" and footer[1] == 160 and footer[2] == 0
    assert secs[0].name == "manifest" and secs[0].offset == F.align_up(64 + 128 * len(secs))


def test_failed_write_leaves_old_file_and_no_temp(tmp_path):
    path = tmp_path / "m.pkg"
    write_package(path, [conv_graph(np.random.default_rng(6))])
    before = path.read_bytes()
    bad = conv_graph(np.random.default_rng(7))
    bad.nodes[0].attrs["alpha"] = float("nan")
    with pytest.raises(PackageError, match="JSON"):
        write_package(path, [bad])
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pkg"]


def test_failed_write_mid_stream_cleans_up(tmp_path, monkeypatch):
    import converters.package_writer as pw

    def boom(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr(pw, "_write_section", boom)
    with pytest.raises(PackageError, match="disk full"):
        write_package(tmp_path / "m.pkg", [conv_graph(np.random.default_rng(8))])
    assert list(tmp_path.iterdir()) == []


def _bad(mutate):
    g = conv_graph(np.random.default_rng(9))
    mutate(g)
    return g


@pytest.mark.parametrize("mutate,match", [
    (lambda g: g.encodings.__setitem__("ghost", WeightEncoding(4)), "not an initializer"),
    (lambda g: g.initializers.__setitem__("wq", np.full((4, 4, 3, 3), 4, np.int8)), "out of range"),
    (lambda g: g.encodings.__setitem__("wq", WeightEncoding(4, "midrise")), "out of range"),
    (lambda g: g.encodings.__setitem__("w0", WeightEncoding(4)), "must be int8"),
    (lambda g: g.encodings.__setitem__("wq", WeightEncoding(12)), "takes 2..8 bits"),
    (lambda g: g.nodes.insert(0, Node("Relu", "early", ["c0"], ["z"])), "not an initializer"),
    (lambda g: g.nodes.append(Node("Relu", "dup", ["x"], ["y"])), "defined twice"),
    (lambda g: g.outputs[0].__setattr__("name", "missing"), "never produced"),
    (lambda g: g.initializers.__setitem__("obj", np.array(["a"])), "not storable"),
    (lambda g: g.initializers.__setitem__("lst", [1, 2]), "not a numpy array"),
    (lambda g: g.inputs[0].__setattr__("dtype", "complex64"), "dtype"),
])
def test_writer_rejects_inconsistent_input(tmp_path, mutate, match):
    with pytest.raises(PackageError, match=match):
        write_package(tmp_path / "m.pkg", [_bad(mutate)])
    assert list(tmp_path.iterdir()) == []


def test_writer_rejects_bad_options_and_names(tmp_path):
    g = conv_graph(np.random.default_rng(10))
    with pytest.raises(PackageError, match="compress"):
        write_package(tmp_path / "m.pkg", [g], WriteOptions(compress="lz4"))
    with pytest.raises(PackageError, match="unique"):
        write_package(tmp_path / "m.pkg", [g, g])
    with pytest.raises(PackageError, match="1.."):
        write_package(tmp_path / "m.pkg", [])
    for name in ("manifest", "weights.3", "", "x" * 49, "bad name"):
        with pytest.raises(PackageError):
            write_package(tmp_path / "m.pkg", [g], extras={name: b"x"})
    with pytest.raises(PackageError, match="bytes-like"):
        write_package(tmp_path / "m.pkg", [g], extras={"e": "text"})


def test_read_missing_file(tmp_path):
    with pytest.raises(PackageError, match="cannot open"):
        read_package(tmp_path / "nope.pkg")


def test_decode_cap(tmp_path):
    write_package(tmp_path / "m.pkg", [conv_graph(np.random.default_rng(11))])
    with pytest.raises(PackageError, match="cap"):
        read_package(tmp_path / "m.pkg", ReadOptions(max_decoded_bytes=100))


def test_import_edgert_stays_light():
    code = ("import sys, edgert, edgert.package, edgert.package.signing, edgert.format; "
            "bad = [m for m in ('zstandard', 'cryptography', 'onnx', 'onnxruntime') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)

"""Hypothesis fuzzing (no atheris): random bytes and mutated valid files raise only PackageError."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from converters.package_writer import WriteOptions, write_package
from edgert import format as F
from edgert.errors import PackageError
from edgert.ir import WeightEncoding
from edgert.package import ReadOptions, read_package
from pkg_helpers import conv_graph, rehash

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _valid(compress: str) -> bytes:
    import tempfile
    from pathlib import Path
    g = conv_graph(np.random.default_rng(0), channels=2, layers=1)
    g.initializers["sp"] = np.array([[0, 1, 0, -2, 0, 0, 3, 0]], np.int8)
    g.encodings["sp"] = WeightEncoding(5, sparsity="bitmap")
    g.initializers["nm"] = np.array([[0, 1, 0, -2, 0, 0, 3, 0]], np.int8)
    g.encodings["nm"] = WeightEncoding(3, sparsity="nm", n=2, m=4)
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "v.pkg"
        write_package(p, [g], WriteOptions(compress=compress, zstd_level=1), extras={"ex": b"x" * 10})
        return p.read_bytes()


VALID = {c: _valid(c) for c in ("none", "zstd")}


def check(path, data: bytes, options: ReadOptions) -> None:
    path.write_bytes(data)
    try:
        read_package(path, options).close()
    except PackageError as e:
        assert "unexpected" not in str(e), str(e)


@FUZZ
@given(st.binary(max_size=2048), st.booleans())
def test_random_bytes(tmp_path, data, with_magic):
    if with_magic:
        data = F.MAGIC + data
    check(tmp_path / "r.pkg", data, ReadOptions())
    check(tmp_path / "r.pkg", data, ReadOptions(verify_hashes=False))


@st.composite
def mutation(draw):
    data = bytearray(VALID[draw(st.sampled_from(["none", "zstd"]))])
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "set", "overwrite", "truncate", "insert"]))
        pos = draw(st.integers(0, len(data) - 1))
        if kind == "flip":
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set":
            data[pos] = draw(st.sampled_from([0, 0xFF, 0x7F, 0x80, ord('"'), ord("9")]))
        elif kind == "overwrite":
            chunk = draw(st.binary(min_size=1, max_size=16))
            data[pos:pos + len(chunk)] = chunk
        elif kind == "truncate":
            del data[pos:]
        else:
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        if len(data) == 0:
            break
    return bytes(data)


@FUZZ
@given(mutation())
def test_mutated_files(tmp_path, data):
    p = tmp_path / "m.pkg"
    check(p, data, ReadOptions())
    check(p, data, ReadOptions(verify_hashes=False))
    # with every hash made right again, only the structural checks remain
    if len(data) >= F.HEADER_SIZE + F.FOOTER_SIZE:
        check(p, rehash(data), ReadOptions())


def test_rehashed_mutation_of_the_manifest_bytes(tmp_path):
    """Every byte of the JSON manifest replaced by a few characters, hashes fixed: PackageError or OK."""
    data = VALID["none"]
    start = data.index(b'{"format_version"')
    end = data.index(b"\0", start)
    p = tmp_path / "m.pkg"
    for pos in range(start, end, 3):
        for ch in b'9"-':
            buf = bytearray(data)
            buf[pos] = ch
            check(p, rehash(bytes(buf)), ReadOptions())


@pytest.mark.parametrize("compress", ["none", "zstd"])
def test_mutated_files_are_rejected_with_hashes(tmp_path, compress):
    """A few deterministic multi-byte corruptions of a valid file: hashes catch every one."""
    data = VALID[compress]
    rng = np.random.default_rng(1)
    p = tmp_path / "h.pkg"
    for _ in range(200):
        buf = bytearray(data)
        pos = int(rng.integers(0, len(buf)))
        buf[pos] = (buf[pos] + int(rng.integers(1, 256))) % 256
        p.write_bytes(buf)
        with pytest.raises(PackageError):
            read_package(p)

"""Ed25519 sign / verify / tamper / require, key files, and the lazy dependency."""
from __future__ import annotations

import sys

import numpy as np
import pytest

from converters.package_writer import WriteOptions, write_package
from edgert import format as F
from edgert.errors import PackageError, SignatureError
from edgert.package import ReadOptions, read_package
from edgert.package import signing
from pkg_helpers import conv_graph, parse, rehash


@pytest.fixture()
def pkg_path(tmp_path):
    p = tmp_path / "m.pkg"
    write_package(p, [conv_graph(np.random.default_rng(0), channels=2, layers=1)], WriteOptions(zstd_level=1))
    return p


def test_sign_verify_require(pkg_path):
    priv, pub = signing.generate_keypair()
    before = pkg_path.read_bytes()
    assert signing.sign_package(pkg_path, priv) == pub
    after = pkg_path.read_bytes()
    assert len(after) == len(before) and after[:-F.FOOTER_SIZE] == before[:-F.FOOTER_SIZE]   # footer only
    assert signing.verify_package(pkg_path) is True
    assert signing.verify_package(pkg_path, pub) is True
    with read_package(pkg_path, ReadOptions(require_signature=True, public_key=pub)) as pkg:
        assert pkg.signed and pkg.signature_verified and pkg.public_key == pub
    with read_package(pkg_path) as pkg:              # signed files verify on every hashed read
        assert pkg.signature_verified


def test_wrong_key_and_unsigned(pkg_path):
    with pytest.raises(SignatureError, match="not signed"):
        signing.verify_package(pkg_path)
    with pytest.raises(SignatureError, match="not signed"):
        read_package(pkg_path, ReadOptions(require_signature=True))
    read_package(pkg_path).close()                   # unsigned is fine when not required
    priv, _ = signing.generate_keypair()
    _, other = signing.generate_keypair()
    signing.sign_package(pkg_path, priv)
    with pytest.raises(SignatureError, match="different key"):
        signing.verify_package(pkg_path, other)


def test_tampering(pkg_path):
    priv, pub = signing.generate_keypair()
    signing.sign_package(pkg_path, priv)
    data = bytearray(pkg_path.read_bytes())
    # a flipped signature byte
    bad = bytearray(data)
    bad[-F.FOOTER_SIZE + 100] ^= 1
    pkg_path.write_bytes(bad)
    with pytest.raises(SignatureError):
        read_package(pkg_path)
    # a float weight changed, every hash recomputed, the old signature kept: only it catches this
    write_package(pkg_path, [conv_graph(np.random.default_rng(5), channels=2, layers=1)],
                  WriteOptions(compress="none", signing_key=priv))
    data = pkg_path.read_bytes()
    _, secs, _ = parse(data)
    w = next(s for s in secs if s.name == "weights.0")
    body = bytearray(data)
    body[w.offset] ^= 1
    fixed = rehash(bytes(body))
    body_len = len(data) - F.FOOTER_SIZE
    sig_footer = F.FOOTER.unpack_from(data, body_len)
    forged = fixed[:body_len] + signing.pack_footer(body_len, F.FOOTER.unpack_from(fixed, body_len)[4],
                                                    sig_footer[5], sig_footer[6])
    pkg_path.write_bytes(forged)
    with pytest.raises(SignatureError, match="does not verify"):
        read_package(pkg_path)
    with pytest.raises(SignatureError):
        signing.verify_package(pkg_path, pub)
    # re-signed by an attacker's key: integrity holds, authenticity fails against the pinned key
    pkg_path.write_bytes(data)
    evil, _ = signing.generate_keypair()
    signing.sign_package(pkg_path, evil)
    read_package(pkg_path).close()
    with pytest.raises(SignatureError):
        read_package(pkg_path, ReadOptions(require_signature=True, public_key=pub))


def test_sign_while_writing(tmp_path):
    priv, pub = signing.generate_keypair()
    p = tmp_path / "s.pkg"
    report = write_package(p, [conv_graph(np.random.default_rng(1), channels=2, layers=1)],
                           WriteOptions(compress="none", signing_key=priv))
    assert report.signed
    assert signing.verify_package(p, pub)
    with pytest.raises(PackageError):
        write_package(tmp_path / "t.pkg", [conv_graph(np.random.default_rng(1))], WriteOptions(signing_key=b"short"))


def test_sign_refuses_a_corrupt_file(pkg_path):
    data = bytearray(pkg_path.read_bytes())
    data[10] ^= 1
    pkg_path.write_bytes(data)
    with pytest.raises(PackageError):
        signing.sign_package(pkg_path, signing.generate_keypair()[0])
    assert pkg_path.read_bytes() == bytes(data)
    assert sorted(p.name for p in pkg_path.parent.iterdir()) == ["m.pkg"]


def test_key_files(tmp_path):
    priv, pub = signing.generate_keypair()
    (tmp_path / "raw.key").write_bytes(priv)
    (tmp_path / "raw.pub").write_bytes(pub)
    (tmp_path / "hex.key").write_text(priv.hex() + "\n")
    signing.save_private_key(tmp_path / "pem.key", priv)
    signing.save_public_key(tmp_path / "pem.pub", pub)
    assert (tmp_path / "pem.key").stat().st_mode & 0o077 == 0
    assert b"BEGIN PRIVATE KEY" in (tmp_path / "pem.key").read_bytes()
    for name in ("raw.key", "hex.key", "pem.key"):
        assert signing.load_private_key(tmp_path / name) == priv
    for name in ("raw.pub", "pem.pub"):
        assert signing.load_public_key(tmp_path / name) == pub
    k, p = signing.write_keypair(tmp_path / "pair", priv, pub)
    assert signing.load_private_key(k) == priv and signing.load_public_key(p) == pub
    with pytest.raises(PackageError, match="does not belong"):
        signing.write_keypair(tmp_path / "bad", priv, signing.generate_keypair()[1])
    (tmp_path / "junk").write_bytes(b"-----BEGIN PRIVATE KEY-----\nnope\n")
    with pytest.raises(PackageError):
        signing.load_private_key(tmp_path / "junk")
    with pytest.raises(PackageError):
        signing.load_public_key(tmp_path / "junk")
    with pytest.raises(PackageError, match="cannot read"):
        signing.load_public_key(tmp_path / "missing")


def test_missing_cryptography_gives_pip_hint(monkeypatch, pkg_path):
    for mod in [m for m in sys.modules if m == "cryptography" or m.startswith("cryptography.")]:
        monkeypatch.delitem(sys.modules, mod)
    monkeypatch.setitem(sys.modules, "cryptography", None)
    with pytest.raises(PackageError, match="pip install"):
        signing.generate_keypair()
    with pytest.raises(PackageError, match="pip install"):
        signing.verify_package(pkg_path)
    read_package(pkg_path).close()                   # unsigned reads need no cryptography

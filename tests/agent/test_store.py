"""The agent's package store: deploy from path / file:// / http:// with hash and signature checks,
try-load with rollback, size caps, atomic swaps that survive a kill at any step, pruning, rollback."""
from __future__ import annotations

import hashlib
import os
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

import edgert
from edgert.agent import store as store_mod
from edgert.agent.store import PackageStore, StoreOptions
from edgert.errors import InputError, PackageError
from edgert.package import read_package
from edgert.package import signing


def sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def load_and_run(p: Path):
    sess = edgert.load(p, backend="numpy")
    sess.run(np.zeros((1, 3, 8, 8), np.float32))     # a one-input dry run, as the agent does
    return sess


def never(p: Path):
    raise AssertionError("try_load must not be called")


@pytest.fixture()
def root(tmp_path) -> Path:
    return tmp_path / "store"


def new_store(root: Path, **kw) -> PackageStore:
    return PackageStore(StoreOptions(root=root, **kw))


def stored(root: Path) -> set[str]:
    return {p.stem for p in (root / "packages").glob("*.pkg")}


def assert_clean(root: Path) -> None:
    assert not list((root / "incoming").iterdir()), "no download leftovers"
    assert not os.path.lexists(root / ".current.tmp") and not os.path.lexists(root / ".previous.tmp")


# ---------------------------------------------------------------------------------------------
# a loopback HTTP server serving byte strings (optionally without Content-Length)
# ---------------------------------------------------------------------------------------------
class _Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        body, with_length = self.server.routes.get(self.path, (None, True))
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        if with_length:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture()
def http(monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.routes = {}
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield server
    server.shutdown()
    server.server_close()


# ---------------------------------------------------------------------------------------------
# deploy
# ---------------------------------------------------------------------------------------------
def test_deploy_path_file_url_http(make_pkg, root, http):
    a, b, c = make_pkg("a", 0), make_pkg("b", 1), make_pkg("c", 2)
    s = new_store(root)
    assert s.current is None and s.previous is None

    r = s.deploy(a, sha(a), load_and_run)
    assert r.ok, r.message
    pa = root.resolve() / "packages" / f"{sha(a)}.pkg"
    assert r.path == pa == s.current and r.previous is None and r.sha256 == sha(a)
    assert r.loaded is not None and r.loaded.backend == "numpy"     # the session try_load made

    r = s.deploy(b.as_uri(), None, load_and_run)
    assert r.ok, r.message
    assert s.current.stem == sha(b) and r.previous == pa == s.previous

    http.routes["/c.pkg"] = (c.read_bytes(), True)
    r = s.deploy(f"{http.url}/c.pkg", sha(c).upper(), load_and_run)
    assert r.ok, r.message
    assert s.current.stem == sha(c) and s.previous.stem == sha(b)
    assert r.message.startswith("deployed ") and sha(c)[:12] in r.message

    # relative symlinks into packages/, so the store survives being moved
    link = root / "current.pkg"
    assert link.is_symlink() and os.readlink(link) == f"packages/{sha(c)}.pkg"
    assert read_package(root / "current.pkg").file_sha256   # readable through the link
    assert_clean(root)

    # the same package again: nothing to do, with or without the hash
    for args in ((c, sha(c)), (c, None), (f"{http.url}/c.pkg", None)):
        r = s.deploy(*args, never)
        assert r.ok and r.message == "already current" and r.path == s.current
    assert s.previous.stem == sha(b)


def test_body_sha_from_inspect_is_accepted(make_pkg, root):
    a = make_pkg("a")
    with read_package(a) as pkg:
        body = pkg.file_sha256          # what `edgert inspect` prints
    assert body != sha(a)
    r = new_store(root).deploy(a, body, load_and_run)
    assert r.ok, r.message
    assert r.sha256 == sha(a)           # stored under the whole-file hash


def test_wrong_sha_keeps_current(make_pkg, root):
    a, b = make_pkg("a", 0), make_pkg("b", 1)
    s = new_store(root)
    assert s.deploy(a, None, load_and_run).ok
    r = s.deploy(b, "0" * 64, never)
    assert not r.ok
    assert r.message == f"sha256 mismatch for {b}: expected 000000000000, got {sha(b)[:12]}"
    assert s.current.stem == sha(a) and stored(root) == {sha(a)}
    assert_clean(root)
    for bad in ("abc", "z" * 64, sha(b) + "0"):
        r = s.deploy(b, bad, never)
        assert not r.ok and "64 hex digits" in r.message


def test_corrupt_and_truncated_rejected(make_pkg, root, tmp_path):
    a, b = make_pkg("a", 0), make_pkg("b", 1)
    s = new_store(root)
    assert s.deploy(a, None, load_and_run).ok
    data = b.read_bytes()
    flipped = tmp_path / "flipped.pkg"
    flipped.write_bytes(data[:len(data) // 2] + bytes([data[len(data) // 2] ^ 0xFF]) + data[len(data) // 2 + 1:])
    short = tmp_path / "short.pkg"
    short.write_bytes(data[:-50])
    junk = tmp_path / "junk.pkg"
    junk.write_bytes(b"not a package")
    for p in (flipped, short, junk):
        r = s.deploy(p, None, never)
        assert not r.ok, p
        assert str(p) in r.message and "incoming" not in r.message and "\n" not in r.message
        # with the right file hash given, the hash passes and validation still fails
        r = s.deploy(p, sha(p), never)
        assert not r.ok and "mismatch" not in r.message
    assert s.current.stem == sha(a) and stored(root) == {sha(a)}
    assert_clean(root)


def test_signatures(make_pkg, root, tmp_path):
    priv, pub = signing.generate_keypair()
    other_priv, _ = signing.generate_keypair()
    unsigned, good, other = make_pkg("u", 0), make_pkg("g", 1, signing_key=priv), \
        make_pkg("o", 2, signing_key=other_priv)

    s = new_store(root, public_key=pub)
    r = s.deploy(unsigned, None, never)
    assert not r.ok and "not signed" in r.message
    r = s.deploy(other, None, never)
    assert not r.ok and "different key" in r.message
    r = s.deploy(good, sha(good), load_and_run)
    assert r.ok, r.message

    s2 = new_store(tmp_path / "store2", require_signature=True)    # the key embedded in the file
    assert not s2.deploy(unsigned, None, never).ok
    assert s2.deploy(other, None, load_and_run).ok

    with pytest.raises(PackageError, match="32-byte"):
        new_store(tmp_path / "store3", public_key=b"short")


def test_try_load_failure_keeps_current(make_pkg, root):
    a, b = make_pkg("a", 0), make_pkg("b", 1)
    s = new_store(root)
    assert s.deploy(a, None, load_and_run).ok

    def boom(p):
        raise RuntimeError("boom\nsecond line")

    r = s.deploy(b, sha(b), boom)
    assert not r.ok and r.message == f"{b} failed to load: RuntimeError: boom second line"
    assert r.path is None and r.sha256 == sha(b)
    assert s.current.stem == sha(a) and s.previous is None
    assert stored(root) == {sha(a)}, "a package that failed to load is not kept"

    def bad_input(p):
        raise InputError("input 'x' wants dtype float32")

    r = s.deploy(b, None, bad_input)
    assert not r.ok and r.message.endswith("failed to load: input 'x' wants dtype float32")
    assert s.current.stem == sha(a)
    assert_clean(root)


def test_size_cap(make_pkg, root, http):
    a = make_pkg("a")
    cap = a.stat().st_size - 1
    s = new_store(root, max_package_bytes=cap)
    http.routes["/len.pkg"] = (a.read_bytes(), True)
    http.routes["/nolen.pkg"] = (a.read_bytes(), False)      # close-delimited: the streaming cap must hold
    for src in (a, a.as_uri(), f"{http.url}/len.pkg", f"{http.url}/nolen.pkg"):
        r = s.deploy(src, None, never)
        assert not r.ok and f"{cap:,}-byte limit" in r.message, (src, r.message)
    assert s.current is None and stored(root) == set()
    assert_clean(root)
    # exactly at the cap is fine, over HTTP without a length too
    s = new_store(root, max_package_bytes=cap + 1)
    assert s.deploy(f"{http.url}/nolen.pkg", sha(a), load_and_run).ok


def test_fetch_errors_never_raise(make_pkg, root, http, tmp_path):
    s = new_store(root, fetch_timeout_s=5.0)
    with socket.socket() as sock:         # a loopback port nobody listens on
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    cases = {
        str(tmp_path / "missing.pkg"): "not found",
        (tmp_path / "missing.pkg").as_uri(): "not found",
        "file://otherhost/x.pkg": "no host",
        "ftp://127.0.0.1/x.pkg": "unsupported URL scheme",
        f"{http.url}/missing.pkg": "HTTP 404",
        f"http://127.0.0.1:{closed_port}/x.pkg": "cannot fetch",
        f"http://user:hunter2@127.0.0.1:{closed_port}/x.pkg": "cannot fetch",
        "http://user:hunter2@127.0.0.1:notaport/x.pkg": "cannot fetch",
        "http://[::1/x.pkg": "cannot fetch",
        "http:///x.pkg": "cannot fetch",
    }
    for url, needle in cases.items():
        r = s.deploy(url, None, never)
        assert not r.ok and needle in r.message, (url, r.message)
        assert "hunter2" not in r.message and "\n" not in r.message
    assert s.current is None
    assert_clean(root)


# ---------------------------------------------------------------------------------------------
# atomic swap
# ---------------------------------------------------------------------------------------------
class Killed(BaseException):
    """Stands in for SIGKILL: not an Exception, so nothing in the store catches it."""


class _OsSpy:
    """The `os` module as the store sees it, with the steps between states counted (and one killable)."""
    STEPS = ("replace", "symlink", "fsync", "utime", "chmod")

    def __init__(self, kill_at: int | None = None, after=None):
        self.calls: list[str] = []
        self.kill_at, self.after = kill_at, after

    def __getattr__(self, name):
        real = getattr(os, name)
        if name not in self.STEPS:
            return real

        def step(*args, **kw):
            if len(self.calls) == self.kill_at:
                raise Killed(name)
            self.calls.append(name)
            out = real(*args, **kw)
            if self.after:
                self.after(name, args)
            return out
        return step


def assert_valid_current(root: Path, allowed: set[str]) -> None:
    link = root / "current.pkg"
    assert link.is_symlink(), "current.pkg is always a link"
    target = Path(os.path.realpath(link))
    assert target.is_file() and target.stem in allowed, target
    with read_package(target) as pkg:
        assert sha(target) == target.stem and pkg.graphs


def test_kill_at_every_step_leaves_old_or_new(make_pkg, tmp_path, monkeypatch):
    a, b = make_pkg("a", 0), make_pkg("b", 1)

    def fresh(i):
        root = tmp_path / f"s{i}"
        PackageStore(StoreOptions(root=root)).install_initial(a)
        return root

    dry = fresh("dry")
    spy = _OsSpy()
    monkeypatch.setattr(store_mod, "os", spy)
    assert PackageStore(StoreOptions(root=dry)).deploy(b, None, load_and_run).ok
    monkeypatch.setattr(store_mod, "os", os)
    n = len(spy.calls)
    assert n >= 6 and spy.calls.count("replace") >= 3, spy.calls

    outcomes = []
    for k in range(n):
        root = fresh(k)
        monkeypatch.setattr(store_mod, "os", _OsSpy(kill_at=k))
        with pytest.raises(Killed):
            PackageStore(StoreOptions(root=root)).deploy(b, None, load_and_run)
        monkeypatch.setattr(store_mod, "os", os)
        # restart: the new store cleans up after the "crash" and runs old or new, never nothing
        s = PackageStore(StoreOptions(root=root))
        assert_valid_current(root, {sha(a), sha(b)})
        assert_clean(root)
        outcomes.append(s.current.stem)
        assert s.deploy(b, None, load_and_run).ok            # and the next deploy goes through
        assert s.current.stem == sha(b)
    assert outcomes[0] == sha(a) and outcomes[-1] == sha(b)


def test_current_valid_after_every_step(make_pkg, root, monkeypatch):
    pkgs = [make_pkg(f"p{i}", i) for i in range(3)]
    allowed = {sha(p) for p in pkgs}
    s = new_store(root)
    s.install_initial(pkgs[0])
    checked = []

    def check(name, args):
        assert_valid_current(root, allowed)
        checked.append(name)

    monkeypatch.setattr(store_mod, "os", _OsSpy(after=check))
    for p in pkgs[1:]:
        assert s.deploy(p, None, load_and_run).ok
    assert s.rollback(load_and_run).ok
    assert not s.deploy(pkgs[0], "1" * 64, never).ok
    assert len(checked) > 10


def test_failed_swap_reports_failure(make_pkg, root, monkeypatch):
    """An OSError at the commit rename: deploy says so, and current is still the old package."""
    a, b = make_pkg("a", 0), make_pkg("b", 1)
    s = new_store(root)
    s.install_initial(a)
    real_replace = os.replace

    def replace(src, dst):
        if Path(dst).name == "current.pkg":
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    r = s.deploy(b, None, load_and_run)
    monkeypatch.undo()
    assert not r.ok and r.message == "deploy failed: No space left on device"
    assert r.loaded is not None, "so the caller can close the session try_load opened"
    assert s.current.stem == sha(a)
    assert_valid_current(root, {sha(a)})


# ---------------------------------------------------------------------------------------------
# prune, rollback, install_initial
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("keep", [1, 2, 3, 5])
def test_prune_keeps_keep(make_pkg, root, keep):
    pkgs = [make_pkg(f"p{i}", i) for i in range(5)]
    s = new_store(root, keep=keep)
    for p in pkgs:
        assert s.deploy(p, None, load_and_run).ok
    shas = [sha(p) for p in pkgs]
    # current and previous are never pruned; after them the most recently deployed
    assert stored(root) == set(shas[-max(keep, 2):])
    assert s.current.stem == shas[-1] and s.previous.stem == shas[-2]


def test_rollback(make_pkg, root):
    a, b = make_pkg("a", 0), make_pkg("b", 1)
    s = new_store(root)
    r = s.rollback()
    assert not r.ok and r.message == "no previous package to roll back to"
    s.deploy(a, None, load_and_run)
    assert not s.rollback().ok
    s.deploy(b, None, load_and_run)

    def boom(p):
        raise RuntimeError("nope")

    r = s.rollback(boom)
    assert not r.ok and "nope" in r.message and s.current.stem == sha(b)

    r = s.rollback()
    assert r.ok and r.message == f"rolled back to {sha(a)[:12]}"
    assert s.current.stem == sha(a) and s.previous.stem == sha(b) and r.previous.stem == sha(b)
    r = s.rollback(load_and_run)                        # and back again
    assert r.ok and s.current.stem == sha(b) and r.loaded is not None
    assert_valid_current(root, {sha(a), sha(b)})


def test_install_initial(make_pkg, root, tmp_path):
    a, b = make_pkg("a", 0), make_pkg("b", 1)
    s = new_store(root)
    p = s.install_initial(a)
    assert p == s.current and p.stem == sha(a) and p.read_bytes() == a.read_bytes()
    assert s.install_initial(b) == p, "a store with a current package keeps it"
    assert new_store(root).current == p, "and it survives a restart"

    junk = tmp_path / "junk.pkg"
    junk.write_bytes(b"junk" * 100)
    with pytest.raises(PackageError, match="junk.pkg"):
        new_store(tmp_path / "s2").install_initial(junk)
    with pytest.raises(PackageError, match="not found"):
        new_store(tmp_path / "s3").install_initial(tmp_path / "missing.pkg")
    _, pub = signing.generate_keypair()
    with pytest.raises(PackageError, match="not signed"):
        new_store(tmp_path / "s4", public_key=pub).install_initial(a)
    for d in ("s2", "s3", "s4"):
        assert new_store(tmp_path / d).current is None
        assert_clean(tmp_path / d)


def test_dangling_current_is_none(make_pkg, root):
    a, b = make_pkg("a", 0), make_pkg("b", 1)
    s = new_store(root)
    s.install_initial(a)
    s.current.unlink()                    # someone deleted the package file by hand
    assert s.current is None
    assert s.install_initial(b).stem == sha(b)

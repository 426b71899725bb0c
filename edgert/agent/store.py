"""The agent's package store: fetch, verify, keep and atomically swap model packages.

Layout under `StoreOptions.root`:

    packages/<sha256>.pkg   every kept package, named by the SHA-256 of the whole file
    incoming/               downloads in progress (`*.part`; leftovers from a crash are removed at start)
    current.pkg             symlink -> packages/<sha256>.pkg, the package the agent runs
    previous.pkg            symlink -> the package current.pkg pointed at before the last swap

A swap writes a new symlink next to the old one and `os.replace`s it over the name (rename(2) is
atomic on POSIX), so a kill at any point leaves current.pkg pointing at the old or the new package,
never at nothing: package files are fsynced and renamed into packages/ before any link names them,
and nothing a link names is pruned.  One agent owns a root; calls are serialized by a lock.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import re
import tempfile
import threading
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Callable

from edgert.errors import EdgertError, PackageError

_CHUNK = 1 << 20
_SHA_RE = re.compile(r"[0-9a-f]{64}")
CURRENT, PREVIOUS = "current.pkg", "previous.pkg"


@dataclass(frozen=True)
class StoreOptions:
    root: Path                       # e.g. /var/lib/edgert/packages
    public_key: bytes | None = None  # raw Ed25519 key; when set, a deployed package must be signed by it
    require_signature: bool = False  # without public_key: signed by the key embedded in the file
    max_package_bytes: int = 512 * 1024 * 1024
    fetch_timeout_s: float = 60.0    # connect / read timeout: seconds without progress, not in total
    keep: int = 3                    # packages kept on disk (current + previous + the newest others)


@dataclass(frozen=True)
class DeployResult:
    ok: bool
    message: str                     # one line
    sha256: str | None               # whole-file SHA-256 of the package deployed (or attempted)
    path: Path | None                # the current package after a success; None after a failure
    previous: Path | None            # the package it replaced (None after a failure)
    loaded: Any = field(default=None, repr=False, compare=False)   # what try_load returned, if it did


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    if isinstance(e, EdgertError):
        return text
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _os_text(e: BaseException) -> str:
    if isinstance(e, urllib.error.HTTPError):
        return f"HTTP {e.code} {e.reason}"
    if isinstance(e, urllib.error.URLError):
        return str(e.reason)
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return _one_line(e)


def _redact(url: str) -> str:
    """The URL without user:password@ (messages end up in telemetry)."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "<malformed URL>"
    if "@" not in parts.netloc:
        return url
    return urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class PackageStore:
    def __init__(self, opts: StoreOptions):
        if opts.keep < 1:
            raise EdgertError(f"StoreOptions.keep must be >= 1, got {opts.keep}")
        if opts.max_package_bytes < 1:
            raise EdgertError(f"StoreOptions.max_package_bytes must be >= 1, got {opts.max_package_bytes}")
        if opts.public_key is not None and (not isinstance(opts.public_key, bytes) or len(opts.public_key) != 32):
            raise PackageError("StoreOptions.public_key must be a raw 32-byte Ed25519 public key")
        self.opts = opts
        self._lock = threading.RLock()
        try:
            root = Path(opts.root)
            (root / "packages").mkdir(parents=True, exist_ok=True)
            (root / "incoming").mkdir(exist_ok=True)
            self.root = root.resolve()
            self._recover()
        except OSError as e:
            raise PackageError(f"package store {opts.root}: {_os_text(e)}") from None
        self.packages = self.root / "packages"
        self.incoming = self.root / "incoming"

    def _recover(self) -> None:
        """Remove what a crash can leave behind: partial downloads and unswapped temp links."""
        for p in (self.root / "incoming").glob("*.part"):
            p.unlink(missing_ok=True)
        for name in (CURRENT, PREVIOUS):
            (self.root / self._tmp_name(name)).unlink(missing_ok=True)

    # -- links ---------------------------------------------------------------------------------

    @staticmethod
    def _tmp_name(link: str) -> str:
        return f".{link.removesuffix('.pkg')}.tmp"      # current.pkg -> .current.tmp

    def _target(self, link: str) -> Path | None:
        p = self.root / link
        if not os.path.lexists(p):
            return None
        target = Path(os.path.realpath(p))
        return target if target.is_file() else None

    @property
    def current(self) -> Path | None:
        """The package current.pkg points at (resolved); None when there is none or the link dangles."""
        return self._target(CURRENT)

    @property
    def previous(self) -> Path | None:
        return self._target(PREVIOUS)

    def _set_link(self, link: str, target: Path) -> None:
        """Point root/link at target atomically: a new symlink under a temp name, renamed over it."""
        tmp = self.root / self._tmp_name(link)
        tmp.unlink(missing_ok=True)
        os.symlink(os.path.relpath(target, self.root), tmp)
        os.replace(tmp, self.root / link)

    # -- fetch ---------------------------------------------------------------------------------

    def _open(self, url: str) -> tuple[BinaryIO, int | None, str]:
        """(stream, declared length or None, name for messages) for a path, file:// or http(s):// URL."""
        parts = urllib.parse.urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme in ("http", "https"):
            req = urllib.request.Request(url, headers={"User-Agent": "edgert-agent"})
            resp = urllib.request.urlopen(req, timeout=self.opts.fetch_timeout_s)
            length = resp.headers.get("Content-Length")
            return resp, int(length) if length and length.strip().isdigit() else None, _redact(url)
        if scheme == "file":
            if parts.netloc not in ("", "localhost"):
                raise PackageError(f"{url}: file:// URLs must name a local file (no host)")
            path = Path(urllib.request.url2pathname(parts.path))
        elif scheme == "" or Path(url).exists():
            path = Path(url)
        else:
            raise PackageError(f"{_redact(url)}: unsupported URL scheme {scheme!r} (use a path, file://, "
                               f"http:// or https://)")
        if not path.is_file():
            raise PackageError(f"package not found: {path}")
        f = open(path, "rb")
        return f, os.fstat(f.fileno()).st_size, str(path)

    def _fetch(self, url: str) -> tuple[Path, str, str]:
        """Stream `url` into incoming/ while hashing it; returns (temp path, sha256 hex, display name)."""
        cap = self.opts.max_package_bytes
        try:
            src, declared, name = self._open(url)
        except (OSError, http.client.HTTPException, ValueError) as e:
            if isinstance(e, urllib.error.HTTPError):
                e.close()             # it holds the error response open
            raise PackageError(f"cannot fetch {_redact(url)}: {_os_text(e)}") from None
        fd, tmp_name = tempfile.mkstemp(dir=self.incoming, prefix="fetch-", suffix=".part")
        tmp = Path(tmp_name)
        try:
            with src, os.fdopen(fd, "wb") as out:
                if declared is not None and declared > cap:
                    raise PackageError(f"{name} is {declared:,} bytes, over the {cap:,}-byte limit "
                                       f"(max_package_bytes)")
                h, n = hashlib.sha256(), 0
                try:
                    while chunk := src.read(_CHUNK):
                        n += len(chunk)
                        if n > cap:
                            raise PackageError(f"{name} is over the {cap:,}-byte limit (max_package_bytes)")
                        h.update(chunk)
                        out.write(chunk)
                except (OSError, http.client.HTTPException, ValueError) as e:
                    raise PackageError(f"cannot fetch {name}: {_os_text(e)} after {n:,} bytes") from None
                if declared is not None and n != declared:
                    raise PackageError(f"cannot fetch {name}: got {n:,} of {declared:,} bytes")
                out.flush()
                os.fsync(out.fileno())
            os.chmod(tmp, 0o644)      # mkstemp makes 0600; other users (the CLI) may read packages
            return tmp, h.hexdigest(), name
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def _read_options(self):
        from edgert.package import ReadOptions
        if self.opts.public_key is not None or self.opts.require_signature:
            return ReadOptions(require_signature=True, public_key=self.opts.public_key)
        return ReadOptions()

    def _validate(self, tmp: Path, name: str) -> tuple[str | None, PackageError | None]:
        """(the package's body SHA-256, None) when it reads and verifies, else (None, the error)."""
        from edgert.package import read_package
        try:
            with read_package(tmp, self._read_options()) as pkg:
                return pkg.file_sha256, None
        except PackageError as e:
            # name the source, not the temp file, in the one-line reason
            return None, type(e)(" ".join(str(e).replace(str(tmp), name).split()))

    def _adopt(self, tmp: Path, sha: str) -> tuple[Path, bool]:
        """Move a verified temp file to packages/<sha>.pkg; returns (path, whether it is new)."""
        dest = self.packages / f"{sha}.pkg"
        existed = dest.is_file()
        os.replace(tmp, dest)
        _fsync_dir(self.packages)
        os.utime(dest)            # prune keeps the most recently deployed
        return dest, not existed

    def _commit(self, new: Path, old: Path | None) -> str:
        """Swap current.pkg to `new` (previous.pkg to `old`), then prune; returns '' or a warning.

        previous.pkg is set first: a crash between the two renames leaves previous == current, which
        is harmless, while the other order could leave previous naming a package about to be pruned."""
        if old is not None and old != new:
            self._set_link(PREVIOUS, old)
        self._set_link(CURRENT, new)          # the commit point
        try:
            _fsync_dir(self.root)
            self._prune()
        except OSError as e:
            return f" (warning: {_os_text(e)})"
        return ""

    def _prune(self) -> None:
        protect = {p for p in (self.current, self.previous) if p is not None}
        others = [p for p in self.packages.glob("*.pkg") if _SHA_RE.fullmatch(p.stem) and p not in protect]
        others.sort(key=lambda p: p.stat().st_mtime_ns, reverse=True)
        for p in others[max(0, self.opts.keep - len(protect)):]:
            p.unlink(missing_ok=True)

    # -- public --------------------------------------------------------------------------------

    def install_initial(self, path: Path) -> Path:
        """Adopt a configured package as current when the store has none; returns the current package.

        Same checks as deploy (hash, signature, size), copied in from a local path; no try_load (the
        agent loads it next anyway).  Raises PackageError when it cannot be adopted."""
        with self._lock:
            cur = self.current
            if cur is not None:
                return cur
            tmp = None
            try:
                tmp, sha, name = self._fetch(os.fspath(path))
                _, err = self._validate(tmp, name)
                if err is not None:
                    raise err
                dest, _ = self._adopt(tmp, sha)
                tmp = None
                self._commit(dest, None)
                return dest
            except OSError as e:
                raise PackageError(f"cannot install {path}: {_os_text(e)}") from None
            finally:
                if tmp is not None:
                    tmp.unlink(missing_ok=True)

    def deploy(self, url: str | os.PathLike, sha256: str | None,
               try_load: Callable[[Path], Any]) -> DeployResult:
        """Fetch, verify, try to load, and swap to a package; never raises for bad input or I/O.

        `sha256` (optional) is the SHA-256 of the whole file (sha256sum) or the package body digest
        that `edgert inspect` / `edgert verify` print; either pins the contents.  On any failure the
        current package stays and the result says why in one line."""
        url = os.fspath(url)
        expected = sha256.strip().lower() if sha256 else None
        if expected is not None and not _SHA_RE.fullmatch(expected):
            return DeployResult(False, f"sha256 must be 64 hex digits, got {sha256!r}", None, None, None)
        with self._lock:
            cur = self.current
            if expected is not None and cur is not None and cur.stem == expected:
                return DeployResult(True, "already current", expected, cur, self.previous)
            tmp = sha = loaded = None
            try:
                tmp, sha, name = self._fetch(url)
                body_sha, err = self._validate(tmp, name)
                if expected is not None and expected not in (sha, body_sha):
                    return DeployResult(False, f"sha256 mismatch for {name}: expected {expected[:12]}, "
                                               f"got {sha[:12]}", sha, None, None)
                if err is not None:
                    return DeployResult(False, str(err), sha, None, None)
                if cur is not None and cur.stem == sha:
                    return DeployResult(True, "already current", sha, cur, self.previous)
                dest, new = self._adopt(tmp, sha)
                tmp = None
                try:
                    loaded = try_load(dest)
                except Exception as e:        # the agent's loader: anything it raises means "not this one"
                    if new and dest not in (self.current, self.previous):
                        dest.unlink(missing_ok=True)
                    return DeployResult(False, f"{name} failed to load: {_one_line(e)}", sha, None, None)
                warning = self._commit(dest, cur)
                return DeployResult(True, f"deployed {sha[:12]}{warning}", sha, dest, cur, loaded)
            except (EdgertError, OSError, http.client.HTTPException) as e:
                # `loaded` is set when the swap itself failed: the caller should close what it opened
                return DeployResult(False, _one_line(e) if isinstance(e, EdgertError) else
                                    f"deploy failed: {_os_text(e)}", sha, None, None, loaded)
            finally:
                if tmp is not None:
                    tmp.unlink(missing_ok=True)

    def rollback(self, try_load: Callable[[Path], Any] | None = None) -> DeployResult:
        """Swap back to previous.pkg (and make the current package the previous one).

        With `try_load`, the previous package must load first, as in deploy."""
        with self._lock:
            cur, prev = self.current, self.previous
            if prev is None:
                return DeployResult(False, "no previous package to roll back to", None, None, None)
            if prev == cur:
                return DeployResult(False, "the previous package is the current one", prev.stem, None, None)
            loaded = None
            try:
                if try_load is not None:
                    try:
                        loaded = try_load(prev)
                    except Exception as e:
                        return DeployResult(False, f"previous package {prev.stem[:12]} failed to load: "
                                                   f"{_one_line(e)}", prev.stem, None, None)
                os.utime(prev)
                warning = self._commit(prev, cur)
            except OSError as e:
                return DeployResult(False, f"rollback failed: {_os_text(e)}", prev.stem, None, None)
            return DeployResult(True, f"rolled back to {prev.stem[:12]}{warning}", prev.stem, prev, cur, loaded)

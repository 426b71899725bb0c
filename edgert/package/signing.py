"""Ed25519 signing of model packages (docs/format.md §6).

The signature covers SIGNATURE_CONTEXT || u64 body_length || SHA-256(body); the body is everything
before the footer, so signing rewrites only the 160-byte footer (atomically: temp copy + rename).
`cryptography` is imported on first use; without it these functions raise PackageError with the
pip hint.  Key files are raw 32-byte keys, 64 hex digits, or PEM (PKCS#8 private / SPKI public).
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from types import SimpleNamespace

from edgert import format as F
from edgert.errors import PackageError, SignatureError

_PIP_HINT = "Ed25519 signing needs the cryptography package: pip install 'edgert[sign]'"


def crypto() -> SimpleNamespace:
    """The pieces of `cryptography` used here, imported lazily."""
    try:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
    except ImportError as e:
        raise PackageError(_PIP_HINT) from e
    return SimpleNamespace(InvalidSignature=InvalidSignature, serialization=serialization,
                           Ed25519PrivateKey=Ed25519PrivateKey, Ed25519PublicKey=Ed25519PublicKey)


def _check_len(key: bytes, n: int, what: str) -> bytes:
    if not isinstance(key, (bytes, bytearray)) or len(key) != n:
        raise PackageError(f"{what} must be {n} raw bytes")
    return bytes(key)


def signed_message(body_length: int, body_sha256: bytes) -> bytes:
    return F.SIGNATURE_CONTEXT + F.SIGNED_MESSAGE.pack(body_length, body_sha256)


def pack_footer(body_length: int, body_sha256: bytes, public_key: bytes | None = None,
                signature: bytes | None = None) -> bytes:
    signed = public_key is not None
    return F.FOOTER.pack(F.FOOTER_MAGIC, F.FOOTER_SIZE, int(F.FooterFlag.SIGNED) if signed else 0,
                         body_length, body_sha256, public_key or bytes(F.ED25519_PUBLIC_KEY_BYTES),
                         signature or bytes(F.ED25519_SIGNATURE_BYTES), bytes(8))


def generate_keypair() -> tuple[bytes, bytes]:
    """A new Ed25519 key pair as (private_raw 32 bytes, public_raw 32 bytes)."""
    c = crypto()
    key = c.Ed25519PrivateKey.generate()
    raw = key.private_bytes(c.serialization.Encoding.Raw, c.serialization.PrivateFormat.Raw,
                            c.serialization.NoEncryption())
    return raw, public_key_of(raw)


def public_key_of(private_key_raw: bytes) -> bytes:
    c = crypto()
    key = c.Ed25519PrivateKey.from_private_bytes(_check_len(private_key_raw, 32, "Ed25519 private key"))
    return key.public_key().public_bytes(c.serialization.Encoding.Raw, c.serialization.PublicFormat.Raw)


def sign_digest(private_key_raw: bytes, body_length: int, body_sha256: bytes) -> tuple[bytes, bytes]:
    """Sign a body digest; returns (public_key_raw, signature)."""
    c = crypto()
    key = c.Ed25519PrivateKey.from_private_bytes(_check_len(private_key_raw, 32, "Ed25519 private key"))
    return public_key_of(private_key_raw), key.sign(signed_message(body_length, body_sha256))


def verify_signature(public_key_raw: bytes, signature: bytes, body_length: int, body_sha256: bytes,
                     path: str = "package") -> None:
    """Raise SignatureError unless `signature` is public_key's signature of this body digest."""
    c = crypto()
    try:
        pub = c.Ed25519PublicKey.from_public_bytes(_check_len(public_key_raw, 32, "Ed25519 public key"))
        pub.verify(signature, signed_message(body_length, body_sha256))
    except (c.InvalidSignature, ValueError) as e:
        raise SignatureError(f"{path}: Ed25519 signature does not verify") from e


def sign_package(path: str | os.PathLike, private_key_raw: bytes) -> bytes:
    """Sign (or re-sign) a package in place; returns the signer's public key.

    The package is fully validated first; then a copy with the new footer replaces it atomically."""
    from edgert.package.reader import read_package
    path = os.fspath(path)
    _check_len(private_key_raw, 32, "Ed25519 private key")
    with read_package(path) as pkg:
        size, digest = pkg.size_bytes, bytes.fromhex(pkg.file_sha256)
    body_length = size - F.FOOTER_SIZE
    pub, sig = sign_digest(private_key_raw, body_length, digest)
    footer = pack_footer(body_length, digest, pub, sig)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)),
                               prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "r+b") as f, open(path, "rb") as src:
            shutil.copyfileobj(src, f, 1 << 20)
            f.seek(body_length)
            f.write(footer)
            f.truncate(body_length + F.FOOTER_SIZE)
            # The copy must still be the body we hashed (another writer could have replaced `path`).
            if sha256_of_prefix(f, body_length) != digest:
                raise PackageError(f"{path}: file changed while signing")
            f.flush()
            os.fsync(f.fileno())
        shutil.copymode(path, tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return pub


def verify_package(path: str | os.PathLike, public_key_raw: bytes | None = None) -> bool:
    """True when the package is intact and signed (by `public_key_raw` when given).

    Raises SignatureError when it is unsigned or the signature fails, PackageError when malformed."""
    from edgert.package.reader import ReadOptions, read_package
    if public_key_raw is not None:
        _check_len(public_key_raw, 32, "Ed25519 public key")
    crypto()
    with read_package(path, ReadOptions(require_signature=True, public_key=public_key_raw)) as pkg:
        return pkg.signature_verified


# ---------------------------------------------------------------------------------------------
# Key files
# ---------------------------------------------------------------------------------------------
def _read_key_file(path: str | os.PathLike, what: str) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise PackageError(f"cannot read {what} {os.fspath(path)}: {e}") from e
    if len(data) > 64 << 10:
        raise PackageError(f"{os.fspath(path)}: too large for an {what}")
    return data


def _hex_key(data: bytes) -> bytes | None:
    text = data.strip()
    if len(text) == 64:
        try:
            return bytes.fromhex(text.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            return None
    return None


def _load_key(path: str | os.PathLike, private: bool) -> bytes:
    """Raw 32-byte Ed25519 key from a raw, hex or PEM key file (PKCS#8 unencrypted / SubjectPublicKeyInfo)."""
    what = "private" if private else "public"
    data = _read_key_file(path, f"Ed25519 {what} key")
    if len(data) == 32:
        return data
    if (raw := _hex_key(data)) is not None:
        return raw
    c = crypto()
    try:
        key = (c.serialization.load_pem_private_key(data, password=None) if private
               else c.serialization.load_pem_public_key(data))
    except (ValueError, TypeError) as e:
        raise PackageError(f"{os.fspath(path)}: not a raw, hex or PEM Ed25519 {what} key ({e})") from e
    if not isinstance(key, c.Ed25519PrivateKey if private else c.Ed25519PublicKey):
        raise PackageError(f"{os.fspath(path)}: PEM key is not Ed25519")
    if private:
        return key.private_bytes(c.serialization.Encoding.Raw, c.serialization.PrivateFormat.Raw,
                                 c.serialization.NoEncryption())
    return key.public_bytes(c.serialization.Encoding.Raw, c.serialization.PublicFormat.Raw)


def load_private_key(path: str | os.PathLike) -> bytes:
    return _load_key(path, private=True)


def load_public_key(path: str | os.PathLike) -> bytes:
    return _load_key(path, private=False)


def sha256_of_prefix(f, length: int) -> bytes | None:
    """SHA-256 of the first `length` bytes of an open binary file (from offset 0); None if it is shorter."""
    f.seek(0)
    h = hashlib.sha256()
    left = length
    while left:
        chunk = f.read(min(left, 1 << 20))
        if not chunk:
            return None
        h.update(chunk)
        left -= len(chunk)
    return h.digest()


def save_private_key(path: str | os.PathLike, private_key_raw: bytes) -> None:
    """Write a PEM (PKCS#8, unencrypted) private key readable by the owner only."""
    c = crypto()
    key = c.Ed25519PrivateKey.from_private_bytes(_check_len(private_key_raw, 32, "Ed25519 private key"))
    pem = key.private_bytes(c.serialization.Encoding.PEM, c.serialization.PrivateFormat.PKCS8,
                            c.serialization.NoEncryption())
    fd = os.open(os.fspath(path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)


def save_public_key(path: str | os.PathLike, public_key_raw: bytes) -> None:
    c = crypto()
    key = c.Ed25519PublicKey.from_public_bytes(_check_len(public_key_raw, 32, "Ed25519 public key"))
    Path(path).write_bytes(key.public_bytes(c.serialization.Encoding.PEM,
                                            c.serialization.PublicFormat.SubjectPublicKeyInfo))


def write_keypair(prefix: str | os.PathLike, private_key_raw: bytes,
                  public_key_raw: bytes) -> tuple[Path, Path]:
    """Write PREFIX.key (PEM PKCS#8, mode 0600) and PREFIX.pub (PEM SPKI); returns both paths."""
    key_path, pub_path = Path(f"{os.fspath(prefix)}.key"), Path(f"{os.fspath(prefix)}.pub")
    if public_key_of(private_key_raw) != _check_len(public_key_raw, 32, "Ed25519 public key"):
        raise PackageError("public key does not belong to the private key")
    save_private_key(key_path, private_key_raw)
    save_public_key(pub_path, public_key_raw)
    return key_path, pub_path

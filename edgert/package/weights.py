"""Integer weight codec: scheme (symmetric / midrise / asymmetric, plus fp16) and sparsity
(none / bitmap / N:M) <-> the bytes of one tensor in a weights section.  docs/format.md §5 is the spec.

Everything is vectorised numpy; nothing loops over elements in Python.  Errors are PackageError
without a file name: the reader and the writer add the file and tensor to the message.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from edgert import format as F
from edgert.errors import PackageError
from edgert.ir import WeightEncoding
from edgert.package.bitpack import pack_bits, packed_nbytes, padding_is_zero, unpack_bits


# ---------------------------------------------------------------------------------------------
# Encoding descriptors
# ---------------------------------------------------------------------------------------------
def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def check_encoding(enc: WeightEncoding) -> None:
    """Raise PackageError unless `enc` is a valid combination of bits / scheme / sparsity / n / m."""
    if enc.scheme not in F.SCHEMES:
        raise PackageError(f"unknown weight scheme {enc.scheme!r} (known: {', '.join(F.SCHEMES)})")
    lo, hi, _ = F.SCHEMES[enc.scheme]
    if not _is_int(enc.bits) or not lo <= enc.bits <= hi:
        raise PackageError(f"scheme {enc.scheme!r} takes {lo}..{hi} bits, got {enc.bits!r}")
    if enc.sparsity not in F.SPARSITIES:
        raise PackageError(f"unknown sparsity {enc.sparsity!r} (known: bitmap, nm)")
    if enc.scheme == F.Scheme.FP16 and enc.sparsity is not None:
        raise PackageError("fp16 storage takes no sparsity")
    if enc.sparsity == F.Sparsity.NM:
        if not (_is_int(enc.n) and _is_int(enc.m) and F.NM_MIN_M <= enc.m <= F.NM_MAX_M
                and 1 <= enc.n <= enc.m):
            raise PackageError(f"N:M sparsity needs 1 <= n <= m and {F.NM_MIN_M} <= m <= "
                               f"{F.NM_MAX_M}, got n={enc.n!r} m={enc.m!r}")


def decoded_dtype(enc: WeightEncoding) -> str:
    return F.SCHEMES[enc.scheme][2]


def encoding_to_json(enc: WeightEncoding, nnz: int | None) -> dict[str, Any]:
    d: dict[str, Any] = {"bits": enc.bits, "scheme": enc.scheme, "sparsity": enc.sparsity}
    if enc.sparsity == F.Sparsity.NM:
        d["n"], d["m"] = enc.n, enc.m
    if enc.sparsity == F.Sparsity.BITMAP:
        d["nnz"] = nnz
    return d


def encoding_from_json(d: Any) -> tuple[WeightEncoding, int | None]:
    """Parse and check a manifest encoding record; returns (encoding, nnz or None)."""
    if not isinstance(d, dict):
        raise PackageError(f"encoding must be an object, got {type(d).__name__}")
    allowed = {"bits", "scheme", "sparsity", "n", "m", "nnz"}
    if not set(d) <= allowed:
        raise PackageError(f"encoding has unknown keys {sorted(set(d) - allowed)}")
    enc = WeightEncoding(bits=d.get("bits"), scheme=d.get("scheme"), sparsity=d.get("sparsity"),
                         n=d.get("n", 0), m=d.get("m", 0))
    if not isinstance(enc.scheme, str) or not (enc.sparsity is None or isinstance(enc.sparsity, str)):
        raise PackageError("encoding scheme / sparsity must be strings")
    check_encoding(enc)
    nnz = None
    if enc.sparsity == F.Sparsity.BITMAP:
        nnz = d.get("nnz")
        if not _is_int(nnz) or nnz < 0:
            raise PackageError(f"bitmap encoding needs a non-negative int 'nnz', got {nnz!r}")
    return enc, nnz


# ---------------------------------------------------------------------------------------------
# Codes <-> integer values
# ---------------------------------------------------------------------------------------------
def values_to_codes(q: np.ndarray, bits: int, scheme: str) -> np.ndarray:
    """Integer values -> uint8 codes; PackageError if any value is outside the scheme's range."""
    v = np.asarray(q)
    if v.dtype.kind not in "iu":
        raise PackageError(f"{scheme} weights must be an integer array, got {v.dtype}")
    v = v.astype(np.int16)
    if scheme == F.Scheme.SYMMETRIC:
        lim = (1 << (bits - 1)) - 1
        bad = (v < -lim) | (v > lim)
        rng = f"[{-lim}, {lim}]"
        codes = v + (1 << (bits - 1))
    elif scheme == F.Scheme.MIDRISE:
        lim = (1 << bits) - 1
        bad = (v < -lim) | (v > lim) | (v % 2 == 0)
        rng = f"odd values in [{-lim}, {lim}]"
        codes = (v + lim) // 2
    elif scheme == F.Scheme.ASYMMETRIC:
        bad = (v < 0) | (v >= 1 << bits)
        rng = f"[0, {(1 << bits) - 1}]"
        codes = v
    else:
        raise PackageError(f"scheme {scheme!r} has no integer codes")
    if v.size and bad.any():
        first = int(v.reshape(-1)[np.flatnonzero(bad.reshape(-1))[0]])
        raise PackageError(f"value {first} out of range for {bits}-bit {scheme} (allowed {rng}); "
                           f"{int(bad.sum())} bad values")
    return codes.astype(np.uint8)


def codes_to_values(codes: np.ndarray, bits: int, scheme: str) -> np.ndarray:
    """uint8 codes -> int8 (symmetric, midrise) or uint8 (asymmetric) values."""
    if scheme == F.Scheme.SYMMETRIC:
        if codes.size and not codes.all():
            raise PackageError(f"code 0 is not a valid {bits}-bit symmetric code")
        return (codes.astype(np.int16) - (1 << (bits - 1))).astype(np.int8)
    if scheme == F.Scheme.MIDRISE:
        return (codes.astype(np.int16) * 2 - ((1 << bits) - 1)).astype(np.int8)
    return codes.astype(np.uint8, copy=False)


# ---------------------------------------------------------------------------------------------
# Tensor payloads
# ---------------------------------------------------------------------------------------------
def _nm_groups(shape: tuple[int, ...], m: int) -> int:
    if len(shape) == 0 or shape[-1] % m:
        raise PackageError(f"N:M sparsity needs a last axis divisible by m={m}, shape is {list(shape)}")
    return int(np.prod(shape, dtype=object)) // m


def stored_nbytes(enc: WeightEncoding, shape: tuple[int, ...], nnz: int | None) -> int:
    """Bytes the encoded tensor takes (the manifest's nbytes must equal this)."""
    count = int(np.prod(shape, dtype=object))
    if enc.scheme == F.Scheme.FP16:
        return 2 * count
    if enc.sparsity is None:
        return packed_nbytes(count, enc.bits)
    if enc.sparsity == F.Sparsity.BITMAP:
        if nnz is None or not 0 <= nnz <= count:
            raise PackageError(f"bitmap nnz {nnz!r} not in [0, {count}]")
        return packed_nbytes(count, 1) + packed_nbytes(nnz, enc.bits)
    slots = _nm_groups(shape, enc.m) * enc.n
    return packed_nbytes(slots, enc.bits) + packed_nbytes(slots, F.nm_index_bits(enc.m))


def encode(values: np.ndarray, enc: WeightEncoding) -> tuple[bytes, int | None]:
    """Encode a tensor; returns (payload, nnz for bitmap sparsity else None)."""
    check_encoding(enc)
    if enc.scheme == F.Scheme.FP16:
        v = np.asarray(values)
        if v.dtype != np.float32:
            raise PackageError(f"fp16 storage takes a float32 tensor, got {v.dtype}")
        with np.errstate(over="ignore"):
            h = v.astype("<f2")
        if v.size and not np.array_equal(np.isfinite(h), np.isfinite(v)):
            raise PackageError("float32 values overflow float16 (|x| > 65504)")
        return h.tobytes(), None
    want = decoded_dtype(enc)
    v = np.asarray(values)
    if v.dtype != np.dtype(want):
        raise PackageError(f"{enc.scheme} weights must be {want}, got {v.dtype}")
    flat = np.ascontiguousarray(v).reshape(-1)
    if enc.sparsity is None:
        return pack_bits(values_to_codes(flat, enc.bits, enc.scheme), enc.bits), None
    if enc.sparsity == F.Sparsity.BITMAP:
        mask = flat != 0
        nz = flat[mask]
        payload = (np.packbits(mask, bitorder="little").tobytes()
                   + pack_bits(values_to_codes(nz, enc.bits, enc.scheme), enc.bits))
        return payload, int(nz.size)
    # N:M: per run of m, the n slots are the nonzero positions padded with zero positions, in
    # increasing position order (so indices are strictly increasing and decoding is unambiguous).
    n, m = enc.n, enc.m
    groups = flat.reshape(_nm_groups(v.shape, m), m)
    nz = groups != 0
    per_group = nz.sum(axis=1)
    if groups.size and int(per_group.max()) > n:
        g = int(np.argmax(per_group > n))
        raise PackageError(f"N:M {n}:{m}: run {g} has {int(per_group[g])} nonzeros (> {n})")
    if enc.scheme == F.Scheme.MIDRISE and groups.size and int(per_group.min()) < n:
        raise PackageError(f"N:M {n}:{m} with midrise needs exactly {n} nonzeros per run "
                           "(midrise has no code for 0)")
    key = np.where(nz, 0, m) + np.arange(m)              # nonzeros first, then zeros, by position
    idx = np.sort(np.argsort(key, axis=1, kind="stable")[:, :n], axis=1)
    vals = np.take_along_axis(groups, idx, axis=1)
    payload = (pack_bits(values_to_codes(vals, enc.bits, enc.scheme), enc.bits)
               + pack_bits(idx.astype(np.uint8), F.nm_index_bits(m)))
    return payload, None


def decode(buf, enc: WeightEncoding, shape: tuple[int, ...], nnz: int | None) -> np.ndarray:
    """Decode one tensor payload (exactly stored_nbytes long) into a new read-only array."""
    raw = np.frombuffer(buf, dtype=np.uint8)
    need = stored_nbytes(enc, shape, nnz)
    if raw.size != need:
        raise PackageError(f"payload is {raw.size} bytes, the encoding needs {need}")
    count = int(np.prod(shape, dtype=object))
    if enc.scheme == F.Scheme.FP16:
        out = raw.view("<f2").astype(np.float32).reshape(shape)
        out.flags.writeable = False
        return out
    bits, scheme = enc.bits, enc.scheme
    if enc.sparsity is None:
        if not padding_is_zero(raw, bits, count):
            raise PackageError("nonzero padding bits after the last code")
        out = codes_to_values(unpack_bits(raw, bits, count), bits, scheme)
    elif enc.sparsity == F.Sparsity.BITMAP:
        nb = packed_nbytes(count, 1)
        mask = np.unpackbits(raw[:nb], count=count, bitorder="little").astype(bool)
        if int(mask.sum()) != nnz:
            raise PackageError(f"bitmap has {int(mask.sum())} set bits, the record says nnz={nnz}")
        if not padding_is_zero(raw[:nb], 1, count) or not padding_is_zero(raw[nb:], bits, nnz):
            raise PackageError("nonzero padding bits in a bitmap-sparse tensor")
        out = np.zeros(count, dtype=decoded_dtype(enc))
        out[mask] = codes_to_values(unpack_bits(raw[nb:], bits, nnz), bits, scheme)
    else:
        n, m = enc.n, enc.m
        g = _nm_groups(shape, m)
        slots, ib = g * n, F.nm_index_bits(m)
        cb = packed_nbytes(slots, bits)
        if not padding_is_zero(raw[:cb], bits, slots) or not padding_is_zero(raw[cb:], ib, slots):
            raise PackageError("nonzero padding bits in an N:M-sparse tensor")
        vals = codes_to_values(unpack_bits(raw[:cb], bits, slots), bits, scheme).reshape(g, n)
        idx = unpack_bits(raw[cb:], ib, slots).reshape(g, n).astype(np.intp)
        if slots and int(idx.max()) >= m:
            raise PackageError(f"N:M index {int(idx.max())} >= m={m}")
        if n > 1 and slots and not (np.diff(idx, axis=1) > 0).all():
            raise PackageError("N:M indices are not strictly increasing within a run")
        out = np.zeros((g, m), dtype=decoded_dtype(enc))
        np.put_along_axis(out, idx, vals, axis=1)
    out = out.reshape(shape)
    out.flags.writeable = False
    return out

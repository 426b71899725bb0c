"""LSB-first bit packing of unsigned codes at any width 1..8.

Code i occupies stream bits [i*b, (i+1)*b); stream bit k is bit (k mod 8) of byte k // 8, and the
low bit of a code comes first.  The last byte is zero-padded.  So at b=4 code 2i is the low nibble
of byte i (the GGUF / ORT nibble order), and at b=8 the stream is the codes themselves.

Vectorised with numpy's unpackbits/packbits; large inputs go in chunks of CHUNK codes (a multiple
of 8, so every chunk starts on a byte boundary) to bound the 1-byte-per-bit scratch buffer.
"""
from __future__ import annotations

import numpy as np

CHUNK = 1 << 20


def packed_nbytes(count: int, bits: int) -> int:
    return (count * bits + 7) // 8


def _check_bits(bits: int) -> None:
    if not isinstance(bits, int) or isinstance(bits, bool) or not 1 <= bits <= 8:
        raise ValueError(f"bit width must be an int in 1..8, got {bits!r}")


def pack_bits(codes: np.ndarray, bits: int) -> bytes:
    """Pack unsigned codes (each < 2**bits) into an LSB-first bit stream."""
    _check_bits(bits)
    c = np.asarray(codes).reshape(-1)
    if c.size and (c.dtype.kind not in "ui" or int(c.min()) < 0 or int(c.max()) >= 1 << bits):
        raise ValueError(f"codes must be integers in [0, {(1 << bits) - 1}] for {bits}-bit packing")
    c = c.astype(np.uint8, copy=False)
    if bits == 8:
        return c.tobytes()
    if bits == 4:                      # the common LLM width: two codes per byte, no bit planes
        even = c[0::2]
        out4 = even.copy()
        out4[:c.size // 2] |= c[1::2] << 4
        return out4.tobytes()
    out = bytearray()
    for start in range(0, c.size, CHUNK):
        chunk = c[start:start + CHUNK]
        planes = np.unpackbits(chunk[:, None], axis=1, bitorder="little")[:, :bits]
        out += np.packbits(planes.reshape(-1), bitorder="little").tobytes()
    return bytes(out)


def unpack_bits(buf, bits: int, count: int) -> np.ndarray:
    """Inverse of pack_bits: the first `count` codes of `buf` as a uint8 array (a new array)."""
    _check_bits(bits)
    if not isinstance(count, int) or count < 0:
        raise ValueError(f"count must be a non-negative int, got {count!r}")
    need = packed_nbytes(count, bits)
    raw = np.frombuffer(buf, dtype=np.uint8)
    if raw.size < need:
        raise ValueError(f"{count} codes of {bits} bits need {need} bytes, buffer has {raw.size}")
    raw = raw[:need]
    if bits == 8:
        return raw.copy()
    if bits == 4:
        out4 = np.empty(need * 2, dtype=np.uint8)
        out4[0::2] = raw & 0x0F
        out4[1::2] = raw >> 4
        return out4[:count]
    out = np.empty(count, dtype=np.uint8)
    step = CHUNK * bits // 8            # bytes per chunk of CHUNK codes
    for i, start in enumerate(range(0, count, CHUNK)):
        n = min(CHUNK, count - start)
        stream = np.unpackbits(raw[i * step:i * step + packed_nbytes(n, bits)], bitorder="little")
        planes = stream[:n * bits].reshape(n, bits)
        out[start:start + n] = np.packbits(planes, axis=1, bitorder="little")[:, 0]
    return out


def padding_is_zero(buf, bits: int, count: int) -> bool:
    """True when the unused high bits of the last byte of a packed stream are zero (canonical form)."""
    used = count * bits % 8
    if used == 0:
        return True
    raw = np.frombuffer(buf, dtype=np.uint8)
    last = int(raw[packed_nbytes(count, bits) - 1])
    return last >> used == 0

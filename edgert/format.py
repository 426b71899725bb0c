r"""Every constant of the `model.pkg` file format: the one place format facts live.

docs/format.md is the byte-level spec; the reader (edgert/package/reader.py), the writer
(converters/package_writer.py) and the signer (edgert/package/signing.py) import these names and
never spell a size, an offset or a magic number themselves.

File layout (all integers little-endian):

    [header 64 B][section table: count x 128 B][sections, each at a 64-byte aligned offset][footer 160 B]
    \_____________________________ body (SHA-256 in the footer) _____________________/
"""
from __future__ import annotations

import struct
from enum import IntEnum, IntFlag

# ---------------------------------------------------------------------------------------------
# Identity and versions
# ---------------------------------------------------------------------------------------------
MAGIC = b"EDGERTPK"
FOOTER_MAGIC = b"EDGERTFT"
FORMAT_MAJOR = 1          # readers reject any other major
FORMAT_MINOR = 0          # readers accept any minor of their major (minor bumps only add manifest keys)

# Sections start at multiples of ALIGNMENT and raw tensors at multiples of ALIGNMENT inside a
# section, so every raw tensor can be viewed in place from an mmap (64 = a cache line and the
# widest SIMD load on the targets; GGUF uses 32).
ALIGNMENT = 64


class HeaderFlag(IntFlag):
    LITTLE_ENDIAN = 1 << 0    # must be set: every multi-byte value in the file is little-endian


KNOWN_HEADER_FLAGS = HeaderFlag.LITTLE_ENDIAN


class FooterFlag(IntFlag):
    SIGNED = 1 << 0           # public key + Ed25519 signature fields are filled


KNOWN_FOOTER_FLAGS = FooterFlag.SIGNED


class SectionKind(IntEnum):
    MANIFEST = 1              # UTF-8 JSON; exactly one per file
    WEIGHTS = 2               # tensor payloads of one graph, addressed by manifest tensor records
    EXTRA = 3                 # opaque named blob (tokenizer, draft heads, ...), read via Package.extra()


class Codec(IntEnum):
    NONE = 0                  # stored bytes == raw bytes
    ZSTD = 1                  # one or more Zstandard frames that decompress to exactly raw_length bytes


# ---------------------------------------------------------------------------------------------
# Fixed-size records
# ---------------------------------------------------------------------------------------------
# magic, major, minor, flags, header_size, alignment, table_offset, section_count, entry_size,
# body_length, reserved (zero)
HEADER = struct.Struct("<8sHHIIIQIIQ16s")
HEADER_SIZE = HEADER.size                       # 64

# name (ASCII, NUL padded), kind, codec, flags (zero), offset, stored_length, raw_length,
# sha256(stored bytes), reserved (zero)
SECTION_ENTRY = struct.Struct("<48sHHIQQQ32s16s")
SECTION_ENTRY_SIZE = SECTION_ENTRY.size         # 128
SECTION_NAME_BYTES = 48

# magic, footer_size, flags, body_length, sha256(body), ed25519 public key, ed25519 signature,
# reserved (zero)
FOOTER = struct.Struct("<8sIIQ32s32s64s8s")
FOOTER_SIZE = FOOTER.size                       # 160

SHA256_BYTES = 32
ED25519_PUBLIC_KEY_BYTES = 32
ED25519_PRIVATE_KEY_BYTES = 32
ED25519_SIGNATURE_BYTES = 64

# What is signed: this context string, the body length (u64 LE) and the body SHA-256.  The footer is
# outside the body, so signing rewrites only the footer.
SIGNATURE_CONTEXT = b"edgert-model-package-signature-v1\x00"
SIGNED_MESSAGE = struct.Struct("<Q32s")

# ---------------------------------------------------------------------------------------------
# Names
# ---------------------------------------------------------------------------------------------
MANIFEST_SECTION = "manifest"
WEIGHTS_SECTION_PREFIX = "weights."             # "weights.<graph index>"
SECTION_NAME_CHARS = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-/:+")

# ---------------------------------------------------------------------------------------------
# Caps (a hostile file must not make the reader allocate or loop without bound)
# ---------------------------------------------------------------------------------------------
MAX_SECTIONS = 4096
MAX_MANIFEST_BYTES = 64 << 20
MAX_JSON_DEPTH = 64
MAX_GRAPHS = 256
MAX_TENSOR_RANK = 16
MAX_TENSOR_ELEMENTS = 1 << 40                   # product of max(dim, 1); keeps numpy strides in range
DEFAULT_MAX_DECODED_BYTES = 8 << 30             # decompressed sections + decoded (non-view) tensors
DEFAULT_MAX_VALUE_BYTES = 2 << 30               # any one intermediate value / op scratch at run time
MAX_NODES = 1 << 20
MAX_PREPROCESS_SIDE = 1 << 15                   # preprocess size / pad_multiple (pixels)
ZSTD_READ_CHUNK = 1 << 20
HASH_CHUNK = 8 << 20                            # hashed per chunk, then the chunk's pages are released

# ---------------------------------------------------------------------------------------------
# Tensor storage
# ---------------------------------------------------------------------------------------------
# Manifest dtype name -> little-endian numpy dtype of the stored / decoded array.
DTYPES: dict[str, str] = {
    "float32": "<f4", "float16": "<f2", "float64": "<f8",
    "int8": "|i1", "uint8": "|u1", "int16": "<i2", "uint16": "<u2",
    "int32": "<i4", "uint32": "<u4", "int64": "<i8", "uint64": "<u8",
    "bool": "|b1",
}


class Scheme:
    """Names of weight storage schemes (WeightEncoding.scheme)."""
    SYMMETRIC = "symmetric"    # code = q + 2^(b-1), q in [-(2^(b-1)-1), 2^(b-1)-1]; code 0 is invalid
    MIDRISE = "midrise"        # code = (q + 2^b - 1) / 2, q odd in [-(2^b-1), 2^b-1]
    ASYMMETRIC = "asymmetric"  # code = q (uint8), zero point is a separate initializer
    FP16 = "fp16"              # float32 tensor stored as IEEE half, decoded back to float32


# scheme -> (min bits, max bits, decoded dtype)
SCHEMES: dict[str, tuple[int, int, str]] = {
    Scheme.SYMMETRIC: (2, 8, "int8"),
    Scheme.MIDRISE: (1, 7, "int8"),
    Scheme.ASYMMETRIC: (1, 8, "uint8"),
    Scheme.FP16: (16, 16, "float32"),
}


class Sparsity:
    BITMAP = "bitmap"          # ceil(count/8) bytes of bitmap (1 = nonzero), then the nonzero codes
    NM = "nm"                  # per run of m along the last axis: n codes, then (all runs) n indices


SPARSITIES = (None, Sparsity.BITMAP, Sparsity.NM)
NM_MIN_M = 2
NM_MAX_M = 256                 # indices fit 8 bits


def nm_index_bits(m: int) -> int:
    """Bits per N:M slot index: ceil(log2 m)."""
    return max(1, (m - 1).bit_length())


def align_up(n: int, alignment: int = ALIGNMENT) -> int:
    return (n + alignment - 1) // alignment * alignment


assert HEADER_SIZE == 64 and SECTION_ENTRY_SIZE == 128 and FOOTER_SIZE == 160

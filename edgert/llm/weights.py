"""An LLM's weights as read from a package: block-quantized matrices and float tensors.

`read_llm(path)` validates the `llm` graph's record (edgert.llm.config) against the tensors really
stored, and returns `LlmWeights`.  Codes stay bit-packed, zero-copy views of the mapped file, until a
backend asks for them in the layout it wants (`BlockQuant.packed_codes` at the stored width, or
`codes()` one byte per code).  Only numpy is needed here.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgert.errors import PackageError
from edgert.ir import PackedTensor
from edgert.llm.config import (CHAT_TEMPLATE_SECTION, LLM_GRAPH, TOKENIZER_SECTION, BlockQuantSpec,
                               FloatSpec, LlmConfig)
from edgert.package.bitpack import unpack_bits


@dataclass
class BlockQuant:
    """value[r, c] = scale[r, c//block] * (code[r, c] - zero[r, c//block]) + min[r, c//block]."""
    bits: int
    block: int
    rows: int
    cols: int
    packed: np.ndarray                  # uint8 LSB-first stream of rows*cols codes (read-only view)
    scale: np.ndarray                   # float16 [rows, cols//block]
    min: np.ndarray | None = None       # float16 [rows, cols//block] or None
    zero: int | np.ndarray = 0          # int, or uint8 [rows, cols//block]
    source_type: str = ""

    @property
    def n_blocks(self) -> int:
        return self.cols // self.block

    def codes(self, rows: slice | np.ndarray | None = None) -> np.ndarray:
        """Codes as uint8 [rows, cols] (all rows, or the selected ones)."""
        if rows is None:
            return unpack_bits(self.packed, self.bits, self.rows * self.cols).reshape(self.rows, self.cols)
        idx = np.arange(self.rows)[rows] if isinstance(rows, slice) else np.asarray(rows, dtype=np.int64)
        if self.bits == 8:
            return self.packed.reshape(self.rows, self.cols)[idx]
        row_bytes = self.cols * self.bits // 8 if self.cols * self.bits % 8 == 0 else None
        if row_bytes is not None:
            view = self.packed[:self.rows * row_bytes].reshape(self.rows, row_bytes)[idx]
            return unpack_bits(view, self.bits, idx.size * self.cols).reshape(idx.size, self.cols)
        return self.codes()[idx]

    def zero_array(self, rows: slice | np.ndarray | None = None) -> np.ndarray:
        """Zero points as float32 [rows, n_blocks] (broadcast when a single int)."""
        if isinstance(self.zero, np.ndarray):
            z = self.zero if rows is None else self.zero[rows]
            return z.astype(np.float32)
        n = self.rows if rows is None else \
            len(range(*rows.indices(self.rows))) if isinstance(rows, slice) else len(rows)
        return np.full((n, self.n_blocks), float(self.zero), dtype=np.float32)

    def dequantize(self, rows: slice | np.ndarray | None = None) -> np.ndarray:
        """Float32 values [rows, cols] (the numpy oracle's weights; embedding lookups)."""
        q = self.codes(rows).astype(np.float32)
        sel = slice(None) if rows is None else rows
        d = self.scale[sel].astype(np.float32)
        z = self.zero_array(rows)
        n = q.shape[0]
        w = (q.reshape(n, self.n_blocks, self.block) - z[:, :, None]) * d[:, :, None]
        if self.min is not None:
            w += self.min[sel].astype(np.float32)[:, :, None]
        return w.reshape(n, self.cols)


Weight = BlockQuant | np.ndarray        # float tensors are plain float32 arrays


@dataclass
class LlmWeights:
    config: LlmConfig
    tensors: dict[str, Weight]
    tokenizer_json: str
    chat_template: str | None
    path: str = ""
    size_bytes: int = 0
    _pkg: object = field(default=None, repr=False)      # keeps the mapping alive

    def __getitem__(self, role: str) -> Weight:
        return self.tensors[role]

    def matrix(self, role: str) -> np.ndarray:
        w = self.tensors[role]
        return w.dequantize() if isinstance(w, BlockQuant) else np.asarray(w, dtype=np.float32)

    def release_pages(self) -> None:
        """Drop the resident pages of the mapped package (MADV_DONTNEED; file-backed, so safe)."""
        import mmap
        mm = getattr(self._pkg, "_mm", None)
        if mm is not None and hasattr(mmap, "MADV_DONTNEED"):
            try:
                mm.madvise(mmap.MADV_DONTNEED)
            except (OSError, ValueError):
                pass

    def close(self) -> None:
        if self._pkg is not None:
            self._pkg.close()
            self._pkg = None


def is_llm_graph(graph) -> bool:
    return isinstance(getattr(graph, "metadata", None), dict) and "llm" in graph.metadata


def read_llm(path: str | os.PathLike, verify_hashes: bool = True, require_signature: bool = False,
             public_key: bytes | None = None) -> LlmWeights:
    """Read an LLM package; every tensor named by the record is checked against what is stored."""
    from edgert.package import ReadOptions, read_package

    path = os.fspath(path)
    pkg = read_package(Path(path), ReadOptions(verify_hashes=verify_hashes,
                                               require_signature=require_signature,
                                               public_key=public_key, decode_packed=False))
    try:
        if LLM_GRAPH not in pkg.graphs or not is_llm_graph(pkg.graphs[LLM_GRAPH]):
            raise PackageError(f"{path}: not an LLM package (no {LLM_GRAPH!r} graph with an llm record; "
                               f"graphs: {', '.join(pkg.graphs) or 'none'})")
        g = pkg.graphs[LLM_GRAPH]
        cfg = LlmConfig.from_json(g.metadata["llm"], f"{path}: llm")
        tensors = {role: _weight(role, spec, g, path) for role, spec in cfg.weights.items()}
        names = pkg.extra_names()
        if TOKENIZER_SECTION not in names:
            raise PackageError(f"{path}: no {TOKENIZER_SECTION!r} section")
        try:
            tok = bytes(pkg.extra(TOKENIZER_SECTION)).decode("utf-8")
            tmpl = bytes(pkg.extra(CHAT_TEMPLATE_SECTION)).decode("utf-8") \
                if CHAT_TEMPLATE_SECTION in names else None
        except UnicodeDecodeError as e:
            raise PackageError(f"{path}: tokenizer / chat template section is not UTF-8 ({e})") from e
        return LlmWeights(cfg, tensors, tok, tmpl, path, pkg.size_bytes, pkg)
    except BaseException:
        pkg.close()
        raise


def _tensor(g, name: str, path: str, where: str):
    if name in g.packed:
        return g.packed[name]
    if name in g.initializers:
        return g.initializers[name]
    raise PackageError(f"{path}: {where} names tensor {name!r}, which is not stored")


def _float_block_table(g, name: str, shape: tuple[int, int], path: str, where: str) -> np.ndarray:
    arr = _tensor(g, name, path, where)
    if not isinstance(arr, np.ndarray) or arr.dtype != np.float16 or arr.shape != shape:
        raise PackageError(f"{path}: {where}: {name!r} must be float16 {list(shape)}, got "
                           f"{getattr(arr, 'dtype', type(arr).__name__)} {list(getattr(arr, 'shape', ()))}")
    if not np.isfinite(arr).all():
        raise PackageError(f"{path}: {where}: {name!r} has non-finite values")
    return arr


def _weight(role: str, spec: BlockQuantSpec | FloatSpec, g, path: str) -> Weight:
    where = f"weight {role!r}"
    if isinstance(spec, FloatSpec):
        arr = _tensor(g, spec.tensor, path, where)
        if not isinstance(arr, np.ndarray) or arr.dtype not in (np.float32, np.float16) \
                or list(arr.shape) != spec.shape:
            raise PackageError(f"{path}: {where}: {spec.tensor!r} must be a float tensor of shape {spec.shape}")
        if not np.isfinite(arr).all():
            raise PackageError(f"{path}: {where}: {spec.tensor!r} has non-finite values")
        return np.asarray(arr, dtype=np.float32)
    codes = _tensor(g, spec.codes, path, where)
    if not isinstance(codes, PackedTensor) or codes.encoding.bits != spec.bits or \
            codes.shape != (spec.rows, spec.cols):
        raise PackageError(f"{path}: {where}: codes {spec.codes!r} must be {spec.bits}-bit asymmetric "
                           f"codes of shape [{spec.rows}, {spec.cols}]")
    nb = (spec.rows, spec.cols // spec.block)
    scale = _float_block_table(g, spec.scale, nb, path, where)
    mn = _float_block_table(g, spec.min, nb, path, where) if spec.min is not None else None
    zero: int | np.ndarray = spec.zero if isinstance(spec.zero, int) else None
    if zero is None:
        z = _tensor(g, spec.zero, path, where)
        if isinstance(z, PackedTensor):
            if z.encoding.bits != spec.bits or z.shape != nb:
                raise PackageError(f"{path}: {where}: zero points {spec.zero!r} must be {spec.bits}-bit "
                                   f"codes of shape {list(nb)}")
            zero = unpack_bits(z.data, spec.bits, nb[0] * nb[1]).reshape(nb)
        else:
            raise PackageError(f"{path}: {where}: zero points {spec.zero!r} must be asymmetric codes")
    return BlockQuant(spec.bits, spec.block, spec.rows, spec.cols, codes.data, scale, mn, zero,
                      spec.source_type)

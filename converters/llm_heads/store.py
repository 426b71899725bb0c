"""Write trained draft heads into a new package: the original one plus `llm/heads` + `llm/heads.bin`.

The original package is read back in full (graphs decoded, with the encodings the reader reports)
and written again by the ordinary writer with the same codec, so every weights section is
re-encoded to the same bytes and the heads' `base_sha256` (edgert.llm.heads.base_model_digest) is
the same for the original and the new file.  A signature is not carried over (the writer signs
again when `signing_key` is given).
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np

from edgert import format as F
from edgert.errors import ConversionError
from edgert.llm.heads import KINDS, base_model_digest, encode_heads


def store_heads(src: str | os.PathLike, out: str | os.PathLike, heads: dict[str, np.ndarray],
                report: dict[str, Any] | None = None, signing_key: bytes | None = None,
                early: dict[str, Any] | None = None):
    """`src` package + draft heads ({"w": [K, H, H], "b": [K, H]}, or None to keep src's) -> `out`;
    returns the WriteReport.  early: the early-exit head too, {"w": [1, H, H], "b": [1, H],
    "after_layer": e, "report": {...}} (ProPD early pruning)."""
    from converters.package_writer import WriteOptions, write_package
    from edgert.llm.config import LLM_GRAPH
    from edgert.package import ReadOptions, read_package

    src, out = os.fspath(src), os.fspath(out)
    if os.path.abspath(src) == os.path.abspath(out):
        raise ConversionError(f"{out}: write the package with heads to a new file, not over its source")
    pkg = read_package(src)
    try:
        if LLM_GRAPH not in pkg.graphs:
            raise ConversionError(f"{src}: not an LLM package")
        cfg_json = pkg.graphs[LLM_GRAPH].metadata["llm"]
        base = base_model_digest(pkg)
        codecs = {s.codec for s in pkg.sections if s.kind == F.SectionKind.WEIGHTS}
        compress = "zstd" if F.Codec.ZSTD in codecs else "none"
        replaced = (KINDS["medusa"][:2] if heads is not None else ()) + (KINDS["early_exit"][:2] if early else ())
        extras = {name: bytes(pkg.extra(name)) for name in pkg.extra_names() if name not in replaced}
        vocab = int(cfg_json["vocab_size"])
        if heads is not None:
            extras.update(encode_heads(heads["w"], heads["b"], base, vocab, report))
        if early:
            extras.update(encode_heads(early["w"], early["b"], base, vocab, early.get("report"), "early_exit",
                                       int(early["after_layer"])))
        producer = {k: v for k, v in pkg.manifest.get("producer", {}).items() if k not in ("name", "version")}
        producer["heads"] = "edgert train-heads"
        rep = write_package(out, list(pkg.graphs.values()),
                            WriteOptions(compress=compress, signing_key=signing_key),
                            producer=producer, extras=extras)
    finally:
        pkg.close()
    # the new file must name the same base model (same weights bytes), or the heads are useless
    new = read_package(out, ReadOptions(decode_packed=False))
    try:
        if base_model_digest(new) != base:
            raise ConversionError(f"{out}: re-writing changed the weights sections; heads not usable")
    finally:
        new.close()
    return rep

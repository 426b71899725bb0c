"""The in-memory graph IR shared by the package reader/writer, the converter and every backend.

Semantics of nodes follow ONNX (see docs/design.md for the few edgert-specific rules).  Attribute
values are JSON-serialisable (int, float, str, lists of those); tensors never live in attributes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Union

import numpy as np

Dim = Union[int, str, None]


@dataclass
class Node:
    op: str
    name: str
    inputs: list[str]          # "" marks an omitted optional input, as in ONNX
    outputs: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)


@dataclass
class ValueInfo:
    name: str
    dtype: str                 # numpy dtype name: "float32", "int8", "int64", ...
    shape: list[Dim]           # int for fixed dims, str for named dynamic dims, None for unknown


@dataclass
class Preprocess:
    """How `edgert run --input image.png` turns an image into the model input (recorded at convert time)."""
    size: tuple[int, int] | None = None        # (height, width); None keeps the image size
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)  # applied after scaling pixels to [0, 1]
    std: tuple[float, ...] = (1.0, 1.0, 1.0)
    channels: str = "rgb"                      # "rgb" | "bgr" | "gray"
    layout: str = "nchw"                       # "nchw" | "nhwc"
    pad_multiple: int = 1                      # round H, W up to a multiple (when size is None)

    def to_json(self) -> dict[str, Any]:
        return {"size": list(self.size) if self.size else None, "mean": list(self.mean),
                "std": list(self.std), "channels": self.channels, "layout": self.layout,
                "pad_multiple": self.pad_multiple}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Preprocess":
        size = d.get("size")
        mean, std = tuple(d.get("mean", (0.0,) * 3)), tuple(d.get("std", (1.0,) * 3))
        return cls(size=tuple(size) if size else None, mean=mean * 3 if len(mean) == 1 else mean,
                   std=std * 3 if len(std) == 1 else std, channels=d.get("channels", "rgb"),
                   layout=d.get("layout", "nchw"), pad_multiple=int(d.get("pad_multiple", 1)))


@dataclass
class WeightEncoding:
    """How one integer initializer is stored in the package (packed codes, optional sparsity).

    The decoded value is always the integer tensor q the kernels use (int8 for symmetric / midrise
    schemes, uint8 codes for asymmetric ones, whose zero point is a separate initializer)."""
    bits: int                          # 1..8
    scheme: str = "symmetric"          # "symmetric" | "midrise" | "asymmetric"
    sparsity: str | None = None        # None | "bitmap" | "nm"
    n: int = 0                         # for N:M sparsity (n nonzeros in every m along the last axis)
    m: int = 0


@dataclass
class PackedTensor:
    """An asymmetric-coded tensor left bit-packed (ReadOptions(decode_packed=False)): `data` is the
    LSB-first code stream (edgert.package.bitpack) of `shape` in C order, a read-only uint8 view."""
    data: np.ndarray
    encoding: WeightEncoding
    shape: tuple[int, ...]


@dataclass
class LayerInfo:
    """Per-layer report kept in the manifest for `edgert inspect` and the converter summary."""
    name: str
    op: str
    weight: str | None = None
    wbits: int | None = None
    abits: int | None = None
    granularity: str | None = None     # "tensor" | "channel" | "group"
    group_size: int | None = None
    sparsity: float = 0.0              # fraction of zero weights
    sqnr_db: float | None = None
    params: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Graph:
    name: str
    inputs: list[ValueInfo]
    outputs: list[ValueInfo]
    nodes: list[Node]                              # topologically sorted
    initializers: dict[str, np.ndarray]            # decoded arrays; zero-copy views of the file where raw
    encodings: dict[str, WeightEncoding] = field(default_factory=dict)   # writer hints / reader facts
    preprocess: Preprocess | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    layers: list[LayerInfo] = field(default_factory=list)
    packed: dict[str, PackedTensor] = field(default_factory=dict)   # read with decode_packed=False

    def producers(self) -> dict[str, Node]:
        return {o: n for n in self.nodes for o in n.outputs if o}

    def consumers(self) -> dict[str, list[Node]]:
        out: dict[str, list[Node]] = {}
        for n in self.nodes:
            for i in n.inputs:
                if i:
                    out.setdefault(i, []).append(n)
        return out

"""A tiny real package (Conv 3->2 + Relu, recorded 8x8 preprocessing) for agent/telemetry/eval tests.

Import as ``from tiny_pkg import write_tiny_package`` (tests/ is on sys.path)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edgert.ir import Graph, Node, Preprocess, ValueInfo


def tiny_graph(seed: int = 0, preprocess: bool = True) -> Graph:
    rng = np.random.default_rng(seed)
    inits = {"w": rng.standard_normal((2, 3, 3, 3)).astype(np.float32),
             "b": rng.standard_normal(2).astype(np.float32)}
    nodes = [Node("Conv", "conv", ["x", "w", "b"], ["c"], {"pads": [1, 1, 1, 1], "group": 1}),
             Node("Relu", "relu", ["c"], ["y"])]
    pp = Preprocess(size=(8, 8), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)) if preprocess else None
    return Graph(name="tiny", inputs=[ValueInfo("x", "float32", [1, 3, "h", "w"])],
                 outputs=[ValueInfo("y", "float32", [1, 2, "h", "w"])], nodes=nodes,
                 initializers=inits, preprocess=pp)


def write_tiny_package(path: Path, seed: int = 0, preprocess: bool = True,
                       signing_key: bytes | None = None) -> Path:
    from converters.package_writer import WriteOptions, write_package

    write_package(path, [tiny_graph(seed, preprocess)], WriteOptions(zstd_level=1, signing_key=signing_key))
    return path

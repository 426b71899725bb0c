"""Graph passes the converter runs on the float IR before calibration and quantization.

One pass per module, each `run(graph) -> graph` (it may change `graph` in place and returns it).
`PASSES` maps a pass name to its `run`; `run_passes(graph, names)` applies them in order."""
from __future__ import annotations

from typing import Callable

from converters.passes import (dead_code, eliminate_identity, fold_batchnorm, fold_constants,
                               fuse_conv_affine, fuse_hardswish)
from edgert.errors import ConversionError
from edgert.ir import Graph

PassFn = Callable[[Graph], Graph]

PASSES: dict[str, PassFn] = {
    "eliminate_identity": eliminate_identity.run,
    "fold_constants": fold_constants.run,
    "fold_batchnorm": fold_batchnorm.run,
    "fuse_conv_affine": fuse_conv_affine.run,
    "fuse_hardswish": fuse_hardswish.run,
    "dead_code": dead_code.run,
}


def default_passes() -> list[str]:
    """The converter's pass order.  Identity removal first so patterns are contiguous; constants
    before BN / affine folding (exporters compute biases with Reshape on constants); affine folding
    on both sides of BN folding (Conv -> Add -> BN in ConvTranspose heads, Conv -> BN -> Mul in
    PP-LCNetV3 blocks); dead code last."""
    return ["eliminate_identity", "fold_constants", "fuse_conv_affine", "fold_batchnorm",
            "fuse_conv_affine", "fuse_hardswish", "dead_code"]


def get_pass(name: str) -> PassFn:
    fn = PASSES.get(name)
    if fn is None:
        raise ConversionError(f"unknown graph pass {name!r} (known: {', '.join(PASSES)})")
    return fn


def run_passes(graph: Graph, names: list[str]) -> Graph:
    fns = [get_pass(n) for n in names]          # unknown names fail before anything changes
    for fn in fns:
        graph = fn(graph)
    return graph


__all__ = ["PASSES", "default_passes", "get_pass", "run_passes"]

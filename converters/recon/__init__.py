"""Reconstruction passes: after calibration, choose each quantized layer's integer weights (the
rounding, not only the scales) to reproduce the float layer's output on calibration data.  One pass
per module, registered by name (`edgert convert --pass NAME`):

    adaround  AdaRound's learned rounding (soft rectified-sigmoid rounding, annealed to hard)
    qdrop     the same with QDrop's random activation drop: during the optimisation each input
              element is fake-quantized with probability 1/2, so the rounding fits the quantized
              activations it will meet without overfitting to them

    qdrop-block  QDrop as published: blocks of a few layers against the float blocks' outputs, their
              input taken from the quantized network, rounding and activation steps learned, in JAX
    brecq     the same blocks without the drop (BRECQ's block AdaRound)

adaround / qdrop are layer-wise and run in numpy on the layer's input Gram matrices
(reconstruct.py); the block passes need the `train` extra (block.py).
"""
from __future__ import annotations

from converters.recon.block import BlockOptions
from converters.recon.reconstruct import ReconOptions, reconstruct_layers
from edgert.errors import ConversionError
from edgert.registry import Registry

_PASSES: Registry[ReconOptions | BlockOptions] = Registry("reconstruction pass", __name__, ConversionError)


def register_pass(name: str, options: ReconOptions | BlockOptions) -> None:
    _PASSES.register(name, lambda: options)


def known_passes() -> list[str]:
    return _PASSES.known()


def get_pass(name: str) -> ReconOptions | BlockOptions:
    return _PASSES.lookup(name)()


register_pass("adaround", ReconOptions(drop_prob=0.0))
register_pass("qdrop", ReconOptions(drop_prob=0.5))
register_pass("qdrop-block", BlockOptions(drop_prob=0.5))
register_pass("brecq", BlockOptions(drop_prob=0.0))

__all__ = ["BlockOptions", "ReconOptions", "get_pass", "known_passes", "reconstruct_layers"]

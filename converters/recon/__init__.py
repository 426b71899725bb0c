"""Reconstruction passes: after calibration, choose each quantized layer's integer weights (the
rounding, not only the scales) to reproduce the float layer's output on calibration data.  One pass
per module, registered by name (`edgert convert --pass NAME`):

    adaround  AdaRound's learned rounding (soft rectified-sigmoid rounding, annealed to hard)
    qdrop     the same with QDrop's random activation drop: during the optimisation each input
              element is fake-quantized with probability 1/2, so the rounding fits the quantized
              activations it will meet without overfitting to them

Both are layer-wise here (reconstruct.py says what that leaves out of QDrop's block-wise form) and
run in numpy on the layer's input Gram matrices.
"""
from __future__ import annotations

from converters.recon.reconstruct import ReconOptions, reconstruct_layers
from edgert.errors import ConversionError
from edgert.registry import Registry

_PASSES: Registry[ReconOptions] = Registry("reconstruction pass", __name__, ConversionError)


def register_pass(name: str, options: ReconOptions) -> None:
    _PASSES.register(name, lambda: options)


def known_passes() -> list[str]:
    return _PASSES.known()


def get_pass(name: str) -> ReconOptions:
    return _PASSES.lookup(name)()


register_pass("adaround", ReconOptions(drop_prob=0.0))
register_pass("qdrop", ReconOptions(drop_prob=0.5))

__all__ = ["ReconOptions", "get_pass", "known_passes", "reconstruct_layers"]

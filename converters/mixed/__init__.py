"""Mixed precision under a size budget (issue 14 §1; the goal of BSQ / CSQ / HERO, reached after training).

    sensitivity.py  per layer and candidate width, the model-output error of quantizing that layer
                    alone (an output-error probe on calibration batches: the diagonal of the
                    Gauss-Newton approximation of the loss that HAWQ's Hessian trace estimates)
    allocate.py     the exact allocator: a multiple-choice knapsack over (bytes, error) per layer
    budget.py       what a layer costs in the package at each width, and `--size-budget` / `--avg-bits`
    plan.py         the three together: probe, allocate, and the report (predicted vs measured error)

Errors of layers quantized together are taken as additive (the first-order term of a second-order
expansion around the float weights vanishes at a minimum; the cross terms are ignored, as HAWQ-V2/V3
do); `plan.MixedReport` says how far the measured error of the whole allocation is from that sum.
"""
from converters.mixed.allocate import Allocation, allocate
from converters.mixed.budget import SizeBudget, layer_bytes, parse_size
from converters.mixed.plan import MixedOptions, MixedReport, plan_mixed_precision

__all__ = ["Allocation", "MixedOptions", "MixedReport", "SizeBudget", "allocate", "layer_bytes",
           "parse_size", "plan_mixed_precision"]

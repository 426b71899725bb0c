"""Score formulas, registered by name.  A score is computed from a finished result record.

``lpcvc2023`` is the 2023 challenge's: mean Dice (or top-1 for classification) divided by the mean
seconds per image — measured by the harness over its stated timed region, not self-reported.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from edgert.errors import EvalError


@dataclass(frozen=True)
class Formula:
    name: str
    description: str
    higher_is_better: bool
    fn: Callable[[dict], tuple[float, dict]]    # result record -> (value, the inputs used)
    needs_energy: bool = False                  # the harness refuses to start without a real power sensor


_FORMULAS: dict[str, Formula] = {}


def needs_energy(name: str) -> bool:
    """Whether the score `name` needs measured J/image (False for an unknown name: that is get's error)."""
    f = _FORMULAS.get(name)
    return f is not None and f.needs_energy


def register(name: str, description: str, higher_is_better: bool = True, needs_energy: bool = False):
    def deco(fn):
        _FORMULAS[name] = Formula(name, description, higher_is_better, fn, needs_energy)
        return fn
    return deco


def names() -> list[str]:
    return sorted(_FORMULAS)


def get(name: str) -> Formula:
    if name not in _FORMULAS:
        raise EvalError(f"unknown score formula {name!r}; known: {', '.join(names())}")
    return _FORMULAS[name]


def accuracy_of(result: dict) -> tuple[str, float]:
    m = result["metrics"]
    if result["dataset"]["task"] == "segmentation":
        return "dice_mean", m["dice_mean"]
    return "top1", m["top1"]


def _mean_s(result: dict) -> float:
    mean_s = result["timing"]["mean_s"]
    if not mean_s or mean_s <= 0:
        raise EvalError("no timed images: the score needs a mean time per image")
    return mean_s


def _joules(result: dict) -> float:
    """Measured J per image; an estimate (the utilisation model) is never scored."""
    energy = result.get("energy")
    if not energy or not energy.get("j_per_image"):
        why = f" ({energy['error']})" if energy and energy.get("error") else ""
        raise EvalError(f"this score needs energy per image, and this device has no usable power sensor{why}")
    if energy.get("estimated"):
        raise EvalError(f"this score needs measured energy per image; {energy.get('sensor') or 'the'} "
                        "estimate is not a measurement and is never scored")
    return energy["j_per_image"]


@register("lpcvc2023", "accuracy (mean Dice / top-1) / mean seconds per image")
def _lpcvc2023(result: dict) -> tuple[float, dict]:
    name, acc = accuracy_of(result)
    mean_s = _mean_s(result)
    return (acc or 0.0) / mean_s, {name: acc, "mean_s": mean_s}


@register("accuracy", "accuracy alone (mean Dice / top-1)")
def _accuracy(result: dict) -> tuple[float, dict]:
    name, acc = accuracy_of(result)
    return acc or 0.0, {name: acc}


@register("accuracy_per_joule", "accuracy / joules per image (needs a power sensor)", needs_energy=True)
def _per_joule(result: dict) -> tuple[float, dict]:
    name, acc = accuracy_of(result)
    j = _joules(result)
    return (acc or 0.0) / j, {name: acc, "j_per_image": j, "energy_estimated": result["energy"]["estimated"]}


def score(result: dict, formula: str) -> dict:
    f = get(formula)
    value, inputs = f.fn(result)
    return {"formula": f.name, "description": f.description, "value": round(float(value), 6),
            "higher_is_better": f.higher_is_better, "inputs": inputs}

"""Split: cut the input along `axis` (default 0) into len(node.outputs) parts.

Part sizes: the `split` input (opset 13+) or attribute (opset <13); else `num_outputs` (opset 18:
ceil(dim / n) each, the last one smaller); else equal parts (the dim must divide evenly)."""
from __future__ import annotations

from typing import ClassVar

import numpy as np

from edgert.ops._schema import Attr, Val
from edgert.ops._shape_ops import inp, int_vals, list_len
from edgert.ops._util import fail, int_list, need, norm_axis
from edgert.ops.base import VARIADIC, Op, register


@register
class Split(Op):
    ATTRS: ClassVar[dict[str, Attr]] = {
        "axis": Attr("int"),
        "split": Attr("ints", lo=0),           # opsets 1-11 (an input since 13)
        "num_outputs": Attr("int", lo=1),      # opset 18
    }
    INPUTS = (1, 2)
    OUTPUTS = (1, VARIADIC)

    def infer(self, ins: list[Val | None]) -> list[Val]:
        x, sv = ins[0], inp(ins, 1)
        n_out = len(self.node.outputs)
        dtype = None if x is None else x.dtype
        shape = None if x is None else x.shape
        axis = int(self.attr("axis", 0))
        dim = None
        if shape is not None:
            r = len(shape)
            if r == 0:
                raise self.bad("input must have rank >= 1")
            if not -r <= axis < r:
                raise self.bad(f"axis {axis} is out of range for rank {r}")
            axis %= r
            dim = shape[axis]
        if sv is not None:
            sizes = int_vals(self, sv, "split")
            n = list_len(self, sv, "split")
        else:
            sizes = None if self.attr("split") is None else [int(s) for s in self.attr("split")]
            n = None if sizes is None else len(sizes)
        num = self.attr("num_outputs")
        if n is not None and n != n_out:
            raise self.bad(f"split has {n} entries for {n_out} outputs")
        if sizes is not None:
            if any(s < 0 for s in sizes):
                raise self.bad(f"split {sizes} has a negative size")
            if dim is not None and sum(sizes) != dim:
                raise self.bad(f"split {sizes} does not cut dim {dim} into {n_out} outputs")
        elif sv is None and num is not None:
            num = int(num)
            if num != n_out:
                raise self.bad(f"num_outputs {num} but the node has {n_out} outputs")
            if dim is not None:
                chunk = -(-dim // num)
                sizes = [min(chunk, max(dim - i * chunk, 0)) for i in range(num)]
                if sizes[-1] <= 0:
                    raise self.bad(f"dim {dim} cannot be split into {num} non-empty parts")
        elif sv is None and dim is not None:
            if dim % n_out:
                raise self.bad(f"dim {dim} does not split evenly into {n_out} outputs")
            sizes = [dim // n_out] * n_out
        if shape is None:
            return [Val(dtype, None) for _ in range(n_out)]
        outs = []
        for i in range(n_out):
            s = list(shape)
            s[axis] = None if sizes is None else sizes[i]
            outs.append(Val(dtype, tuple(s)))
        return outs

    def run(self, x, split=None):
        x = need(self, x, "input")
        if x.ndim == 0:
            raise fail(self, "input must have rank >= 1")
        axis = norm_axis(self, self.attr("axis", 0), x.ndim)
        dim = x.shape[axis]
        n_out = len(self.node.outputs)
        sizes = int_list(self, split if split is not None else self.attr("split"), "split")
        num = self.attr("num_outputs")
        if sizes is not None:
            if len(sizes) != n_out or sum(sizes) != dim or any(s < 0 for s in sizes):
                raise fail(self, f"split {sizes} does not cut dim {dim} into {n_out} outputs")
        elif num is not None:
            num = int(num)
            if num != n_out or num < 1:
                raise fail(self, f"num_outputs {num} but the node has {n_out} outputs")
            chunk = -(-dim // num)
            sizes = [min(chunk, max(dim - i * chunk, 0)) for i in range(num)]
            if sizes[-1] <= 0:
                raise fail(self, f"dim {dim} cannot be split into {num} non-empty parts")
        else:
            if dim % n_out:
                raise fail(self, f"dim {dim} does not split evenly into {n_out} outputs")
            sizes = [dim // n_out] * n_out
        cuts = np.cumsum(sizes)[:-1]
        return tuple(np.split(x, cuts, axis=axis))

"""Split: cut the input along `axis` (default 0) into len(node.outputs) parts.

Part sizes: the `split` input (opset 13+) or attribute (opset <13); else `num_outputs` (opset 18:
ceil(dim / n) each, the last one smaller); else equal parts (the dim must divide evenly)."""
from __future__ import annotations

import numpy as np

from edgert.ops._util import fail, int_list, need, norm_axis
from edgert.ops.base import Op, register


@register
class Split(Op):
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

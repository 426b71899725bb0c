"""ConvTranspose (float): one GEMM per group (x rows @ W) then a col2im scatter-add looped over the
∏k kernel positions only (each step is a strided, vectorised add over the whole output)."""
from __future__ import annotations

import math

import numpy as np

from edgert.errors import UnsupportedOp
from edgert.ops.base import Op, register


@register
class ConvTranspose(Op):
    def __init__(self, node):
        super().__init__(node)
        self.group = int(self.attr("group", 1))
        ap = self.attr("auto_pad", "NOTSET")
        self.auto_pad = ap.decode() if isinstance(ap, bytes) else ap
        if self.auto_pad not in ("NOTSET", "", "VALID", "SAME_UPPER", "SAME_LOWER"):
            raise UnsupportedOp(f"ConvTranspose auto_pad {self.auto_pad!r} in node {node.name!r}")
        self._w_src = None
        self._w_mat = None

    def _geometry(self, in_sp, kernel):
        nd = len(in_sp)
        strides = [int(s) for s in (self.attr("strides") or [1] * nd)]
        dil = [int(d) for d in (self.attr("dilations") or [1] * nd)]
        opad = [int(p) for p in (self.attr("output_padding") or [0] * nd)]
        out_shape = self.attr("output_shape")
        pads = [int(p) for p in (self.attr("pads") or [0] * (2 * nd))]
        heads, outs = [], []
        for i in range(nd):
            full = (in_sp[i] - 1) * strides[i] + opad[i] + (kernel[i] - 1) * dil[i] + 1
            if out_shape or self.auto_pad in ("SAME_UPPER", "SAME_LOWER"):
                # output_shape (or SAME: in·stride) fixes the size; pads follow from it (ONNX spec:
                # SAME_UPPER puts the odd pixel at the end, everything else at the beginning)
                o = int(out_shape[-nd + i]) if out_shape else in_sp[i] * strides[i]
                total = max(0, full - o)
                head = total // 2 if self.auto_pad == "SAME_UPPER" else total - total // 2
            elif self.auto_pad == "VALID":
                head, o = 0, full
            else:
                head, o = pads[i], full - pads[i] - pads[nd + i]
            heads.append(head)
            outs.append(o)
        return strides, dil, heads, outs

    def _wmat(self, w):
        if w is not self._w_src:
            cin, og = w.shape[:2]
            g = self.group
            self._w_mat = np.ascontiguousarray(w.reshape(g, cin // g, og * math.prod(w.shape[2:])))
            self._w_src = w
        return self._w_mat

    def run(self, x, w, b=None):
        n, c = x.shape[:2]
        in_sp = list(x.shape[2:])
        nd = len(in_sp)
        kernel = [int(k) for k in (self.attr("kernel_shape") or w.shape[2:])]
        g = self.group
        og = w.shape[1]
        if w.shape[0] != c:
            raise ValueError(f"ConvTranspose {self.node.name!r}: input has {c} channels, "
                             f"weight has {w.shape[0]}")
        strides, dil, heads, outs = self._geometry(in_sp, kernel)
        p_in = math.prod(in_sp)
        rows = x.reshape(n, g, c // g, p_in).transpose(0, 1, 3, 2)            # (N, g, P, Cg)
        cols = np.matmul(rows, self._wmat(w))                                 # (N, g, P, Og·∏k)
        cols = cols.reshape((n, g) + tuple(in_sp) + (og,) + tuple(kernel))
        # -> (N, g, Og, *k, *in)
        perm = (0, 1, 2 + nd) + tuple(range(3 + nd, 3 + 2 * nd)) + tuple(range(2, 2 + nd))
        cols = cols.transpose(perm)
        full = [max((in_sp[i] - 1) * strides[i] + (kernel[i] - 1) * dil[i] + 1, heads[i] + outs[i])
                for i in range(nd)]
        buf = np.zeros((n, g, og) + tuple(full), x.dtype)
        for pos in np.ndindex(*kernel):
            sl = tuple(slice(pos[i] * dil[i], pos[i] * dil[i] + (in_sp[i] - 1) * strides[i] + 1,
                             strides[i]) for i in range(nd))
            buf[(Ellipsis,) + sl] += cols[(slice(None),) * 3 + pos]
        y = buf[(Ellipsis,) + tuple(slice(heads[i], heads[i] + outs[i]) for i in range(nd))]
        y = y.reshape((n, g * og) + tuple(outs))
        if b is not None:
            y = y + b.reshape((1, -1) + (1,) * nd)
        return (np.ascontiguousarray(y, dtype=x.dtype),)

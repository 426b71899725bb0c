"""ConvTranspose (float): one GEMM per group (x rows @ W) then a col2im scatter-add looped over the
∏k kernel positions only (each step is a strided, vectorised add over the whole output)."""
from __future__ import annotations

import math
from typing import ClassVar

import numpy as np

from edgert.ops._geometry import (AUTO_PAD, SAME, checked_run, dim, float_conv_out, int_list_attr,
                                  itemsize, lb, need_rank, none_empty, prod_lb, shape_of,
                                  spatial_rank, zeros)
from edgert.ops._schema import Attr, Val, fmt
from edgert.ops.base import Op, register


@register
class ConvTranspose(Op):
    ONNX_VERSION = 22    # version 22 only added bfloat16, which edgert does not have
    ATTRS: ClassVar[dict[str, Attr]] = {
        "auto_pad": AUTO_PAD,
        "dilations": Attr("ints", lo=1),
        "group": Attr("int", lo=1),
        "kernel_shape": Attr("ints", lo=1),
        "output_padding": Attr("ints", lo=0),
        "output_shape": Attr("ints", lo=0),
        "pads": Attr("ints", lo=0),
        "strides": Attr("ints", lo=1),
    }
    INPUTS = (2, 3)

    def __init__(self, node):
        super().__init__(node)
        self.group = int(self.attr("group", 1))
        self.auto_pad = str(self.attr("auto_pad", "NOTSET"))
        self._w_src = None
        self._w_mat = None

    # ---- static shapes -------------------------------------------------------------------------
    def _geom(self, x: Val | None, w: Val | None):
        """(output shape or None, input spatial, kernel, per-dim extent of the scatter buffer,
        output spatial) from partly known X (N, C, *s) and W (C, M/group, *k); the last two are
        lower bounds where unknown (the rules at the smallest input, unknown dims = 1)."""
        xs, ws = shape_of(x), shape_of(w)
        need_rank(self, xs, 3, None, "X")
        need_rank(self, ws, 3, None, "W")
        if xs is not None and ws is not None and len(xs) != len(ws):
            raise self.bad(f"X {fmt(xs)} and W {fmt(ws)} must have the same rank")
        nd = len(xs) - 2 if xs is not None else (len(ws) - 2 if ws is not None else None)
        kernel_a = int_list_attr(self, "kernel_shape")
        strides = int_list_attr(self, "strides")
        dil = int_list_attr(self, "dilations")
        opad = int_list_attr(self, "output_padding")
        pads = int_list_attr(self, "pads")
        out_shape = int_list_attr(self, "output_shape")
        nd = spatial_rank(self, nd, [("kernel_shape", kernel_a, 1), ("strides", strides, 1),
                                     ("dilations", dil, 1), ("output_padding", opad, 1),
                                     ("pads", pads, 2)])
        g = self.group
        c, cw, og = dim(xs, 1), dim(ws, 0), dim(ws, 1)
        if c is not None and cw is not None and c != cw:
            raise self.bad(f"X has {c} channels, W {fmt(ws)} expects {cw} input channels")
        for what, n in (("X", c), ("W", cw)):
            if n is not None and n % g:
                raise self.bad(f"group {g} does not divide the {n} input channels of {what}")
        m = None if og is None else og * g
        if nd is None:
            return None, (), (), (), ()
        if out_shape is not None and len(out_shape) not in (nd, nd + 2):
            raise self.bad(f"output_shape {out_shape} must have {nd} entries (the spatial dims)")
        wk = tuple(ws[2:]) if ws is not None else (None,) * nd
        for k in wk:
            if k is not None and k < 1:
                raise self.bad(f"W {fmt(ws)} has an empty kernel")
        if kernel_a is not None:
            for a, b in zip(kernel_a, wk):
                if b is not None and a != b:
                    raise self.bad(f"kernel_shape {kernel_a} does not match W {fmt(ws)}")
        kernel = tuple(kernel_a) if kernel_a is not None else wk
        strides = strides or [1] * nd
        dil = dil or [1] * nd
        opad = opad or [0] * nd
        pads = pads or [0] * (2 * nd)
        in_sp = tuple(xs[2:]) if xs is not None else (None,) * nd
        out_sp, full, out_lb = [], [], []
        for i in range(nd):
            n_in, k, s, d = in_sp[i], kernel[i], strides[i], dil[i]
            span = None if n_in is None or k is None else (n_in - 1) * s + (k - 1) * d + 1
            if out_shape is not None:
                o = out_shape[len(out_shape) - nd + i]
            elif self.auto_pad in SAME:
                o = None if n_in is None else n_in * s
            elif span is None:
                o = None
            elif self.auto_pad == "VALID":
                o = span + opad[i]
            else:
                o = span + opad[i] - pads[i] - pads[nd + i]
            if o is not None and o < 0:
                raise self.bad(f"output size {o} on spatial axis {i} is negative (input {n_in}, "
                               f"kernel {k}, stride {s}, dilation {d}, pads {pads})")
            out_sp.append(o)
            f_lb = span if span is not None else (lb(n_in) - 1) * s + (lb(k) - 1) * d + 1
            full.append(f_lb)
            if o is None:                        # the same rules at the smallest input: a bound
                if self.auto_pad in SAME:
                    o_lb = lb(n_in) * s
                elif self.auto_pad == "VALID":
                    o_lb = f_lb + opad[i]
                else:
                    o_lb = f_lb + opad[i] - pads[i] - pads[nd + i]
                out_lb.append(max(o_lb, 0))
            else:
                out_lb.append(o)
        return (dim(xs, 0), m) + tuple(out_sp), in_sp, kernel, tuple(full), tuple(out_lb)

    def infer(self, ins: list[Val | None]) -> list[Val]:
        return float_conv_out(self, ins, lambda x, w: self._geom(x, w)[0])

    def scratch(self, ins: list[Val | None], outs: list[Val]) -> int:
        out, in_sp, kernel, full, out_lb = self._geom(ins[0], ins[1])
        if out is None or not none_empty(out, out_lb, shape_of(ins[0]), shape_of(ins[1])):
            return 0
        n, m = lb(out[0]), lb(out[1])
        cols = n * m * prod_lb(in_sp) * prod_lb(kernel)          # GEMM result (N, g, P, Og·∏k)
        buf = n * m * prod_lb(max(f, o) for f, o in zip(full, out_lb))
        return (cols + buf) * itemsize(outs[0].dtype, 4)

    # ---- run -----------------------------------------------------------------------------------
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
        out = checked_run(self, [x, w, b])[0].shape
        nd = x.ndim - 2
        if x.size == 0 or w.size == 0 or math.prod(out) == 0:
            y = zeros(self, out, x.dtype)              # no products: the bias alone (or nothing)
            if b is not None:
                y = y + b.reshape((1, -1) + (1,) * nd)
            return (np.ascontiguousarray(y, dtype=x.dtype),)
        n, c = x.shape[:2]
        in_sp = list(x.shape[2:])
        kernel = [int(k) for k in (self.attr("kernel_shape") or w.shape[2:])]
        g = self.group
        og = w.shape[1]
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

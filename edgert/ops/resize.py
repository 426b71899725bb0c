"""Resize (opsets 10-19): nearest / linear / cubic, applied separably one axis at a time.

Inputs X, roi, scales, sizes (opset 11+; `scales` or `sizes`, an empty tensor counts as omitted);
the opset-10 form Resize(X, scales) is recognised by its two inputs.  Attributes follow ONNX:
coordinate_transformation_mode (half_pixel, half_pixel_symmetric, pytorch_half_pixel,
align_corners, asymmetric, tf_half_pixel_for_nn, tf_crop_and_resize), nearest_mode
(round_prefer_floor, round_prefer_ceil, floor, ceil), cubic_coeff_a, exclude_outside,
extrapolation_value, axes and keep_aspect_ratio_policy (opset 18).

Linear / cubic on any number of axes is the separable product of 1-D interpolations, which is
exactly ONNX's N-linear / N-cubic rule.  antialias=1 while downscaling raises UnsupportedOp."""
from __future__ import annotations

import math

import numpy as np

from edgert.ops._util import fail, int_list, need, norm_axes, unsupported
from edgert.ops.base import Op, register

_COORD_MODES = {"half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners",
                "asymmetric", "tf_half_pixel_for_nn", "tf_crop_and_resize"}
_NEAREST_MODES = {"round_prefer_floor", "round_prefer_ceil", "floor", "ceil"}


def _given(v):
    return v is not None and np.asarray(v).size > 0


@register
class Resize(Op):
    def __init__(self, node):
        super().__init__(node)
        self.mode = str(self.attr("mode", "nearest"))
        if self.mode not in ("nearest", "linear", "cubic"):
            raise fail(self, f"unknown mode {self.mode!r}")
        self.coord = str(self.attr("coordinate_transformation_mode", "half_pixel"))
        if self.coord not in _COORD_MODES:
            raise fail(self, f"unknown coordinate_transformation_mode {self.coord!r}")
        self.nearest = str(self.attr("nearest_mode", "round_prefer_floor"))
        if self.nearest not in _NEAREST_MODES:
            raise fail(self, f"unknown nearest_mode {self.nearest!r}")
        self.cubic_a = float(self.attr("cubic_coeff_a", -0.75))
        self.exclude_outside = bool(self.attr("exclude_outside", 0))
        self.extrapolation = float(self.attr("extrapolation_value", 0.0))
        self.antialias = bool(self.attr("antialias", 0))
        self.policy = str(self.attr("keep_aspect_ratio_policy", "stretch"))
        if self.policy not in ("stretch", "not_larger", "not_smaller"):
            raise fail(self, f"unknown keep_aspect_ratio_policy {self.policy!r}")

    # ---- output geometry --------------------------------------------------------------------

    def _geometry(self, x, roi, scales, sizes):
        r = x.ndim
        axes = self.attr("axes")
        axes = list(range(r)) if axes is None else norm_axes(self, [int(a) for a in axes], r)
        in_sz = [x.shape[a] for a in axes]
        if _given(scales) and _given(sizes):
            raise fail(self, "give scales or sizes, not both")
        if _given(scales):
            sc = np.asarray(scales, dtype=np.float32).reshape(-1)
            if sc.size != len(axes):
                raise fail(self, f"scales {sc.tolist()} must have {len(axes)} entries")
            if np.any(sc <= 0):
                raise fail(self, f"scales {sc.tolist()} must be positive")
            sc = [float(s) for s in sc]
            out = [int(math.floor(s * d)) for s, d in zip(sc, in_sz)]
        elif _given(sizes):
            out = int_list(self, sizes, "sizes")
            if len(out) != len(axes) or any(o < 0 for o in out):
                raise fail(self, f"sizes {out} must be {len(axes)} non-negative ints")
            if self.policy == "stretch":
                sc = [float(np.float32(o / d)) if d else 1.0 for o, d in zip(out, in_sz)]
            else:
                ratios = [o / d for o, d in zip(out, in_sz)]
                s = min(ratios) if self.policy == "not_larger" else max(ratios)
                sc = [s] * len(axes)
                out = [int(math.floor(s * d + 0.5)) for d in in_sz]
        else:
            raise fail(self, "needs scales or sizes")
        full_sc, full_out = [1.0] * r, list(x.shape)
        for a, s, o in zip(axes, sc, out):
            full_sc[a], full_out[a] = s, o
        full_roi = [0.0] * r + [1.0] * r
        if self.coord == "tf_crop_and_resize":
            if not _given(roi):
                raise fail(self, "tf_crop_and_resize needs roi")
            rv = np.asarray(roi, dtype=np.float64).reshape(-1)
            if rv.size != 2 * len(axes):
                raise fail(self, f"roi has {rv.size} entries, expected {2 * len(axes)}")
            for i, a in enumerate(axes):
                full_roi[a], full_roi[r + a] = float(rv[i]), float(rv[len(axes) + i])
        return full_sc, full_out, full_roi, axes

    def _coords(self, o_len, i_len, scale, start, end):
        """Input coordinate of every output index along one axis.  Evaluated in float32, in the
        order ONNX Runtime uses, so that nearest-neighbour ties round the same way."""
        f = np.float32
        o = np.arange(o_len, dtype=f)
        s, half = f(scale), f(0.5)
        c = self.coord
        if c == "half_pixel":
            return (o + half) / s - half
        if c == "half_pixel_symmetric":
            adj = f(o_len) / (s * f(i_len))
            return f(i_len) / f(2) * (f(1) - adj) + (o + half) / s - half
        if c == "pytorch_half_pixel":
            return (o + half) / s - half if o_len > 1 else np.zeros_like(o)
        if c == "align_corners":
            return o * f(i_len - 1) / f(o_len - 1) if o_len > 1 else np.zeros_like(o)
        if c == "asymmetric":
            return o / s
        if c == "tf_half_pixel_for_nn":
            return (o + half) / s
        # tf_crop_and_resize
        st, en = f(start), f(end)
        if o_len > 1:
            return st * f(i_len - 1) + o * (en - st) * f(i_len - 1) / f(o_len - 1)
        return np.full_like(o, half * (st + en) * f(i_len - 1))

    # ---- 1-D interpolation along one axis ----------------------------------------------------

    def _nearest(self, c, i_len, legacy_downsample):
        m = self.nearest
        if legacy_downsample is not None:
            # opset 10 ("simple"): ceil when downsampling, truncate otherwise (ONNX Runtime)
            idx = np.ceil(c) if legacy_downsample else np.floor(c)
        elif m == "round_prefer_floor":
            idx = np.ceil(c - 0.5)
        elif m == "round_prefer_ceil":
            idx = np.floor(c + 0.5)
        elif m == "floor":
            idx = np.floor(c)
        else:
            idx = np.ceil(c)
        return [np.clip(idx, 0, i_len - 1).astype(np.int64)], [None]

    def _linear(self, c, i_len):
        c = np.clip(c, 0, i_len - 1)
        i0 = np.floor(c).astype(np.int64)
        i1 = np.minimum(i0 + 1, i_len - 1)
        w1 = c - i0
        return [i0, i1], [1.0 - w1, w1]

    def _cubic(self, c, i_len):
        a = self.cubic_a
        i0 = np.floor(c)
        t = c - i0
        idx = [i0.astype(np.int64) + k for k in (-1, 0, 1, 2)]
        d = [t + 1, t, 1 - t, 2 - t]                   # distance to each tap

        def kern(s):                                    # Keys' cubic convolution kernel
            near = ((a + 2) * s - (a + 3)) * s * s + 1
            far = ((a * s - 5 * a) * s + 8 * a) * s - 4 * a
            return np.where(s <= 1, near, far)

        ws = [kern(s) for s in d]
        if self.exclude_outside:
            ws = [np.where((i >= 0) & (i < i_len), w, 0.0) for i, w in zip(idx, ws)]
            tot = sum(ws)
            ws = [w / tot for w in ws]
        return [np.clip(i, 0, i_len - 1) for i in idx], ws

    # ---- run ---------------------------------------------------------------------------------

    def run(self, x, roi=None, scales=None, sizes=None):
        x = need(self, x, "X")
        legacy = int(self.attr("opset", 11)) < 11 or (
            _given(roi) and not _given(scales) and not _given(sizes))
        if legacy:      # opset 10: Resize(X, scales), asymmetric coordinates
            roi, scales, sizes = None, (roi if scales is None else scales), None
            if self.coord != "asymmetric" and self.attr("coordinate_transformation_mode"):
                raise fail(self, "opset-10 Resize has no coordinate_transformation_mode")
            self.coord = "asymmetric"
        if x.ndim == 0:
            raise fail(self, "X must have rank >= 1")
        if self.mode != "nearest" and not np.issubdtype(x.dtype, np.floating):
            raise unsupported(self, f"{self.mode} resize of {x.dtype} is not supported")
        sc, out, rv, axes = self._geometry(x, roi, scales, sizes)
        if self.antialias and self.mode != "nearest" and any(s < 1 for s in sc):
            raise unsupported(self, "antialias=1 downscaling is not supported")
        r = x.ndim
        y = x
        outside = None
        for ax in range(r):
            i_len, o_len = x.shape[ax], out[ax]
            if o_len == 0 or i_len == 0:
                if o_len != i_len and i_len == 0:
                    raise fail(self, f"cannot resize an empty axis {ax} to {o_len}")
                y = np.take(y, np.zeros(0, np.int64), axis=ax) if o_len == 0 else y
                continue
            c = self._coords(o_len, i_len, sc[ax], rv[ax], rv[r + ax])
            crop = self.coord == "tf_crop_and_resize"
            if not crop and o_len == i_len and (sc[ax] == 1.0
                                                or np.array_equal(c, np.arange(i_len))):
                continue        # identity on this axis (ONNX Runtime copies scale-1 axes too)
            if crop:
                bad = (c < 0) | (c > i_len - 1)
                if bad.any():
                    shape = [1] * r
                    shape[ax] = o_len
                    bad = bad.reshape(shape)
                    outside = bad if outside is None else (outside | bad)
            if self.mode == "nearest":
                idx, ws = self._nearest(c, i_len, (sc[ax] < 1) if legacy else None)
            elif self.mode == "linear":
                idx, ws = self._linear(c, i_len)
            else:
                idx, ws = self._cubic(c, i_len)
            if ws[0] is None:
                y = np.take(y, idx[0], axis=ax)
                continue
            shape = [1] * r
            shape[ax] = o_len
            acc = None
            for i, w in zip(idx, ws):
                term = np.take(y, i, axis=ax) * w.astype(x.dtype).reshape(shape)
                acc = term if acc is None else acc + term
            y = acc
        if outside is not None:
            y = np.where(outside, x.dtype.type(self.extrapolation), y)
        return (np.ascontiguousarray(y).astype(x.dtype, copy=False),)

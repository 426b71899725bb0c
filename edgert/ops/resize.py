"""Resize (opsets 10-19): nearest / linear / cubic, applied separably one axis at a time.

Inputs X, roi, scales, sizes (opset 11+; `scales` or `sizes`, an empty tensor counts as omitted);
the opset-10 form Resize(X, scales) is recognised by its two inputs.  Attributes follow ONNX:
coordinate_transformation_mode (half_pixel, half_pixel_symmetric, pytorch_half_pixel,
align_corners, asymmetric, tf_half_pixel_for_nn, tf_crop_and_resize), nearest_mode
(round_prefer_floor, round_prefer_ceil, floor, ceil), cubic_coeff_a, exclude_outside,
extrapolation_value, axes and keep_aspect_ratio_policy (opset 18).

Linear / cubic on any number of axes is the separable product of 1-D interpolations, which is
exactly ONNX's N-linear / N-cubic rule.  The ONNX reference implementation
(onnx/reference/ops/op_resize.py) and its node test cases define two finer points:

* align_corners with `scales` maps x_out to x_out * (in - 1) / (scale * in - 1): the target
  length is the fractional scale * in, not the integer output length (onnx/onnx#2462: intended;
  ONNX Runtime uses the integer length, so the ORT backend lowers such a Resize differently);
* antialias=1 (opset 18) while downscaling by s < 1 widens the linear / cubic kernel by 1 / s:
  taps at every input index within 1 / s (linear) or 2 / s (cubic) of x, weighted by the
  kernel at s * distance and normalised to sum 1."""
from __future__ import annotations

from typing import Any, Callable, ClassVar

import numpy as np

from edgert.ops._schema import MAX_DIM, Attr, Val, norm_axes as check_axes
from edgert.ops._shape_ops import dprod, floor_mul, inp, int_vals, kind_of, list_len
from edgert.ops._util import fail, int_list, need, norm_axes, unsupported
from edgert.ops.base import Op, register

_MODES = ("nearest", "linear", "cubic")
_COORD_MODES = ("half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners",
                "asymmetric", "tf_half_pixel_for_nn", "tf_crop_and_resize")
_NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")
_POLICIES = ("stretch", "not_larger", "not_smaller")


def _given(v):
    return v is not None and np.asarray(v).size > 0


def _val_given(v: Val | None) -> bool | None:
    """Whether an input counts as given (present and non-empty); None when its size is unknown."""
    if v is None:
        return False
    if v.value is not None:
        return np.asarray(v.value).size > 0
    if v.shape is None:
        return None
    n = dprod(v.shape)
    return None if n is None else n > 0


def _val_size(v: Val | None) -> int | None:
    if v is None:
        return None
    if v.value is not None:
        return int(np.asarray(v.value).size)
    return None if v.shape is None else dprod(v.shape)


def _scale_list(a: Any, fail_with: Callable[[str], Exception]) -> list[float]:
    """Scales as run reads them: float32, every one finite and positive."""
    a = np.asarray(a)
    if a.dtype.kind not in "fiub":
        raise fail_with(f"scales must be numbers, got dtype {a.dtype}")
    with np.errstate(all="ignore"):
        sc = a.astype(np.float32).reshape(-1)
    if sc.size and not (np.all(np.isfinite(sc)) and np.all(sc > 0)):
        raise fail_with(f"scales {sc.tolist()[:16]} must be finite and positive")
    return [float(s) for s in sc.tolist()]


def _policy_sizes(policy: str, sizes: list[int], in_sz: list[int],
                  fail_with: Callable[[str], Exception]) -> tuple[float, list[int]]:
    """keep_aspect_ratio_policy not_larger / not_smaller: one scale for every resized axis."""
    if 0 in in_sz:
        raise fail_with(f"keep_aspect_ratio_policy {policy!r} cannot scale an empty axis "
                        f"(sizes {sizes}, input dims {in_sz})")
    ratios = [o / d for o, d in zip(sizes, in_sz)]
    s = min(ratios) if policy == "not_larger" else max(ratios)
    return s, [floor_mul(s, d, 0.5) for d in in_sz]


@register
class Resize(Op):
    ATTRS: ClassVar[dict[str, Attr]] = {
        "mode": Attr("str", choices=_MODES),
        "coordinate_transformation_mode": Attr("str", choices=_COORD_MODES),      # opset 11
        "nearest_mode": Attr("str", choices=_NEAREST_MODES),                      # opset 11
        "cubic_coeff_a": Attr("float"),                                           # opset 11
        "exclude_outside": Attr("int", lo=0, hi=1),                               # opset 11
        "extrapolation_value": Attr("float"),                                     # opset 11
        "antialias": Attr("int", lo=0, hi=1),                                     # opset 18
        "axes": Attr("ints"),                                                     # opset 18
        "keep_aspect_ratio_policy": Attr("str", choices=_POLICIES),               # opset 18
        "opset": Attr("int", lo=1, hi=10),      # edgert: the model opset, set by the importer when < 11
    }
    INPUTS = (1, 4)           # X, roi, scales, sizes (opset 11+); X, scales (opset 10)

    def __init__(self, node):
        super().__init__(node)
        self.mode = str(self.attr("mode", "nearest"))
        self.coord = str(self.attr("coordinate_transformation_mode", "half_pixel"))
        self.nearest = str(self.attr("nearest_mode", "round_prefer_floor"))
        self.cubic_a = float(self.attr("cubic_coeff_a", -0.75))
        self.exclude_outside = bool(self.attr("exclude_outside", 0))
        self.extrapolation = float(self.attr("extrapolation_value", 0.0))
        self.antialias = bool(self.attr("antialias", 0))
        self.policy = str(self.attr("keep_aspect_ratio_policy", "stretch"))

    def _legacy_attr(self) -> bool:
        return int(self.attr("opset", 11)) < 11

    # ---- static inference --------------------------------------------------------------------

    def _legacy_of(self, ins: list[Val | None]) -> bool | None:
        """The opset-10 form Resize(X, scales), as `run` recognises it; None = cannot tell."""
        if self._legacy_attr():
            return True
        g_roi = _val_given(inp(ins, 1))
        g_sc, g_sz = _val_given(inp(ins, 2)), _val_given(inp(ins, 3))
        if g_roi is False or g_sc or g_sz:
            return False
        if g_roi and g_sc is False and g_sz is False:
            return True
        return None

    def infer(self, ins: list[Val | None]) -> list[Val]:
        x = ins[0]
        dtype = None if x is None else x.dtype
        shape = None if x is None else x.shape
        if shape is not None and len(shape) == 0:
            raise self.bad("X must have rank >= 1")
        r = None if shape is None else len(shape)
        if self.attr("axes") is not None:
            axes = [int(a) for a in self.attr("axes")]
            if r is not None:
                if any(not -r <= a < r for a in axes):
                    raise self.bad(f"axes {axes} are out of range for rank {r}")
                axes = check_axes(self, axes, r)
            elif len(set(axes)) != len(axes):
                raise self.bad(f"axes {axes} repeat an axis")
            n_axes = len(axes)
        else:
            axes = None if r is None else list(range(r))
            n_axes = r
        legacy = self._legacy_of(ins)
        if legacy and self.attr("coordinate_transformation_mode") not in (None, "asymmetric"):
            raise self.bad("opset-10 Resize has no coordinate_transformation_mode")
        out = None if shape is None else list(shape)
        if axes is not None and out is not None:
            for a in axes:
                out[a] = None
        if legacy is None:
            return [Val(dtype, None if out is None else tuple(out))]
        if legacy:
            roi_v, sz_v = None, None
            sc_v = inp(ins, 2) if inp(ins, 2) is not None else inp(ins, 1)
        else:
            roi_v, sc_v, sz_v = inp(ins, 1), inp(ins, 2), inp(ins, 3)
        g_sc, g_sz = _val_given(sc_v), _val_given(sz_v)
        if g_sc and g_sz:
            raise self.bad("give scales or sizes, not both")
        if g_sc is False and g_sz is False:
            raise self.bad("needs scales or sizes")
        if not legacy and self.coord == "tf_crop_and_resize":
            g_roi = _val_given(roi_v)
            if g_roi is False:
                raise self.bad("tf_crop_and_resize needs roi")
            n_roi = _val_size(roi_v)
            if n_roi is not None and n_axes is not None and n_roi != 2 * n_axes:
                raise self.bad(f"roi has {n_roi} entries, expected {2 * n_axes}")
        new: list[int | None] | None = None          # output sizes of the resized axes
        if g_sc:
            n = _val_size(sc_v)
            if n is not None and n_axes is not None and n != n_axes:
                raise self.bad(f"scales has {n} entries, expected {n_axes}")
            if sc_v.value is not None:
                sc = _scale_list(sc_v.value, self.bad)
                if axes is not None and shape is not None:
                    new = [None if shape[a] is None else floor_mul(s, shape[a])
                           for s, a in zip(sc, axes)]
        elif g_sz:
            n = list_len(self, sz_v, "sizes")
            if n is not None and n_axes is not None and n != n_axes:
                raise self.bad(f"sizes has {n} entries, expected {n_axes}")
            sizes = int_vals(self, sz_v, "sizes")
            if sizes is not None and any(o < 0 for o in sizes):
                raise self.bad(f"sizes {sizes} must be non-negative")
            if sizes is not None and axes is not None and shape is not None:
                in_sz = [shape[a] for a in axes]
                if self.policy == "stretch":
                    new = list(sizes)
                elif all(d is not None for d in in_sz):
                    new = _policy_sizes(self.policy, sizes, in_sz, self.bad)[1]
        if new is not None:
            for a, o in zip(axes, new):
                out[a] = o
                if shape[a] == 0 and o is not None and o != 0:
                    raise self.bad(f"cannot resize an empty axis {a} to {o}")
        return [Val(dtype, None if out is None else tuple(out))]

    def scratch(self, ins: list[Val | None], outs: list[Val]) -> int:
        """The separable passes allocate one intermediate per resized axis (and linear / cubic
        weighted taps of each); a lower bound from the known dims."""
        x, y = ins[0], outs[0]
        if x is None or x.shape is None or y.shape is None or len(x.shape) != len(y.shape):
            return 0
        item = np.dtype(x.dtype).itemsize if kind_of(x.dtype) is not None else 1
        cur = [1 if d is None else d for d in x.shape]
        stages = []
        for a, (i, o) in enumerate(zip(x.shape, y.shape)):
            if i is not None and o is not None and i != o and i and o:
                cur[a] = o
                stages.append(dprod(cur))
        temps = stages if self.mode != "nearest" else stages[:-1]
        return max(temps, default=0) * item

    # ---- output geometry --------------------------------------------------------------------

    def _geometry(self, x, roi, scales, sizes, coord):
        r = x.ndim
        axes = self.attr("axes")
        axes = list(range(r)) if axes is None else norm_axes(self, [int(a) for a in axes], r)
        in_sz = [x.shape[a] for a in axes]
        bad = lambda m: fail(self, m)             # noqa: E731
        if _given(scales) and _given(sizes):
            raise fail(self, "give scales or sizes, not both")
        if _given(scales):
            if np.asarray(scales).size != len(axes):
                raise fail(self, f"scales has {np.asarray(scales).size} entries, "
                                 f"expected {len(axes)}")
            sc = _scale_list(scales, bad)
            out = [floor_mul(s, d) for s, d in zip(sc, in_sz)]
            widths = [s * d for s, d in zip(sc, in_sz)]        # fractional target lengths
        elif _given(sizes):
            out = int_list(self, sizes, "sizes")
            if len(out) != len(axes) or any(o < 0 for o in out):
                raise fail(self, f"sizes {out} must be {len(axes)} non-negative ints")
            if self.policy == "stretch":
                with np.errstate(all="ignore"):
                    sc = [float(np.float32(o / d)) if d else 1.0 for o, d in zip(out, in_sz)]
                widths = [float(o) for o in out]
            else:
                s, out = _policy_sizes(self.policy, out, in_sz, bad)
                sc = [s] * len(axes)
                widths = [s * d for d in in_sz]
        else:
            raise fail(self, "needs scales or sizes")
        full_sc, full_out = [1.0] * r, list(x.shape)
        full_width = [float(d) for d in x.shape]
        for a, s, o, w in zip(axes, sc, out, widths):
            if x.shape[a] == 0 and o != 0:
                raise fail(self, f"cannot resize an empty axis {a} to {o}")
            full_sc[a], full_out[a], full_width[a] = s, o, w
        full_roi = [0.0] * r + [1.0] * r
        if coord == "tf_crop_and_resize":
            if not _given(roi):
                raise fail(self, "tf_crop_and_resize needs roi")
            rv = np.asarray(roi)
            if rv.dtype.kind not in "fiub":
                raise fail(self, f"roi must be numbers, got dtype {rv.dtype}")
            rv = rv.astype(np.float64).reshape(-1)
            if rv.size != 2 * len(axes):
                raise fail(self, f"roi has {rv.size} entries, expected {2 * len(axes)}")
            for i, a in enumerate(axes):
                full_roi[a], full_roi[r + a] = float(rv[i]), float(rv[len(axes) + i])
        return full_sc, full_out, full_roi, full_width

    def _coords(self, o_len, i_len, scale, start, end, c, width):
        """Input coordinate of every output index along one axis for coordinate transformation
        mode c.  Evaluated in float32, in the order ONNX Runtime uses, so that nearest-neighbour
        ties round the same way.  `width` is the target length scale * in, fractional when it
        came from `scales` (only align_corners reads it)."""
        f = np.float32
        o = np.arange(o_len, dtype=f)
        s, half = f(scale), f(0.5)
        if c == "half_pixel":
            return (o + half) / s - half
        if c == "half_pixel_symmetric":
            adj = f(o_len) / (s * f(i_len))
            return f(i_len) / f(2) * (f(1) - adj) + (o + half) / s - half
        if c == "pytorch_half_pixel":
            return (o + half) / s - half if o_len > 1 else np.zeros_like(o)
        if c == "align_corners":
            if width == o_len:
                return o * f(i_len - 1) / f(o_len - 1) if o_len > 1 else np.zeros_like(o)
            return o * f(i_len - 1) / f(width - 1)          # width > o_len >= 1 here
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

    def _antialiased(self, c, i_len, scale):
        """Downscaling by `scale` < 1 with antialias: the linear (support 1) or cubic (support 2)
        kernel stretched to support / scale, normalised per output index.  With x = xi + t,
        t in (0, 1] (an integer x counts as t = 1, as in the ONNX reference), tap j reads input
        xi + lo + j at distance lo + j - t."""
        support = 1.0 if self.mode == "linear" else 2.0
        lo = int(np.floor(-support / scale)) + 1
        n = 2 - 2 * lo
        c = c.astype(np.float64)
        xi = np.ceil(c) - 1
        t = c - xi
        dist = np.abs((lo + np.arange(n)[None, :] - t[:, None]) * scale)
        if self.mode == "linear":
            w = np.clip(1.0 - dist, 0.0, 1.0)
        else:
            a = self.cubic_a
            near = ((a + 2) * dist - (a + 3)) * dist * dist + 1           # Keys' cubic kernel
            far = ((a * dist - 5 * a) * dist + 8 * a) * dist - 4 * a
            w = np.where(dist <= 1, near, np.where(dist < 2, far, 0.0))
        idx = xi.astype(np.int64)[:, None] + lo + np.arange(n)[None, :]
        if self.exclude_outside:
            w = np.where((idx >= 0) & (idx < i_len), w, 0.0)
        tot = w.sum(axis=1, keepdims=True)
        w = w / np.where(tot == 0, 1.0, tot)
        idx = np.clip(idx, 0, i_len - 1)
        if n > i_len:
            # a tiny scale: more taps than input pixels, the ones past the edges all reading an
            # edge pixel.  One tap per pixel instead (then at most 4 output rows: n ~ 4 / scale).
            dense = np.zeros((len(c), i_len))
            np.add.at(dense, (np.arange(len(c))[:, None], idx), w)
            return [np.full(len(c), j, np.int64) for j in range(i_len)], list(dense.T)
        return list(idx.T), list(w.T)

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
        coord = self.coord
        legacy = self._legacy_attr() or (
            _given(roi) and not _given(scales) and not _given(sizes))
        if legacy:      # opset 10: Resize(X, scales), asymmetric coordinates
            roi, scales, sizes = None, (roi if scales is None else scales), None
            if self.attr("coordinate_transformation_mode") not in (None, "asymmetric"):
                raise fail(self, "opset-10 Resize has no coordinate_transformation_mode")
            coord = "asymmetric"
        if x.ndim == 0:
            raise fail(self, "X must have rank >= 1")
        if self.mode != "nearest" and not np.issubdtype(x.dtype, np.floating):
            raise unsupported(self, f"{self.mode} resize of {x.dtype} is not supported")
        sc, out, rv, widths = self._geometry(x, roi, scales, sizes, coord)
        if any(o > MAX_DIM for o in out):
            raise fail(self, f"output shape {out} has a dim over {MAX_DIM}")
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
            c = self._coords(o_len, i_len, sc[ax], rv[ax], rv[r + ax], coord, widths[ax])
            crop = coord == "tf_crop_and_resize"
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
            elif self.antialias and sc[ax] < 1:
                idx, ws = self._antialiased(c, i_len, sc[ax])
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
            with np.errstate(all="ignore"):          # the value in X's type, as ONNX Runtime
                fill = np.asarray(self.extrapolation).astype(x.dtype)
            y = np.where(outside, fill, y)
        return (np.ascontiguousarray(y).astype(x.dtype, copy=False),)

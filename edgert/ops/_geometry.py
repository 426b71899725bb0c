"""Static shape / dtype inference shared by the conv, pool, matmul and quantization ops (not an op
module: the leading underscore keeps it out of op discovery).

Everything here works on partly known `Val`s with Python ints (no overflow on hostile attribute
values) and raises only `op.bad(...)` (GraphError naming the node).  `checked_run` lets an op's
`run` apply its own `infer` to the concrete inputs, so whatever reaches the kernels is something
`infer` accepted (a mismatch is an InputError naming the node)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np

from edgert.errors import GraphError, InputError
from edgert.ops._schema import Attr, Val, bcast, fmt

# ORT reads an empty auto_pad as NOTSET; so does every edgert op.
AUTO_PAD = Attr("str", choices=("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID", ""))
SAME = ("SAME_UPPER", "SAME_LOWER")

FLOAT_TYPES = frozenset({"float16", "float32", "float64"})
INT_TYPES = frozenset({"int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64"})
GEMM_TYPES = FLOAT_TYPES | frozenset({"int32", "uint32", "int64", "uint64"})   # ONNX MatMul, Gemm
Q8_TYPES = frozenset({"int8", "uint8"})

# Attribute tables of the conv / pool families (ONNX opsets 1-21).
CONV_ATTRS: dict[str, Attr] = {
    "auto_pad": AUTO_PAD,
    "dilations": Attr("ints", lo=1),
    "group": Attr("int", lo=1),
    "kernel_shape": Attr("ints", lo=1),
    "pads": Attr("ints", lo=0),
    "strides": Attr("ints", lo=1),
}
QRANGE_ATTRS: dict[str, Attr] = {           # edgert: narrowed saturation range (abits < 8)
    "qmin": Attr("int", lo=-128, hi=255),
    "qmax": Attr("int", lo=-128, hi=255),
}


# ---- small helpers ---------------------------------------------------------------------------

def shape_of(v: Val | None) -> tuple | None:
    """The shape of `v` (from its value when known), None when unknown / omitted."""
    if v is None:
        return None
    if v.value is not None:
        return tuple(int(d) for d in np.shape(v.value))
    return None if v.shape is None else tuple(v.shape)


def dtype_of(v: Val | None) -> str | None:
    if v is None:
        return None
    if v.value is not None:
        return np.asarray(v.value).dtype.name
    return v.dtype


def dim(shape: tuple | None, i: int) -> int | None:
    """Dim i (negative from the end) of a partly known shape; None when unknown / out of range."""
    if shape is None or not -len(shape) <= i < len(shape):
        return None
    return shape[i]


def lb(d: int | None) -> int:
    """A lower bound of a dim (unknown = 1)."""
    return 1 if d is None else d


def prod_lb(dims: Iterable[int | None]) -> int:
    n = 1
    for d in dims:
        n *= lb(d)
    return n


def none_empty(*shapes: tuple | None) -> bool:
    """False when one of these (partly known) shapes is known to hold no element: `run` then
    allocates no temporaries."""
    return not any(s is not None and 0 in s for s in shapes)


def itemsize(dtype: str | None, default: int = 1) -> int:
    try:
        return np.dtype(dtype).itemsize if dtype else default
    except TypeError:
        return default


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def need_dtype(op, v: Val | None, allowed: Iterable[str], what: str) -> str | None:
    """The dtype of `v`; GraphError when it is known and not one of `allowed`."""
    dt = dtype_of(v)
    allowed = frozenset(allowed)
    if dt is not None and dt not in allowed:
        raise op.bad(f"{what} has dtype {dt}, expected one of {', '.join(sorted(allowed))}")
    return dt


def same_dtype(op, *named: tuple[str, Val | None]) -> str | None:
    """ONNX type constraint T: these inputs share one element type; returns it (None if unknown)."""
    seen: dict[str, str] = {}
    for what, v in named:
        dt = dtype_of(v)
        if dt is not None:
            seen.setdefault(dt, what)
    if len(seen) > 1:
        got = ", ".join(f"{w} {d}" for d, w in seen.items())
        raise op.bad(f"inputs must share one dtype, got {got}")
    return next(iter(seen), None)


def need_rank(op, shape: tuple | None, lo: int, hi: int | None, what: str) -> None:
    if shape is None:
        return
    if len(shape) < lo or (hi is not None and len(shape) > hi):
        want = f"{lo}" if lo == hi else (f">= {lo}" if hi is None else f"{lo}..{hi}")
        raise op.bad(f"{what} must have rank {want}, got shape {fmt(shape)}")


def int_list_attr(op, key: str) -> list[int] | None:
    """An ints attribute; an empty list counts as absent (as the conv ops' `run` reads it)."""
    v = op.attr(key)
    if not v:
        return None
    return [int(x) for x in v]


def spatial_rank(op, nd: int | None, lists: Sequence[tuple[str, list[int] | None, int]]
                 ) -> int | None:
    """Check list attributes against the spatial rank nd (None = unknown: the first list fixes it).
    `lists` holds (name, value or None, entries per spatial dim)."""
    for name, lst, per in lists:
        if lst is None:
            continue
        if nd is None:
            if len(lst) % per:
                raise op.bad(f"{name} {lst} must have {per} entries per spatial dim")
            nd = len(lst) // per
            continue
        if len(lst) != per * nd:
            raise op.bad(f"{name} {lst} must have {per * nd} entries for the {nd} spatial dims")
    return nd


def window_dim(op, axis: int, i: int | None, k: int | None, s: int, d: int, pb: int, pe: int,
               auto_pad: str, ceil_mode: bool = False) -> tuple[int | None, int | None, int | None]:
    """One spatial dim of a sliding window (ONNX conv / pooling rules, as `_util.pool_geometry` and
    `kernels.im2col.conv_pads`): (output size, begin pad, end pad); None where unknown."""
    if auto_pad in SAME:
        if i is None:
            return None, None, None
        o = ceil_div(i, s)
        if k is None:
            return o, None, None
        total = max((o - 1) * s + (k - 1) * d + 1 - i, 0)
        small, big = total // 2, total - total // 2
        return (o, small, big) if auto_pad == "SAME_UPPER" else (o, big, small)
    if auto_pad == "VALID":
        pb = pe = 0
    if i is None or k is None:
        return None, pb, pe
    eff = (k - 1) * d + 1
    span = i + pb + pe - eff
    if span < 0:
        raise op.bad(f"window {eff} (kernel {k}, dilation {d}) is larger than the padded input "
                     f"{i + pb + pe} on spatial axis {axis}")
    o = (ceil_div(span, s) if ceil_mode else span // s) + 1
    if ceil_mode and (o - 1) * s >= i + pb:      # a window starting in the end pad is dropped
        o -= 1
    return o, pb, pe


def window_dim_lb(i: int | None, k: int | None, s: int, d: int, pb: int, pe: int, auto_pad: str,
                  ceil_mode: bool = False) -> tuple[int, int]:
    """Lower bounds of (output size, padded input extent) of one window dim for the smallest
    input `window_dim` accepts when i (or k) is unknown (unknown dims count as 1): for `scratch`,
    so a hostile pad is refused even when the input size is only known at run time."""
    i = 1 if i is None else i
    eff = 1 if k is None else (k - 1) * d + 1
    if auto_pad in SAME:
        o = ceil_div(i, s)
        return o, i + max((o - 1) * s + eff - i, 0)
    if auto_pad == "VALID":
        pb = pe = 0
    if k is None:                               # a kernel as large as the input leaves one
        return 1, i + pb + pe
    i = max(i, eff - pb - pe)                   # the window must fit the padded input
    o = (i + pb + pe - eff) // s + 1
    if ceil_mode:                               # the last window may be dropped
        o = max(o - 1, 1)
    return o, i + pb + pe


# ---- Conv / QLinearConv ----------------------------------------------------------------------

@dataclass
class ConvGeom:
    out: tuple | None                 # output shape (N, M, *spatial); None = unknown rank
    nd: int | None = None
    in_sp: tuple = ()
    kernel: tuple = ()
    out_sp: tuple = ()
    pb: tuple = ()
    pe: tuple = ()
    channels: int | None = None       # C of X
    group: int = 1
    depthwise: bool = False
    out_lb: tuple = ()                # lower bounds of out_sp (`window_dim_lb`)
    padded_lb: tuple = ()             # lower bounds of the padded input's spatial dims
    maybe_depthwise: bool = False     # `run` may take the depthwise path (C, C/group unknown)

    def out_elements(self) -> int:
        """Lower bound of the output's element count."""
        if self.out is None:
            return 0
        return lb(self.out[0]) * lb(self.out[1]) * prod_lb(self.out_lb)

    def cols_elements(self) -> int:
        """Lower bound of the im2col matrix (N, g, P, Cg·∏k) = N·C·P·∏k elements."""
        if self.out is None:
            return 0
        return lb(self.out[0]) * lb(self.channels) * prod_lb(self.out_lb) * prod_lb(self.kernel)

    def padded_elements(self, channels: int | None, always: bool = False) -> int:
        """Lower bound of the padded copy of X (made only when a pad is > 0, unless `always`)
        with `channels` channels."""
        if self.out is None:
            return 0
        if not always and not any(b or e for b, e in zip(self.pb, self.pe)):
            return 0
        return lb(self.out[0]) * lb(channels) * prod_lb(self.padded_lb)


def conv_geom(op, x: Val | None, w: Val | None) -> ConvGeom:
    """Shape rules of Conv / QLinearConv: X (N, C, *s), W (M, C/group, *k) -> Y (N, M, *o)."""
    xs, ws = shape_of(x), shape_of(w)
    need_rank(op, xs, 3, None, "X")
    need_rank(op, ws, 3, None, "W")
    if xs is not None and ws is not None and len(xs) != len(ws):
        raise op.bad(f"X {fmt(xs)} and W {fmt(ws)} must have the same rank")
    nd = len(xs) - 2 if xs is not None else (len(ws) - 2 if ws is not None else None)
    kernel_a = int_list_attr(op, "kernel_shape")
    strides = int_list_attr(op, "strides")
    dil = int_list_attr(op, "dilations")
    pads = int_list_attr(op, "pads")
    nd = spatial_rank(op, nd, [("kernel_shape", kernel_a, 1), ("strides", strides, 1),
                               ("dilations", dil, 1), ("pads", pads, 2)])
    g = int(op.attr("group", 1))
    c, cw, m = dim(xs, 1), dim(ws, 1), dim(ws, 0)
    if m is not None and m % g:
        raise op.bad(f"group {g} does not divide the {m} output channels of W {fmt(ws)}")
    if c is not None and cw is not None and c != cw * g:
        raise op.bad(f"X has {c} channels, W {fmt(ws)} expects {cw}×group {g} = {cw * g} "
                     f"input channels")
    if c is not None and c % g:
        raise op.bad(f"group {g} does not divide the {c} input channels")
    if nd is None:
        return ConvGeom(None, group=g, channels=c)
    wk = tuple(ws[2:]) if ws is not None else (None,) * nd
    for k in wk:
        if k is not None and k < 1:
            raise op.bad(f"W {fmt(ws)} has an empty kernel")
    if kernel_a is not None:
        for a, b in zip(kernel_a, wk):
            if b is not None and a != b:
                raise op.bad(f"kernel_shape {kernel_a} does not match W {fmt(ws)}")
        kernel = tuple(kernel_a)
    else:
        kernel = wk
    strides = strides or [1] * nd
    dil = dil or [1] * nd
    pads = pads or [0] * (2 * nd)
    auto_pad = str(op.attr("auto_pad", "NOTSET"))
    in_sp = tuple(xs[2:]) if xs is not None else (None,) * nd
    out_sp, pb, pe, out_lb, padded_lb = [], [], [], [], []
    for a in range(nd):
        args = (strides[a], dil[a], pads[a], pads[nd + a], auto_pad)
        o, b, e = window_dim(op, a, in_sp[a], kernel[a], *args)
        out_sp.append(o)
        pb.append(b)
        pe.append(e)
        o_lb, p_lb = window_dim_lb(in_sp[a], kernel[a], *args)
        out_lb.append(o_lb)
        padded_lb.append(p_lb)
    out = (dim(xs, 0), m) + tuple(out_sp)
    depthwise = g > 1 and c == g and cw == 1
    maybe_dw = g > 1 and c in (None, g) and cw in (None, 1)
    return ConvGeom(out, nd, in_sp, kernel, tuple(out_sp), tuple(pb), tuple(pe), c, g, depthwise,
                    tuple(out_lb), tuple(padded_lb), maybe_dw)


def check_bias(op, b: Val | None, n: int | None, what: str = "B") -> None:
    """A per-output-channel bias: 1-D of length n."""
    bs = shape_of(b)
    if bs is None:
        return
    if len(bs) != 1:
        raise op.bad(f"{what} must be 1-D, got shape {fmt(bs)}")
    if bs[0] is not None and n is not None and bs[0] != n:
        raise op.bad(f"{what} {fmt(bs)} must have {n} entries (one per output channel)")


# ---- MatMul-like -----------------------------------------------------------------------------

def matmul_shape(op, a: tuple | None, b: tuple | None) -> tuple | None:
    """numpy.matmul shape rules on partly known shapes (1-D operands promoted then dropped)."""
    for what, s in (("A", a), ("B", b)):
        if s is not None and len(s) == 0:
            raise op.bad(f"{what} must have rank >= 1, got a scalar")
    if a is None or b is None:
        return None
    a2 = a if len(a) >= 2 else (1,) + tuple(a)
    b2 = b if len(b) >= 2 else tuple(b) + (1,)
    ka, kb = a2[-1], b2[-2]
    if ka is not None and kb is not None and ka != kb:
        raise op.bad(f"inner dims of A {fmt(a)} and B {fmt(b)} do not match ({ka} vs {kb})")
    batch = bcast(op, tuple(a2[:-2]), tuple(b2[:-2]))
    out = tuple(batch or ())
    if len(a) >= 2:
        out += (a2[-2],)
    if len(b) >= 2:
        out += (b2[-1],)
    return out


# ---- quantization parameters -----------------------------------------------------------------

def _values(v: Val | None) -> np.ndarray | None:
    if v is None or v.value is None:
        return None
    a = np.asarray(v.value)
    return a if a.dtype.kind in "fiu" else None


def check_scale(op, v: Val | None, what: str, float32: bool = False) -> None:
    """A scale: float dtype; known values finite and > 0 (also once cast to float32 when the
    kernel computes in float32)."""
    need_dtype(op, v, FLOAT_TYPES, what)
    a = _values(v)
    if a is None:
        return
    with np.errstate(invalid="ignore"):
        a64 = a.astype(np.float64)
    if not np.all(np.isfinite(a64)) or np.any(a64 <= 0):
        bad = float(a64[~(np.isfinite(a64) & (a64 > 0))].reshape(-1)[0])
        raise op.bad(f"{what} must be finite and > 0, got {bad!r}")
    if float32:
        with np.errstate(over="ignore", under="ignore"):
            a32 = a64.astype(np.float32)
        if not np.all(np.isfinite(a32)) or np.any(a32 <= 0):
            raise op.bad(f"{what} is not a finite positive float32")


def check_zero_point(op, v: Val | None, what: str, allowed: Iterable[str],
                     like: tuple[str, Val | None] | None = None) -> str | None:
    """A zero point's dtype: one of `allowed` and (ONNX) that of the tensor it belongs to."""
    dt = need_dtype(op, v, allowed, what)
    if like is not None:
        ldt = dtype_of(like[1])
        if dt is not None and ldt is not None and dt != ldt:
            raise op.bad(f"{what} has dtype {dt}, {like[0]} has {ldt} (they must match)")
    return dt


def check_scalar(op, v: Val | None, what: str) -> None:
    """A per-tensor parameter: rank <= 1 with exactly one element."""
    s = shape_of(v)
    if s is None:
        return
    if len(s) > 1 or any(d is not None and d != 1 for d in s):
        raise op.bad(f"{what} must be a scalar (per-tensor), got shape {fmt(s)}")


def check_per_channel(op, v: Val | None, what: str, n: int | None, of: str) -> None:
    """A per-tensor or per-channel parameter: a scalar or 1-D with 1 or n entries."""
    s = shape_of(v)
    if s is None:
        return
    if len(s) > 1:
        raise op.bad(f"{what} must be a scalar or 1-D, got shape {fmt(s)}")
    if s and s[0] is not None and s[0] != 1 and n is not None and s[0] != n:
        raise op.bad(f"{what} {fmt(s)} must have 1 or {n} entries ({of})")


def check_multipliers(op, in_scale: Val | None, w_scale: Val | None, out_scale: Val | None) -> None:
    """With every scale known: M = in·w/out must be representable by the fixed-point requant."""
    from edgert.kernels.requant import requant_multipliers

    vals = [_values(v) for v in (in_scale, w_scale, out_scale)]
    if any(a is None for a in vals):
        return
    if vals[0].size != 1 or vals[2].size != 1:
        return
    try:
        requant_multipliers(*vals)
    except InputError as e:
        raise op.bad(str(e)) from None


def check_qrange(op, dtype: str | None) -> None:
    """edgert qmin/qmax: inside the output dtype's range and qmin <= qmax."""
    qmin, qmax = op.attr("qmin"), op.attr("qmax")
    if dtype in INT_TYPES:
        info = np.iinfo(dtype)
        lo = info.min if qmin is None else qmin
        hi = info.max if qmax is None else qmax
        if lo < info.min or hi > info.max:
            raise op.bad(f"qmin/qmax [{lo}, {hi}] are outside the {dtype} range "
                         f"[{info.min}, {info.max}]")
        if lo > hi:
            raise op.bad(f"qmin {lo} is above qmax {hi}")
    elif qmin is not None and qmax is not None and qmin > qmax:
        raise op.bad(f"qmin {qmin} is above qmax {qmax}")


def qparam_layout(op, x: tuple | None, p: Val | None, what: str, axis: int, block: int) -> None:
    """QuantizeLinear / DequantizeLinear parameter shapes: one element (per-tensor, whatever
    block_size says, as ONNX's reference), 1-D along `axis` (block_size 0), or blocked (rank of x,
    ceil(x.shape[axis] / block_size) along axis, x's dims elsewhere)."""
    ps = shape_of(p)
    if ps is None:
        return
    if all(d == 1 for d in ps):
        return                                          # per-tensor
    if not any(d is not None and d != 1 for d in ps):
        return                                          # might hold one element: decided at run
    if x is not None and len(x) == 0:
        raise op.bad(f"{what} {fmt(ps)} is per-axis but x is a scalar")
    if block == 0:
        if len(ps) != 1:
            raise op.bad(f"{what} must be a scalar or 1-D (per-axis) without block_size, "
                         f"got shape {fmt(ps)}")
        if x is None:
            return
        ax = _axis(op, axis, len(x))
        if ps[0] is not None and x[ax] is not None and ps[0] != x[ax]:
            raise op.bad(f"{what} {fmt(ps)} does not match x {fmt(x)} on axis {axis}")
        return
    if x is None:
        return
    if len(ps) != len(x):
        raise op.bad(f"blocked {what} {fmt(ps)} must have the rank of x {fmt(x)}")
    ax = _axis(op, axis, len(x))
    for i, (pd, xd) in enumerate(zip(ps, x)):
        if pd is None or xd is None:
            continue
        want = ceil_div(xd, block) if i == ax else xd
        if pd != want:
            raise op.bad(f"blocked {what} {fmt(ps)} does not match x {fmt(x)} with block_size "
                         f"{block} on axis {axis} (dim {i} must be {want})")


def _axis(op, axis: int, rank: int) -> int:
    if not -rank <= axis < rank:
        raise op.bad(f"axis {axis} is out of range for x of rank {rank}")
    return axis % rank


# ---- run-time helpers ----------------------------------------------------------------------

def zeros(op, shape: Sequence[int], dtype) -> np.ndarray:
    """np.zeros for an output `run` fills itself (an empty one may still have dims whose product
    numpy cannot represent): InputError naming the node instead of numpy's ValueError."""
    try:
        return np.zeros(tuple(shape), dtype)
    except (ValueError, MemoryError) as e:
        raise InputError(f"node {op.node.name!r} ({op.node.op}): cannot allocate an output of "
                         f"shape {tuple(shape)}: {e}") from None


# ---- run-time check --------------------------------------------------------------------------

def checked_run(op, inputs: Sequence[Any], values: Iterable[int] = ()) -> list[Val]:
    """Apply `op.infer` to the concrete inputs of a run (the values of the positions in `values`,
    small parameters such as scales and zero points, are passed too); a mismatch is an InputError
    naming the node, so the kernels only ever see inputs the static checks accept."""
    keep = set(values)
    arrays = [None if a is None else np.asarray(a) for a in inputs]
    key = tuple(None if a is None else (a.dtype.str, a.shape, a.tobytes() if i in keep else None)
                for i, a in enumerate(arrays))
    last = op.__dict__.get("_checked_run")
    if last is not None and last[0] == key:      # same shapes and parameters as the last run
        return last[1]
    vals = [None if a is None else
            Val(a.dtype.name, tuple(int(d) for d in a.shape), a if i in keep else None)
            for i, a in enumerate(arrays)]
    try:
        outs = op.infer(vals)
    except GraphError as e:
        raise InputError(str(e)) from None
    if not all(v.known for v in outs):          # only when a required input is omitted (None)
        raise InputError(f"node {op.node.name!r} ({op.node.op}): a required input is missing")
    op.__dict__["_checked_run"] = (key, outs)
    return outs


def float_conv_out(op, ins: Sequence[Val | None], out_shape) -> list[Val]:
    """Conv / ConvTranspose: X, W (and B) float of one dtype; B sized by the output channels.
    `out_shape(x, w)` gives the (partly known) output shape."""
    x, w = ins[0], ins[1]
    b = ins[2] if len(ins) > 2 else None
    for what, v in (("X", x), ("W", w), ("B", b)):
        need_dtype(op, v, FLOAT_TYPES, what)
    dt = same_dtype(op, ("X", x), ("W", w), ("B", b))
    out = out_shape(x, w)
    check_bias(op, b, None if out is None else out[1])
    return [Val(dt, out)]

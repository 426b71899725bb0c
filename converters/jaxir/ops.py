"""JAX lowerings of the IR ops the converter's optimisations meet (PP-OCR det / rec / cls, the example
models, LayerNorm tails, attention).  Each takes (node, inputs) — inputs are JAX arrays, or numpy arrays
for constants — and returns a tuple of outputs, following the numpy oracle (edgert/ops) that the tests
hold every lowering to.  Ops the table lacks raise UnsupportedOp; the caller falls back (block
reconstruction then keeps those layers layer-wise)."""
from __future__ import annotations

import math
from typing import Any, Callable

import jax.numpy as jnp
import numpy as np
from jax import lax

from edgert.errors import UnsupportedOp
from edgert.ir import Node

Fn = Callable[[Node, list[Any]], tuple]
OPS: dict[str, Fn] = {}


def _op(*names: str):
    def deco(fn: Fn) -> Fn:
        for n in names:
            OPS[n] = fn
        return fn
    return deco


def fold_const(node: Node, ins: list) -> tuple:
    """A node whose inputs are all constant: the numpy oracle computes it once, at trace time."""
    from edgert.ops import get_op
    return tuple(get_op(node).run(*ins))


def _ints(v) -> list[int]:
    return [int(x) for x in np.asarray(v).reshape(-1)]


def _axes(node: Node, ins: list, pos: int) -> list[int] | None:
    if "axes" in node.attrs:
        return [int(a) for a in node.attrs["axes"]]
    if len(ins) > pos and ins[pos] is not None:
        if not isinstance(ins[pos], np.ndarray):
            raise UnsupportedOp(f"{node.op} {node.name!r}: computed axes")
        return _ints(ins[pos])
    return None


# ----------------------------------------------------------------------------------- elementwise
_BINARY = {"Add": jnp.add, "Sub": jnp.subtract, "Mul": jnp.multiply, "Div": jnp.divide, "Pow": jnp.power,
           "Max": jnp.maximum, "Min": jnp.minimum}
_UNARY = {"Relu": lambda x: jnp.maximum(x, 0), "Sigmoid": lambda x: 1 / (1 + jnp.exp(-x)), "Sqrt": jnp.sqrt,
          "Tanh": jnp.tanh, "Exp": jnp.exp, "Neg": jnp.negative, "Identity": lambda x: x,
          "Erf": lambda x: __import__("jax").scipy.special.erf(x)}


@_op(*_BINARY)
def _binary(node, ins):
    a, b = ins[0], ins[1]
    if node.op == "Pow" and isinstance(b, np.ndarray) and b.size == 1 and float(b.reshape(-1)[0]) == 2.0:
        return (a * a,)
    return (_BINARY[node.op](a, b),)


@_op(*_UNARY)
def _unary(node, ins):
    return (_UNARY[node.op](ins[0]),)


@_op("HardSigmoid")
def _hardsigmoid(node, ins):
    a, b = float(node.attrs.get("alpha", 0.2)), float(node.attrs.get("beta", 0.5))
    return (jnp.clip(a * ins[0] + b, 0.0, 1.0),)


@_op("HardSwish")
def _hardswish(node, ins):
    x = ins[0]
    return (x * jnp.clip(x / 6.0 + 0.5, 0.0, 1.0),)


@_op("Clip")
def _clip(node, ins):
    lo, hi = node.attrs.get("min"), node.attrs.get("max")
    if len(ins) > 1 and ins[1] is not None:
        lo = float(np.asarray(ins[1]).reshape(-1)[0])
    if len(ins) > 2 and ins[2] is not None:
        hi = float(np.asarray(ins[2]).reshape(-1)[0])
    return (jnp.clip(ins[0], lo, hi),)


# ----------------------------------------------------------------------------------- linear
@_op("MatMul")
def _matmul(node, ins):
    return (jnp.matmul(ins[0], ins[1]),)


@_op("Gemm")
def _gemm(node, ins):
    a, b = ins[0], ins[1]
    if node.attrs.get("transA", 0):
        a = a.T
    if node.attrs.get("transB", 0):
        b = b.T
    y = float(node.attrs.get("alpha", 1.0)) * jnp.matmul(a, b)
    if len(ins) > 2 and ins[2] is not None:
        y = y + float(node.attrs.get("beta", 1.0)) * ins[2]
    return (y,)


def _explicit_pads(node: Node, nsp: int) -> list[tuple[int, int]]:
    if str(node.attrs.get("auto_pad", "NOTSET")) not in ("NOTSET", "VALID"):
        raise UnsupportedOp(f"{node.op} {node.name!r}: auto_pad {node.attrs['auto_pad']}")
    pads = list(node.attrs.get("pads", [0] * (2 * nsp)))
    return [(int(pads[i]), int(pads[i + nsp])) for i in range(nsp)]


def _dims(nsp: int) -> tuple[str, str, str]:
    sp = "DHW"[-nsp:] if nsp <= 3 else None
    if sp is None:
        raise UnsupportedOp(f"{nsp}-D convolution")
    return ("NC" + sp, "OI" + sp, "NC" + sp)


def _depthwise(x, w, strides, pads, dil):
    """A convolution whose every output channel reads one input channel, as a sum of shifted products:
    XLA's CPU grouped convolution is ~20x slower here (4x32x160x160, 3x3: 208 vs 11 ms forward)."""
    m = w.shape[0] // x.shape[1]
    if m > 1:
        x = jnp.repeat(x, m, axis=1)
    xp = jnp.pad(x, [(0, 0), (0, 0)] + list(pads))
    nsp = w.ndim - 2
    out = [(xp.shape[2 + i] - dil[i] * (w.shape[2 + i] - 1) - 1) // strides[i] + 1 for i in range(nsp)]
    y = 0
    for tap in np.ndindex(*w.shape[2:]):
        idx = [slice(None), slice(None)] + [slice(tap[i] * dil[i], tap[i] * dil[i] + strides[i] * (out[i] - 1) + 1,
                                                  strides[i]) for i in range(nsp)]
        y = y + xp[tuple(idx)] * jnp.reshape(w[(slice(None), 0) + tap], (1, -1) + (1,) * nsp)
    return y


@_op("Conv")
def _conv(node, ins):
    x, w = ins[0], ins[1]
    nsp = w.ndim - 2
    g = int(node.attrs.get("group", 1))
    if g > 1 and w.shape[1] == 1 and g == x.shape[1]:
        y = _depthwise(x, w, [int(v) for v in node.attrs.get("strides", [1] * nsp)], _explicit_pads(node, nsp),
                       [int(v) for v in node.attrs.get("dilations", [1] * nsp)])
        if len(ins) > 2 and ins[2] is not None:
            y = y + jnp.reshape(ins[2], (1, -1) + (1,) * nsp)
        return (y,)
    y = lax.conv_general_dilated(
        x, w, window_strides=tuple(node.attrs.get("strides", [1] * nsp)), padding=_explicit_pads(node, nsp),
        rhs_dilation=tuple(node.attrs.get("dilations", [1] * nsp)),
        feature_group_count=int(node.attrs.get("group", 1)), dimension_numbers=_dims(nsp))
    if len(ins) > 2 and ins[2] is not None:
        y = y + jnp.reshape(ins[2], (1, -1) + (1,) * nsp)
    return (y,)


@_op("ConvTranspose")
def _conv_transpose(node, ins):
    x, w = ins[0], ins[1]                           # w [Cin, Cout / g, k...]
    nsp = w.ndim - 2
    if "output_shape" in node.attrs:
        raise UnsupportedOp(f"ConvTranspose {node.name!r}: output_shape")
    g = int(node.attrs.get("group", 1))
    k = w.shape[2:]
    strides = list(node.attrs.get("strides", [1] * nsp))
    dil = list(node.attrs.get("dilations", [1] * nsp))
    opad = list(node.attrs.get("output_padding", [0] * nsp))
    pads = _explicit_pads(node, nsp)
    cin, cog = w.shape[0], w.shape[1]
    wt = jnp.reshape(w, (g, cin // g, cog) + tuple(k))
    wt = jnp.swapaxes(wt, 1, 2).reshape((g * cog, cin // g) + tuple(k))
    wt = jnp.flip(wt, axis=tuple(range(2, 2 + nsp)))
    padding = [(dil[i] * (k[i] - 1) - pads[i][0], dil[i] * (k[i] - 1) - pads[i][1] + opad[i]) for i in range(nsp)]
    y = lax.conv_general_dilated(x, wt, window_strides=(1,) * nsp, padding=padding, lhs_dilation=tuple(strides),
                                 rhs_dilation=tuple(dil), feature_group_count=g, dimension_numbers=_dims(nsp))
    if len(ins) > 2 and ins[2] is not None:
        y = y + jnp.reshape(ins[2], (1, -1) + (1,) * nsp)
    return (y,)


# ----------------------------------------------------------------------------------- pooling / norms
@_op("GlobalAveragePool")
def _gap(node, ins):
    x = ins[0]
    return (jnp.mean(x, axis=tuple(range(2, x.ndim)), keepdims=True),)


def _pool_geometry(node, x):
    nsp = x.ndim - 2
    k = [int(v) for v in node.attrs["kernel_shape"]]
    s = [int(v) for v in node.attrs.get("strides", [1] * nsp)]
    d = [int(v) for v in node.attrs.get("dilations", [1] * nsp)]
    pads = _explicit_pads(node, nsp)
    ceil = bool(node.attrs.get("ceil_mode", 0))
    extra = []
    for i in range(nsp):
        span = x.shape[2 + i] + pads[i][0] + pads[i][1] - ((k[i] - 1) * d[i] + 1)
        out = (math.ceil(span / s[i]) if ceil else span // s[i]) + 1
        if ceil and (out - 1) * s[i] >= x.shape[2 + i] + pads[i][0]:
            out -= 1                                  # a window may not start in the end padding
        extra.append(max(0, (out - 1) * s[i] + (k[i] - 1) * d[i] + 1 - (x.shape[2 + i] + pads[i][0] + pads[i][1])))
    return nsp, k, s, d, pads, extra


@_op("MaxPool")
def _maxpool(node, ins):
    x = ins[0]
    if len(node.outputs) > 1 and node.outputs[1]:
        raise UnsupportedOp(f"MaxPool {node.name!r}: indices output")
    nsp, k, s, d, pads, extra = _pool_geometry(node, x)
    pad = [(0, 0), (0, 0)] + [(pads[i][0], pads[i][1] + extra[i]) for i in range(nsp)]
    y = lax.reduce_window(x, -jnp.inf, lax.max, (1, 1, *k), (1, 1, *s), pad, window_dilation=(1, 1, *d))
    return (y,)


@_op("AveragePool")
def _avgpool(node, ins):
    x = ins[0]
    nsp, k, s, d, pads, extra = _pool_geometry(node, x)
    pad = [(0, 0), (0, 0)] + [(pads[i][0], pads[i][1] + extra[i]) for i in range(nsp)]
    total = lax.reduce_window(x, 0.0, lax.add, (1, 1, *k), (1, 1, *s), pad, window_dilation=(1, 1, *d))
    # the divisor: window cells inside the input (count_include_pad=0) or inside input + explicit
    # pads (count_include_pad=1); ceil_mode's extra end cells never count (ONNX / PyTorch)
    ones = np.ones((1, 1, *x.shape[2:]), np.float32)
    if node.attrs.get("count_include_pad", 0):
        ones = np.pad(ones, [(0, 0), (0, 0)] + pads)
        pad_c = [(0, 0), (0, 0)] + [(0, extra[i]) for i in range(nsp)]
    else:
        pad_c = pad
    count = lax.reduce_window(jnp.asarray(ones), 0.0, lax.add, (1, 1, *k), (1, 1, *s), pad_c,
                              window_dilation=(1, 1, *d))
    return (total / count,)


@_op("ReduceMean", "ReduceSum", "ReduceMax")
def _reduce(node, ins):
    axes = _axes(node, ins, 1)
    keep = bool(node.attrs.get("keepdims", 1))
    x = ins[0]
    if axes is None or len(axes) == 0:
        if node.attrs.get("noop_with_empty_axes", 0):
            return (x,)
        axes = list(range(x.ndim))
    fn = {"ReduceMean": jnp.mean, "ReduceSum": jnp.sum, "ReduceMax": jnp.max}[node.op]
    return (fn(x, axis=tuple(a % x.ndim for a in axes), keepdims=keep),)


@_op("Softmax")
def _softmax(node, ins):
    x = ins[0]
    opset = int(node.attrs.get("opset", 13))
    axis = int(node.attrs.get("axis", -1 if opset >= 13 else 1)) % x.ndim
    if opset >= 13 or axis == x.ndim - 1:
        return (_softmax_last(x, axis),)
    shape = x.shape
    flat = jnp.reshape(x, (int(np.prod(shape[:axis])), -1))      # opset < 13: coerced to 2-D at axis
    return (jnp.reshape(_softmax_last(flat, 1), shape),)


def _softmax_last(x, axis):
    e = jnp.exp(x - lax.stop_gradient(jnp.max(x, axis=axis, keepdims=True)))
    return e / jnp.sum(e, axis=axis, keepdims=True)


@_op("LayerNormalization")
def _layernorm(node, ins):
    x = ins[0]
    axis = int(node.attrs.get("axis", -1)) % x.ndim
    eps = float(node.attrs.get("epsilon", 1e-5))
    red = tuple(range(axis, x.ndim))
    mu = jnp.mean(x, axis=red, keepdims=True)
    var = jnp.mean((x - mu) ** 2, axis=red, keepdims=True)
    y = (x - mu) / jnp.sqrt(var + eps) * ins[1]
    if len(ins) > 2 and ins[2] is not None:
        y = y + ins[2]
    return (y,)


@_op("BatchNormalization")
def _batchnorm(node, ins):
    x, sc, b, mean, var = ins[:5]
    eps = float(node.attrs.get("epsilon", 1e-5))
    shape = (1, -1) + (1,) * (x.ndim - 2)
    return ((x - jnp.reshape(mean, shape)) / jnp.sqrt(jnp.reshape(var, shape) + eps) * jnp.reshape(sc, shape)
            + jnp.reshape(b, shape),)


# ----------------------------------------------------------------------------------- shapes
@_op("Reshape")
def _reshape(node, ins):
    x = ins[0]
    shape = _ints(ins[1])
    if not node.attrs.get("allowzero", 0):
        shape = [x.shape[i] if v == 0 else v for i, v in enumerate(shape)]
    return (jnp.reshape(x, shape),)


@_op("Flatten")
def _flatten(node, ins):
    x = ins[0]
    axis = int(node.attrs.get("axis", 1)) % (x.ndim + 1)
    return (jnp.reshape(x, (int(np.prod(x.shape[:axis])), -1)),)


@_op("Transpose")
def _transpose(node, ins):
    perm = node.attrs.get("perm")
    return (jnp.transpose(ins[0], None if perm is None else [int(p) for p in perm]),)


@_op("Squeeze")
def _squeeze(node, ins):
    axes = _axes(node, ins, 1)
    x = ins[0]
    return (jnp.squeeze(x, axis=None if axes is None else tuple(a % x.ndim for a in axes)),)


@_op("Unsqueeze")
def _unsqueeze(node, ins):
    axes = _axes(node, ins, 1)
    x = ins[0]
    n = x.ndim + len(axes)
    for a in sorted(a % n for a in axes):
        x = jnp.expand_dims(x, a)
    return (x,)


@_op("Concat")
def _concat(node, ins):
    return (jnp.concatenate([v for v in ins if v is not None], axis=int(node.attrs["axis"])),)


@_op("Slice")
def _slice(node, ins):
    x = ins[0]
    if any(v is not None and not isinstance(v, np.ndarray) for v in ins[1:]):
        raise UnsupportedOp(f"Slice {node.name!r}: computed bounds")
    starts, ends = _ints(ins[1]), _ints(ins[2])
    axes = _ints(ins[3]) if len(ins) > 3 and ins[3] is not None else list(range(len(starts)))
    steps = _ints(ins[4]) if len(ins) > 4 and ins[4] is not None else [1] * len(starts)
    idx = [slice(None)] * x.ndim
    for st, en, ax, sp in zip(starts, ends, axes, steps):
        dim = x.shape[ax % x.ndim]
        idx[ax % x.ndim] = slice(*slice(st, en, sp).indices(dim))
    return (x[tuple(idx)],)


@_op("Split")
def _split(node, ins):
    x = ins[0]
    axis = int(node.attrs.get("axis", 0)) % x.ndim
    if "split" in node.attrs:
        sizes = [int(v) for v in node.attrs["split"]]
    elif len(ins) > 1 and ins[1] is not None:
        sizes = _ints(ins[1])
    else:
        n = len(node.outputs)
        sizes = [-(-x.shape[axis] // n)] * n
        sizes[-1] = x.shape[axis] - sum(sizes[:-1])
    cuts = np.cumsum(sizes)[:-1].tolist()
    return tuple(jnp.split(x, cuts, axis=axis))


@_op("Gather")
def _gather(node, ins):
    if not isinstance(ins[1], np.ndarray):
        raise UnsupportedOp(f"Gather {node.name!r}: computed indices")
    x = ins[0]
    axis = int(node.attrs.get("axis", 0)) % x.ndim
    idx = np.where(ins[1] < 0, ins[1] + x.shape[axis], ins[1]).astype(np.int64)
    return (jnp.take(x, idx, axis=axis),)


@_op("Shape")
def _shape(node, ins):
    return (np.asarray(ins[0].shape, np.int64)[node.attrs.get("start", 0): node.attrs.get("end")],)


@_op("Resize")
def _resize(node, ins):
    """Nearest only: every output element copies one input element, so the oracle, run once on the
    input's flat indices, gives the gather map (exact for any coordinate mode and rounding rule)."""
    if node.attrs.get("mode", "nearest") != "nearest":
        raise UnsupportedOp(f"Resize {node.name!r}: mode {node.attrs.get('mode')}")
    x = ins[0]
    if any(v is not None and not isinstance(v, np.ndarray) for v in ins[1:]):
        raise UnsupportedOp(f"Resize {node.name!r}: computed scales / sizes")
    if x.size >= 1 << 24:
        raise UnsupportedOp(f"Resize {node.name!r}: {x.size} elements exceed float32's exact indices")
    iota = np.arange(x.size, dtype=np.float32).reshape(x.shape)
    src = fold_const(node, [iota, *ins[1:]])[0]
    return (jnp.reshape(jnp.take(jnp.reshape(x, (-1,)), src.astype(np.int64).reshape(-1)), src.shape),)

"""The ONNX Runtime backend: lowers an edgert `Graph` to an ORT session at load time.

Only numpy + onnxruntime are needed: the lowered model is serialised with the hand-written
encoder in `onnx_proto.py` (no `onnx` package on the device).

Lowering (docs/design.md "Quantized ops"; default domain at opset 21 so that DequantizeLinear
`block_size` is legal):

* float ops pass through 1:1; parameters that moved from attributes to inputs between opsets 11 and
  21 (Squeeze/Unsqueeze/Reduce* `axes`, Clip `min`/`max`, Split `split`, Pad `pads`/`value`,
  Slice `starts`/`ends`/`axes`, TopK `k`, the opset-10 Resize `(X, scales)` form, Upsample) are
  turned into constant inputs; legacy attributes ORT would reject are dropped.
* int8 activations: on x86 MLAS is ~6x faster for u8 activations x s8 weights than for s8 x s8
  (QLinearConv 128ch 56x56: 3.4 vs 20 ms; MatMulInteger 1024^3: 6.9 vs 43 ms, 2 threads), so there
  every int8 activation tensor is carried as uint8 `q + 128` with zero point `zp + 128` and the same
  scale — an exact re-encoding (saturation bounds shift with it).  On ARM (native s8 dot products)
  they stay int8.  Graph inputs / outputs / captured values keep the IR's int8.
* QuantizeLinear -> QuantizeLinear [+ Clip in the integer domain when `qmin`/`qmax` narrow it].
* DequantizeLinear -> DequantizeLinear (axis, block_size kept).
* QLinearConv -> QLinearConv [+ Clip]  (ORT requantizes in float: <= 1 LSB from the oracle).
* QLinearMatMul (per-column b_scale, edgert's 9th bias input) -> MatMulInteger -> Add(int32 bias)
  -> Cast(float) -> Mul(a_scale*b_scale/y_scale, float64-computed) -> QuantizeLinear(1, y_zp)
  [+ Clip].
* Dropout -> Identity; Constant -> initializer.

Initializers: tensors of at least `_EXTERNAL_MIN_BYTES` are declared in the model as external data
and handed to ORT as OrtValues wrapping the numpy buffers (`SessionOptions.add_external_initializers`),
so no serialised copy is made (256 MB weight: session ready in 0.55 s, +8 MB peak RSS, against
4.5 s and +520 MB with raw_data).  Small tensors (scales, zero points, shapes) are inlined as raw_data.
"""
from __future__ import annotations

import platform
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from edgert.backends import onnx_proto as P
from edgert.backends.base import Backend, BackendOptions
from edgert.errors import InputError, UnsupportedOp
from edgert.ir import Graph, Node
from edgert.ops._schema import coerce_attrs
from edgert.ops.base import known_ops, op_class

OPSET = 21
IR_VERSION = 10            # goes with opset 21 (onnx/docs/Versioning.md)
_EXTERNAL_MIN_BYTES = 4096
_NP_OF_ONNX = {v: k for k, v in P.ONNX_DTYPE.items()}
_DECLARED = frozenset(known_ops())     # ops with an edgert declaration (attribute kinds)

# Standard ops that lower 1:1 (semantics and attributes valid at opset 21).
_PASSTHROUGH = frozenset("""
Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization BitShift
Cast CastLike Ceil Celu Concat ConstantOfShape Conv ConvInteger ConvTranspose Cos Cosh CumSum
DepthToSpace Div Einsum Elu Equal Erf Exp Expand EyeLike Flatten Floor GRU Gather GatherElements
GatherND Gelu Gemm GlobalAveragePool GlobalLpPool GlobalMaxPool Greater GreaterOrEqual GridSample
GroupNormalization HardSigmoid HardSwish Hardmax Identity InstanceNormalization IsInf IsNaN LRN LSTM
LayerNormalization LeakyRelu Less LessOrEqual Log LogSoftmax LpNormalization MatMul MatMulInteger
Max MaxPool Mean Min Mish Mod Mul Neg NonZero Not OneHot Or PRelu Pow RNN Range Reciprocal Relu
Reshape Resize ReverseSequence RoiAlign Round ScatterElements ScatterND Selu Shape Shrink Sigmoid
Sign Sin Sinh Size Softmax Softplus Softsign SpaceToDepth Sqrt Sub Sum Tan Tanh ThresholdedRelu
Tile Transpose Trilu Where Xor
""".split())

# Ops through which a shifted (uint8 = int8 + 128) activation flows unchanged: pure data movement,
# or order-preserving selection.  Their data input is input 0 (all inputs for Concat).
_SHIFT_TRANSPARENT = frozenset("""
Reshape Transpose Flatten Squeeze Unsqueeze Identity Concat Slice Gather Split MaxPool GlobalMaxPool
DepthToSpace SpaceToDepth Expand Tile
""".split())

_REDUCE_OPS = frozenset("""ReduceMean ReduceMax ReduceMin ReduceSum ReduceProd ReduceL1 ReduceL2
ReduceLogSum ReduceLogSumExp ReduceSumSquare""".split())

# Attributes of old opsets that opset-21 schemas reject.
_LEGACY_ATTRS = frozenset({"consumed_inputs", "is_test", "spatial", "broadcast"})
_BOOL_OUT = frozenset(
    "Equal Less Greater LessOrEqual GreaterOrEqual Not And Or Xor IsNaN IsInf".split())
_INT64_OUT = frozenset("Shape Size ArgMax ArgMin NonZero".split())


def _default_act_u8() -> bool:
    return platform.machine().lower() in {"x86_64", "amd64", "i386", "i686", "x86"}


def _cpu_has_vnni(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """x86 VNNI (vpdpbusd) accumulates u8*s8 exactly in int32.  Without it MLAS's u8*s8 kernels use
    vpmaddubsw, whose int16 pair sums saturate once |w| > 64 (ORT docs, "quantization: when and
    why to use reduce_range"), so 8-bit weights are then fed as uint8 (w + 128, zp + 128) instead.
    Unknown (not Linux) = no VNNI, the safe answer."""
    try:
        with open(cpuinfo, encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_vnni", "avx_vnni"})
    except OSError:
        pass
    return False


@dataclass
class _ONode:
    op: str
    inputs: list[str]
    outputs: list[str]
    name: str
    attrs: dict[str, Any]
    domain: str = ""


@dataclass
class Lowered:
    """The result of lowering: serialised model + the big initializers ORT gets as OrtValues."""
    model: bytes
    external: dict[str, np.ndarray] = field(default_factory=dict)
    nodes: list[_ONode] = field(default_factory=list)      # kept for tests / debugging


class _Lowering:
    def __init__(self, graph: Graph, act_u8: bool, extra_outputs: tuple[str, ...] = (),
                 vnni: bool = False):
        self.g = graph
        self.act_u8 = act_u8
        self.vnni = vnni
        self.extra_outputs = extra_outputs
        self.nodes: list[_ONode] = []
        self.inits: dict[str, np.ndarray] = dict(graph.initializers)
        self.dtype: dict[str, str] = {v.name: v.dtype for v in graph.inputs}
        self.dtype.update({k: np.asarray(v).dtype.name for k, v in graph.initializers.items()})
        self.shifted: set[str] = set()     # values held as uint8 = IR int8 + 128
        self._alias: dict[tuple[str, str], str] = {}
        self._used = set(self.inits) | {v.name for v in graph.inputs} | {v.name for v in graph.outputs}
        for n in graph.nodes:
            self._used.update(n.inputs)
            self._used.update(n.outputs)
        self._counter = 0

    # -------------------------------------------------------------------------------- helpers
    def fresh(self, base: str) -> str:
        while True:
            self._counter += 1
            name = f"{base}__ort{self._counter}"
            if name not in self._used:
                self._used.add(name)
                return name

    def const(self, arr: np.ndarray, base: str) -> str:
        name = self.fresh(base)
        self.inits[name] = np.asarray(arr)
        self.dtype[name] = self.inits[name].dtype.name
        return name

    def emit(self, op: str, inputs: list[str], outputs: list[str], name: str = "",
             attrs: dict[str, Any] | None = None, domain: str = "") -> None:
        self.nodes.append(_ONode(op, list(inputs), list(outputs), name or self.fresh(op),
                                 dict(attrs or {}), domain))

    def _shift_chain(self, src: str, dst: str, to_u8: bool) -> None:
        """Exact int8 <-> uint8 re-encoding (+/-128) through int32."""
        base = dst
        t32, t32b = self.fresh(base + "_i32"), self.fresh(base + "_i32s")
        c128 = self.const(np.array(128, np.int32), "c128")
        self.emit("Cast", [src], [t32], attrs={"to": P.ONNX_DTYPE["int32"]})
        self.emit("Add" if to_u8 else "Sub", [t32, c128], [t32b])
        self.emit("Cast", [t32b], [dst], attrs={"to": P.ONNX_DTYPE["uint8" if to_u8 else "int8"]})

    def as_u8(self, name: str) -> str:
        """The shifted (uint8) form of an IR int8 value (zero points included)."""
        if name in self.shifted:
            return name
        key = (name, "u8")
        if key not in self._alias:
            if name in self.inits:
                v = (np.asarray(self.inits[name]).astype(np.int16) + 128).astype(np.uint8)
                self._alias[key] = self.const(v, name + "__u8")
            else:
                dst = self.fresh(name + "__u8")
                self._shift_chain(name, dst, to_u8=True)
                self._alias[key] = dst
        return self._alias[key]

    def as_ir(self, name: str) -> str:
        """The IR-typed (int8) form of a value that may be held shifted."""
        if not name or name not in self.shifted:
            return name
        key = (name, "s8")
        if key not in self._alias:
            dst = self.fresh(name + "__s8")
            self._shift_chain(name, dst, to_u8=False)
            self._alias[key] = dst
        return self._alias[key]

    def is_int8_act(self, name: str) -> bool:
        return bool(name) and self.dtype.get(name) == "int8"

    def clip_int(self, src: str, dst: str, dtype: str, qmin: int, qmax: int, off: int) -> None:
        """Saturate to [qmin, qmax] (IR values) in the integer domain; `off` = 128 when shifted."""
        info = np.iinfo(dtype)
        lo, hi = qmin + off, qmax + off
        if lo <= info.min and hi >= info.max:
            self.emit("Identity", [src], [dst])
            return
        clo = self.const(np.array(max(lo, info.min), dtype), "qmin")
        chi = self.const(np.array(min(hi, info.max), dtype), "qmax")
        self.emit("Clip", [src, clo, chi], [dst])

    def _narrow(self, node: Node, dtype: str) -> tuple[int, int, bool]:
        info = np.iinfo(dtype)
        qmin, qmax = int(node.attrs.get("qmin", info.min)), int(node.attrs.get("qmax", info.max))
        return qmin, qmax, (qmin > info.min or qmax < info.max)

    # ------------------------------------------------------------------------------- lowering
    def run(self) -> Lowered:
        for node in self.g.nodes:
            fn = _LOWER.get(node.op)
            if fn is not None:
                fn(self, node)
            elif node.op in _PASSTHROUGH or node.op in _SHIFT_TRANSPARENT:
                self.passthrough(node, dict(node.attrs))
            else:
                raise UnsupportedOp(f"ort backend: op {node.op!r} in node {node.name!r} "
                                    f"has no lowering")
        return self.finish()

    def passthrough(self, node: Node, attrs: dict[str, Any], inputs: list[str] | None = None,
                    op: str | None = None) -> None:
        op = op or node.op
        ins = list(node.inputs if inputs is None else inputs)
        attrs = {k: v for k, v in attrs.items() if k not in _LEGACY_ATTRS}
        if node.op == op and op in _DECLARED:
            attrs = coerce_attrs(op_class(op).ATTRS, attrs)
        if "broadcast" in node.attrs and "axis" in attrs:
            raise UnsupportedOp(f"ort backend: node {node.name!r} uses the opset < 7 broadcast "
                                f"form ({node.op} with axis); re-export the model at opset >= 7")
        keep_shift = False
        if self.act_u8 and node.op in _SHIFT_TRANSPARENT and ins and ins[0] in self.shifted:
            data_idx = range(len(ins)) if node.op == "Concat" else [0]
            if all(ins[i] in self.shifted or self.is_int8_act(ins[i]) for i in data_idx):
                keep_shift = True
                for i in data_idx:
                    ins[i] = self.as_u8(ins[i])
        if not keep_shift:
            ins = [self.as_ir(i) for i in ins]
        self.emit(op, ins, node.outputs, node.name, attrs)
        for i, o in enumerate(node.outputs):
            if not o:
                continue
            self.dtype[o] = self._out_dtype(node, attrs, i)
            if keep_shift:
                self.shifted.add(o)

    def _out_dtype(self, node: Node, attrs: dict[str, Any], idx: int) -> str | None:
        op = node.op
        if op in _BOOL_OUT:
            return "bool"
        if op in _INT64_OUT or (op == "TopK" and idx == 1):
            return "int64"
        if op in ("MatMulInteger", "ConvInteger"):
            return "int32"
        if op == "Cast":
            return _NP_OF_ONNX.get(int(attrs["to"]))
        if op == "ConstantOfShape":
            return "float32"
        if op == "Where":
            return self.dtype.get(node.inputs[1])
        return next((self.dtype.get(i) for i in node.inputs if i), None)

    def finish(self) -> Lowered:
        g = self.g
        outs = [(v.name, v.dtype, v.shape) for v in g.outputs]
        outs += [(n, self.dtype.get(n), None) for n in self.extra_outputs
                 if n not in {v.name for v in g.outputs}]
        for name, _, _ in outs:
            if name in self.shifted:
                # The graph must hand back int8: rename the uint8 value and convert it.
                held = self.fresh(name + "__u8")
                for n in self.nodes:
                    n.inputs = [held if i == name else i for i in n.inputs]
                    n.outputs = [held if o == name else o for o in n.outputs]
                s8 = self._alias.get((name, "s8"))
                self.shifted.discard(name)
                self.shifted.add(held)
                if s8:
                    self.emit("Identity", [s8], [name])
                else:
                    self._shift_chain(held, name, to_u8=False)

        b = P.ModelBuilder(name=g.name or "graph", opsets={"": OPSET}, ir_version=IR_VERSION,
                           producer_name="edgert")
        used = {i for n in self.nodes for i in n.inputs if i}
        external: dict[str, np.ndarray] = {}
        for name, arr in self.inits.items():
            if name not in used and name not in {o[0] for o in outs}:
                continue
            arr = np.asarray(arr)
            if arr.nbytes >= _EXTERNAL_MIN_BYTES:
                if not arr.flags.c_contiguous or arr.dtype.byteorder == ">":
                    arr = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("="))
                external[name] = arr
                b.initializers.append(P.external_tensor_proto(name, arr.dtype.name, arr.shape,
                                                              f"edgert-memory/{name}"))
            else:
                b.initializer(name, arr)
        for v in g.inputs:
            b.input(v.name, v.dtype, v.shape)
        for name, dtype, shape in outs:
            b.output(name, dtype, shape)                   # dtype None: name only
        for n in self.nodes:
            b.node(n.op, n.inputs, n.outputs, n.name, n.domain, **n.attrs)
        return Lowered(b.to_bytes(), external, self.nodes)


# ------------------------------------------------------------------------------ op lowerings
def _attr_to_inputs(lw: _Lowering, node: Node, spec: list[tuple[str, str]]
                    ) -> tuple[list[str], dict[str, Any]]:
    """Move attributes named in `spec` [(attr, dtype or 'like:x'), ...] to inputs 1.. in order."""
    attrs = dict(node.attrs)
    ins = list(node.inputs)
    for pos, (key, dt) in enumerate(spec, start=1):
        if key not in attrs:
            continue
        val = attrs.pop(key)
        if dt == "like":
            dt = lw.dtype.get(node.inputs[0]) or "float32"
        arr = np.array(val, dtype=dt)
        while len(ins) <= pos:
            ins.append("")
        if ins[pos]:
            continue            # the input form wins (docs/design.md)
        ins[pos] = lw.const(arr, f"{node.name}_{key}")
    while ins and not ins[-1]:
        ins.pop()
    return ins, attrs


def _axes_input(lw: _Lowering, node: Node) -> None:
    ins, attrs = _attr_to_inputs(lw, node, [("axes", "int64")])
    lw.passthrough(node, attrs, ins)


def _clip(lw: _Lowering, node: Node) -> None:
    ins, attrs = _attr_to_inputs(lw, node, [("min", "like"), ("max", "like")])
    lw.passthrough(node, attrs, ins)


def _split(lw: _Lowering, node: Node) -> None:
    ins, attrs = _attr_to_inputs(lw, node, [("split", "int64")])
    if len(ins) < 2 and "num_outputs" not in attrs:
        attrs["num_outputs"] = len(node.outputs)      # opset 18+: split or num_outputs is required
    lw.passthrough(node, attrs, ins)


def _pad(lw: _Lowering, node: Node) -> None:
    if "paddings" in node.attrs:            # opset-1 name of `pads`
        attrs = {("pads" if k == "paddings" else k): v for k, v in node.attrs.items()}
        node = Node(node.op, node.name, node.inputs, node.outputs, attrs)
    ins, attrs = _attr_to_inputs(lw, node, [("pads", "int64"), ("value", "like")])
    lw.passthrough(node, attrs, ins)


def _slice(lw: _Lowering, node: Node) -> None:
    ins, attrs = _attr_to_inputs(lw, node, [("starts", "int64"), ("ends", "int64"),
                                            ("axes", "int64")])
    lw.passthrough(node, attrs, ins)


def _topk(lw: _Lowering, node: Node) -> None:
    attrs = dict(node.attrs)
    ins = list(node.inputs)
    if "k" in attrs:
        k = attrs.pop("k")
        if len(ins) < 2 or not ins[1]:
            ins = [ins[0], lw.const(np.array([k], np.int64), f"{node.name}_k")]
    lw.passthrough(node, attrs, ins)


def _resize(lw: _Lowering, node: Node) -> None:
    ins = list(node.inputs)
    attrs = {k: v for k, v in node.attrs.items() if k != "opset"}   # edgert's marker, not ONNX's
    if len(ins) == 2:                   # opset 10: (X, scales) -> (X, roi, scales)
        ins = [ins[0], "", ins[1]]
    if int(node.attrs.get("opset", 11)) < 11:
        attrs["coordinate_transformation_mode"] = "asymmetric"       # opset-10 index mapping
    if attrs.get("coordinate_transformation_mode") == "align_corners" and \
            _fractional_scales(lw, ins):
        _resize_align_corners_scales(lw, node, attrs, ins)
        return
    lw.passthrough(node, attrs, ins)


def _fractional_scales(lw: _Lowering, ins: list[str]) -> bool:
    """Whether a Resize reads `scales` that may make scale * dim fractional (not when `sizes` is
    given, nor for constant whole-number scales)."""
    scales = ins[2] if len(ins) > 2 else ""
    sizes = ins[3] if len(ins) > 3 else ""
    if sizes and (sizes not in lw.inits or np.asarray(lw.inits[sizes]).size):
        return False
    if not scales:
        return False
    if scales in lw.inits:
        sc = np.asarray(lw.inits[scales], np.float64).reshape(-1)
        return bool(sc.size) and not np.all(sc == np.floor(sc))
    return True


def _resize_align_corners_scales(lw: _Lowering, node: Node, attrs: dict[str, Any],
                                 ins: list[str]) -> None:
    """align_corners with `scales`: ONNX (and the oracle, edgert/ops/resize.py) maps x_out to
    x_out * (in - 1) / (w - 1) with the fractional target length w = in * scale; ORT divides by
    the integer output length - 1.  The same mapping in ORT's terms: sizes = floor(w) and
    tf_crop_and_resize over roi [0, (sizes - 1) / (w - 1)], whose x_out * end * (in - 1) /
    (sizes - 1) is that mapping (and never leaves [0, in - 1], so nothing is extrapolated)."""
    x, scales, base = ins[0], ins[2], node.name
    f32 = P.ONNX_DTYPE["float32"]

    def emit(op, inputs, **kw):
        out = lw.fresh(f"{base}_ac_{op.lower()}")
        lw.emit(op, inputs, [out], attrs=kw or None)
        return out

    dims = emit("Shape", [x])
    if attrs.get("axes") is not None:
        dims = emit("Gather", [dims, lw.const(np.array(attrs["axes"], np.int64), base + "_axes")])
    width = emit("Mul", [emit("Cast", [dims], to=f32), scales])     # in * scale, as ORT sizes it
    out_f = emit("Floor", [width])
    one = lw.const(np.array(1.0, np.float32), base + "_one")
    tiny = lw.const(np.array(np.finfo(np.float32).tiny, np.float32), base + "_tiny")
    end = emit("Div", [emit("Sub", [out_f, one]), emit("Max", [emit("Sub", [width, one]), tiny])])
    roi = emit("Concat", [emit("Sub", [end, end]), end], axis=0)
    sizes = emit("Cast", [out_f], to=P.ONNX_DTYPE["int64"])
    lw.passthrough(node, {**attrs, "coordinate_transformation_mode": "tf_crop_and_resize"},
                   [x, roi, "", sizes])


def _reshape(lw: _Lowering, node: Node) -> None:
    ins, attrs = _attr_to_inputs(lw, node, [("shape", "int64")])   # opset-1 attribute form
    lw.passthrough(node, attrs, ins)


def _upsample(lw: _Lowering, node: Node) -> None:
    attrs = dict(node.attrs)
    ins = list(node.inputs)
    if "scales" in attrs:
        scales = lw.const(np.array(attrs.pop("scales"), np.float32), f"{node.name}_scales")
    else:
        scales = ins[1]
    attrs.setdefault("mode", "nearest")
    # Upsample's index mapping is x_in = x_out / scale, floored for nearest (onnx Upsample spec).
    attrs.update(coordinate_transformation_mode="asymmetric")
    if attrs["mode"] == "nearest":
        attrs["nearest_mode"] = "floor"
    lw.passthrough(node, attrs, [ins[0], "", scales], op="Resize")


def _dropout(lw: _Lowering, node: Node) -> None:
    if len(node.outputs) > 1 and node.outputs[1]:
        raise UnsupportedOp(f"ort backend: Dropout node {node.name!r} uses its mask output")
    lw.passthrough(Node("Identity", node.name, node.inputs[:1], node.outputs[:1]), {})


def _constant(lw: _Lowering, node: Node) -> None:
    from edgert.ops.constant import Constant      # one parser for the attribute forms
    try:
        value = Constant(node).value
    except Exception as e:                         # noqa: BLE001 - re-raised as a typed error
        raise UnsupportedOp(f"ort backend: Constant node {node.name!r}: {e}") from None
    lw.inits[node.outputs[0]] = value
    lw.dtype[node.outputs[0]] = value.dtype.name


def _quantize(lw: _Lowering, node: Node) -> None:
    x, s = node.inputs[0], node.inputs[1]
    zp = node.inputs[2] if len(node.inputs) > 2 else ""
    from edgert.ops.quantizelinear import OUTPUT_DTYPES
    dtype = lw.dtype.get(zp, "uint8") if zp else OUTPUT_DTYPES.get(
        int(node.attrs.get("output_dtype", 0)), "uint8")
    if not zp and dtype != "uint8":      # the zero point's type is the output type for ORT
        zp = lw.const(np.array(0, dtype), "zp0")
    out = node.outputs[0]
    attrs = {k: v for k, v in node.attrs.items() if k in ("axis", "block_size", "saturate")}
    qmin, qmax, narrow = lw._narrow(node, dtype)
    shift = lw.act_u8 and dtype == "int8"
    zp_o = lw.as_u8(zp) if shift else zp
    ort_dtype = "uint8" if shift else dtype
    tmp = lw.fresh(out + "_sat") if narrow else out
    lw.emit("QuantizeLinear", [lw.as_ir(x), s, zp_o], [tmp], node.name, attrs)
    if narrow:
        lw.clip_int(tmp, out, ort_dtype, qmin, qmax, 128 if shift else 0)
    lw.dtype[out] = dtype
    if shift:
        lw.shifted.add(out)


def _dequantize(lw: _Lowering, node: Node) -> None:
    x, s = node.inputs[0], node.inputs[1]
    zp = node.inputs[2] if len(node.inputs) > 2 else ""
    attrs = {k: v for k, v in node.attrs.items() if k in ("axis", "block_size")}
    if x in lw.shifted:
        zp = lw.as_u8(zp) if zp else lw.const(np.array(128, np.uint8), "zp_u8")
    lw.emit("DequantizeLinear", [x, s] + ([zp] if zp else []), node.outputs[:1], node.name, attrs)
    lw.dtype[node.outputs[0]] = lw.dtype.get(s, "float32")


def _act_in(lw: _Lowering, x: str, zp: str) -> tuple[str, str, bool]:
    """(x, zp) as the integer kernels get them; True when shifted to uint8."""
    if lw.act_u8 and (x in lw.shifted or lw.is_int8_act(x)):
        zp = lw.as_u8(zp) if zp else lw.const(np.array(128, np.uint8), "zp_u8")
        return lw.as_u8(x), zp, True
    x = lw.as_ir(x)
    if not zp:
        zp = lw.const(np.array(0, lw.dtype.get(x, "uint8")), "zp0")
    return x, zp, False


def _weight_in(lw: _Lowering, w: str, wz: str, shifted_act: bool) -> tuple[str, str]:
    """(w, w_zp) for a u8/s8 integer kernel; int8 weights go as uint8 when u8*s8 could saturate."""
    if not wz:    # ONNX requires w_zero_point for QLinearConv; edgert weights are symmetric
        wz = lw.const(np.array(0, lw.dtype.get(w, "int8")), "wzp0")
    if not shifted_act or lw.vnni or lw.dtype.get(w) != "int8":
        return w, wz
    if w in lw.inits and int(np.abs(np.asarray(lw.inits[w]).astype(np.int16)).max(initial=0)) <= 64:
        return w, wz          # |w| <= 64: 255*64*2 < 2^15, no vpmaddubsw saturation
    return lw.as_u8(w), lw.as_u8(wz)


def _act_out(lw: _Lowering, node: Node, y_zp: str, produce) -> None:
    """Emit the op via produce(out_name, y_zp_for_ort), then the qmin/qmax clip."""
    dtype = lw.dtype.get(y_zp, "uint8") if y_zp else "uint8"
    qmin, qmax, narrow = lw._narrow(node, dtype)
    shift = lw.act_u8 and dtype == "int8"
    if not y_zp:
        y_zp = lw.const(np.array(0, dtype), "zp0")
    zp_o = lw.as_u8(y_zp) if shift else y_zp
    out = node.outputs[0]
    tmp = lw.fresh(out + "_sat") if narrow else out
    produce(tmp, zp_o)
    if narrow:
        lw.clip_int(tmp, out, "uint8" if shift else dtype, qmin, qmax, 128 if shift else 0)
    lw.dtype[out] = dtype
    if shift:
        lw.shifted.add(out)


def _qlinearconv(lw: _Lowering, node: Node) -> None:
    ins = list(node.inputs) + [""] * (9 - len(node.inputs))
    x, xs, xz, w, ws, wz, ys, yz, bias = ins
    x, xz, shifted = _act_in(lw, x, xz)
    w, wz = _weight_in(lw, w, wz, shifted)
    attrs = {k: v for k, v in node.attrs.items() if k not in ("qmin", "qmax")}

    def produce(out: str, yz_o: str) -> None:
        lw.emit("QLinearConv", [x, xs, xz, w, ws, wz, ys, yz_o] + ([bias] if bias else []),
                [out], node.name, attrs)
    _act_out(lw, node, yz, produce)


def _scalar_or_vec(lw: _Lowering, name: str) -> np.ndarray | None:
    return np.asarray(lw.inits[name], np.float64) if name in lw.inits else None


def _qlinearmatmul(lw: _Lowering, node: Node) -> None:
    ins = list(node.inputs) + [""] * (9 - len(node.inputs))
    a, as_, az, b, bs, bz, ys, yz, bias = ins
    a, az, shifted = _act_in(lw, a, az)
    if shifted or bz:
        b, bz = _weight_in(lw, b, bz, shifted)
    pre = node.name or node.outputs[0]
    acc = lw.fresh(pre + "_acc")
    lw.emit("MatMulInteger", [a, b, az] + ([bz] if bz else []), [acc], pre + "_mmi")
    if bias:
        acc_b = lw.fresh(pre + "_accb")
        lw.emit("Add", [acc, bias], [acc_b])
        acc = acc_b
    accf = lw.fresh(pre + "_accf")
    lw.emit("Cast", [acc], [accf], attrs={"to": P.ONNX_DTYPE["float32"]})
    sa, sb, sy = (_scalar_or_vec(lw, n) for n in (as_, bs, ys))
    if sa is not None and sb is not None and sy is not None:
        # The real multiplier a_s*b_s/y_s in float64, as the oracle computes it.
        mult = lw.const((sa.reshape(()) * sb / sy.reshape(())).astype(np.float32), pre + "_M")
    else:
        ab = lw.fresh(pre + "_ab")
        mult = lw.fresh(pre + "_M")
        lw.emit("Mul", [as_, bs], [ab])
        lw.emit("Div", [ab, ys], [mult])
    yf = lw.fresh(pre + "_yf")
    lw.emit("Mul", [accf, mult], [yf])
    one = lw.const(np.array(1.0, np.float32), "one")

    def produce(out: str, yz_o: str) -> None:
        lw.emit("QuantizeLinear", [yf, one, yz_o], [out], node.name)
    _act_out(lw, node, yz, produce)


def _softmax_family(lw: _Lowering, node: Node) -> None:
    """Softmax/LogSoftmax/Hardmax from opset < 13 (attr `opset`): coerce to 2-D at `axis`."""
    attrs = {k: v for k, v in node.attrs.items() if k != "opset"}
    if int(node.attrs.get("opset", 13)) >= 13:
        lw.passthrough(node, attrs)
        return
    axis = int(attrs.get("axis", 1))
    x = lw.as_ir(node.inputs[0])
    pre = node.name or node.outputs[0]
    flat, soft, shape = lw.fresh(pre + "_2d"), lw.fresh(pre + "_sm"), lw.fresh(pre + "_shape")
    lw.emit("Flatten", [x], [flat], attrs={"axis": axis})
    lw.emit(node.op, [flat], [soft], node.name, {"axis": 1})
    lw.emit("Shape", [x], [shape])
    lw.emit("Reshape", [soft, shape], [node.outputs[0]])
    lw.dtype[node.outputs[0]] = lw.dtype.get(x)


def _cast(lw: _Lowering, node: Node) -> None:
    from edgert.ops.cast import ONNX_DTYPES, onnx_dtype      # `to` may be a name (opset 1)
    to = onnx_dtype(op_class("Cast")(node), node.attrs["to"])
    code = next(k for k, v in ONNX_DTYPES.items() if v == to)
    # round_mode (Cast-24) applies to float8e8m0 targets only (edgert refuses those); opset 21
    # has no such attribute
    attrs = {k: v for k, v in node.attrs.items() if k != "round_mode"}
    lw.passthrough(node, {**attrs, "to": code})


_LOWER = {
    "Cast": _cast,
    "Softmax": _softmax_family, "LogSoftmax": _softmax_family, "Hardmax": _softmax_family,
    "Squeeze": _axes_input, "Unsqueeze": _axes_input,
    **{op: _axes_input for op in _REDUCE_OPS},
    "Clip": _clip, "Split": _split, "Pad": _pad, "Slice": _slice, "TopK": _topk,
    "Resize": _resize, "Reshape": _reshape, "Upsample": _upsample, "Dropout": _dropout, "Constant": _constant,
    "QuantizeLinear": _quantize, "DequantizeLinear": _dequantize,
    "QLinearConv": _qlinearconv, "QLinearMatMul": _qlinearmatmul,
}


def lower(graph: Graph, act_u8: bool | None = None, extra_outputs: tuple[str, ...] = (),
          vnni: bool | None = None) -> Lowered:
    """Lower `graph` to a serialised ONNX model (+ OrtValue-bound initializers)."""
    return _Lowering(graph, _default_act_u8() if act_u8 is None else act_u8, extra_outputs,
                     _cpu_has_vnni() if vnni is None else vnni).run()


# ---------------------------------------------------------------------------------- executable
def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _onnxruntime():
    """onnxruntime, with its process-wide default logger at ERROR (3): its warnings would reach
    the terminal as multi-line colour dumps around edgert's own one-line errors."""
    import onnxruntime
    onnxruntime.set_default_logger_severity(3)
    return onnxruntime


class OrtExecutable:
    def __init__(self, graph: Graph, options: BackendOptions, act_u8: bool, vnni: bool,
                 matmulnbits_accuracy: int = 1):
        ort = _onnxruntime()
        self._ort = ort
        self.matmulnbits_accuracy = matmulnbits_accuracy
        self.graph = graph
        self.options = options
        self.act_u8 = act_u8
        self.vnni = vnni
        self._inputs = {v.name: v for v in graph.inputs}
        self._output_names = [v.name for v in graph.outputs]
        self._known = set(graph.initializers) | {o for n in graph.nodes for o in n.outputs if o} \
            | set(self._inputs)
        self._keep: list[Any] = []                  # numpy buffers + OrtValues ORT reads from
        self.session = self._make_session(())
        self._capture_sessions: dict[frozenset[str], Any] = {}

    def _make_session(self, extra: tuple[str, ...]):
        ort = self._ort
        low = lower(self.graph, self.act_u8, extra, self.vnni)
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if self.options.threads > 0:
            so.intra_op_num_threads = self.options.threads
        # FATAL only: ORT logs each failed run at ERROR too, and the error already reaches the
        # caller as the exception this backend turns into an InputError / UnsupportedOp.
        so.log_severity_level = 4
        # ORT fuses blocked DequantizeLinear -> MatMul into com.microsoft MatMulNBits itself; its
        # default accuracy level 4 quantizes the activations to int8 (~1% off the oracle).
        so.add_session_config_entry("session.qdq_matmulnbits_accuracy_level",
                                    str(self.matmulnbits_accuracy))
        if low.external:
            names = list(low.external)
            values = [ort.OrtValue.ortvalue_from_numpy(low.external[n]) for n in names]
            so.add_external_initializers(names, values)
            self._keep.append((low.external, values))
        try:
            return ort.InferenceSession(low.model, so, providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 - ORT raises its own untyped pybind errors
            raise UnsupportedOp(f"ort backend: onnxruntime rejected graph {self.graph.name!r}: "
                                f"{_first_line(e)}") from None

    def _check_feeds(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        missing = [n for n in self._inputs if n not in feeds]
        if missing:
            raise InputError(f"missing input(s) {missing}; the graph takes {list(self._inputs)}")
        extra = [n for n in feeds if n not in self._inputs]
        if extra:
            raise InputError(f"unknown input(s) {extra}; the graph takes {list(self._inputs)}")
        out = {}
        for name, vi in self._inputs.items():
            arr = np.asarray(feeds[name])
            if arr.dtype.name != vi.dtype:
                raise InputError(f"input {name!r} has dtype {arr.dtype}, expected {vi.dtype}")
            if vi.shape is not None:
                if arr.ndim != len(vi.shape):
                    raise InputError(f"input {name!r} has shape {arr.shape}, expected rank "
                                     f"{len(vi.shape)} ({vi.shape})")
                for got, want in zip(arr.shape, vi.shape):
                    if isinstance(want, int) and got != want:
                        raise InputError(f"input {name!r} has shape {arr.shape}, expected {vi.shape}")
            out[name] = arr
        return out

    def run(self, feeds: dict[str, np.ndarray], capture: set[str] | None = None
            ) -> dict[str, np.ndarray]:
        """Run the graph; names in `capture` (intermediate values) are returned besides the outputs.

        A capture set gets its own session (built on first use, then cached)."""
        feeds = self._check_feeds(feeds)
        sess = self.session
        names = list(self._output_names)
        if capture:
            unknown = sorted(set(capture) - self._known)
            if unknown:
                raise InputError(f"cannot capture {unknown}: no such value in the graph")
            key = frozenset(capture)
            if key not in self._capture_sessions:
                self._capture_sessions[key] = self._make_session(tuple(sorted(key)))
            sess = self._capture_sessions[key]
            names += [n for n in sorted(key) if n not in names]
        try:
            values = sess.run(names, feeds)
        except Exception as e:  # noqa: BLE001 - ORT's errors carry no type we can rely on
            raise InputError(f"ort backend: running graph {self.graph.name!r} failed: "
                             f"{_first_line(e)}") from None
        return dict(zip(names, values))


class OrtBackend(Backend):
    name: ClassVar[str] = "ort"

    def __init__(self, activations: str = "auto", vnni: bool | None = None,
                 matmulnbits_accuracy: int = 1):
        """activations: "auto" (uint8 on x86, int8 elsewhere), "uint8" or "int8" — how int8
        activations are carried inside ORT (results are the same; speed differs).
        vnni: whether u8*s8 products are exact on this CPU (None = read /proc/cpuinfo).
        matmulnbits_accuracy: compute type of the MatMulNBits ORT fuses weight-only layers into
        (1 = fp32, matches the oracle; 4 = int8 activations, faster, ~1% error)."""
        self.matmulnbits_accuracy = int(matmulnbits_accuracy)
        if activations not in ("auto", "uint8", "int8"):
            raise ValueError(f"activations must be auto, uint8 or int8, not {activations!r}")
        self.act_u8 = _default_act_u8() if activations == "auto" else activations == "uint8"
        self.vnni = _cpu_has_vnni() if vnni is None else vnni

    @classmethod
    def available(cls) -> bool:
        try:
            _onnxruntime()
        except ImportError:
            return False
        return True

    def prepare(self, graph: Graph, options: BackendOptions) -> OrtExecutable:
        return OrtExecutable(graph, options, self.act_u8, self.vnni,
                             self.matmulnbits_accuracy)


BACKEND = OrtBackend

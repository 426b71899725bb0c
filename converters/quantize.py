"""The quantization rewrite: float IR -> quantized IR (docs/design.md, "How the converter lays out a
quantized layer").

Two steps, so calibration knows what to capture:
* `plan_quantization(graph, options) -> QuantPlan` decides per layer (Conv / ConvTranspose / MatMul /
  Gemm with a constant weight) whether it becomes a QLinear op, a weight-only layer
  (DequantizeLinear + the float op) or stays float, and which tensors need activation ranges;
* `quantize_graph(graph, plan, ranges, options) -> Graph` emits the new graph, `Graph.layers` and
  `Graph.encodings`.
`layer_sqnr(qgraph, plan, float_batches)` then measures each layer alone against the float layer.
"""
from __future__ import annotations

import copy
import fnmatch
from dataclasses import dataclass, field, replace

import numpy as np

from converters.methods import (QuantizedWeight, WeightSpec, get_method, magnitude_mask, nm_mask,
                                quantize_weight)
from converters.observers import qparams_from_range
from converters.options import QuantizeOptions
from edgert.errors import ConversionError, EdgertError
from edgert.ir import Graph, LayerInfo, Node, ValueInfo, WeightEncoding

QLINEAR = "qlinear"          # QuantizeLinear -> QLinearConv / QLinearMatMul -> DequantizeLinear
WEIGHT_ONLY = "weight_only"  # DequantizeLinear(W) -> the float op
FLOAT = "float"              # kept as it was (keep_float, or not quantizable)

_SQNR_CAP_DB = 120.0
_FP16_TINY = float(np.finfo(np.float16).tiny)         # a bit-exact layer would be +inf dB; keep the manifest JSON finite


def abits_range(abits: int) -> tuple[int, int]:
    """int8 storage, range narrowed for abits < 8 (docs/design.md, "Quantized ops")."""
    return -(1 << (abits - 1)), (1 << (abits - 1)) - 1


@dataclass
class LayerPlan:
    name: str                     # node name, or its first output when the node has none
    node: Node                    # the float node
    kind: str                     # QLINEAR | WEIGHT_ONLY | FLOAT
    weight: str                   # initializer name of the weight
    input: str                    # the dynamic float input T
    output: str                   # the float tensor the layer ends in (after a folded activation)
    wbits: int | None = None
    granularity: str | None = None
    group_size: int | None = None
    axis: int = 0                 # scale axis (channel) / grouped axis (group)
    fold: Node | None = None      # Relu / Clip folded into the QLinear op
    fold_max: float | None = None
    weight_kn: np.ndarray | None = field(default=None, repr=False)  # MatMul-form weight for Gemm
    bias: np.ndarray | None = field(default=None, repr=False)       # float bias (N,) or None
    note: str = ""
    sparsity: _Sparsity | None = field(default=None, repr=False)      # set when quantized
    qnodes: list[Node] = field(default_factory=list, repr=False)     # filled by quantize_graph
    rounded: QuantizedWeight | None = field(default=None, repr=False)  # set by a reconstruction pass

    @property
    def op(self) -> str:
        return self.node.op


@dataclass
class QuantPlan:
    layers: list[LayerPlan]

    def activation_names(self) -> set[str]:
        """Tensors whose ranges calibration must observe."""
        names: set[str] = set()
        for lp in self.layers:
            if lp.kind == QLINEAR:
                names.update((lp.input, lp.output))
        return names

    def sqnr_names(self, graph: Graph) -> set[str]:
        """Float tensors to capture for `layer_sqnr`: each quantized layer's dynamic inputs + output."""
        names: set[str] = set()
        for lp in self.layers:
            if lp.kind != FLOAT:
                names.update(i for i in lp.node.inputs if i and i not in graph.initializers)
                names.add(lp.output)
        return names


# --------------------------------------------------------------------------------------- planning

def _match(patterns, node: Node) -> str | None:
    """The first pattern (exact names before globs) matching the node name or one of its outputs."""
    keys = [node.name, *node.outputs]
    for p in patterns:
        if p in keys:
            return p
    for p in patterns:
        if any(fnmatch.fnmatchcase(k, p) for k in keys if k):
            return p
    return None


def _const(graph: Graph, name: str) -> np.ndarray | None:
    return graph.initializers.get(name) if name else None


def _fold_candidate(graph: Graph, out: str, consumers, graph_outputs) -> tuple[Node, float | None] | None:
    """A Relu / Clip(0, c) that is the only consumer of `out` (and `out` is no graph output)."""
    users = consumers.get(out, [])
    if out in graph_outputs or len(users) != 1:
        return None
    act = users[0]
    if act.op == "Relu":
        return act, None
    if act.op == "Clip":
        lo = act.attrs.get("min")
        hi = act.attrs.get("max")
        if len(act.inputs) > 1 and act.inputs[1]:
            v = _const(graph, act.inputs[1])
            lo = None if v is None else float(v)
            if v is None:
                return None
        if len(act.inputs) > 2 and act.inputs[2]:
            v = _const(graph, act.inputs[2])
            if v is None:
                return None
            hi = float(v)
        if lo is not None and float(lo) == 0.0 and (hi is None or float(hi) > 0):
            return act, (None if hi is None else float(hi))
    return None


def plan_quantization(graph: Graph, options: QuantizeOptions) -> QuantPlan:
    options.validate()
    consumers = graph.consumers()
    graph_outputs = {o.name for o in graph.outputs}
    weight_users: dict[str, int] = {}
    for n in graph.nodes:
        if n.op in ("Conv", "ConvTranspose", "MatMul", "Gemm") and len(n.inputs) > 1:
            weight_users[n.inputs[1]] = weight_users.get(n.inputs[1], 0) + 1
    layers: list[LayerPlan] = []
    for node in graph.nodes:
        if node.op not in ("Conv", "ConvTranspose", "MatMul", "Gemm") or len(node.inputs) < 2:
            continue
        x, wname = node.inputs[0], node.inputs[1]
        w = _const(graph, wname)
        if w is None or x in graph.initializers or not np.issubdtype(w.dtype, np.floating):
            continue      # two dynamic inputs (attention-style MatMul) stay float, unreported
        lp = LayerPlan(name=node.name or node.outputs[0], node=node, kind=FLOAT, weight=wname,
                       input=x, output=node.outputs[0])
        layers.append(lp)
        if _match(options.keep_float, node) is not None:
            lp.note = "keep_float"
            continue
        if weight_users[wname] > 1:
            lp.note = "shared weight"
            continue
        key = _match(options.layer_bits, node)
        if key is not None:
            lp.wbits = int(options.layer_bits[key])
        elif _keep_8bit(node, w, options):
            lp.wbits = 8
            lp.note = "mixed precision: depthwise/small layer kept at 8 bits"
        else:
            lp.wbits = options.wbits
        _plan_layer(graph, lp, options)
        if lp.kind == QLINEAR and options.fold_activations:
            fold = _fold_candidate(graph, lp.output, consumers, graph_outputs)
            if fold is not None:
                lp.fold, lp.fold_max = fold
                lp.output = lp.fold.outputs[0]
    return QuantPlan(layers)


def _keep_8bit(node: Node, w: np.ndarray, options: QuantizeOptions) -> bool:
    """The "auto" mixed-precision rule (see QuantizeOptions.mixed_precision)."""
    if options.mixed_precision != "auto" or options.wbits >= 8:
        return False
    if w.size <= options.small_layer_params:
        return True
    return node.op == "Conv" and int(node.attrs.get("group", 1)) > 1 and w.shape[1] == 1


def _plan_layer(graph: Graph, lp: LayerPlan, options: QuantizeOptions) -> None:
    """Fill kind / granularity / axis (and the folded MatMul-form weight for Gemm)."""
    node, w = lp.node, graph.initializers[lp.weight]
    # out-channel axis (per-channel scales) and in-channel axis (groups) of the stored weight
    if node.op == "Conv":
        out_axis, in_axis = 0, 1
    elif node.op == "ConvTranspose":     # W [I, O/g, kh, kw]
        out_axis, in_axis = (1 if int(node.attrs.get("group", 1)) == 1 else None), 0
    elif node.op == "MatMul":
        if w.ndim != 2:
            lp.note = f"{w.ndim}-D MatMul weight"
            lp.wbits = None
            return
        out_axis, in_axis = 1, 0
    else:  # Gemm
        trans_b = int(node.attrs.get("transB", 0))
        out_axis, in_axis = (0, 1) if trans_b else (1, 0)
    gran = options.granularity
    if gran == "channel" and out_axis is None:
        gran, lp.note = "tensor", "grouped ConvTranspose: per-tensor scale"
    lp.group_size = None
    if gran == "group":
        d = w.shape[in_axis]
        g = min(options.group_size, d)
        if d % g or d == 1:
            gran = "channel" if out_axis is not None else "tensor"
            lp.note = f"group size {options.group_size} does not divide {d}: per-{gran} scales"
        else:
            lp.group_size = g
    lp.granularity = gran
    lp.axis = in_axis if gran == "group" else (out_axis or 0)
    weight_only = (gran == "group" or options.abits is None or node.op == "ConvTranspose")
    if node.op == "Conv":
        b = node.inputs[2] if len(node.inputs) > 2 else ""
        if b and _const(graph, b) is None:
            weight_only = True
            lp.note = lp.note or "dynamic bias"
        elif b:
            lp.bias = graph.initializers[b].astype(np.float32).reshape(-1)
    if node.op == "Gemm" and not weight_only:
        if int(node.attrs.get("transA", 0)):
            weight_only, lp.note = True, "Gemm transA"
        else:
            alpha = float(node.attrs.get("alpha", 1.0))
            beta = float(node.attrs.get("beta", 1.0))
            wkn = w.T if int(node.attrs.get("transB", 0)) else w
            n_out = wkn.shape[1]
            c_name = node.inputs[2] if len(node.inputs) > 2 else ""
            c = _const(graph, c_name)
            if c_name and (c is None or c.size not in (1, n_out)):
                weight_only, lp.note = True, "Gemm C is not a per-column constant"
            else:
                lp.weight_kn = np.ascontiguousarray(alpha * wkn, dtype=np.float32)
                if c is not None:
                    lp.bias = np.broadcast_to(beta * c.astype(np.float32).reshape(-1),
                                              (n_out,)).astype(np.float32)
                lp.axis = 1 if gran == "channel" else lp.axis
    if node.op == "MatMul" and not weight_only:
        lp.weight_kn = w.astype(np.float32)
    lp.kind = WEIGHT_ONLY if weight_only else QLINEAR


# --------------------------------------------------------------------------------------- rewrite

class _Emitter:
    def __init__(self, graph: Graph, options: QuantizeOptions):
        self.g = graph
        self.opt = options
        self.nodes: list[Node] = []
        self.inits: dict[str, np.ndarray] = dict(graph.initializers)
        self.encodings: dict[str, WeightEncoding] = dict(graph.encodings)
        self.quantized: dict[str, str] = {}       # float tensor T -> name of its int8 form

    def init(self, name: str, value: np.ndarray) -> str:
        if name in self.inits and name not in self.g.initializers:
            raise ConversionError(f"name clash while quantizing: {name!r} emitted twice")
        self.inits[name] = value
        return name

    def act_qparams(self, tensor: str, ranges) -> tuple[str, str]:
        s, z = f"{tensor}__scale", f"{tensor}__zp"
        if s not in self.inits:
            if tensor not in ranges:
                raise ConversionError(f"no calibrated range for tensor {tensor!r}")
            qmin, qmax = abits_range(self.opt.abits)
            scale, zp = qparams_from_range(*ranges[tensor], qmin, qmax)
            self.init(s, np.asarray(scale, np.float32))
            self.init(z, np.asarray(zp, np.int8))
        return s, z

    def range_attrs(self) -> dict[str, int]:
        if self.opt.abits is None or self.opt.abits == 8:
            return {}
        qmin, qmax = abits_range(self.opt.abits)
        return {"qmin": qmin, "qmax": qmax}


def _weight_spec(lp: LayerPlan, options: QuantizeOptions) -> WeightSpec:
    return WeightSpec(bits=lp.wbits, granularity=lp.granularity, axis=lp.axis,
                      group_size=lp.group_size or 0, scale_dtype=options.scale_dtype,
                      midrise_2bit=options.midrise_2bit)


@dataclass
class _Sparsity:
    mask: np.ndarray | None = None          # True = kept
    kind: str | None = None                 # WeightEncoding.sparsity
    n: int = 0
    m: int = 0


def _sparsity(w: np.ndarray, lp: LayerPlan, options: QuantizeOptions) -> _Sparsity:
    """Magnitude pruning before quantization.  The package's N:M codec groups runs of m along the
    last axis, which must be a multiple of m; other layers (e.g. Conv kw = 3 or 1) get the same
    fraction of unstructured (bitmap) sparsity instead."""
    if options.nm is not None:
        n, m = options.nm
        if w.ndim and w.shape[-1] % m == 0:
            return _Sparsity(nm_mask(w, n, m), "nm", n, m)
        lp.note = (lp.note + "; " if lp.note else "") + f"last axis not a multiple of {m}: bitmap"
        return _Sparsity(magnitude_mask(w, 1.0 - n / m), "bitmap")
    if options.sparsity > 0:
        return _Sparsity(magnitude_mask(w, options.sparsity), "bitmap")
    return _Sparsity()


def _store_weight(em: _Emitter, lp: LayerPlan, qw: QuantizedWeight) -> tuple[str, str]:
    qname = em.init(f"{lp.weight}__q", qw.q)
    sname = em.init(f"{lp.weight}__scale", qw.scale)
    sp = lp.sparsity or _Sparsity()
    em.encodings[qname] = WeightEncoding(bits=lp.wbits, scheme=qw.scheme.kind, sparsity=sp.kind,
                                         n=sp.n, m=sp.m)
    if qw.spec.scale_dtype == "fp16":
        em.encodings[sname] = WeightEncoding(bits=16, scheme="fp16")
    return qname, sname


def _quantize_layer_weight(w: np.ndarray, lp: LayerPlan, options: QuantizeOptions, method
                           ) -> QuantizedWeight:
    """Quantize with fp16-rounded scales; a layer whose scales fall below the fp16 normal range
    (tiny weights, e.g. after BN folding) and would lose accuracy keeps float32 scales instead."""
    spec = _weight_spec(lp, options)
    sp = _sparsity(w, lp, options)
    mask = sp.mask
    lp.sparsity = sp
    if lp.rounded is not None and lp.rounded.spec == spec and lp.rounded.q.shape == np.shape(w):
        return lp.rounded                 # converters/recon chose the integers (same scales, same grid)
    qw = quantize_weight(w, spec, method, mask)
    if spec.scale_dtype != "fp16" or not np.any(qw.scale <= _FP16_TINY):
        return qw
    spec32 = replace(spec, scale_dtype="fp32")
    qw32 = quantize_weight(w, spec32, method, mask)
    err16 = float(np.sum((qw.dequantize() - w) ** 2))
    err32 = float(np.sum((qw32.dequantize() - w) ** 2))
    if err16 > 1.05 * err32 + 1e-30:
        lp.note = (lp.note + "; " if lp.note else "") + "fp32 scales (below fp16 range)"
        return qw32
    return qw


def _emit_qlinear(em: _Emitter, lp: LayerPlan, ranges, options: QuantizeOptions, method
                  ) -> QuantizedWeight:
    node = lp.node
    w = lp.weight_kn if lp.weight_kn is not None else em.g.initializers[lp.weight]
    qw = _quantize_layer_weight(w, lp, options, method)
    qname, sname = _store_weight(em, lp, qw)
    t = lp.input
    t_scale, t_zp = em.act_qparams(t, ranges)
    u = lp.output
    u_scale, u_zp = em.act_qparams(u, ranges)
    rattrs = em.range_attrs()
    qnode = Node("QuantizeLinear", f"{t}__quantize", [t, t_scale, t_zp], [f"{t}__q"], dict(rattrs))
    lp.qnodes = [qnode]
    if t not in em.quantized:           # one QuantizeLinear per tensor, shared by its consumers
        em.nodes.append(qnode)
        em.quantized[t] = f"{t}__q"
    tq = em.quantized[t]
    bias_name = ""
    if lp.bias is not None:
        sx = np.float64(em.inits[t_scale])
        sw = qw.scale.astype(np.float64).reshape(-1)
        b32 = np.rint(lp.bias.astype(np.float64) / (sx * sw))
        b32 = np.clip(b32, np.iinfo(np.int32).min, np.iinfo(np.int32).max).astype(np.int32)
        bias_name = em.init(f"{lp.name}__bias", b32)
    attrs = dict(rattrs)
    if lp.fold is not None:
        qmin, qmax = abits_range(options.abits)
        zp = int(em.inits[u_zp])
        attrs["qmin"] = zp          # real 0: the folded ReLU
        if lp.fold_max is not None:
            top = zp + int(np.round(lp.fold_max / float(em.inits[u_scale])))
            if top < qmax:
                attrs["qmax"] = top
        attrs.setdefault("qmax", qmax)
    if node.op == "Conv":
        conv_attrs = {k: v for k, v in node.attrs.items()}
        inputs = [tq, t_scale, t_zp, qname, sname, "", u_scale, u_zp]
        if bias_name:
            inputs.append(bias_name)
        core = Node("QLinearConv", node.name or lp.name, inputs, [f"{u}__q"], {**conv_attrs, **attrs})
    else:
        zp_name = em.init(f"{lp.weight}__zp", np.zeros(qw.scale.shape, np.int8))
        inputs = [tq, t_scale, t_zp, qname, sname, zp_name, u_scale, u_zp]
        if bias_name:
            inputs.append(bias_name)
        core = Node("QLinearMatMul", node.name or lp.name, inputs, [f"{u}__q"], attrs)
    dq = Node("DequantizeLinear", f"{u}__dequantize", [f"{u}__q", u_scale, u_zp], [u])
    lp.qnodes += [core, dq]
    em.nodes += [core, dq]
    em.quantized[u] = f"{u}__q"
    return qw


def _emit_weight_only(em: _Emitter, lp: LayerPlan, options: QuantizeOptions, method
                      ) -> QuantizedWeight:
    w = em.g.initializers[lp.weight]
    qw = _quantize_layer_weight(w, lp, options, method)
    qname, sname = _store_weight(em, lp, qw)
    attrs = {}
    if lp.granularity in ("channel", "group"):
        attrs["axis"] = lp.axis
    if lp.granularity == "group":
        attrs["block_size"] = lp.group_size
    dq = Node("DequantizeLinear", f"{lp.weight}__dequantize", [qname, sname, ""], [lp.weight], attrs)
    node = copy.deepcopy(lp.node)
    lp.qnodes = [dq, node]
    em.nodes += [dq, node]
    del em.inits[lp.weight]
    return qw


def quantize_graph(graph: Graph, plan: QuantPlan, ranges: dict[str, tuple[float, float]],
                   options: QuantizeOptions) -> Graph:
    """The quantized graph (the float graph is not modified)."""
    options.validate()
    method = get_method(options.method)
    em = _Emitter(graph, options)
    by_node = {id(lp.node): lp for lp in plan.layers if lp.kind != FLOAT}
    folded = {id(lp.fold) for lp in plan.layers if lp.fold is not None and lp.kind == QLINEAR}
    infos: list[LayerInfo] = []
    qweights: dict[str, QuantizedWeight] = {}
    for node in graph.nodes:
        if id(node) in folded:
            continue
        lp = by_node.get(id(node))
        if lp is None:
            em.nodes.append(copy.deepcopy(node))
            continue
        if lp.kind == QLINEAR:
            qweights[lp.name] = _emit_qlinear(em, lp, ranges, options, method)
        else:
            qweights[lp.name] = _emit_weight_only(em, lp, options, method)
    for lp in plan.layers:
        infos.append(_layer_info(graph, lp, qweights.get(lp.name), options))
    out = Graph(name=graph.name, inputs=copy.deepcopy(graph.inputs),
                outputs=copy.deepcopy(graph.outputs), nodes=em.nodes, initializers=em.inits,
                encodings=em.encodings, preprocess=graph.preprocess,
                metadata=dict(graph.metadata), layers=infos)
    eliminate_dq_q(out)
    _drop_dead(out)
    return out


def _layer_info(graph: Graph, lp: LayerPlan, qw: QuantizedWeight | None,
                options: QuantizeOptions) -> LayerInfo:
    w = graph.initializers[lp.weight]
    params = int(w.size)
    if lp.node.op in ("Conv", "ConvTranspose", "Gemm") and len(lp.node.inputs) > 2:
        b = _const(graph, lp.node.inputs[2])
        params += int(b.size) if b is not None else 0
    extra = {"kind": lp.kind}
    if lp.note:
        extra["note"] = lp.note
    if lp.fold is not None and lp.kind == QLINEAR:
        extra["fold"] = lp.fold.op
    if qw is None:
        return LayerInfo(name=lp.name, op=lp.op, weight=lp.weight, params=params,
                         sparsity=float(np.mean(w == 0)), extra=extra)
    extra["scheme"] = qw.scheme.kind
    return LayerInfo(name=lp.name, op=lp.op, weight=lp.weight, wbits=lp.wbits,
                     abits=options.abits if lp.kind == QLINEAR else None,
                     granularity=lp.granularity, group_size=lp.group_size,
                     sparsity=float(np.mean(qw.q == 0)), params=params, extra=extra)


def _same_value(graph: Graph, a: str, b: str) -> bool:
    if a == b:
        return True
    va, vb = graph.initializers.get(a), graph.initializers.get(b)
    return (va is not None and vb is not None and va.dtype == vb.dtype and va.shape == vb.shape
            and bool(np.array_equal(va, vb)))


def eliminate_dq_q(graph: Graph) -> int:
    """Remove QuantizeLinear nodes fed by a DequantizeLinear with equal scale / zero point (the
    int8 tensor is used directly); the DequantizeLinear goes too once nothing else reads it.
    Returns the number of QuantizeLinear nodes removed."""
    producers = graph.producers()
    graph_outputs = {o.name for o in graph.outputs}
    rename: dict[str, str] = {}
    drop: set[int] = set()
    for q in graph.nodes:
        if q.op != "QuantizeLinear" or len(q.inputs) < 3 or q.outputs[0] in graph_outputs:
            continue
        dq = producers.get(q.inputs[0])
        if dq is None or dq.op != "DequantizeLinear" or len(dq.inputs) < 3:
            continue
        if "axis" in q.attrs or "axis" in dq.attrs or "block_size" in dq.attrs:
            continue            # weight-style per-axis params: not an activation pair
        if not (_same_value(graph, q.inputs[1], dq.inputs[1])
                and _same_value(graph, q.inputs[2], dq.inputs[2])):
            continue
        # the producer's int8 values already lie in its own [qmin, qmax]; this Q must not be
        # narrower (it would clamp), which holds when it has no or the same narrowing attrs
        src = producers.get(dq.inputs[0])
        q_lo, q_hi = q.attrs.get("qmin", -128), q.attrs.get("qmax", 127)
        s_lo = src.attrs.get("qmin", -128) if src is not None else -128
        s_hi = src.attrs.get("qmax", 127) if src is not None else 127
        if q_lo > s_lo or q_hi < s_hi:
            continue
        rename[q.outputs[0]] = dq.inputs[0]
        drop.add(id(q))
    if not drop:
        return 0
    nodes = []
    for n in graph.nodes:
        if id(n) in drop:
            continue
        n.inputs = [rename.get(i, i) for i in n.inputs]
        nodes.append(n)
    graph.nodes = nodes
    return len(drop)


def _drop_dead(graph: Graph) -> None:
    """Drop DequantizeLinear / QuantizeLinear nodes nobody reads and unreferenced initializers."""
    outputs = {o.name for o in graph.outputs}
    changed = True
    while changed:
        used = {i for n in graph.nodes for i in n.inputs if i} | outputs
        keep = [n for n in graph.nodes
                if n.op not in ("DequantizeLinear", "QuantizeLinear")
                or any(o in used for o in n.outputs)]
        changed = len(keep) != len(graph.nodes)
        graph.nodes = keep
    used = {i for n in graph.nodes for i in n.inputs if i} | outputs
    graph.initializers = {k: v for k, v in graph.initializers.items() if k in used}
    graph.encodings = {k: v for k, v in graph.encodings.items() if k in graph.initializers}


# --------------------------------------------------------------------------------------- SQNR

def layer_subgraph(qgraph: Graph, lp: LayerPlan) -> Graph:
    """The quantized layer alone: float input(s) -> [QuantizeLinear] -> QLinear* / DQ(W)+op -> float."""
    produced = {o for n in lp.qnodes for o in n.outputs}
    need = [i for n in lp.qnodes for i in n.inputs if i and i not in produced]
    inits = {i: qgraph.initializers[i] for i in need if i in qgraph.initializers}
    feeds = list(dict.fromkeys(i for i in need if i not in inits))
    return Graph(name=f"{lp.name}__alone", inputs=[ValueInfo(f, "float32", []) for f in feeds],
                 outputs=[ValueInfo(lp.output, "float32", [])], nodes=copy.deepcopy(lp.qnodes),
                 initializers=inits)


def sqnr_db(signal_power: float, noise_power: float) -> float:
    if noise_power <= 0:
        return _SQNR_CAP_DB
    if signal_power <= 0:
        return -_SQNR_CAP_DB
    return float(min(_SQNR_CAP_DB, 10.0 * np.log10(signal_power / noise_power)))


def layer_sqnr(qgraph: Graph, plan: QuantPlan, float_batches: list[dict[str, np.ndarray]]
               ) -> dict[str, float]:
    """SQNR (dB) of each quantized layer run alone (numpy oracle ops) on the captured float inputs,
    against the captured float output; the result is also written into `qgraph.layers`."""
    from edgert.backends.numpy_ref import NumpyExecutable
    result: dict[str, float] = {}
    for lp in plan.layers:
        if lp.kind == FLOAT or not lp.qnodes:
            continue
        sub = layer_subgraph(qgraph, lp)
        try:
            exe = NumpyExecutable(sub)
        except EdgertError:
            continue
        sig = noise = 0.0
        for cap in float_batches:
            if lp.output not in cap or any(vi.name not in cap for vi in sub.inputs):
                continue
            ref = np.asarray(cap[lp.output], np.float64)
            got = exe.run({vi.name: cap[vi.name] for vi in sub.inputs})[lp.output]
            sig += float(np.sum(ref * ref))
            noise += float(np.sum((ref - got) ** 2))
        if sig or noise:
            result[lp.name] = sqnr_db(sig, noise)
    for info in qgraph.layers:
        if info.name in result:
            info.sqnr_db = round(result[info.name], 2)
    return result

"""PTQ4SAM's bimodal integration (BIG): sign flips of key channels, mirrored in the query projection
(Lv et al., "PTQ4SAM: Post-Training Quantization for Segment Anything", CVPR 2024).

In SAM's attention the post-Key-Linear activation K = x Wk + bk is bimodal: each channel sits in one
narrow peak, some at +m and some at -m, so the per-tensor range spans both peaks.  The score only
sees products q_c k_c = (-q_c)(-k_c): negating column c of Wk (and bk_c) together with the query
column it is contracted with (Wq, bq) leaves every attention score unchanged, bit for bit, and
folds the two peaks into one, which roughly halves K's range.

Where it applies: a MatMul projection with a constant 2-D weight (+ an Add of a constant bias)
whose output reaches, through data movement only (Reshape, Transpose, Gather, Split, Slice,
Squeeze, Unsqueeze, Flatten, Identity and Mul / Div by a scalar constant, all of which commute with
a sign), the right-hand side of a score MatMul(Q, K^T) whose left-hand side comes the same way from
a query projection -- separate projections or one fused QKV weight.  Which query channel meets
which key channel is not read off the shapes: the chains are run on a tensor holding each
channel's index (shapes from one calibration batch), and the site is taken only where every
contraction index of the score pairs one query channel with one key channel, the same for all
rows, and no other reader of the projections sees a flipped channel (a fused weight's V slice, a
Shape).  The key channels flipped are those whose calibration mean is negative and at least
MIN_SEPARATION standard deviations from zero (or those with a positive one, whichever quantizes
better); the flip is kept where it lowers the error that quantizing Q and K per tensor at `abits`
adds to the score terms q_c k_c (`score_error`), measured on the tensors the converter quantizes
-- the projections' MatMul outputs, before the bias Add.

Left out: the paper detects bimodal layers from the activation's distribution and applies BIG to
the post-Key-Linear activation it quantizes (bias included); here the quantized tensor is the
projection's MatMul output, so a bimodality made by the bias alone gains nothing and is left
alone.  PTQ4SAM's other half, the adaptive-granularity (log2 base) quantizer for post-softmax
scores, is not implemented; nor are Gemm projections.  A site where something else reads Q or K
with a flipped channel (SAM's image encoder: the decomposed relative-position terms read q) is left
alone rather than flipping that reader's constants too.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from converters.outliers.noisyquant import quant_error
from converters.passes._util import const, output_names, sole_consumer, unique_name
from edgert.errors import ConversionError, EdgertError
from edgert.ir import Graph, Node, ValueInfo

MOVES = frozenset({"Reshape", "Transpose", "Gather", "Split", "Slice", "Squeeze", "Unsqueeze",
                   "Flatten", "Identity"})      # data movement: commutes with a channel's sign
VALUE_FREE = frozenset({"Shape", "Size"})       # readers that never see a value
MIN_SEPARATION = 1.0          # |channel mean| / channel std for a channel to count as one peak
MIN_GAIN = 0.95               # applied only where the quantization error drops below this fraction


@dataclass
class Projection:
    matmul: Node
    bias_add: Node | None
    root: str                 # where the attention chains start: the bias Add's output, or the MatMul's
    channels: int


@dataclass
class Closure:
    """Every node that moves a projection's values around, and every other reader of them."""
    nodes: list[Node] = field(default_factory=list)
    tensors: set[str] = field(default_factory=set)
    frontier: list[tuple[Node, int, str]] = field(default_factory=list)   # (reader, input index, tensor)


@dataclass
class Site:
    q: Projection
    k: Projection
    scores: list[Node]        # MatMul(Q, K^T) nodes


# ----------------------------------------------------------------------------------- structure

def projections(graph: Graph) -> dict[str, Projection]:
    """Projections by root tensor."""
    consumers = graph.consumers()
    out = {}
    for node in graph.nodes:
        w = const(graph, node.inputs[1]) if node.op == "MatMul" and len(node.inputs) == 2 else None
        if w is None or w.ndim != 2 or node.inputs[0] in graph.initializers \
                or not np.issubdtype(w.dtype, np.floating):
            continue
        add = sole_consumer(graph, node.outputs[0], consumers)
        bias = _bias(graph, add, node.outputs[0], w.shape[1]) if add is not None else None
        root = add.outputs[0] if bias is not None else node.outputs[0]
        out[root] = Projection(node, add if bias is not None else None, root, w.shape[1])
    return out


def _bias(graph: Graph, add: Node, x: str, n: int) -> str | None:
    """The name of the Add's constant [.., n] per-channel bias input, if it is one."""
    if add.op != "Add" or len(add.inputs) != 2:
        return None
    b = add.inputs[1] if add.inputs[0] == x else add.inputs[0]
    v = const(graph, b)
    if v is None or v.size != n or (v.ndim and v.shape[-1] != n):
        return None
    return b


def _data_input(graph: Graph, node: Node) -> int | None:
    """The activation input of a sign-commuting node (None: the node is not one)."""
    if node.op in MOVES:
        return 0
    scalar = [(c := const(graph, i)) is not None and c.size == 1 for i in node.inputs]
    if node.op == "Mul" and len(node.inputs) == 2 and any(scalar):
        return 1 if scalar[0] else 0
    if node.op == "Div" and len(node.inputs) == 2 and scalar[1]:
        return 0
    return None


def closure(graph: Graph, root: str, consumers: dict[str, list[Node]]) -> Closure:
    c = Closure(tensors={root})
    seen: set[int] = set()
    stack = [root]
    while stack:
        t = stack.pop()
        for n in consumers.get(t, []):
            for i, name in enumerate(n.inputs):
                if name != t:
                    continue
                if i != _data_input(graph, n):
                    c.frontier.append((n, i, t))
                elif id(n) not in seen:
                    seen.add(id(n))
                    c.nodes.append(n)
                    new = [o for o in n.outputs if o]
                    c.tensors.update(new)
                    stack.extend(new)
    order = {id(n): k for k, n in enumerate(graph.nodes)}
    c.nodes.sort(key=lambda n: order[id(n)])
    return c


def find_sites(graph: Graph) -> tuple[list[Site], dict[str, Closure]]:
    """Candidate sites (query and key projection joined by score MatMuls) and each projection's
    closure; the channel pairing is checked on data later (`pair_channels`)."""
    consumers = graph.consumers()
    projs = projections(graph)
    closures = {r: closure(graph, r, consumers) for r in projs}
    owner = {t: r for r, c in closures.items() for t in c.tensors}
    groups: dict[tuple[str, str], list[Node]] = {}
    for node in graph.nodes:
        if node.op != "MatMul" or len(node.inputs) != 2 or any(i in graph.initializers for i in node.inputs):
            continue
        ra, rb = owner.get(node.inputs[0]), owner.get(node.inputs[1])
        if ra is not None and rb is not None:
            groups.setdefault((ra, rb), []).append(node)
    used = [r for key in groups for r in set(key)]
    sites = [Site(projs[a], projs[b], scores) for (a, b), scores in groups.items()
             if used.count(a) == 1 and used.count(b) == 1]     # a projection in two sites: left alone
    return sites, closures


# ------------------------------------------------------------------------------ channel pairing

def index_values(graph: Graph, proj: Projection, clos: Closure, side: dict[str, np.ndarray],
                 shape: tuple[int, ...]) -> dict[str, np.ndarray]:
    """Run the projection's chains (numpy oracle) on a tensor whose every value is its channel
    index + 1; returns that index at every tensor the chains' readers see."""
    from edgert.backends.numpy_ref import NumpyExecutable
    nodes = []
    for n in clos.nodes:
        d = _data_input(graph, n)
        nodes.append(Node("Identity", n.name, [n.inputs[d]], n.outputs[:1]) if n.op in ("Mul", "Div")
                     else Node(n.op, n.name, list(n.inputs), list(n.outputs), dict(n.attrs)))
    need = {i for n in nodes for i in n.inputs if i and i not in clos.tensors}
    inits = {i: graph.initializers[i] for i in need if i in graph.initializers}
    feeds = {i: side[i] for i in need if i not in inits}
    wanted = sorted({t for _, _, t in clos.frontier} | (clos.tensors & output_names(graph)))
    sub = Graph(name=f"{proj.root}__channels", inputs=[ValueInfo(n, "float32", []) for n in [proj.root, *feeds]],
                outputs=[ValueInfo(t, "float32", []) for t in wanted], nodes=nodes, initializers=inits)
    index = np.broadcast_to(np.arange(1, shape[-1] + 1, dtype=np.float32), shape).copy()
    out = NumpyExecutable(sub).run({proj.root: index, **feeds}, capture=set(wanted))
    return {t: np.asarray(out[t]) for t in wanted}


def pair_channels(a: np.ndarray, b: np.ndarray) -> np.ndarray | None:
    """[P, 2] (query channel, key channel) pairs contracted by MatMul(a, b), from the index tensors
    of its inputs; None unless each contraction index holds one channel on each side for every row
    and column and the pairing is one-to-one."""
    if a.ndim < 2 or b.ndim < 2 or a.shape[-1] != b.shape[-2]:
        return None
    if not (np.all(a == a[..., :1, :]) and np.all(b == b[..., :, :1])):
        return None
    try:
        qa, kb = np.broadcast_arrays(a[..., 0, :], b[..., :, 0])
    except ValueError:
        return None
    pairs = np.unique(np.stack([qa.ravel(), kb.ravel()], 1).astype(np.int64) - 1, axis=0)
    if len(np.unique(pairs[:, 0])) != len(pairs) or len(np.unique(pairs[:, 1])) != len(pairs):
        return None
    return pairs


def site_pairs(site: Site, values: dict[str, dict[str, np.ndarray]]) -> np.ndarray | None:
    """All (query, key) channel pairs of the site's score MatMuls, or None if one does not pair."""
    found = []
    for s in site.scores:
        p = pair_channels(values[site.q.root][s.inputs[0]], values[site.k.root][s.inputs[1]])
        if p is None:
            return None
        found.append(p)
    pairs = np.unique(np.concatenate(found), axis=0)
    ok = len(np.unique(pairs[:, 0])) == len(pairs) and len(np.unique(pairs[:, 1])) == len(pairs)
    return pairs if ok else None


# ------------------------------------------------------------------------------------ choosing

def flips_for(pairs: np.ndarray, keys: np.ndarray, site: Site) -> dict[str, np.ndarray] | None:
    """Per projection root, a bool mask of the columns to negate when key channels `keys` flip (and
    their query partners); None where a pair would end up flipped on one side only."""
    flip = {site.q.root: np.zeros(site.q.channels, bool), site.k.root: np.zeros(site.k.channels, bool)}
    sel = np.isin(pairs[:, 1], keys)
    flip[site.k.root][pairs[sel, 1]] = True
    flip[site.q.root][pairs[sel, 0]] = True
    if not np.array_equal(flip[site.q.root][pairs[:, 0]], flip[site.k.root][pairs[:, 1]]):
        return None            # fused weight: a query column that is also another pair's key column
    return flip


def score_error(site: Site, pairs: np.ndarray, rows: dict[str, np.ndarray], flip: dict[str, np.ndarray],
                bits: int) -> float:
    """Relative error that quantizing Q and K per tensor (with the flips) adds to the score terms
    q_c k_c of the paired channels: sum(E dq^2 E k^2 + E q^2 E dk^2) / sum(E q^2 E k^2), a query and
    a key of the same score coming from different tokens."""
    moments = {}
    for r, f in flip.items():
        x = rows[r].astype(np.float64) * np.where(f, -1.0, 1.0)
        e = quant_error(x, float(x.min()), float(x.max()), bits)
        moments[r] = (np.mean(e ** 2, 0), np.mean(x ** 2, 0))
    (eq, pq), (ek, pk) = moments[site.q.root], moments[site.k.root]
    qi, ki = pairs[:, 0], pairs[:, 1]
    return float(np.sum(eq[qi] * pk[ki] + pq[qi] * ek[ki]) / max(float(np.sum(pq[qi] * pk[ki])), 1e-30))


def choose(site: Site, pairs: np.ndarray, rows: dict[str, np.ndarray], bits: int
           ) -> tuple[dict[str, np.ndarray] | None, float, float, int]:
    """(flip masks or None, score error before, after, key channels flipped)."""
    k = rows[site.k.root][:, pairs[:, 1]].astype(np.float64)
    mean, std = k.mean(0), k.std(0)
    peaked = np.abs(mean) >= MIN_SEPARATION * np.maximum(std, 1e-12)
    none = {r: np.zeros(rows[r].shape[1], bool) for r in (site.q.root, site.k.root)}
    before = score_error(site, pairs, rows, none, bits)
    best, best_err, n = None, before, 0
    for keys in (pairs[peaked & (mean < 0), 1], pairs[peaked & (mean > 0), 1]):
        flip = flips_for(pairs, keys, site) if len(keys) else None
        if flip is not None and (e := score_error(site, pairs, rows, flip, bits)) < best_err:
            best, best_err, n = flip, e, len(keys)
    return best, before, best_err, n


def leaks(values: dict[str, np.ndarray], clos: Closure, flip: np.ndarray, scores: set[tuple[int, int]],
          outputs: set[str]) -> bool:
    """True when a reader other than the site's score MatMuls, or a graph output, sees a flipped channel."""
    flipped = np.flatnonzero(flip) + 1
    seen = [t for node, i, t in clos.frontier if node.op not in VALUE_FREE and (id(node), i) not in scores]
    seen += [t for t in clos.tensors & outputs]
    return any(np.isin(values[t], flipped).any() for t in seen)


def apply(graph: Graph, proj: Projection, flip: np.ndarray) -> None:
    """Negate the flipped columns of the projection's weight and bias (new initializers)."""
    sign = np.where(flip, -1.0, 1.0).astype(np.float32)
    m = proj.matmul
    w_name = unique_name(graph, f"{m.inputs[1]}__big")
    graph.initializers[w_name] = (const(graph, m.inputs[1]) * sign).astype(np.float32)
    m.inputs[1] = w_name
    if proj.bias_add is not None:
        x = m.outputs[0]
        bi = 1 if proj.bias_add.inputs[0] == x else 0
        b = const(graph, proj.bias_add.inputs[bi])
        b_name = unique_name(graph, f"{proj.bias_add.inputs[bi]}__big")
        graph.initializers[b_name] = (b * sign.reshape(b.shape)).astype(np.float32)
        proj.bias_add.inputs[bi] = b_name


# ---------------------------------------------------------------------------------------- pass

def run(graph: Graph, batches: list[dict], abits: int, capture) -> dict:
    """Flip bimodal key channels (and their query partners) where it lowers the projections'
    quantization error; returns {key projection root: {"applied", "flipped", "before", "after"}}."""
    sites, closures = find_sites(graph)
    if not sites or not batches:
        return {}
    roots = {p.root: p for s in sites for p in (s.q, s.k)}
    side = {i for r in roots for n in closures[r].nodes for i in n.inputs
            if i and i not in closures[r].tensors and i not in graph.initializers}
    mm = {p.matmul.outputs[0] for p in roots.values()}
    first = capture(batches[0], (set(roots) | side | mm) - set(batches[0])) | batches[0]
    caps = [first] + [capture(b, mm) for b in batches[1:]]
    rows = {r: np.concatenate([np.asarray(c[p.matmul.outputs[0]], np.float32).reshape(-1, p.channels)
                               for c in caps]) for r, p in roots.items()}
    values = {}
    for r, p in roots.items():
        try:
            values[r] = index_values(graph, p, closures[r], first, np.shape(first[r]))
        except EdgertError as e:
            raise ConversionError(f"ptq4sam-bimodal: cannot trace the channels of {r!r}: {e}") from e
    return {s.k.root: _site(graph, s, values, closures, rows, abits) for s in sites}


def _site(graph: Graph, site: Site, values, closures, rows, abits: int) -> dict:
    entry = {"applied": False, "flipped": 0}
    pairs = site_pairs(site, values)
    if pairs is None:
        entry["reason"] = "channels do not pair one to one"
        return entry
    flip, entry["before"], entry["after"], n = choose(site, pairs, rows, abits)
    if flip is None or entry["after"] >= MIN_GAIN * entry["before"]:
        return entry
    score_inputs = {(id(s), i) for s in site.scores for i in (0, 1)}
    if any(leaks(values[r], closures[r], flip[r], score_inputs, output_names(graph)) for r in flip):
        entry["reason"] = "a flipped channel reaches another reader"
        return entry
    for r in flip:
        apply(graph, site.q if r == site.q.root else site.k, flip[r])
    entry.update(applied=True, flipped=n)
    return entry

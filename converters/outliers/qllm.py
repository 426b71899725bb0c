"""QLLM's channel disassembly (and, optionally, channel assembly) of an outlier activation.

Paper: Liu et al., "QLLM: Accurate and Efficient Low-Bitwidth Quantization for Large Language
Models", ICLR 2024, section 4.1 ("adaptive channel reassembly").

Where it applies: the OS+ sites (`os_plus.find_sites`): a per-channel affine `y = x * gamma + beta`
over the last axis (a LayerNorm's tail) whose every consumer is a MatMul with a constant weight
W [C, N].

Disassembly (exact in float).  A channel c whose calibrated peak max|y_c| exceeds a threshold
theta is split into T_c = ceil(max|y_c| / theta) sub-channels, each carrying y_c / T_c:

    gamma'_c = gamma_c / T_c, beta'_c = beta_c / T_c       (the affine now yields y_c / T_c)
    y~ = Gather(y', idx, axis=-1)                          (idx repeats channel c T_c times)
    W~ = W[idx]                                            (the rows duplicated, unscaled)
    y~ W~ = sum_t (y_c / T_c) W_c = y_c W_c                per channel, so y W is unchanged

The quantized tensor is now y~, whose per-tensor range is about theta instead of the outlier
channel's peak.  The cost: the consumer MatMuls read C + sum(T_c - 1) channels.

Assembly (approximate; `QllmOptions(assemble=True)`, pass name "qllm-assemble").  To keep C
channels, as many pairs (i, j) of the channels that were not split are merged into one channel
(y_i + y_j) / 2 with weight row W_i + W_j.  The error of a merge is -(y_i - y_j)(W_i - W_j) / 2,
zero only when y_i = y_j or W_i = W_j; pairs are matched greedily by ||y_i - y_j||^2 *
||W_i - W_j||^2 on the calibration rows (4x the squared Frobenius norm of that rank-1 error; the
paper matches by activation similarity alone, with bipartite soft matching).  Built from ops the
runtime has: gamma and beta divided by 2 T_c, then Gather(y', a) + Gather(y', b), with a = b = c
for an unmerged (sub-)channel (y_c / 2T_c twice: y_c / T_c) and (a, b) = (i, j) for a merged pair.  The float error it adds is
measured on the calibration rows and reported as "float_error".

theta (and so every T_c) is chosen among the largest channel peak over 2, 3, ... 64, the next
largest peaks and quantiles of all peaks, with at most C / 2 channels added (`QllmOptions`),
minimising the consumer MatMuls' relative output error with the rewritten activation
fake-quantized per tensor at `abits` on the calibration rows (as OS+'s search does); the rewrite is
kept only when that error drops by more than 5 %.

Left out from the paper: the channel-wise low-rank adapters QLLM fine-tunes after reassembly (a
gradient step is outside this post-training converter), the per-block theta search on the block's
output (here: per site, on the MatMul outputs), and the bipartite soft matching (greedy here).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from converters.outliers.os_plus import Site, _fake_quant, find_sites
from converters.passes._util import const
from edgert.ir import Graph, Node

SEARCH_ROWS = 4096      # calibration rows (sampled) the theta search evaluates its candidates on


@dataclass(frozen=True)
class QllmOptions:
    assemble: bool = False          # merge pairs of channels back to C (changes the float function)
    max_extra: float = 0.5          # disassembly adds at most this fraction of C channels
    quantiles: tuple[float, ...] = (0.5, 0.75, 0.9, 0.95, 0.99)   # of the channel peaks, tried as theta
    top_peaks: int = 16             # the largest channel peaks also tried as theta
    max_split: int = 64             # at most this many sub-channels per channel
    min_gain: float = 0.95          # keep the rewrite when error_after < min_gain * error_before


@dataclass(frozen=True)
class Plan:
    """What to do at one site: per-channel divisor of gamma / beta, the Gather indices (b is None
    without assembly) and the consumer weight rows as a map from the C original rows."""
    theta: float
    splits: np.ndarray              # T_c >= 1, int [C]
    divisor: np.ndarray             # T_c, or 2 T_c with assembly [C]
    a: np.ndarray                   # int64 [S]
    b: np.ndarray | None            # int64 [S] (assembly) or None

    @property
    def extra(self) -> int:
        return int(np.sum(self.splits - 1))

    def activation(self, y: np.ndarray) -> np.ndarray:
        z = y / self.divisor
        return z[:, self.a] if self.b is None else z[:, self.a] + z[:, self.b]

    def weight(self, w: np.ndarray) -> np.ndarray:
        if self.b is None:
            return w[self.a]
        return np.where((self.a == self.b)[:, None], w[self.a], w[self.a] + w[self.b])


def _splits(peak: np.ndarray, theta: float) -> np.ndarray:
    # the 1e-6 keeps a channel whose peak is theta itself whole
    return np.maximum(1, np.ceil(peak / max(theta, 1e-12) - 1e-6)).astype(np.int64)


def _disassembly(theta: float, t: np.ndarray) -> Plan:
    a = np.repeat(np.arange(t.size), t).astype(np.int64)
    return Plan(theta, t, t.astype(np.float32), a, None)


class _PairCosts:
    """The greedy-matching order of channel pairs: ascending ||y_i - y_j||^2 * sum_u ||W_ui - W_uj||^2."""

    def __init__(self, y: np.ndarray, ws: list[np.ndarray]):
        def sqdist(m):                        # rows = the objects compared
            m = m.astype(np.float64)
            n = np.sum(m * m, 1)
            return np.maximum(n[:, None] + n[None, :] - 2 * (m @ m.T), 0.0)
        cost = sqdist(y.T) * sqdist(np.concatenate(ws, 1))
        i, j = np.triu_indices(y.shape[1], 1)
        order = np.argsort(cost[i, j], kind="stable")
        self.i, self.j = i[order], j[order]

    def match(self, eligible: np.ndarray, k: int) -> list[tuple[int, int]] | None:
        """k disjoint pairs of eligible channels, cheapest first; None when there are not enough."""
        if 2 * k > int(eligible.sum()):
            return None
        free = eligible.copy()
        pairs = []
        for i, j in zip(self.i, self.j):
            if len(pairs) == k:
                break
            if free[i] and free[j]:
                free[i] = free[j] = False
                pairs.append((int(i), int(j)))
        return pairs if len(pairs) == k else None


def _assembly(theta: float, t: np.ndarray, costs: _PairCosts) -> Plan | None:
    k = int(np.sum(t - 1))
    pairs = costs.match(t == 1, k)
    if pairs is None:
        return None
    merged = {i for p in pairs for i in p}
    single = [c for c in range(t.size) if c not in merged for _ in range(int(t[c]))]
    a = single + [i for i, _ in pairs]
    b = single + [j for _, j in pairs]
    return Plan(theta, t, (2 * t).astype(np.float32), np.array(a, np.int64), np.array(b, np.int64))


def _error(y: np.ndarray, ws: list[np.ndarray], refs: list[np.ndarray], plan: Plan | None,
           bits: int | None) -> float:
    """Relative output error of the consumer MatMuls, summed over them, with the rewritten activation
    fake-quantized per tensor at `bits` (None: float)."""
    def rel(diff, r):
        return float(np.mean(diff ** 2)) / max(float(np.mean(r ** 2)), 1e-30)
    if plan is None or plan.b is None:
        # without assembly the T_c copies of channel c carry the same value and the same rounding
        # error e_c, so the output error is (T * e) W: no need to build the C + extra columns
        t = np.ones(y.shape[1], np.float32) if plan is None else plan.divisor
        z = y / t
        e = (_fake_quant(z, bits) - z) * t if bits is not None else np.zeros_like(z)
        return sum(rel(e @ w, r) for w, r in zip(ws, refs))
    act = plan.activation(y)
    if bits is not None:
        act = _fake_quant(act, bits)
    return sum(rel(act @ plan.weight(w) - r, r) for w, r in zip(ws, refs))


def _thetas(peak: np.ndarray, options: QllmOptions) -> list[float]:
    """Candidate thresholds: the largest peak over 2, 3, ... (every split count of the worst channel,
    geometric beyond 8), the next largest peaks, and quantiles of all peaks."""
    ranked = np.sort(peak)[::-1]
    ks = sorted(set(range(2, 9)) | set(np.unique(np.geomspace(8, max(options.max_split, 8), 12).astype(int))))
    out = {float(ranked[0]) / int(k) for k in ks}
    out |= set(ranked[1:1 + options.top_peaks].tolist())
    out |= set(np.quantile(peak, options.quantiles).tolist())
    return sorted((float(t) for t in out if t > 0), reverse=True)


def choose(y: np.ndarray, ws: list[np.ndarray], bits: int, options: QllmOptions = QllmOptions()
           ) -> tuple[Plan | None, float, float]:
    """y [rows, C] calibration rows of the affine's output -> (best plan or None, error before, after)."""
    y = y.astype(np.float32)
    ws = [w.astype(np.float32) for w in ws]
    refs = [y @ w for w in ws]
    peak = np.abs(y).max(0)
    c = y.shape[1]
    costs = _PairCosts(y, ws) if options.assemble else None
    before = _error(y, ws, refs, None, bits)
    best: tuple[float, Plan | None] = (before, None)
    for theta in _thetas(peak, options):
        t = _splits(peak, theta)
        extra = int(np.sum(t - 1))
        if extra == 0 or extra > options.max_extra * c or t.max() > options.max_split:
            continue
        plan = _assembly(theta, t, costs) if costs is not None else _disassembly(theta, t)
        if plan is None:
            continue
        e = _error(y, ws, refs, plan, bits)
        if e < best[0]:
            best = (e, plan)
    return best[1], before, best[0]


def _fresh(graph: Graph, base: str, taken: set[str]) -> str:
    """`base`, or `base_2`, `base_3`, ... : a name no initializer or node output has (an initializer
    shared by two sites, or a graph already rewritten once, must not be overwritten)."""
    name, k = base, 1
    while name in graph.initializers or name in taken:
        k += 1
        name = f"{base}_{k}"
    taken.add(name)
    return name


def apply(graph: Graph, site: Site, plan: Plan) -> None:
    """Rewrite the site: gamma / beta divided per channel, Gather(s) (+ Add) after the affine, the
    consumer weights' rows mapped."""
    mul, add = site.mul, site.add
    taken = {o for n in graph.nodes for o in n.outputs}
    gi = next(i for i in (0, 1) if const(graph, mul.inputs[i]) is not None)
    bi = next(i for i in (0, 1) if const(graph, add.inputs[i]) is not None)
    gamma, beta = const(graph, mul.inputs[gi]), const(graph, add.inputs[bi])
    g_name, b_name = _fresh(graph, f"{mul.inputs[gi]}__qllm", taken), _fresh(graph, f"{add.inputs[bi]}__qllm", taken)
    graph.initializers[g_name] = (gamma / plan.divisor).astype(np.float32)
    graph.initializers[b_name] = (beta / plan.divisor).astype(np.float32)
    mul.inputs[gi], add.inputs[bi] = g_name, b_name
    y = add.outputs[0]
    out = _fresh(graph, f"{y}__qllm", taken)
    idx_a = _fresh(graph, f"{y}__qllm_idx", taken)
    graph.initializers[idx_a] = plan.a
    if plan.b is None:
        new = [Node("Gather", f"{add.name}__qllm_gather", [y, idx_a], [out], {"axis": -1})]
    else:
        idx_b = _fresh(graph, f"{y}__qllm_idx_b", taken)
        graph.initializers[idx_b] = plan.b
        ga, gb = _fresh(graph, f"{y}__qllm_a", taken), _fresh(graph, f"{y}__qllm_b", taken)
        new = [Node("Gather", f"{add.name}__qllm_gather_a", [y, idx_a], [ga], {"axis": -1}),
               Node("Gather", f"{add.name}__qllm_gather_b", [y, idx_b], [gb], {"axis": -1}),
               Node("Add", f"{add.name}__qllm_assemble", [ga, gb], [out])]
    pos = graph.nodes.index(add)
    graph.nodes[pos + 1:pos + 1] = new
    for u in site.consumers:
        w_name = _fresh(graph, f"{u.inputs[1]}__qllm", taken)
        graph.initializers[w_name] = plan.weight(const(graph, u.inputs[1]).astype(np.float32)).astype(np.float32)
        u.inputs[0], u.inputs[1] = out, w_name


def run(graph: Graph, batches: list[dict], abits: int, capture, options: QllmOptions = QllmOptions()) -> dict:
    """QLLM at every OS+ site where it lowers the quantized MatMul outputs' error on the calibration
    rows; returns {site: {"before", "after", "applied", "theta", "split_channels", "extra_channels",
    "max_split"[, "float_error"]}} for the sites considered."""
    rng = np.random.default_rng(0)
    report = {}
    for site in find_sites(graph):
        name = site.affine.outputs[0]
        c = np.shape(graph.initializers[site.consumers[0].inputs[1]])[0]
        rows = np.concatenate([np.asarray(capture(b, {name})[name], np.float32).reshape(-1, c)
                               for b in batches], 0)
        if len(rows) > SEARCH_ROWS:
            rows = rows[rng.choice(len(rows), SEARCH_ROWS, replace=False)]
        ws = [np.asarray(graph.initializers[u.inputs[1]], np.float32) for u in site.consumers]
        plan, before, after = choose(rows, ws, abits, options)
        applied = plan is not None and after < options.min_gain * before
        r = {"before": before, "after": after, "applied": applied}
        if plan is not None:
            r.update(theta=plan.theta, split_channels=int(np.sum(plan.splits > 1)), extra_channels=plan.extra,
                     max_split=int(plan.splits.max()))
            if plan.b is not None:
                r["float_error"] = _error(rows, ws, [rows @ w for w in ws], plan, None)
        if applied:
            apply(graph, site, plan)
        report[name] = r
    return report


def run_assemble(graph: Graph, batches: list[dict], abits: int, capture) -> dict:
    """QLLM with channel assembly: the channel count (and MatMul cost) kept, the float function not."""
    return run(graph, batches, abits, capture, QllmOptions(assemble=True))

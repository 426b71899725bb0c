"""The decoder step on ONNX Runtime: the whole transformer as one session run per step.

Built at load from the package's weights (no `onnx` package: edgert.backends.onnx_proto writes the
model bytes):
  - linear layers are com.microsoft MatMulNBits (accuracy_level 4: int8 activations, the fast CPU
    path); codes go to ORT as the package's own bit-packed stream (at 2/4/8 bits it *is* MatMulNBits'
    B layout); other widths are repacked at load to the next supported width, values unchanged.
    Projections that read the same input are fused (q|k|v, gate|up).
  - a block minimum (Q4_1: d*q + m) or a zero point that MatMulNBits would only take as a float (off
    its fast path, ~20x slower on CPU) is folded exactly: x.W = MatMulNBits(x, q, d) with the default
    zero point z0, plus the per-block sums of x times (m + d*(z0 - z)) -- a [M, K/block] x [K/block, N]
    matmul, which is what llama.cpp's own Q4_1 dot product does.
  - attention is com.microsoft GroupQueryAttention with rotary (interleaved pairs, llama.cpp's NORM
    rope on GGUF-layout weights), explicit position_ids and an additive attention bias (token trees),
    past and present K/V bound to the same buffers (edgert.llm.cache), so the cache is written in place.
  - RMSNorm + residual adds are (Skip)SimplifiedLayerNormalization.
The token embedding is looked up in numpy (a few rows of the 8-bit table per step) and fed as `embeds`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgert.backends import onnx_proto as P
from edgert.errors import BackendUnavailable, InputError
from edgert.llm.cache import KvCache
from edgert.llm.step import StepInput, StepOutput
from edgert.llm.weights import BlockQuant, LlmWeights
from edgert.package.bitpack import pack_bits

NBITS_SUPPORTED = (2, 4, 8)             # ORT MatMulNBits on CPU (3/5/6/7 fail at session creation)
NEG_INF = np.float32(-np.inf)


@dataclass
class OrtStepOptions:
    threads: int = 0                    # intra-op threads; 0 = ORT's default (all cores)
    accuracy_level: int = 4             # MatMulNBits: 4 = int8 activations; 0/1 = float (slow, exact-ish)
    fuse: bool = True                   # one MatMulNBits for q|k|v and one for gate|up
    # Run attention on M + 1 rows (a copy of the last row, masked from the others and never kept), so
    # that GroupQueryAttention always takes its multi-token kernel: its one-token kernel sums in
    # another order (~4e-7), which int8 activation rounding downstream turns into different tokens at
    # near-ties -- a verified token tree must match plain decoding exactly.
    pad_attention: bool = False
    profile: str | None = None          # ORT profiler output prefix
    # ProPD early pruning: also build layers 0..split_after as one session ("early") and the rest as
    # another ("late"), so that tree nodes can be dropped in between (OrtStep.run_early / run_late);
    # the early session also outputs the final-normed residual stream after that layer ("tap")
    split_after: int | None = None


def _supported_bits(bits: int) -> int:
    return next(b for b in NBITS_SUPPORTED if b >= bits)


class _Builder:
    def __init__(self, opts: OrtStepOptions):
        self.b = P.ModelBuilder(name="edgert_llm", opsets={"": 21, "com.microsoft": 1})
        self.opts = opts
        self.external: dict[str, np.ndarray] = {}
        self.inline: set[str] = set()
        self.n = 0

    def tmp(self, stem: str) -> str:
        self.n += 1
        return f"{stem}_{self.n}"

    def init(self, name: str, arr: np.ndarray) -> str:
        arr = np.ascontiguousarray(arr)
        if arr.nbytes >= 4096:
            self.external[name] = arr
            self.b.initializers.append(P.external_tensor_proto(name, arr.dtype.name, arr.shape, name))
        else:
            self.b.initializer(name, arr)
        return name

    def node(self, op: str, ins: list[str], outs: list[str] | None = None, domain: str = "", **attrs) -> list[str]:
        outs = outs or [self.tmp(op.lower())]
        self.b.node(op, ins, outs, name=self.tmp("n_" + op), domain=domain, **attrs)
        return outs

    # -- linear layers ---------------------------------------------------------------------------
    def linear(self, x: str, name: str, mats: list, k: int) -> str:
        """x [M, K] @ concat(mats).T -> [M, sum(rows)]."""
        if all(isinstance(m, BlockQuant) for m in mats) and len({(m.bits, m.block, m.min is None,
                                                                    isinstance(m.zero, np.ndarray))
                                                                   for m in mats}) == 1:
            return self.nbits(x, name, mats, k)
        if len(mats) > 1:
            parts = [self.linear(x, f"{name}_{i}", [m], k) for i, m in enumerate(mats)]
            return self.node("Concat", parts, axis=-1)[0]
        m = mats[0]
        w = m.dequantize() if isinstance(m, BlockQuant) else np.asarray(m, np.float32)
        return self.node("MatMul", [x, self.init(f"{name}.wT", np.ascontiguousarray(w.T))])[0]

    def nbits(self, x: str, name: str, mats: list[BlockQuant], k: int) -> str:
        bits0, block = mats[0].bits, mats[0].block
        bits = _supported_bits(bits0)
        z0 = 1 << (bits - 1)                                   # MatMulNBits' default zero point
        n = sum(m.rows for m in mats)
        nb = k // block
        blob = block * bits // 8
        bs, scales, corr, zps = [], [], [], []
        for m in mats:
            if bits == m.bits:
                bs.append(np.frombuffer(m.packed, np.uint8)[:m.rows * nb * blob].reshape(m.rows, nb, blob))
            else:                                               # repack at a supported width, same codes
                bs.append(np.frombuffer(pack_bits(m.codes(), bits), np.uint8).reshape(m.rows, nb, blob))
            d = m.scale.astype(np.float32)
            scales.append(d)
            if m.min is not None:
                z = m.zero_array()
                corr.append(m.min.astype(np.float32) + d * (z0 - z))
            elif isinstance(m.zero, np.ndarray) or m.zero != z0:
                zps.append(m.zero_array().astype(np.uint8))
        B = _concat_rows(bs)
        ins = [x, self.init(f"{name}.q", B), self.init(f"{name}.d", np.concatenate(scales, 0).reshape(-1))]
        if zps:
            z = np.concatenate(zps, 0)                          # [n, nb] codes
            per_row = (nb * bits + 7) // 8
            zp = np.stack([np.frombuffer(pack_bits(r, bits).ljust(per_row, b"\0"), np.uint8) for r in z]) \
                if bits != 8 else z
            ins.append(self.init(f"{name}.zp", zp.reshape(-1)))
        y = self.node("MatMulNBits", ins, domain="com.microsoft", K=k, N=n, bits=bits, block_size=block,
                      accuracy_level=self.opts.accuracy_level)[0]
        if corr:
            # the block-minimum term: sums(x) @ C + y, C [nb, n].  The per-block sums of x come from
            # a second MatMulNBits whose weights are the 0/1 block indicator (code z0 + 1 in block j
            # of row j, z0 elsewhere, scale 1): it quantizes x exactly as the main one does, so the
            # sums are those of the int8 activations the main product used -- llama.cpp's Q4_1 x Q8_1
            # dot (d*d_x*sum(q*q_x) + m*d_x*sum(q_x)), term for term.
            C = np.concatenate(corr, 0).T.astype(np.float32)    # [nb, n]
            e_name = f"blocksum_{k}_{block}_{bits}"
            if e_name not in self.external and e_name not in self.inline:
                codes = np.full((nb, k), z0, np.uint8)
                for j in range(nb):
                    codes[j, j * block:(j + 1) * block] = z0 + 1
                self.init(e_name, np.frombuffer(pack_bits(codes, bits), np.uint8).reshape(nb, nb, blob))
                self.init(e_name + ".d", np.ones(nb * nb, np.float32))
                self.inline.add(e_name)
            sums = self.node("MatMulNBits", [x, e_name, e_name + ".d"], domain="com.microsoft", K=k, N=nb,
                             bits=bits, block_size=block, accuracy_level=self.opts.accuracy_level)[0]
            y = self.node("Gemm", [sums, self.init(f"{name}.corr", C), y])[0]
        return y


class _SpillFile:
    """Arrays derived at load (fp32 scales, the Q4_1 block-minimum table) moved into an unlinked
    temp file mapped MAP_SHARED, so that -- like the package's own codes -- they are file-backed:
    once ORT has prepacked its copies, their pages can be dropped and, if ever read again, fault
    back in from the page cache."""

    def __init__(self, arrays: dict[str, np.ndarray]):
        import mmap
        import tempfile

        offs, pos = {}, 0
        for name, a in arrays.items():
            offs[name] = pos
            pos += -(-a.nbytes // 64) * 64
        self.mm = None
        if not pos:
            self.views = {}
            return
        with tempfile.TemporaryFile(prefix="edgert-llm-") as f:
            f.truncate(pos)
            self.mm = mmap.mmap(f.fileno(), pos)         # shared, read-write; the file is unlinked
        base = np.frombuffer(self.mm, dtype=np.uint8)
        self.views = {}
        for name, a in arrays.items():
            v = base[offs[name]:offs[name] + a.nbytes].view(a.dtype).reshape(a.shape)
            v[...] = a
            self.views[name] = v

    def release_pages(self) -> None:
        import mmap
        if self.mm is not None and hasattr(mmap, "MADV_DONTNEED"):
            try:
                self.mm.madvise(mmap.MADV_DONTNEED)
            except (OSError, ValueError):
                pass


class _PageDropper:
    """While ORT prepacks (reads every weight once and keeps its own packed copy), release the
    file pages it has read every few ms -- the package's codes and the spill file's derived arrays
    -- so they do not stay resident beside the packed copies: the load's peak RSS stays near the
    final RSS.  Safe: both mappings are file-backed, a page read again just faults back in."""

    def __init__(self, *owners, period_s: float = 0.005):
        import threading
        self.owners, self.period_s = owners, period_s
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="edgert-page-dropper", daemon=True)

    def release(self) -> None:
        for o in self.owners:
            o.release_pages()

    def _loop(self) -> None:
        while not self.stop.wait(self.period_s):
            self.release()

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()
        self.release()


def _is_file_view(a: np.ndarray) -> bool:
    import mmap
    r = _root(a)
    return isinstance(r.base, mmap.mmap) or isinstance(getattr(r.base, "obj", None), mmap.mmap)


def _root(a: np.ndarray) -> np.ndarray:
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a


def _concat_rows(parts: list[np.ndarray]) -> np.ndarray:
    """np.concatenate(parts, 0), but a zero-copy view when the parts already lie back to back in one
    buffer -- the converter writes q, k, v (and gate, up) codes adjacently in the weights section and
    their sizes are multiples of the 64-byte alignment, so fused projections cost no copy."""
    if len(parts) == 1:
        return parts[0]
    root = _root(parts[0])
    ptr = parts[0].__array_interface__["data"][0]
    ok = root.flags.c_contiguous and root.dtype == np.uint8 and all(p.flags.c_contiguous for p in parts)
    for p in parts:
        ok = ok and _root(p) is root and p.__array_interface__["data"][0] == ptr
        ptr += p.nbytes
    if not ok:
        return np.concatenate(parts, axis=0)
    start = parts[0].__array_interface__["data"][0] - root.__array_interface__["data"][0]
    total = sum(p.shape[0] for p in parts)
    return root.reshape(-1)[start:start + sum(p.nbytes for p in parts)].reshape(total, *parts[0].shape[1:])


def make_session(model: bytes, external: dict[str, np.ndarray], weights: LlmWeights, opts: OrtStepOptions,
                 what: str, spin: bool = True):
    """An ORT CPU session for a graph built by _Builder: arrays made at load (not views of the package
    file) go to a file-backed spill mapping (replacing them in `external`), and file pages are
    dropped while ORT prepacks.
    spin=False: its worker threads block instead of spinning when idle.
    Returns (session, spill); keep the spill alive as long as the session."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if opts.threads:
        so.intra_op_num_threads = opts.threads
    so.inter_op_num_threads = 1
    if not spin:
        # a second session beside the decoder step (draft heads): its idle workers must not spin
        # on the cores the step's workers need right after it
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if opts.profile:
        so.enable_profiling, so.profile_file_prefix = True, opts.profile
    spill = _SpillFile({n: a for n, a in external.items() if not _is_file_view(a)})
    external.update(spill.views)       # in place: the caller's anonymous copies are dropped now
    names = list(external)
    values = [ort.OrtValue.ortvalue_from_numpy(external[n]) for n in names]
    so.add_external_initializers(names, values)
    try:
        with _PageDropper(weights, spill):
            session = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    except Exception as e:     # ORT raises its own exception types (Fail, InvalidGraph, ...)
        raise BackendUnavailable(f"onnxruntime could not build {what}: {str(e).splitlines()[0]}") from e
    return session, spill      # ORT keeps the OrtValues (and so the mappings) alive


class OrtStep:
    """DecoderStep on ONNX Runtime (see the module docstring)."""
    name = "ort"

    def __init__(self, weights: LlmWeights, cache: KvCache, options: OrtStepOptions | None = None):
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise BackendUnavailable("the ort LLM backend needs onnxruntime: pip install onnxruntime") from e
        self.ort, self.cfg, self.cache, self.weights = ort, weights.config, cache, weights
        self.opts = options or OrtStepOptions()
        n = self.cfg.n_layers
        e = self.opts.split_after
        if e is not None and not 0 <= e < n - 1:
            raise InputError(f"split_after {e} must be in 0..{n - 2} (a layer before the last)")
        self.split_after = e
        self._kv = [(ort.OrtValue.ortvalue_from_numpy(cache.k[i]), ort.OrtValue.ortvalue_from_numpy(cache.v[i]))
                    for i in range(n)]
        # one session for the whole step (every plain step), and when split, two more for layers
        # 0..e and e+1.. (tree steps that prune).  The split sessions' idle workers do not spin, so
        # they leave the cores to the whole-step session's, which run nearly every step.  (ORT's
        # per-session pools spin-wait after a run; two spinning pools on two cores halved the
        # speed of split plain steps, measured.)  The price is a second prepacked copy of the weights.
        self._parts = []          # (session, io binding, spill) per layer range
        for lo, hi in ([(0, n)] if e is None else [(0, n), (0, e + 1), (e + 1, n)]):
            model, external = self._build(weights, lo, hi)
            what = "the LLM step" if (lo, hi) == (0, n) else f"the LLM step (layers {lo}..{hi - 1})"
            session, spill = make_session(model, external, weights, self.opts, what, spin=(lo, hi) == (0, n))
            del model, external
            io = session.io_binding()
            for i in range(lo, hi):
                kv_k, kv_v = self._kv[i]
                io.bind_ortvalue_input(f"past_key_{i}", kv_k)
                io.bind_ortvalue_input(f"past_value_{i}", kv_v)
                io.bind_ortvalue_output(f"present_key_{i}", kv_k)
                io.bind_ortvalue_output(f"present_value_{i}", kv_v)
            self._parts.append((session, io, spill))
        self.session, self._io, self._spill = self._parts[0]
        self._embd = weights["token_embd"]
        self._out_bufs: dict[tuple[int, int], tuple] = {}

    def _build(self, w: LlmWeights, lo: int = 0, hi: int | None = None):
        """Layers [lo, hi) as one graph: from `embeds` (lo = 0) or the residual stream of layer lo - 1
        as `pending_in` + `resid_in` (the two addends, so the next layer's first op is the very
        SkipSimplifiedLayerNormalization the whole graph would run); to logits + hidden (hi = all)
        or `pending_out` + `resid_out` + `tap`."""
        c = self.cfg
        hi = c.n_layers if hi is None else hi
        bld = _Builder(self.opts)
        b = bld.b
        h, eps = c.hidden, float(c.rms_eps)
        if lo == 0:
            b.input("embeds", "float32", ["M", h])
        else:
            b.input("pending_in", "float32", ["M", h])
            b.input("resid_in", "float32", ["M", h])
        b.input("position_ids", "int64", [1, "M"])
        b.input("seqlens_k", "int32", [1])
        b.input("total_len", "int32", [])
        b.input("attn_bias", "float32", [1, 1, "M", "T"])
        if hi == c.n_layers:
            b.input("rows", "int64", ["R"])
        kv_shape = [1, c.n_kv_heads, self.cache.max_seq, c.head_dim]
        for i in range(lo, hi):
            b.input(f"past_key_{i}", "float32", kv_shape)
            b.input(f"past_value_{i}", "float32", kv_shape)
        rd = c.rope_dim or c.head_dim
        inv = c.rope_base ** (-np.arange(0, rd, 2, dtype=np.float64) / rd)
        ang = np.arange(self.cache.max_seq, dtype=np.float64)[:, None] * inv[None]
        cos, sin = np.cos(ang), np.sin(ang)
        if rd < c.head_dim:        # dims past rope_dim are not rotated: angle 0
            pad = (c.head_dim - rd) // 2
            cos = np.concatenate([cos, np.ones((len(cos), pad))], 1)
            sin = np.concatenate([sin, np.zeros((len(sin), pad))], 1)
        bld.init("cos_cache", cos.astype(np.float32))
        bld.init("sin_cache", sin.astype(np.float32))
        b.initializer("axis0", np.array([0], np.int64))
        if self.opts.pad_attention:
            for nm, v in (("neg1", -1), ("big", 1 << 62), ("one", 1), ("zero", 0)):
                b.initializer(nm, np.array([v], np.int64))
        x, resid = "embeds", None
        pending = None
        if lo > 0:
            pending, resid = "pending_in", "resid_in"
        for i in range(lo, hi):
            L = f"blk.{i}."
            gamma = bld.init(L + "attn_norm", w[L + "attn_norm"])
            if pending is None:
                n1 = bld.node("SimplifiedLayerNormalization", [x, gamma], epsilon=eps, axis=-1)[0]
                resid = x
            else:
                n1, _, _, resid = bld.node("SkipSimplifiedLayerNormalization", [pending, resid, gamma],
                                           [bld.tmp("n1"), "", "", bld.tmp("resid")], domain="com.microsoft",
                                           epsilon=eps)
            qkv_mats = [w[L + "attn_q"], w[L + "attn_k"], w[L + "attn_v"]]
            if self.opts.fuse:
                qkv = bld.linear(n1, L + "qkv", qkv_mats, h)
                q3 = bld.node("Unsqueeze", [qkv, "axis0"])[0]
                if self.opts.pad_attention:        # one more row: a copy of the last (see OrtStepOptions)
                    last = bld.node("Slice", [q3, "neg1", "big", "one"])[0]
                    q3 = bld.node("Concat", [q3, last], axis=1)[0]
                q_in = [q3, "", ""]
            else:
                q_in = [bld.node("Unsqueeze", [bld.linear(n1, L + r, [m], h), "axis0"])[0]
                        for r, m in zip(("q", "k", "v"), qkv_mats)]
            attn3 = bld.node("GroupQueryAttention",
                            q_in + [f"past_key_{i}", f"past_value_{i}", "seqlens_k", "total_len",
                                    "cos_cache", "sin_cache", "position_ids", "attn_bias"],
                            [bld.tmp("attn"), f"present_key_{i}", f"present_value_{i}"], domain="com.microsoft",
                            num_heads=c.n_heads, kv_num_heads=c.n_kv_heads, do_rotary=1, rotary_interleaved=1,
                            scale=float(1.0 / np.sqrt(c.head_dim)))[0]
            if self.opts.pad_attention:
                attn3 = bld.node("Slice", [attn3, "zero", "neg1", "one"])[0]
            attn = bld.node("Squeeze", [attn3, "axis0"])[0]
            o = bld.linear(attn, L + "attn_output", [w[L + "attn_output"]], c.q_dim)
            g2 = bld.init(L + "ffn_norm", w[L + "ffn_norm"])
            n2, _, _, resid = bld.node("SkipSimplifiedLayerNormalization", [o, resid, g2],
                                       [bld.tmp("n2"), "", "", bld.tmp("resid")], domain="com.microsoft",
                                       epsilon=eps)
            if self.opts.fuse:
                gu = bld.linear(n2, L + "gate_up", [w[L + "ffn_gate"], w[L + "ffn_up"]], h)
                gate, up = bld.node("Split", [gu], [bld.tmp("gate"), bld.tmp("up")], axis=-1, num_outputs=2)
            else:
                gate = bld.linear(n2, L + "gate", [w[L + "ffn_gate"]], h)
                up = bld.linear(n2, L + "up", [w[L + "ffn_up"]], h)
            sg = bld.node("Sigmoid", [gate])[0]
            act = bld.node("Mul", [bld.node("Mul", [gate, sg])[0], up])[0]
            pending = bld.linear(act, L + "ffn_down", [w[L + "ffn_down"]], c.ffn)
        gf = bld.init("output_norm", w["output_norm"])
        if hi < c.n_layers:
            bld.node("Identity", [pending], ["pending_out"])
            bld.node("Identity", [resid], ["resid_out"])
            bld.node("SkipSimplifiedLayerNormalization", [pending, resid, gf], ["tap", "", "", ""],
                     domain="com.microsoft", epsilon=eps)
            for name in ("pending_out", "resid_out", "tap"):
                b.output(name, "float32", ["M", h])
        else:
            bld.node("SkipSimplifiedLayerNormalization", [pending, resid, gf], ["hidden", "", "", ""],
                     domain="com.microsoft", epsilon=eps)
            sel = bld.node("Gather", ["hidden", "rows"], axis=0)[0]
            head = w["token_embd"] if c.tied_embeddings else w["output"]
            logits = bld.linear(sel, "lm_head", [head], h)
            bld.node("Identity", [logits], ["logits"])
            b.output("logits", "float32", ["R", c.vocab_size])
            b.output("hidden", "float32", ["M", h])
        for i in range(lo, hi):
            b.output(f"present_key_{i}", "float32", kv_shape)
            b.output(f"present_value_{i}", "float32", kv_shape)
        return b.to_bytes(), bld.external

    def _outputs(self, m: int, r: int):
        key = (m, r)
        if key not in self._out_bufs:
            if len(self._out_bufs) > 64:
                self._out_bufs.clear()
            lg = np.empty((r, self.cfg.vocab_size), np.float32)
            hd = np.empty((m, self.cfg.hidden), np.float32)
            self._out_bufs[key] = (lg, hd, self.ort.OrtValue.ortvalue_from_numpy(lg),
                                   self.ort.OrtValue.ortvalue_from_numpy(hd))
        return self._out_bufs[key]

    def _bind_attention(self, io, m: int, pad: int, L: int, pos: np.ndarray, mask: np.ndarray | None) -> None:
        t = L + m + pad
        bias = np.zeros((1, 1, m + pad, t), np.float32)
        if mask is not None:
            bias[0, 0, :m, L:L + m] = np.where(mask, np.float32(0), NEG_INF)
        if pad:
            bias[0, 0, :m, t - 1] = NEG_INF
            pos = np.concatenate([pos, pos[-1:]])
        io.bind_cpu_input("position_ids", pos.reshape(1, m + pad))
        io.bind_cpu_input("seqlens_k", np.array([t - 1], np.int32))
        io.bind_cpu_input("total_len", np.array(t, np.int32))
        io.bind_cpu_input("attn_bias", bias)

    def _begin(self, inp: StepInput):
        cache = self.cache
        L = cache.length
        ids, pos, mask, rows = inp.resolved(L)
        m = ids.size
        if m == 0:
            raise InputError("a decoder step needs at least one token")
        if ids.min() < 0 or ids.max() >= self.cfg.vocab_size:
            raise InputError(f"token id out of range 0..{self.cfg.vocab_size - 1}")
        pad = 1 if self.opts.pad_attention else 0
        cache.check_room(m + pad)
        cache.begin(m)
        embeds = self._embd.dequantize(ids) if isinstance(self._embd, BlockQuant) else \
            np.asarray(self._embd[ids], np.float32)
        return L, ids, pos, mask, rows, m, pad, np.ascontiguousarray(embeds, np.float32)

    def _last(self, part, L: int, m: int, pad: int, pos, mask, rows, feeds: dict[str, np.ndarray]) -> StepOutput:
        """A session ending in the lm head: logits for `rows`, hidden states for all m rows."""
        session, io, _ = part
        for name, arr in feeds.items():
            io.bind_cpu_input(name, arr)
        self._bind_attention(io, m, pad, L, pos, mask)
        io.bind_cpu_input("rows", rows)
        lg, hd, lg_v, hd_v = self._outputs(m, rows.size)
        io.bind_ortvalue_output("logits", lg_v)
        io.bind_ortvalue_output("hidden", hd_v)
        session.run_with_iobinding(io)
        return StepOutput(lg.copy(), hd.copy())

    def run(self, inp: StepInput) -> StepOutput:
        L, ids, pos, mask, rows, m, pad, embeds = self._begin(inp)
        return self._last(self._parts[0], L, m, pad, pos, mask, rows, {"embeds": embeds})

    # -- split step (ProPD early pruning) -------------------------------------------------------
    def run_early(self, inp: StepInput) -> "EarlyState":
        """Layers 0..split_after for every node; returns what run_late needs and `tap`, the
        final-normed residual stream after layer split_after (the early-exit head's input)."""
        if self.split_after is None:
            raise InputError("run_early needs OrtStepOptions.split_after")
        L, ids, pos, mask, rows, m, pad, embeds = self._begin(inp)
        session, io, _ = self._parts[1]
        io.bind_cpu_input("embeds", embeds)
        self._bind_attention(io, m, pad, L, pos, mask)
        outs = {}
        for name in ("pending_out", "resid_out", "tap"):
            a = np.empty((m, self.cfg.hidden), np.float32)
            io.bind_ortvalue_output(name, self.ort.OrtValue.ortvalue_from_numpy(a))
            outs[name] = a
        session.run_with_iobinding(io)
        return EarlyState(L, m, pad, pos, mask, rows, outs["pending_out"], outs["resid_out"], outs["tap"])

    def run_late(self, st: "EarlyState", keep: np.ndarray | None = None, rows: np.ndarray | None = None
                 ) -> StepOutput:
        """The remaining layers for the nodes `keep` (increasing indices into the step's nodes from
        0; None = all).  The kept nodes' late-layer K/V go to consecutive slots from the cache length
        (KvCache.commit's `late`).  rows: logits rows as indices into the kept nodes (None: the
        StepInput's rows when nothing was dropped, else every kept node)."""
        if keep is None:
            keep = np.arange(st.m)
        keep = np.asarray(keep, np.int64)
        if keep.size == 0 or keep[0] != 0 or (np.diff(keep) <= 0).any() or keep[-1] >= st.m:
            raise ValueError(f"keep {keep.tolist()} must be increasing node indices from 0 below {st.m}")
        m = keep.size
        full = m == st.m
        pos = st.pos if full else st.pos[keep]
        mask = st.mask if (full or st.mask is None) else st.mask[np.ix_(keep, keep)]
        if rows is None:
            rows = st.rows if full else np.arange(m, dtype=np.int64)
        rows = np.asarray(rows, np.int64)
        if rows.size and rows.max() >= m:
            raise ValueError(f"logits rows {rows.tolist()} beyond the {m} kept nodes")
        feeds = {"pending_in": st.pending if full else np.ascontiguousarray(st.pending[keep]),
                 "resid_in": st.resid if full else np.ascontiguousarray(st.resid[keep])}
        return self._last(self._parts[2], st.length, m, st.pad, pos, mask, rows, feeds)


@dataclass
class EarlyState:
    """What OrtStep.run_early leaves for run_late."""
    length: int                       # the cache length when the step began
    m: int
    pad: int
    pos: np.ndarray
    mask: np.ndarray | None
    rows: np.ndarray
    pending: np.ndarray               # [m, hidden] the two addends of the residual stream
    resid: np.ndarray
    tap: np.ndarray                   # [m, hidden] final-normed residual stream after split_after

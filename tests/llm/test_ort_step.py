"""The ORT decoder step against the numpy oracle on tiny GGUF-converted models: every quant type,
prefill vs token-by-token, token trees (positions + mask), commit of an accepted path."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("gguf")

from converters.gguf.convert import GgufConvertOptions, convert_gguf  # noqa: E402
from edgert.llm.cache import KvCache  # noqa: E402
from edgert.llm.numpy_step import NumpyStep  # noqa: E402
from edgert.llm.ort_step import OrtStep, OrtStepOptions  # noqa: E402
from edgert.llm.step import StepInput  # noqa: E402
from edgert.llm.weights import read_llm  # noqa: E402
from tests.llm.tiny_gguf import write_tiny_llama_gguf  # noqa: E402


def _pkg(tmp_path, qtype="Q4_1", wbits=None, group=32, zero_mode="int", embed_bits=None, **kw):
    src = write_tiny_llama_gguf(tmp_path / f"tiny-{qtype}.gguf", qtype=qtype, **kw)
    out = tmp_path / f"tiny-{qtype}-{wbits}-{zero_mode}.pkg"
    convert_gguf(src, out, GgufConvertOptions(wbits=wbits, group_size=group, zero_mode=zero_mode,
                                              embed_bits=embed_bits))
    return read_llm(out)


def _pair(w, accuracy_level=1, max_seq=64, fuse=True):
    c = w.config
    ca = KvCache(c.n_layers, c.n_kv_heads, c.head_dim, max_seq)
    cb = KvCache(c.n_layers, c.n_kv_heads, c.head_dim, max_seq)
    return NumpyStep(w, ca), OrtStep(w, cb, OrtStepOptions(threads=1, accuracy_level=accuracy_level, fuse=fuse))


def _close(a, b, rtol=2e-4):
    scale = max(1.0, float(np.abs(a).max()))
    np.testing.assert_allclose(a, b, atol=rtol * scale, rtol=0)


@pytest.mark.parametrize("qtype,wbits", [("Q4_1", None), ("Q4_0", None), ("Q8_0", None), ("F16", None),
                                         ("F32", None), ("Q4_1", 3), ("Q4_1", 2), ("Q4_1", 5),
                                         ("Q6_K", 4), ("Q4_1", "3f"), ("Q8_0", "2f")])
def test_prefill_and_decode_match_the_oracle(tmp_path, qtype, wbits):
    """"Nf": requantized to N bits with an fp16 group minimum (and the embedding too, at 5 bits)."""
    shape = dict(hidden=256, ffn=512) if qtype.endswith("_K") else {}    # K-quants: 256-weight blocks
    fmin = isinstance(wbits, str)
    w = _pkg(tmp_path, qtype, int(wbits[0]) if fmin else wbits, zero_mode="float" if fmin else "int",
             embed_bits=5 if fmin else None, **shape)
    ref, ort = _pair(w)
    ids = np.array([5, 17, 200, 33, 41, 90, 7], np.int64)
    a, b = ref.run(StepInput(ids)), ort.run(StepInput(ids))
    _close(a.logits, b.logits)
    _close(a.hidden, b.hidden)
    ref.cache.commit(), ort.cache.commit()
    for t in (3, 99, 150):
        a, b = ref.run(StepInput(np.array([t]))), ort.run(StepInput(np.array([t])))
        _close(a.logits, b.logits)
        ref.cache.commit(), ort.cache.commit()
    np.testing.assert_allclose(ref.cache.k[1][:, :, :10], ort.cache.k[1][:, :, :10], atol=1e-4)
    np.testing.assert_allclose(ref.cache.v[0][:, :, :10], ort.cache.v[0][:, :, :10], atol=1e-4)


def test_unfused_graph_matches_fused(tmp_path):
    w = _pkg(tmp_path)
    _, fused = _pair(w)
    _, plain = _pair(w, fuse=False)
    ids = np.array([1, 2, 3, 4], np.int64)
    _close(fused.run(StepInput(ids)).logits, plain.run(StepInput(ids)).logits, rtol=1e-5)


def test_int8_activation_path_stays_close(tmp_path):
    """accuracy_level 4 (int8 activations, the fast path) is not exact: it must stay near the oracle."""
    w = _pkg(tmp_path)
    ref, ort = _pair(w, accuracy_level=4)
    ids = np.arange(10, 30, dtype=np.int64)
    a, b = ref.run(StepInput(ids)).logits, ort.run(StepInput(ids)).logits
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cos.min() > 0.99


def test_token_tree_and_commit(tmp_path):
    """Prefix p; tree a -> {b1, b2}, b1 -> c.  Each node's logits equal those of its root-to-node
    chain; committing the path [a, b2] leaves the cache as if [a, b2] had been decoded."""
    w = _pkg(tmp_path)
    ref, ort = _pair(w)
    prefix = np.array([3, 8, 13, 21], np.int64)
    a, b1, b2, c = 40, 41, 42, 43
    tree_ids = np.array([a, b1, b2, c])
    parent = [-1, 0, 0, 1]
    depth = np.array([0, 1, 1, 2])
    mask = np.eye(4, dtype=bool)
    for i, p in enumerate(parent):
        while p >= 0:
            mask[i, p] = True
            p = parent[p]
    for step in (ref, ort):
        step.run(StepInput(prefix))
        step.cache.commit()
    L = prefix.size
    tree = {s.name: s.run(StepInput(tree_ids, positions=L + depth, mask=mask)).logits for s in (ref, ort)}
    _close(tree["numpy"], tree["ort"])
    # chain oracle: each root-to-node path decoded plainly from the same prefix
    for node, path in {1: [a, b1], 2: [a, b2], 3: [a, b1, c]}.items():
        ref.cache.truncate(L)
        chain = ref.run(StepInput(np.array(path))).logits[-1]
        _close(chain, tree["ort"][node])
    # accept [a, b2]: both backends commit, then decode one more token
    for s in (ref, ort):
        s.cache.truncate(L)
    ref.run(StepInput(np.array([a, b2])))
    ref.cache.commit()
    ort.run(StepInput(tree_ids, positions=L + depth, mask=mask))
    ort.cache.commit([0, 2])
    assert ort.cache.length == ref.cache.length == L + 2
    nxt = np.array([77])
    _close(ref.run(StepInput(nxt)).logits, ort.run(StepInput(nxt)).logits)


def test_logits_rows_and_context_limit(tmp_path):
    from edgert.errors import InputError

    w = _pkg(tmp_path)
    ref, ort = _pair(w, max_seq=8)
    ids = np.arange(1, 7, dtype=np.int64)
    full = ref.run(StepInput(ids)).logits
    sel = ort.run(StepInput(ids, logits_rows=np.array([5, 2]))).logits
    _close(full[[5, 2]], sel)
    ort.cache.commit()
    with pytest.raises(InputError, match="context full"):
        ort.run(StepInput(np.arange(1, 4, dtype=np.int64)))


def test_padded_attention_makes_rows_independent_of_m(tmp_path):
    """int8 activations: a chain step's rows equal the same tokens decoded one at a time, bit for bit
    (without the pad, GroupQueryAttention's one-token kernel sums in another order and the int8
    rounding after it turns ~1e-7 into visible logit differences)."""
    w = _pkg(tmp_path)
    c = w.config
    cache = KvCache(c.n_layers, c.n_kv_heads, c.head_dim, 64)
    st = OrtStep(w, cache, OrtStepOptions(threads=1, accuracy_level=4, pad_attention=True))
    st.run(StepInput(np.array([3, 8, 13, 21, 34]))); cache.commit()
    chain = np.array([40, 41, 42, 43])
    together = st.run(StepInput(chain)).logits
    one_by_one = []
    for t in chain:
        one_by_one.append(st.run(StepInput(np.array([t]))).logits[0])
        cache.commit()
    np.testing.assert_array_equal(together, np.array(one_by_one))

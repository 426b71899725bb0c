"""convert_gguf: GGUF -> LLM package -> read_llm.  Lossless conversions read back bit for bit equal
to gguf.quants.dequantize of the source; requantized ones at every width; hashes and signatures."""
from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest
from gguf import GGUFReader

from converters.gguf import GgufConvertOptions, convert_gguf, read_gguf
from converters.gguf.quants import dequantize
from edgert.llm.config import BlockQuantSpec, FloatSpec
from edgert.llm.weights import BlockQuant, read_llm
from edgert.package import ReadOptions, read_package


def source_values(src) -> dict[str, np.ndarray]:
    """role -> float32 values of the source tensor, dequantized by gguf.quants."""
    g = read_gguf(src)
    return {name[:-len(".weight")]: dequantize(t.data, t.type_name, t.shape) for name, t in g.tensors.items()}


def read_values(pkg) -> dict[str, np.ndarray]:
    w = read_llm(pkg)
    return {role: w.matrix(role) for role in w.tensors}


@pytest.mark.parametrize("qtype,embd", [("Q4_1", "Q8_0"), ("Q4_0", "Q4_0"), ("Q8_0", "Q8_0"),
                                        ("F16", "F16"), ("F32", "F32"), ("Q4_1", "Q4_1")])
def test_lossless_conversion_is_bit_exact(tiny_gguf, tmp_path, qtype, embd):
    src = tiny_gguf(qtype, embd_type=embd)
    out = tmp_path / "m.pkg"
    report = convert_gguf(src, out)
    assert report.size_bytes == out.stat().st_size
    assert all(s.codec == "none" for s in report.sections)          # codes stay mappable
    ref, got = source_values(src), read_values(out)
    assert set(ref) == set(got)
    for role in ref:
        assert got[role].dtype == np.float32 and np.array_equal(got[role], ref[role]), role

    w = read_llm(out, verify_hashes=True)
    cfg = w.config
    assert (cfg.arch, cfg.n_layers, cfg.hidden, cfg.ffn, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim) == \
        ("llama", 2, 64, 128, 4, 2, 16)
    assert (cfg.vocab_size, cfg.context_length, cfg.rope_dim, cfg.tied_embeddings) == (300, 256, 16, True)
    assert (cfg.bos_id, cfg.eos_id, cfg.eog_ids, cfg.add_bos) == (1, 2, [0, 2], False)
    assert cfg.rms_eps == pytest.approx(1e-5) and cfg.rope_base == 10000.0
    assert cfg.source["file"] == src.name and len(cfg.source["sha256"]) == 64
    assert "<|im_start|>" in w.chat_template
    spec = cfg.weights["blk.0.attn_q"]
    if qtype in ("F16", "F32"):
        assert isinstance(spec, FloatSpec) and spec.shape == [64, 64]
    else:
        assert isinstance(spec, BlockQuantSpec) and spec.source_type == qtype and spec.block == 32
        assert isinstance(w["blk.0.attn_q"], BlockQuant)
    assert isinstance(cfg.weights["blk.0.attn_norm"], FloatSpec)
    layers = read_package(out).graphs["llm"].layers
    assert len(layers) == 1 + 2 * 7 and all(L.extra["lossless"] for L in layers)


def test_q4_codes_are_matmulnbits_layout(tiny_gguf, tmp_path):
    """At 4 bits the stored stream holds code 2i in the low nibble of byte i (natural order)."""
    src = tiny_gguf("Q4_1")
    out = tmp_path / "m.pkg"
    convert_gguf(src, out)
    q = read_llm(out)["blk.0.ffn_up"]
    assert q.bits == 4 and q.packed.size == q.rows * q.cols // 2
    codes = q.codes()
    assert np.array_equal(q.packed & 0x0F, codes.reshape(-1)[0::2])
    assert np.array_equal(q.packed >> 4, codes.reshape(-1)[1::2])
    g = GGUFReader(str(src))
    raw = next(t for t in g.tensors if t.name == "blk.0.ffn_up.weight").data     # [rows, blocks * 20]
    first = raw[0, 4:20]                 # row 0, block 0: weight j low nibble, j + 16 high nibble
    assert np.array_equal(codes[0, :16], first & 0x0F) and np.array_equal(codes[0, 16:32], first >> 4)


def test_untied_output(tiny_gguf, tmp_path):
    src = tiny_gguf("Q8_0", tied=False)
    out = tmp_path / "m.pkg"
    convert_gguf(src, out)
    w = read_llm(out)
    assert not w.config.tied_embeddings and "output" in w.tensors
    assert np.array_equal(w.matrix("output"), source_values(src)["output"])


@pytest.mark.parametrize("bits", range(1, 9))
def test_requantized_conversion_reads_back(tiny_gguf, tmp_path, bits):
    src = tiny_gguf("Q4_1")
    out = tmp_path / "m.pkg"
    convert_gguf(src, out, GgufConvertOptions(wbits=bits, group_size=32))
    ref, w = source_values(src), read_llm(out)
    assert np.array_equal(w.matrix("token_embd"), ref["token_embd"])      # embeddings stay lossless
    assert w.config.source["wbits"] == bits
    for role in ("blk.0.attn_q", "blk.1.ffn_down"):
        q = w[role]
        assert isinstance(q, BlockQuant) and q.bits == bits and q.block == 32 and q.source_type == "requant"
        assert isinstance(q.zero, np.ndarray) and int(q.zero.max()) < 1 << bits
        assert int(q.codes().max()) < 1 << bits
    layers = {L.name: L for L in read_package(out).graphs["llm"].layers}
    sq = layers["blk.0.attn_q"].sqnr_db
    assert layers["blk.0.attn_q"].wbits == bits and sq is not None
    want = ref["blk.0.attn_q"].astype(np.float64)
    err = w.matrix("blk.0.attn_q") - want
    measured = 10 * np.log10(np.sum(want ** 2) / np.sum(err ** 2))
    assert sq == pytest.approx(measured, abs=0.02)
    assert sq > 5.5 * bits - 4                           # ~6 dB a bit


def test_embed_bits_and_group_size(tiny_gguf, tmp_path):
    src = tiny_gguf("Q8_0")
    out = tmp_path / "m.pkg"
    convert_gguf(src, out, GgufConvertOptions(wbits=4, group_size=64, embed_bits=6))
    w = read_llm(out)
    e, q = w["token_embd"], w["blk.0.attn_q"]
    assert (e.bits, e.block, q.bits, q.block) == (6, 64, 4, 64)


def test_q6_k_is_requantized_with_wbits(tiny_gguf, tmp_path):
    src = tiny_gguf("Q6_K", hidden=256, ffn=512, embd_type="Q6_K")
    out = tmp_path / "m.pkg"
    convert_gguf(src, out, GgufConvertOptions(wbits=4))
    w = read_llm(out)
    ref = source_values(src)
    assert w["token_embd"].bits == 8                  # not repackable: 8-bit fallback for the embedding
    for role in ("token_embd", "blk.0.attn_q"):
        err = w.matrix(role) - ref[role]
        assert np.sqrt(np.mean(err ** 2)) < 0.1 * np.sqrt(np.mean(ref[role] ** 2)), role


def test_zstd_and_signature(tiny_gguf, tmp_path):
    from edgert.package.signing import generate_keypair

    private, public = generate_keypair()
    src = tiny_gguf("Q4_0")
    out = tmp_path / "m.pkg"
    report = convert_gguf(src, out, GgufConvertOptions(compress="zstd", signing_key=private))
    assert report.signed and {s.codec for s in report.sections} == {"zstd"}
    w = read_llm(out, require_signature=True, public_key=public)
    assert np.array_equal(w.matrix("blk.1.attn_v"), source_values(src)["blk.1.attn_v"])


def test_package_hashes_verify(tiny_gguf, tmp_path):
    out = tmp_path / "m.pkg"
    convert_gguf(tiny_gguf("Q4_1"), out)
    pkg = read_package(out, ReadOptions(verify_hashes=True, decode_packed=False))
    assert "llm" in pkg.graphs
    data = bytearray(out.read_bytes())
    data[len(data) // 2] ^= 0xFF                         # somewhere in the weights
    bad = tmp_path / "bad.pkg"
    bad.write_bytes(bytes(data))
    from edgert.errors import PackageError
    with pytest.raises(PackageError):
        read_llm(bad, verify_hashes=True)


def test_reader_agrees_with_gguf_reader(tiny_gguf):
    for qtype in ("Q4_1", "F16"):
        check_against_gguf_reader(tiny_gguf(qtype))


def check_against_gguf_reader(path) -> None:
    ours, ref = read_gguf(path), GGUFReader(str(path))
    assert list(ours.tensors) == [t.name for t in ref.tensors]
    for t in ref.tensors:
        o = ours.tensors[t.name]
        assert o.type_name == t.tensor_type.name and o.offset == t.data_offset
        assert o.shape == tuple(reversed([int(d) for d in t.shape]))
        assert np.array_equal(o.data, np.asarray(t.data).reshape(-1).view(np.uint8))
    for key, field in ref.fields.items():
        if key.startswith("GGUF."):
            continue
        v = ours.metadata[key]
        want = field.contents()
        assert (v.tolist() if isinstance(v, np.ndarray) else v) == want, key


def test_runtime_does_not_import_gguf(tiny_gguf, tmp_path):
    out = tmp_path / "m.pkg"
    convert_gguf(tiny_gguf("Q4_1"), out)
    code = ("import sys, edgert, edgert.cli; from edgert.llm.weights import read_llm; "
            f"w = read_llm({str(out)!r}); w.matrix('blk.0.attn_q'); "
            "bad = [m for m in ('gguf', 'converters', 'tokenizers') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


# -- the real model ----------------------------------------------------------------------------------
@pytest.mark.slow
def test_smollm2_lossless(smollm2_gguf, tmp_path):
    out = tmp_path / "smollm2.pkg"
    report = convert_gguf(smollm2_gguf, out)
    gguf_bytes = smollm2_gguf.stat().st_size
    assert abs(report.size_bytes - gguf_bytes) < 0.005 * gguf_bytes      # same bits, repacked
    ref, w = source_values(smollm2_gguf), read_llm(out)
    assert set(ref) == set(w.tensors)
    for role in ref:
        assert np.array_equal(w.matrix(role), ref[role]), role
    cfg = w.config
    assert (cfg.n_layers, cfg.hidden, cfg.ffn, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, cfg.vocab_size) == \
        (30, 576, 1536, 9, 3, 64, 49152)
    assert (cfg.rope_base, cfg.bos_id, cfg.eos_id, cfg.eog_ids, cfg.tied_embeddings) == \
        (100000.0, 1, 2, [0, 2], True)
    assert cfg.source["gguf_types"] == {"Q8_0": 1, "F32": 61, "Q4_1": 210}
    check_against_gguf_reader(smollm2_gguf)


@pytest.mark.slow
def test_smollm2_requantized(smollm2_gguf, tmp_path):
    out = tmp_path / "smollm2-w4.pkg"
    t0 = time.perf_counter()
    convert_gguf(smollm2_gguf, out, GgufConvertOptions(wbits=4, group_size=32))
    seconds = time.perf_counter() - t0
    assert seconds < 120, f"requantizing SmolLM2-135M took {seconds:.0f} s"
    layers = [L for L in read_package(out).graphs["llm"].layers if L.name != "token_embd"]
    assert len(layers) == 30 * 7
    # re-rounding Q4_1 values onto a new 4-bit grid: ~20 dB (a fresh Q4 of float weights is ~20 dB too)
    assert min(L.sqnr_db for L in layers) > 15

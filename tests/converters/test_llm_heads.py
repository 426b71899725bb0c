"""Draft heads: self-distillation data, JAX training, storage in the package, the numpy runtime side."""
from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("jax")
pytest.importorskip("optax")
pytest.importorskip("gguf.constants")
pytest.importorskip("tokenizers")

from edgert import format as F  # noqa: E402
from edgert.errors import PackageError  # noqa: E402
from edgert.llm.heads import HEADS_BIN_SECTION, HEADS_SECTION, read_heads  # noqa: E402
from tests.llm.tiny_gguf import write_tiny_llama_gguf  # noqa: E402
from tests.package.pkg_helpers import Sec, assemble, parse, section_raw, with_section  # noqa: E402

N_HEADS = 3
# repetitive text: the model's greedy continuations are predictable from the hidden state
CORPUS = " ".join(["the cat sat on the mat and the dog ran in the park"] * 300)


def _tiny_pkg(folder, seed: int):
    from converters.gguf.convert import GgufConvertOptions, convert_gguf

    src = write_tiny_llama_gguf(folder / f"tiny{seed}.gguf", seed=seed)
    out = folder / f"tiny{seed}.pkg"
    convert_gguf(src, out, GgufConvertOptions())
    return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    import edgert
    from converters.llm_heads import DistillOptions, distill, split_corpus
    from converters.llm_heads.store import store_heads
    from converters.llm_heads.train import TrainOptions, train_heads

    folder = tmp_path_factory.mktemp("heads")
    pkg = _tiny_pkg(folder, 0)
    llm = edgert.load_llm(pkg, threads=1)
    train_text, held_text = split_corpus(CORPUS, 0.2)
    # corpus windows: the random tiny model's own greedy continuations fall into loops that even
    # untrained heads predict, so training could not show an improvement on them
    opts = DistillOptions(n_heads=N_HEADS, window=64, source="corpus")
    train = distill(llm, train_text, opts)
    held = distill(llm, held_text, opts)
    emb = llm.weights.matrix("token_embd")
    llm.close()
    heads, report = train_heads(train, emb, TrainOptions(steps=60, batch=32, lr=3e-3, seed=0), heldout=held)
    out = folder / "tiny-spec.pkg"
    store_heads(pkg, out, heads, report.to_json())
    return {"pkg": pkg, "out": out, "heads": heads, "report": report, "held": held, "emb": emb,
            "train": train, "folder": folder}


def test_distill_targets_are_the_models_greedy_tokens(trained):
    t = trained["train"]
    assert t.hidden.dtype == np.float32 and t.targets.shape == (t.n, N_HEADS)
    # within a window, head 1's target at t is the greedy next token at t+1
    per = t.meta["window"] - N_HEADS
    np.testing.assert_array_equal(t.targets[:per - 1, 0], t.next_greedy[1:per])


def test_distill_from_the_models_own_continuations(trained):
    """source "continue": rows are the model's own greedy text -- generating from the first prompt
    gives exactly the distilled next tokens -- and head k's target is k tokens further on."""
    import edgert
    from converters.llm_heads import DistillOptions, distill
    from edgert.llm.model import GenerateOptions

    llm = edgert.load_llm(trained["pkg"], threads=1)
    d = distill(llm, CORPUS[:4000], DistillOptions(n_heads=2, prompt_tokens=12, new_tokens=20, max_positions=90))
    prompt = llm.encode(CORPUS[:4000])[:12]
    cont = [x.id for x in llm.generate(prompt, options=GenerateOptions(max_tokens=8, stop_at_eog=False))
            if x.id >= 0]
    llm.close()
    per = 20 - 2
    assert d.meta["source"] == "continue" and d.n == 90 and d.windows == 5
    np.testing.assert_array_equal(cont, d.next_greedy[:8])
    np.testing.assert_array_equal(d.targets[:per - 1, 0], d.next_greedy[1:per])
    np.testing.assert_array_equal(d.targets[:per - 2, 1], d.next_greedy[2:per])


def test_training_reduces_loss_and_beats_chance_on_heldout(trained):
    rep = trained["report"]
    assert rep.loss_last < rep.loss_first - 0.5
    vocab = trained["emb"].shape[0]
    assert rep.heldout.n == trained["held"].n > 100
    assert min(rep.heldout.top1) > 10.0 / vocab                 # far above chance
    assert np.mean(rep.heldout.top1) > np.mean(rep.heldout_base.top1)   # and above the untrained heads
    assert all(a3 >= a1 for a1, a3 in zip(rep.heldout.top1, rep.heldout.top3))


def test_stored_heads_load_and_match_jax(trained):
    import jax.numpy as jnp

    import edgert
    from converters.llm_heads.train import forward

    llm = edgert.load_llm(trained["out"], threads=1)
    try:
        heads = read_heads(llm.weights)
        assert heads is not None and heads.n_heads == N_HEADS
        # int8 per-output-channel storage: each weight within half a step of the trained one
        w = trained["heads"]["w"]
        step = np.abs(w).max(axis=1, keepdims=True) / 127.0
        assert np.all(np.abs(heads.w - w) <= step * 0.5 + 1e-3 * step + 1e-7)
        np.testing.assert_array_equal(heads.b, trained["heads"]["b"])
        np.testing.assert_array_equal(heads.embedding, trained["emb"])
        rows = trained["held"].hidden[:16]
        lg = np.asarray(forward({"w": jnp.asarray(heads.w), "b": jnp.asarray(heads.b)}, jnp.asarray(rows),
                                jnp.asarray(heads.embedding)))
        for i, h in enumerate(rows):
            np.testing.assert_allclose(heads.logits(h), lg[i], rtol=1e-4, atol=1e-4)
            want = np.argsort(-lg[i], axis=1, kind="stable")[:, :3]
            np.testing.assert_array_equal(heads.topk(h, 3), want)
        # the model itself is untouched
        assert llm.generate("the cat", max_tokens=4) is not None
    finally:
        llm.close()
    assert read_heads(trained["out"]).n_heads == N_HEADS   # by path as well


def test_package_without_heads_gives_none(trained):
    assert read_heads(trained["pkg"]) is None


def _record(data: bytes) -> dict:
    return json.loads(section_raw(data, HEADS_SECTION))


@pytest.mark.parametrize("how", ["flip_json", "bad_offset", "short_bin", "wrong_k", "nan_scale"])
def test_corrupt_heads_section_is_a_package_error(trained, tmp_path, how):
    data = trained["out"].read_bytes()
    rec = _record(data)
    if how == "flip_json":
        raw = bytearray(section_raw(data, HEADS_SECTION))
        raw[0] ^= 0xFF
        bad = with_section(data, HEADS_SECTION, bytes(raw))
    elif how == "bad_offset":
        rec["tensors"][0]["offset"] = 1 << 30
        bad = with_section(data, HEADS_SECTION, json.dumps(rec).encode())
    elif how == "short_bin":
        bad = with_section(data, HEADS_BIN_SECTION, section_raw(data, HEADS_BIN_SECTION)[:-8])
    elif how == "wrong_k":
        rec["n_heads"] += 1
        bad = with_section(data, HEADS_SECTION, json.dumps(rec).encode())
    else:
        blob = bytearray(section_raw(data, HEADS_BIN_SECTION))
        off = next(t["offset"] for t in rec["tensors"] if t["name"] == "w_scale")
        blob[off:off + 2] = np.array([np.nan], np.float16).tobytes()
        bad = with_section(data, HEADS_BIN_SECTION, bytes(blob))
    path = tmp_path / "bad.pkg"
    path.write_bytes(bad)
    with pytest.raises(PackageError):
        read_heads(path)


def _mixed_pkg(trained, tmp_path):
    """Another model (same shapes, other weights) with the trained heads' sections spliced in."""
    other = _tiny_pkg(tmp_path, 1)
    _, secs, _ = parse(other.read_bytes())
    spec = trained["out"].read_bytes()
    for name in (HEADS_SECTION, HEADS_BIN_SECTION):
        raw = section_raw(spec, name)
        secs.append(Sec(name, F.SectionKind.EXTRA, F.Codec.NONE, len(raw), raw))
    path = tmp_path / "mixed.pkg"
    path.write_bytes(assemble(secs))
    return path


def test_heads_from_another_model_are_refused(trained, tmp_path):
    with pytest.raises(PackageError, match="another model"):
        read_heads(_mixed_pkg(trained, tmp_path))


def test_cli_train_heads(trained, tmp_path):
    from tests.cli_helpers import assert_one_line_error, invoke

    corpus = tmp_path / "corpus.txt"
    corpus.write_text(CORPUS, encoding="utf-8")
    out = tmp_path / "cli-spec.pkg"
    res = invoke("train-heads", trained["pkg"], "--corpus", corpus, "-o", out, "--heads", "2", "--steps", "5",
                 "--window", "64", "--json")
    assert res.exit_code == 0, res.output
    rep = json.loads(res.output)
    assert rep["steps"] == 5 and len(rep["heldout"]["top1"]) == 2
    assert read_heads(out).n_heads == 2
    res = invoke("train-heads", tmp_path / "missing.pkg", "--corpus", corpus, "-o", out)
    assert_one_line_error(res)


@pytest.mark.parametrize("backend", ["numpy", "ort"])
def test_tree_speculation_with_trained_heads_is_plain_greedy(trained, backend):
    """The package's own heads drive the trees (ORT heads session or the numpy oracle's), static
    trees so every step drafts: output token-identical to plain greedy, stats consistent."""
    import edgert

    llm = edgert.load_llm(trained["out"], backend=backend, max_seq=256, pad_attention=True)
    drafted = 0
    for prompt in ("the cat sat on the", "and the dog ran in", "the park the mat"):
        plain = [t.id for t in llm.generate(prompt, 32) if t.id >= 0]
        spec = [t.id for t in llm.generate(prompt, 32, speculate="tree", adaptive=False) if t.id >= 0]
        assert spec == plain, prompt
        st = llm.spec.stats
        assert len(st.tree_sizes) == st.steps and st.steps + sum(st.accepted_per_step) >= len(spec) - 1
        drafted += sum(n - 1 for n in st.tree_sizes)
    assert drafted > 0


def test_cli_tree_speculation_and_bad_heads(trained, tmp_path):
    from tests.cli_helpers import assert_one_line_error, invoke

    res = invoke("generate", trained["out"], "the cat sat on the", "--max-tokens", 16, "--speculate", "tree",
                 "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert {"accepted_per_step", "tree_sizes", "pruned_early", "mean_accepted"} <= set(out)
    plain = json.loads(invoke("generate", trained["out"], "the cat sat on the", "--max-tokens", 16,
                              "--json").output)
    assert out["tokens"] == plain["tokens"]
    res = invoke("bench-llm", trained["out"], "--speculate", "tree", "--new-tokens", 8, "--runs", 1,
                 "--prompt-tokens", 8, "--json")
    assert res.exit_code == 0, res.output
    sp = json.loads(res.output)["speculative"]
    assert sp["same_tokens_as_plain"] and sp["steps"] > 0 and "pruned_fraction" in sp
    # heads of another model, a corrupt heads section, no heads at all: one line, exit 2
    mixed = _mixed_pkg(trained, tmp_path)
    assert_one_line_error(invoke("generate", mixed, "x", "--speculate", "tree"), "another model")
    spec = trained["out"].read_bytes()
    rec = _record(spec)
    rec["tensors"][0]["offset"] = 1 << 30
    bad = tmp_path / "bad.pkg"
    bad.write_bytes(with_section(spec, HEADS_SECTION, json.dumps(rec).encode()))
    assert_one_line_error(invoke("generate", bad, "x", "--speculate", "tree"))
    assert_one_line_error(invoke("bench-llm", trained["pkg"], "--speculate", "tree"), "draft heads")


def test_early_exit_head_trains_stores_and_prunes(trained, tmp_path):
    """An early-exit head (ProPD) is trained on the tap after its layer, stored beside the draft
    heads, read back, and used: tree speculation with early pruning stays plain greedy."""
    from converters.llm_heads.early import train_early_exit
    from converters.llm_heads.store import store_heads
    from converters.llm_heads.train import TrainOptions
    from tests.cli_helpers import invoke

    early = train_early_exit(trained["pkg"], CORPUS[:6000], CORPUS[6000:9000], None, TrainOptions(steps=30),
                             window=64, positions=2048, threads=1)
    assert early["after_layer"] == 0 and set(early["report"]["heldout_recall"]) == {"1", "3", "5", "10"}
    out = tmp_path / "tiny-spec-ee.pkg"
    store_heads(trained["out"], out, None, early=early)
    assert read_heads(out).n_heads == N_HEADS                               # the draft heads kept
    ee = read_heads(out, kind="early_exit")
    assert ee.n_heads == 1 and ee.info["after_layer"] == 0
    np.testing.assert_allclose(ee.w, early["w"], atol=float(np.abs(early["w"]).max()) / 100 + 1e-7)
    for prompt in ("the cat sat on the", "and the dog ran in"):
        res = json.loads(invoke("generate", out, prompt, "--max-tokens", 24, "--speculate", "tree",
                                "--tree-size", "static", "--json").output)
        plain = json.loads(invoke("generate", out, prompt, "--max-tokens", 24, "--json").output)
        assert res["tokens"] == plain["tokens"] and res["early_pruning"] is True
        assert 0 <= res["pruned_early"] <= sum(n - 1 for n in res["tree_sizes"])
    res = json.loads(invoke("generate", out, "the cat sat on the", "--max-tokens", 8, "--speculate", "tree",
                            "--no-prune", "--json").output)
    assert res["early_pruning"] is False and res["pruned_early"] == 0

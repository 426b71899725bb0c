"""Structure-aware package fuzzing, shared by tests/package/test_manifest_fuzz.py (hypothesis, a few
hundred cases per CI run) and benchmarks/fuzz_packages.py (long campaigns in isolated workers).

A *target* is a seed file plus how to mutate and how to exercise it.  For model packages: parse the
manifest JSON, change one to three values (numbers into edge values, lists shortened / extended /
emptied, keys removed or added, strings swapped for other names of the same manifest), rebuild the
file with valid section hashes and body digest (so only the structural checks stand between the
mutant and the backends), then `edgert.load` on each backend and run one inference.

The outcome of a case is one of
  ok                 loaded and ran on the backend
  typed:<Error>      an EdgertError subclass (the promised failure mode)
  net:<Error>        an EdgertError raised by a safety net ("unexpected ..." in the message):
                     typed, but a check is missing before it — counted separately
  bug:<Exception>    anything else escaped (IndexError, MemoryError, ...)
The campaign adds `hang` and `died` from its worker isolation.
Byte-level mutation (flip / set / overwrite / truncate / insert, then rehash) is the second mode.
"""
from __future__ import annotations

import copy
import json
import math
import random
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import numpy as np

from pkg_helpers import manifest_of, rehash, with_manifest

# ---------------------------------------------------------------------------------------------
# Choice sources: a seeded Random for campaigns, hypothesis draws for tests
# ---------------------------------------------------------------------------------------------


class Chooser(Protocol):
    def integer(self, lo: int, hi: int) -> int: ...
    def choice(self, seq: Sequence[Any]) -> Any: ...


class RandomChooser:
    def __init__(self, seed: int):
        self.rng = random.Random(seed)

    def integer(self, lo: int, hi: int) -> int:
        return self.rng.randint(lo, hi)

    def choice(self, seq: Sequence[Any]) -> Any:
        return seq[self.rng.randrange(len(seq))]


class DrawChooser:
    """Adapts hypothesis' `data.draw` so shrinking works on the mutation choices."""

    def __init__(self, data):
        from hypothesis import strategies as st
        self.data, self.st = data, st

    def integer(self, lo: int, hi: int) -> int:
        return self.data.draw(self.st.integers(lo, hi))

    def choice(self, seq: Sequence[Any]) -> Any:
        return seq[self.data.draw(self.st.integers(0, len(seq) - 1))]


# ---------------------------------------------------------------------------------------------
# Manifest mutation
# ---------------------------------------------------------------------------------------------
EDGE_VALUES: tuple[Any, ...] = (
    -1, 0, 1, 2, 3, 7, 255, 256, 65535, (1 << 31) - 1, 1 << 31, 1 << 32, (1 << 63) - 1, 1 << 63,
    -(1 << 63), 1 << 64, 1e308, -1e308, 1e-308, 0.5, -0.0, 3.4e38, 1e39, math.nan, math.inf,
    "7", "", "float32", "int8", None, True, False, [], {}, [0], [1, 1], [-1],
)
# Regions of a graph record and how often a mutation lands in each (the rest of the manifest
# is mostly per-layer report and metadata, which no backend reads).
REGION_WEIGHTS: dict[str, int] = {
    "nodes": 45, "tensors": 12, "inputs": 8, "outputs": 6, "preprocess": 6, "layers": 3,
    "metadata": 2, "name": 1, "top": 3,
}
Path_ = tuple  # of str | int


def _walk(obj: Any, path: Path_ = ()) -> list[Path_]:
    out = [path]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _walk(v, path + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _walk(v, path + (i,))
    return out


def _get(obj: Any, path: Path_) -> Any:
    for p in path:
        obj = obj[p]
    return obj


def _set(obj: Any, path: Path_, value: Any) -> None:
    _get(obj, path[:-1])[path[-1]] = value


def _strings(obj: Any) -> list[str]:
    return sorted({v for p in _walk(obj) if isinstance(v := _get(obj, p), str)})


def _pick_path(m: dict, ch: Chooser) -> Path_:
    graphs = m.get("graphs") if isinstance(m, dict) else None
    regions = [r for r, w in REGION_WEIGHTS.items() for _ in range(w)]
    region = ch.choice(regions)
    if region != "top" and isinstance(graphs, list) and graphs and isinstance(graphs[0], dict):
        gi = ch.integer(0, len(graphs) - 1)
        g = graphs[gi]
        if isinstance(g, dict) and region in g:
            paths = _walk(g[region], ("graphs", gi, region))
            if region == "nodes" and ch.integer(0, 9) < 6:
                attrs = [p for p in paths if "attrs" in p[4:]]
                paths = attrs or paths
            return _leaf_biased(m, paths, ch)
    return _leaf_biased(m, _walk(m), ch)


def _leaf_biased(m: dict, paths: list[Path_], ch: Chooser) -> Path_:
    """Three picks in four land on a scalar (a value to change in place); the rest on a list or
    object (to shorten, extend, empty, drop a key, or replace whole)."""
    leaves = [p for p in paths if not isinstance(_get(m, p), (dict, list))]
    if leaves and ch.integer(0, 3):
        return ch.choice(leaves)
    return ch.choice(paths)


def mutate_manifest(m: dict, ch: Chooser, count: int | None = None) -> tuple[dict, list[str]]:
    """A mutated deep copy of manifest `m` and a description of each change."""
    m = copy.deepcopy(m)
    names = _strings(m)
    done: list[str] = []
    for _ in range(count if count is not None else ch.integer(1, 3)):
        path = _pick_path(m, ch)
        target = _get(m, path)
        where = "/".join(map(str, path)) or "<root>"
        if isinstance(target, list):
            kind = ch.choice(("list", "list", "list", "value"))
        elif isinstance(target, dict):
            kind = ch.choice(("key", "key", "key", "value"))
        elif isinstance(target, str):
            kind = ch.choice(("string", "string", "value"))
        else:
            kind = ch.choice(("value", "value", "neighbour"))
        if kind == "list" and isinstance(target, list):
            op = ch.choice(("shorten", "extend", "empty", "duplicate", "swap"))
            if op == "shorten" and target:
                del target[ch.integer(0, len(target) - 1)]
            elif op == "extend":
                target.append(ch.choice(EDGE_VALUES) if not target or ch.integer(0, 1)
                              else copy.deepcopy(ch.choice(target)))
            elif op == "empty":
                target.clear()
            elif op == "duplicate" and target:
                i = ch.integer(0, len(target) - 1)
                target.insert(i, copy.deepcopy(target[i]))
            elif op == "swap" and len(target) > 1:
                i, j = ch.integer(0, len(target) - 1), ch.integer(0, len(target) - 1)
                target[i], target[j] = target[j], target[i]
            done.append(f"{where}: list {op}")
        elif kind == "key" and isinstance(target, dict):
            op = ch.choice(("remove", "add"))
            if op == "remove" and target:
                key = ch.choice(sorted(target))
                del target[key]
                done.append(f"{where}: remove key {key!r}")
            else:
                key = ch.choice(("axis", "pads", "shape", "extra", "x", "value", "dtype", "nnz"))
                target[key] = ch.choice(EDGE_VALUES)
                done.append(f"{where}: add key {key!r}")
        elif not path:
            continue
        elif kind == "string" and isinstance(target, str):
            new = ch.choice(names + ["", "x" * 300, "Conv", "weights.9"])
            _set(m, path, new)
            done.append(f"{where}: {target!r} -> {new!r}")
        elif kind == "neighbour" and isinstance(target, (int, float)) and not isinstance(target, bool):
            new = ch.choice((target + 1, target - 1, target * 2, -target, target * 1000))
            _set(m, path, new)
            done.append(f"{where}: {target!r} -> {new!r}")
        else:
            new = ch.choice(EDGE_VALUES)
            _set(m, path, copy.deepcopy(new))
            done.append(f"{where}: {_short(target)} -> {new!r}")
    return m, done


def _short(v: Any) -> str:
    s = json.dumps(v, allow_nan=True)
    return s if len(s) <= 40 else s[:37] + "..."


def mutant_bytes(seed: bytes, manifest: dict) -> bytes:
    """The seed file with `manifest` in place of its own, every hash valid.  NaN / Infinity are
    written as the non-standard JSON tokens Python emits (the reader must reject them)."""
    return with_manifest(seed, json.dumps(manifest, allow_nan=True).encode())


def mutate_bytes(seed: bytes, ch: Chooser) -> tuple[bytes, list[str]]:
    """Byte-level mutation anywhere in the file, then every hash made right again."""
    data = bytearray(seed)
    done = []
    for _ in range(ch.integer(1, 4)):
        if not data:
            break
        kind = ch.choice(("flip", "set", "overwrite", "truncate", "insert"))
        pos = ch.integer(0, len(data) - 1)
        if kind == "flip":
            data[pos] ^= 1 << ch.integer(0, 7)
        elif kind == "set":
            data[pos] = ch.choice((0, 0xFF, 0x7F, 0x80, ord('"'), ord("9")))
        elif kind == "overwrite":
            chunk = bytes(ch.integer(0, 255) for _ in range(ch.integer(1, 16)))
            data[pos:pos + len(chunk)] = chunk
        elif kind == "truncate":
            del data[pos:]
        else:
            data[pos:pos] = bytes(ch.integer(0, 255) for _ in range(ch.integer(1, 16)))
        done.append(f"{kind}@{pos}")
    from edgert import format as F
    out = bytes(data)
    if len(out) >= F.HEADER_SIZE + F.FOOTER_SIZE:
        try:
            out = rehash(out)
        except Exception:          # noqa: BLE001 - a table too broken to rehash stays as it is
            pass
    return out, done


# ---------------------------------------------------------------------------------------------
# Exercising a mutant
# ---------------------------------------------------------------------------------------------
MAX_FEED_ELEMENTS = 1 << 22      # a feed larger than this is not built (the case stops at load)


@dataclass
class Outcome:
    backend: str
    kind: str                # ok | typed:X | net:X | bug:X (campaigns add hang / died)
    message: str = ""
    trace: str = ""

    @property
    def bad(self) -> bool:
        return not (self.kind == "ok" or self.kind.startswith("typed:"))


def make_feeds(sess, default_dims: dict[str, list[int]]) -> dict[str, np.ndarray] | None:
    """One input per graph input, from its declared shape; a named / unknown dim takes the seed's
    size at that position (`default_dims`, else 1).  None when the feed would be too large."""
    rng = np.random.default_rng(0)
    feeds = {}
    for vi in sess.inputs:
        dflt = default_dims.get(vi.name, [])
        shape = [d if isinstance(d, int) else (dflt[i] if i < len(dflt) else 1)
                 for i, d in enumerate(vi.shape)]
        if math.prod(shape) > MAX_FEED_ELEMENTS:
            return None
        dt = np.dtype(vi.dtype)
        if dt.kind == "f":
            arr = rng.standard_normal(shape).astype(dt)
        elif dt.kind == "b":
            arr = np.zeros(shape, dt)
        else:
            arr = np.ones(shape, dt)
        feeds[vi.name] = arr
    return feeds


def run_case(path: Path, backends: Sequence[str], default_dims: dict[str, list[int]],
             threads: int = 1) -> list[Outcome]:
    """Load `path` on each backend and run one inference; classify what happened."""
    import edgert
    from edgert.errors import EdgertError

    out = []
    for backend in backends:
        sess = None
        try:
            sess = edgert.load(path, backend=backend, threads=threads)
            feeds = make_feeds(sess, default_dims)
            if feeds is not None:
                sess.run(feeds)
            out.append(Outcome(backend, "ok"))
        except EdgertError as e:
            msg = str(e)
            kind = "net" if "(unexpected " in msg else "typed"
            out.append(Outcome(backend, f"{kind}:{type(e).__name__}", msg.splitlines()[0][:300]))
        except Exception as e:     # noqa: BLE001 - exactly what the fuzzer is looking for
            out.append(Outcome(backend, f"bug:{type(e).__name__}", str(e)[:300],
                               traceback.format_exc(limit=8)))
        finally:
            if sess is not None:
                sess.close()
    return out


def mutate_model_manifest(seed: bytes, ch: Chooser) -> tuple[bytes, list[str]]:
    m, done = mutate_manifest(manifest_of(seed), ch)
    return mutant_bytes(seed, m), done


def mutate_ocr_sections(seed: bytes, ch: Chooser) -> tuple[bytes, list[str]]:
    """The OCR bundle's EXTRA sections: its JSON config mutated by structure, or its character list
    (lines dropped, duplicated, emptied, replaced by long / odd strings, invalid UTF-8)."""
    from pkg_helpers import section_raw, with_section
    if ch.integer(0, 2):
        cfg = json.loads(section_raw(seed, "ocr/config"))
        m, done = mutate_manifest(cfg, ch)
        return with_section(seed, "ocr/config", json.dumps(m, allow_nan=True).encode()), \
            [f"ocr/config {d}" for d in done]
    keys = section_raw(seed, "ocr/keys").decode("utf-8").split("\n")
    op = ch.choice(("drop", "duplicate", "empty", "long", "bytes", "truncate"))
    raw: bytes
    if op == "drop" and keys:
        del keys[ch.integer(0, len(keys) - 1)]
    elif op == "duplicate" and keys:
        keys.insert(0, keys[ch.integer(0, len(keys) - 1)])
    elif op == "empty":
        keys = []
    elif op == "long":
        keys[ch.integer(0, len(keys) - 1)] = "x" * ch.choice((2, 300, 100000))
    elif op == "truncate":
        keys = keys[:ch.integer(0, len(keys))]
    raw = "\n".join(keys).encode("utf-8")
    if op == "bytes":
        raw = raw[:ch.integer(0, len(raw))] + b"\xff\xfe" + raw[:16]
    return with_section(seed, "ocr/keys", raw), [f"ocr/keys {op}"]


def run_ocr_case(path: Path) -> list[Outcome]:
    """Load an OCR bundle (ORT backend) and read one rendered text line."""
    from edgert.errors import EdgertError
    try:
        from edgert.ocr import load_ocr
        from converters.synthetic import render_text_line
        img = render_text_line(np.random.default_rng(0), height=48)
        img = np.ascontiguousarray(np.pad(img, ((40, 40), (40, 40), (0, 0)), constant_values=255))
        load_ocr(path, backend="ort", threads=1)(img)
        return [Outcome("ocr", "ok")]
    except EdgertError as e:
        msg = str(e)
        kind = "net" if "(unexpected " in msg else "typed"
        return [Outcome("ocr", f"{kind}:{type(e).__name__}", msg.splitlines()[0][:300])]
    except Exception as e:     # noqa: BLE001
        return [Outcome("ocr", f"bug:{type(e).__name__}", str(e)[:300], traceback.format_exc(limit=8))]


def mutate_llm(seed: bytes, ch: Chooser) -> tuple[bytes, list[str]]:
    """An LLM package: its manifest (the `llm` record: architecture numbers, weight table), its
    tokenizer JSON by structure, or its chat template (truncated, replaced by broken / hostile jinja)."""
    from pkg_helpers import section_raw, with_section
    which = ch.integer(0, 3)
    if which <= 1:
        return mutate_model_manifest(seed, ch)
    if which == 2:
        tok = json.loads(section_raw(seed, "llm/tokenizer"))
        m, done = mutate_manifest(tok, ch)
        return with_section(seed, "llm/tokenizer", json.dumps(m, allow_nan=True).encode()), \
            [f"llm/tokenizer {d}" for d in done]
    src = section_raw(seed, "llm/chat_template").decode("utf-8")
    op = ch.choice(("truncate", "unclosed", "loop", "attr", "bytes", "raise"))
    new = {"truncate": src[:ch.integer(0, len(src))], "unclosed": src + "{% for m in messages %}",
           "loop": "{% for i in range(10**9) %}x{% endfor %}",
           "attr": "{{ messages.__class__.__mro__[1].__subclasses__() }}",
           "raise": "{{ raise_exception('bad role') }}"}.get(op)
    raw = new.encode("utf-8") if new is not None else b"\xff\xfe{{"
    return with_section(seed, "llm/chat_template", raw), [f"llm/chat_template {op}"]


def run_llm_case(path: Path) -> list[Outcome]:
    """Load an LLM package on each backend, render a chat prompt, generate two tokens."""
    from edgert.errors import EdgertError
    out = []
    for backend in ("numpy", "ort"):
        try:
            from edgert.llm.model import LlmOptions, load_llm
            llm = load_llm(path, LlmOptions(backend=backend, threads=1, max_seq=64))
            try:
                prompt = llm.chat_prompt([{"role": "user", "content": "hi"}])
                list(llm.generate(prompt, 2, special=True))
            finally:
                llm.close()
            out.append(Outcome(backend, "ok"))
        except EdgertError as e:
            msg = str(e)
            kind = "net" if "(unexpected " in msg else "typed"
            out.append(Outcome(backend, f"{kind}:{type(e).__name__}", msg.splitlines()[0][:300]))
        except Exception as e:     # noqa: BLE001
            out.append(Outcome(backend, f"bug:{type(e).__name__}", str(e)[:300], traceback.format_exc(limit=8)))
    return out


MUTATORS: dict[str, Callable[[bytes, Chooser], tuple[bytes, list[str]]]] = {
    "manifest": mutate_model_manifest,
    "bytes": mutate_bytes,
    "ocr-sections": mutate_ocr_sections,
    "llm": mutate_llm,
}


@dataclass
class Target:
    """A seed to fuzz: its bytes, how to mutate it (a MUTATORS name) and how to exercise a mutant
    (`run(path) -> [Outcome]`; default: load + one inference on each backend).  Later formats plug
    in here: a mutator for their extra sections (tokenizer, draft heads, OCR dictionary) or for a
    GGUF header, and a runner that loads them (`edgert.load_llm`, the OCR pipeline)."""
    name: str
    seed: bytes
    default_dims: dict[str, list[int]]
    mode: str = "manifest"
    run: Callable[[Path], list[Outcome]] | None = None

    def mutant(self, ch: Chooser) -> tuple[bytes, list[str]]:
        return MUTATORS[self.mode](self.seed, ch)

    def exercise(self, path: Path, backends: Sequence[str] = ("numpy", "ort")) -> list[Outcome]:
        if self.run is not None:
            return self.run(path)
        return run_case(path, backends, self.default_dims)


def default_dims_of(seed_path: Path) -> dict[str, list[int]]:
    """Input dims for named / unknown dims: the preprocess size when recorded, else 1."""
    from edgert.package import read_package
    with read_package(seed_path) as pkg:
        g = pkg.graph()
        out = {}
        for vi in g.inputs:
            dims = [d if isinstance(d, int) else 1 for d in vi.shape]
            if g.preprocess is not None and g.preprocess.size and len(dims) == 4:
                h, w = g.preprocess.size
                hw = (1, 2) if g.preprocess.layout == "nhwc" else (2, 3)
                if not isinstance(vi.shape[hw[0]], int):
                    dims[hw[0]] = h
                if not isinstance(vi.shape[hw[1]], int):
                    dims[hw[1]] = w
            out[vi.name] = dims
        return out




# ---------------------------------------------------------------------------------------------
# Seeds
# ---------------------------------------------------------------------------------------------
def build_cls_seed(out_dir: Path, wbits: int = 6) -> Path:
    """The real PP-OCR mobile direction classifier (rapidocr-onnxruntime) at W{wbits}A8,
    calibrated on 4 rendered text lines: the seed the issue's hand campaign used."""
    import rapidocr_onnxruntime

    from converters.convert import convert
    from converters.options import ConvertOptions
    from converters.synthetic import write_calibration_folder
    from edgert.ir import Preprocess

    src = Path(rapidocr_onnxruntime.__file__).parent / "models" / "ch_ppocr_mobile_v2.0_cls_infer.onnx"
    out_dir.mkdir(parents=True, exist_ok=True)
    calib = out_dir / "calib"
    write_calibration_folder(calib, 4, seed=11, kind="line", size=(48, 192), height=48)
    out = out_dir / f"cls-w{wbits}.pkg"
    pp = Preprocess(size=(48, 192), mean=(0.5,) * 3, std=(0.5,) * 3, channels="bgr")
    convert(src, out, ConvertOptions(wbits=wbits, abits=8, calib_dir=calib, preprocess=pp,
                                     progress=False))
    return out


def build_tiny_seed(out_dir: Path) -> Path:
    """A hand-built graph with every weight encoding (packed 3-bit, fp16, bitmap, N:M)."""
    from converters.package_writer import WriteOptions, write_package
    from pkg_helpers import conv_graph

    out_dir.mkdir(parents=True, exist_ok=True)
    g = conv_graph(np.random.default_rng(0), channels=2, layers=1)
    out = out_dir / "tiny.pkg"
    write_package(out, [g], WriteOptions(compress="none"), extras={"ex": b"x" * 10})
    return out


def build_llm_seed(out_dir: Path) -> Path:
    """A tiny llama (2 layers, Q4_1 + Q8_0 embedding, ChatML template) converted from GGUF."""
    from converters.gguf.convert import convert_gguf
    from tests.llm.tiny_gguf import write_tiny_llama_gguf

    out_dir.mkdir(parents=True, exist_ok=True)
    src = write_tiny_llama_gguf(out_dir / "tiny-llm.gguf")
    out = out_dir / "tiny-llm.pkg"
    convert_gguf(src, out)
    return out

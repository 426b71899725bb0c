"""`convert_bev(src, out, options) -> BevConvertReport`: a BEV ONNX from `edgert bev train` -> one
quantized package whose graphs are the model's stage entries, which `edgert.bev.stages.load_stages`
runs.

The ONNX declares its stage entries in metadata ("edgert.bev.stages"); per variant the package gets
"<v>/backbone", "<v>/fuse" and "<v>/heads" (the ONNX's "backbone_cam" entry is left out: the
package's backbone takes any number of cameras, dim 0 is made symbolic as the runtime does for the
ONNX).  Each stage goes through the ordinary converter (`converters.convert.quantize_model`), and
calibration cascades through the float model, so every stage sees what it sees at run time:

    recording samples, in order --(edgert.bev.decode.preprocess)--> images: backbone calibration
    float backbone -> feat; cam_mask from the frames present;
    prev_bev = the float fuse output of the previous sample warped by the ego motion
               (edgert.bev.decode.warp_bev; zeros on the first sample, a gap or a pose jump)
    feat + cam_mask + prev_bev: fuse calibration;  float fuse -> bev: heads calibration

Only Conv layers carry quantized weights and int activations (QLinearConv at `abits`, the 6-bit
path narrows the int8 range).  The view transform (Reshape / Transpose / Gather / Mul / ReduceSum /
Slice / Max / Div), Resize and Sigmoid run in float between them.  The view transform's large
sampling-weight table (a float constant multiplied into the gathered features) would dominate the
package, so it is stored as `table_bits`-bit codes with a per-tensor scale and dequantized in the
graph (DequantizeLinear -> Mul); its int32 index table compresses to a few kB as it is.

The three metadata documents go into EXTRA sections bev/stages, bev/rig and bev/model
(edgert/bev/package.py).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from converters.convert import ConvertReport, QuantizeResult, check_supported, quantize_model
from converters.options import ConvertOptions
from edgert.bev import package as BP
from edgert.errors import CalibrationError, ConversionError, EdgertError, InputError
from edgert.ir import Graph, LayerInfo, Node, WeightEncoding

META_STAGES, META_RIG, META_MODEL = "edgert.bev.stages", "edgert.bev.rig", "edgert.bev.model"
TABLE_MIN_ELEMENTS = 4096      # float constants multiplied into activations from this size on are tables
_SQNR_CAP_DB = 120.0


@dataclass
class BevConvertOptions:
    wbits: int = 4
    abits: int | None = 6                      # None: weight-only everywhere
    stage_abits: dict[str, int | None] = field(default_factory=dict)   # "heads" or "full/heads" -> bits
    granularity: str = "channel"
    group_size: int = 128
    method: str = "auto"
    mixed_precision: str = "auto"              # see QuantizeOptions.mixed_precision
    small_layer_params: int = 10000
    layer_bits: dict[str, int] = field(default_factory=dict)
    keep_float: set[str] = field(default_factory=set)
    table_bits: int | None = 8                 # view-transform sampling weights; None = float32
    # calibration
    calib_dir: Path | None = None              # a recording (`edgert bev record`)
    calib_count: int = 32                      # consecutive samples from the start
    observer: str = "minmax"
    percentile: float = 99.99
    sqnr_batches: int = 2
    backend_for_calibration: str = "auto"
    # package
    variants: tuple[str, ...] | None = None    # None: every variant of the ONNX
    compress: str = "zstd"
    signing_key: bytes | None = None
    progress: bool = True
    log: Callable[[str], None] | None = None

    def convert_options(self, entry: str) -> ConvertOptions:
        stage = entry.split("/")[-1]
        abits = self.abits
        for key in (stage, entry):
            if key in self.stage_abits:
                abits = self.stage_abits[key]
        return ConvertOptions(
            wbits=self.wbits, abits=abits, granularity=self.granularity, group_size=self.group_size,
            method=self.method, mixed_precision=self.mixed_precision,
            small_layer_params=self.small_layer_params, layer_bits=dict(self.layer_bits),
            keep_float=set(self.keep_float), observer=self.observer, percentile=self.percentile,
            sqnr_batches=self.sqnr_batches, backend_for_calibration=self.backend_for_calibration,
            compress=self.compress, progress=self.progress)

    def validate(self) -> None:
        for key in self.stage_abits:
            if key.split("/")[-1] not in BP.STAGES:
                raise ConversionError(f"stage_abits key {key!r} names no stage ({', '.join(BP.STAGES)})")
        for entry in (f"x/{s}" for s in BP.STAGES):
            self.convert_options(entry).quantize_options()
        if self.table_bits is not None and not 2 <= self.table_bits <= 8:
            raise ConversionError(f"table_bits must be 2..8 or None, got {self.table_bits}")
        if self.calib_count < 1:
            raise ConversionError(f"calib_count must be >= 1, got {self.calib_count}")

    @property
    def needs_calibration(self) -> bool:
        return any(self.convert_options(f"x/{s}").abits is not None for s in BP.STAGES)


@dataclass
class BevConvertReport:
    src_path: Path
    out_path: Path
    source_bytes: int
    package_bytes: int
    stages: dict[str, ConvertReport]
    stage_sqnr_db: dict[str, dict[str, float]]     # entry -> output -> SQNR of the whole stage
    tables: list[LayerInfo]
    calib_samples: int = 0
    signed: bool = False
    total_s: float = 0.0

    @property
    def ratio(self) -> float:
        return self.source_bytes / self.package_bytes if self.package_bytes else 0.0

    def summary_lines(self) -> list[str]:
        out = [f"package {self.out_path}  {self.package_bytes:,} B  ({self.ratio:.2f}x smaller than the "
               f"{self.source_bytes:,} B ONNX){'  signed' if self.signed else ''}",
               f"calibration: {self.calib_samples} recording samples through the float cascade; "
               f"total {self.total_s:.1f} s"]
        for t in self.tables:
            out.append(f"  table {t.name}: {t.params:,} values at {t.wbits} bits (SQNR {t.sqnr_db} dB)")
        for name, r in self.stages.items():
            q = r.options
            bits = f"W{q.wbits}" + (f"A{q.abits}" if q.abits else " weight-only")
            sq = ", ".join(f"{o.split('/')[-1]} {v:.1f}" for o, v in self.stage_sqnr_db.get(name, {}).items())
            out.append(f"  {name}: {bits}  {r.source_bytes:,} B -> {r.package_bytes:,} B  "
                       f"stage SQNR dB: {sq or '-'}")
        return out

    def format_table(self) -> str:
        parts = []
        for name, r in self.stages.items():
            parts += [f"== {name} ==", r.format_table(), ""]
        return "\n".join(parts + self.summary_lines())

    def to_json(self) -> dict:
        return {"source": str(self.src_path), "package": str(self.out_path),
                "source_bytes": self.source_bytes, "package_bytes": self.package_bytes,
                "ratio": round(self.ratio, 3), "calib_samples": self.calib_samples, "signed": self.signed,
                "total_s": round(self.total_s, 3), "stage_sqnr_db": self.stage_sqnr_db,
                "tables": [{"name": t.name, "bits": t.wbits, "params": t.params, "sqnr_db": t.sqnr_db}
                           for t in self.tables],
                "stages": {n: r.to_json() for n, r in self.stages.items()}}


# -- the source -----------------------------------------------------------------------------------


def _load(src: Path):
    import onnx
    try:
        return onnx.load(str(src))
    except Exception as e:      # protobuf DecodeError, OSError, missing external data
        raise ConversionError(f"cannot parse ONNX model {src}: {type(e).__name__}: {e}") from None


def bev_metadata(model) -> dict[str, str] | None:
    """The three BEV metadata documents of an ONNX ModelProto, or None when it is no BEV export."""
    meta = {p.key: p.value for p in model.metadata_props}
    return {k: meta[k] for k in (META_STAGES, META_RIG, META_MODEL) if k in meta} if META_STAGES in meta else None


def is_bev_onnx(path: str | Path) -> bool:
    """True when `path` is an ONNX file with "edgert.bev.stages" metadata (`edgert convert` dispatch)."""
    try:
        import onnx
        m = onnx.load(str(path), load_external_data=False)
    except Exception:           # not ONNX at all: the ordinary converter names the problem
        return False
    return bev_metadata(m) is not None


def _documents(meta: dict[str, str], src: Path, variants: tuple[str, ...] | None):
    """(stage records kept in the package, rig, model info) with their checks."""
    from edgert.bev.rig import Rig
    missing = [k for k in (META_RIG, META_MODEL) if k not in meta]
    if missing:
        raise ConversionError(f"{src}: BEV metadata lacks {', '.join(missing)}; re-export with `edgert bev train`")
    try:
        specs = json.loads(meta[META_STAGES])
        rig = Rig.from_json(json.loads(meta[META_RIG]))
        info = json.loads(meta[META_MODEL])
        keep = [d for d in specs if d["stage"] in BP.STAGES]
        have = tuple(dict.fromkeys(d["variant"] for d in keep))
    except (json.JSONDecodeError, TypeError, KeyError, InputError) as e:
        raise ConversionError(f"{src}: corrupt BEV metadata ({type(e).__name__}: {e})") from None
    if variants is not None:
        unknown = [v for v in variants if v not in have]
        if unknown:
            raise ConversionError(f"{src} has no variant {', '.join(unknown)} (has {', '.join(have)})")
        keep = [d for d in keep if d["variant"] in variants]
    out = []
    for d in keep:
        out.append({"entry": str(d["entry"]), "variant": str(d["variant"]), "stage": str(d["stage"]),
                    "inputs": [str(x) for x in d["inputs"]], "outputs": [str(x) for x in d["outputs"]]})
    if not out:
        raise ConversionError(f"{src}: no backbone / fuse / heads stage entries in {META_STAGES}")
    return out, rig, info


def _stage_graph(model, spec: dict, src: Path) -> Graph:
    import onnx.utils

    from converters.onnx_import import ImportOptions, import_onnx
    from edgert.bev.stages import symbolic_batch
    try:
        sub = onnx.utils.Extractor(model).extract_model(spec["inputs"], spec["outputs"])
    except Exception as e:
        raise ConversionError(f"{src}: stage {spec['entry']} cannot be extracted ({e})") from None
    if spec["stage"] == "backbone":
        symbolic_batch(sub, [*spec["inputs"], *spec["outputs"]])
    g = import_onnx(sub, ImportOptions(name=spec["entry"]))
    check_supported(g)
    if [v.name for v in g.inputs] != spec["inputs"] or [v.name for v in g.outputs] != spec["outputs"]:
        raise ConversionError(f"{src}: stage {spec['entry']} imports as {[v.name for v in g.inputs]} -> "
                              f"{[v.name for v in g.outputs]}, declared {spec['inputs']} -> {spec['outputs']}")
    return g


# -- calibration cascade --------------------------------------------------------------------------


def _recording(calib_dir: Path, rig):
    from edgert.bev.recording import Recording
    try:
        rec = Recording(calib_dir)
    except InputError as e:
        raise CalibrationError(f"calibration data {calib_dir}: {e}") from None
    if rec.rig != rig:
        raise CalibrationError(f"calibration recording {calib_dir} comes from another rig calibration "
                               f"than the model's ({rec.rig.cameras[0].width}x{rec.rig.cameras[0].height} "
                               f"vs {rig.cameras[0].width}x{rig.cameras[0].height})")
    return rec


def _run(graph: Graph, backend: str) -> Callable[[dict], dict]:
    from converters.calibration import make_capture_runner
    _, run = make_capture_runner(graph, backend)
    return lambda feeds: run(feeds, set())


def _cascade(floats: dict[str, Graph], specs: list[dict], info: dict, rec, count: int, backend: str
             ) -> dict[str, list[dict[str, np.ndarray]]]:
    """Calibration feeds of every stage entry, from `count` consecutive samples run through the float
    stages as the runtime chains them."""
    from edgert.bev import decode as D
    from edgert.bev.recording import discontinuity
    from edgert.bev.rig import BevGrid

    h, w = int(info["image"]["height"]), int(info["image"]["width"])
    by = {(d["variant"], d["stage"]): d for d in specs}
    variants = list(dict.fromkeys(d["variant"] for d in specs))
    runs = {d["entry"]: _run(floats[d["entry"]], backend) for d in specs}
    feeds: dict[str, list[dict[str, np.ndarray]]] = {d["entry"]: [] for d in specs}
    prev: dict[str, tuple[np.ndarray, object]] = {}
    n = 0
    for smp in rec.samples(0, min(count, len(rec))):
        images, mask = D.preprocess(smp.frames, h, w)
        if not mask.any():
            continue
        reset = discontinuity(smp)
        n += 1
        for v in variants:
            bb, fu, hd = by[(v, "backbone")], by[(v, "fuse")], by[(v, "heads")]
            x = {bb["inputs"][0]: images[mask > 0]}      # as the runtime: only cameras with a frame
            feeds[bb["entry"]].append(x)
            got = runs[bb["entry"]](x)[bb["outputs"][0]]
            feat = np.zeros((len(mask), *got.shape[1:]), np.float32)
            feat[mask > 0] = got
            vg = info["variants"][v]["model_grid"]
            grid = BevGrid(int(vg["size"]), float(vg["cell_m"]))
            shape = (1, int(info["variants"][v]["bev_ch"]), grid.size, grid.size)
            if v in prev and not reset:
                pb = D.warp_bev(prev[v][0], grid, smp.pose.relative_to(prev[v][1])).astype(np.float32)
            else:
                pb = np.zeros(shape, np.float32)
            f = dict(zip(fu["inputs"], (feat, mask, pb)))
            feeds[fu["entry"]].append(f)
            bev = runs[fu["entry"]](f)[fu["outputs"][0]]
            prev[v] = (bev, smp.pose)
            feeds[hd["entry"]].append({hd["inputs"][0]: bev})
    if n == 0:
        raise CalibrationError(f"calibration recording {rec.path}: no sample with a readable frame "
                               f"among the first {count}")
    return feeds


# -- tables ---------------------------------------------------------------------------------------


def _sqnr(ref: np.ndarray, got: np.ndarray) -> float:
    sig = float(np.sum(np.square(ref, dtype=np.float64)))
    noise = float(np.sum(np.square(ref.astype(np.float64) - got)))
    if noise <= 0:
        return _SQNR_CAP_DB
    return float(min(_SQNR_CAP_DB, 10 * np.log10(sig / noise))) if sig > 0 else -_SQNR_CAP_DB


def quantize_tables(graph: Graph, bits: int) -> list[LayerInfo]:
    """Store each large float constant that a Mul multiplies into an activation as `bits`-bit
    asymmetric codes (per-tensor scale and zero point) behind a DequantizeLinear; returns one
    LayerInfo per table (SQNR of the dequantized table against the float one)."""
    out = []
    taken = set()
    for node in list(graph.nodes):
        if node.op != "Mul" or len(node.inputs) != 2:
            continue
        consts = [x for x in node.inputs if x in graph.initializers]
        if len(consts) != 1 or consts[0] in taken:
            continue
        name = consts[0]
        t = graph.initializers[name]
        if t.dtype != np.float32 or t.size < TABLE_MIN_ELEMENTS or not np.isfinite(t).all():
            continue
        if sum(name in n.inputs for n in graph.nodes) != 1:
            continue                                   # shared with another op: leave it
        lo, hi = min(float(t.min()), 0.0), max(float(t.max()), 0.0)
        qmax = (1 << bits) - 1
        scale = np.float32((hi - lo) / qmax if hi > lo else 1.0)
        zp = np.uint8(np.clip(round(-lo / float(scale)), 0, qmax))
        q = np.clip(np.round(t / scale) + int(zp), 0, qmax).astype(np.uint8)
        qn, sn, zn = f"{name}__q", f"{name}__scale", f"{name}__zp"
        graph.initializers.pop(name)
        graph.initializers.update({qn: q, sn: np.asarray(scale), zn: np.asarray(zp)})
        graph.encodings[qn] = WeightEncoding(bits=bits, scheme="asymmetric")
        graph.nodes.insert(graph.nodes.index(node), Node(op="DequantizeLinear", name=f"{name}__dq",
                                                         inputs=[qn, sn, zn], outputs=[name], attrs={}))
        taken.add(name)
        deq = (q.astype(np.float32) - float(zp)) * scale
        info = LayerInfo(name=name, op="Mul", weight=qn, wbits=bits, granularity="tensor",
                         sparsity=float(np.mean(q == zp)), sqnr_db=round(_sqnr(t, deq), 2),
                         params=int(t.size), extra={"kind": "table", "note": "view-transform table"})
        graph.layers.append(info)
        out.append(info)
    return out


# -- the conversion -------------------------------------------------------------------------------


def _stage_sqnr(fgraph: Graph, qgraph: Graph, batches: list[dict], backend: str) -> dict[str, float]:
    """SQNR of each output of the whole quantized stage against the float stage (same inputs)."""
    if not batches:
        return {}
    f, q = _run(fgraph, backend), _run(qgraph, backend)
    sig: dict[str, list] = {}
    for feeds in batches:
        a, b = f(feeds), q(feeds)
        for o in fgraph.outputs:
            sig.setdefault(o.name, []).append((a[o.name], b[o.name]))
    return {k: round(_sqnr(np.concatenate([x.ravel() for x, _ in v]), np.concatenate([y.ravel() for _, y in v])), 2)
            for k, v in sig.items()}


def convert_bev(src: str | Path, out: str | Path, options: BevConvertOptions | None = None) -> BevConvertReport:
    """Convert a BEV ONNX export into one package of its stage graphs (see the module doc)."""
    from converters.calibration import ListReader
    from converters.package_writer import WriteOptions, write_package

    opts = options or BevConvertOptions()
    opts.validate()
    t0 = time.perf_counter()
    src, out = Path(src), Path(out)
    say = opts.log or (lambda s: None)
    if not src.is_file():
        raise ConversionError(f"source model not found: {src}")
    model = _load(src)
    meta = bev_metadata(model)
    if meta is None:
        raise ConversionError(f"{src}: no {META_STAGES} metadata; not a BEV model from `edgert bev train`")
    specs, rig, info = _documents(meta, src, opts.variants)
    if opts.calib_dir is None and opts.needs_calibration:
        raise CalibrationError("activation quantization of a BEV model needs a calibration recording: "
                               "--calib DIR (from `edgert bev record`), or weight-only stages")
    rec = _recording(Path(opts.calib_dir), rig) if opts.calib_dir is not None else None

    say(f"importing {len(specs)} stage entries")
    floats = {d["entry"]: _stage_graph(model, d, src) for d in specs}
    try:
        BP.read_bev_sections(_Probe(floats, specs, rig, info), str(src))
    except EdgertError as e:              # the metadata does not fit the graphs: refuse before calibrating
        raise ConversionError(str(e)) from None
    del model

    feeds: dict[str, list[dict]] = {d["entry"]: [] for d in specs}
    if rec is not None:
        say(f"calibration cascade over {min(opts.calib_count, len(rec))} samples of {rec.path}")
        feeds = _cascade(floats, specs, info, rec, opts.calib_count, opts.backend_for_calibration)

    results: dict[str, QuantizeResult] = {}
    tables: list[LayerInfo] = []
    sqnr: dict[str, dict[str, float]] = {}
    seconds: dict[str, float] = {}
    for d in specs:
        e = d["entry"]
        t1 = time.perf_counter()
        say(f"{e}: quantizing ({len(feeds[e])} calibration batches)")
        r = quantize_model(floats[e], opts.convert_options(e), ListReader(feeds[e]) if feeds[e] else None)
        r.graph.name = e
        if opts.table_bits is not None:
            tables += quantize_tables(r.graph, opts.table_bits)
        sqnr[e] = _stage_sqnr(floats[e], r.graph, feeds[e][:max(1, opts.sqnr_batches)],
                              opts.backend_for_calibration)
        results[e] = r
        seconds[e] = time.perf_counter() - t1

    graphs = [results[d["entry"]].graph for d in specs]
    extras = {BP.STAGES_SECTION: json.dumps(specs).encode(), BP.RIG_SECTION: json.dumps(rig.to_json()).encode(),
              BP.MODEL_SECTION: json.dumps(info).encode()}
    producer = {"tool": "edgert convert (bev)", "bev": {
        "source_sha256": floats[specs[0]["entry"]].metadata.get("source_sha256"),
        "calib_samples": len(feeds[specs[0]["entry"]]), "table_bits": opts.table_bits,
        "stages": {e: r.graph.metadata["quantization"] for e, r in results.items()}}}
    written = write_package(out, graphs, WriteOptions(compress=opts.compress, signing_key=opts.signing_key),
                            producer=producer, extras=extras)
    sec_bytes = {s.name: s.stored_bytes for s in written.sections}
    reports = {}
    for i, d in enumerate(specs):
        e, r = d["entry"], results[d["entry"]]
        calib = r.calibration
        reports[e] = ConvertReport(
            src_path=src, out_path=out, source_bytes=sum(int(a.nbytes) for a in floats[e].initializers.values()),
            package_bytes=int(sec_bytes.get(f"weights.{i}", 0)), layers=r.graph.layers,
            calibration_s=calib.seconds if calib else 0.0, calibration_batches=calib.batches if calib else 0,
            calibration_backend=calib.backend if calib else None, sqnr_s=r.sqnr_s, total_s=seconds[e],
            options=opts.convert_options(e))
    return BevConvertReport(src_path=src, out_path=out, source_bytes=src.stat().st_size,
                            package_bytes=int(written.size_bytes), stages=reports, stage_sqnr_db=sqnr,
                            tables=tables, calib_samples=len(feeds[specs[0]["entry"]]), signed=written.signed,
                            total_s=time.perf_counter() - t0)


class _Probe:
    """The float graphs and documents in the shape `edgert.bev.package.read_bev_sections` checks, so
    the converter refuses what the runtime would refuse, before calibrating."""

    def __init__(self, graphs: dict[str, Graph], specs: list[dict], rig, info: dict):
        self.graphs = graphs
        self._extra = {BP.STAGES_SECTION: json.dumps(specs).encode(),
                       BP.RIG_SECTION: json.dumps(rig.to_json()).encode(), BP.MODEL_SECTION: json.dumps(info).encode()}

    def extra_names(self) -> list[str]:
        return list(self._extra)

    def extra(self, name: str) -> memoryview:
        return memoryview(self._extra[name])

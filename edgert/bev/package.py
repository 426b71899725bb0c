"""A BEV model as one edgert package: its stage graphs and the three BEV metadata sections.

`edgert convert bev.onnx -o bev.pkg` (converters/bev_bundle.py) writes one graph per stage entry,
named by the entry ("full/backbone", "full/fuse", "full/heads", "small/..."), and three EXTRA
sections holding the JSON documents the ONNX export keeps in its metadata_props:

  bev/stages  [{"entry", "variant", "stage", "inputs", "outputs"}]: one record per graph
  bev/rig     Rig.to_json(): the calibration the view tables were computed from
  bev/model   image normalisation, grids and per-variant shapes (zoo/bev/export.py model_info)

The backbone graphs take any number of cameras (dim 0 is symbolic), so the scheduler refreshes a
subset without running the others.  A package can carry valid hashes and still hostile content, so
`read_bev_sections` checks every field the stage runner uses, and that each entry's graph exists with
exactly the declared inputs and outputs, before a backend prepares anything.  Everything here is
numpy + the edgert runtime: no onnx, no converter code.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgert import format as F
from edgert.bev.rig import Rig
from edgert.errors import InputError, PackageError
from edgert.ir import Graph

STAGES_SECTION = "bev/stages"
RIG_SECTION = "bev/rig"
MODEL_SECTION = "bev/model"
SECTIONS = (STAGES_SECTION, RIG_SECTION, MODEL_SECTION)
STAGES = ("backbone", "fuse", "heads")          # what the stage runner calls, per variant
MAX_SECTION_BYTES = 1 << 20                     # the three documents are a few kB


@dataclass(frozen=True)
class BevSections:
    specs: list[dict]          # the checked bev/stages records
    rig: Rig
    info: dict                 # the checked bev/model document


def _json(raw: bytes | memoryview, where: str) -> Any:
    if len(raw) > MAX_SECTION_BYTES:
        raise PackageError(f"{where}: {len(raw)} bytes, over the cap {MAX_SECTION_BYTES}")
    try:
        return json.loads(bytes(raw).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise PackageError(f"{where}: not JSON ({e})") from None


def _field(d: Any, key: str, kind: type | tuple, where: str) -> Any:
    if not isinstance(d, dict) or key not in d:
        raise PackageError(f"{where}: missing {key!r}")
    v = d[key]
    if isinstance(v, bool) or not isinstance(v, kind):
        raise PackageError(f"{where}.{key}: want {getattr(kind, '__name__', kind)}, got {type(v).__name__}")
    return v


def _int(d: Any, key: str, lo: int, hi: int, where: str) -> int:
    v = _field(d, key, int, where)
    if not lo <= v <= hi:
        raise PackageError(f"{where}.{key} = {v} is outside [{lo}, {hi}]")
    return v


def _num(d: Any, key: str, lo: float, hi: float, where: str) -> float:
    v = float(_field(d, key, (int, float), where))
    if not (math.isfinite(v) and lo <= v <= hi):
        raise PackageError(f"{where}.{key} = {v} is outside [{lo}, {hi}]")
    return v


def _check_specs(specs: Any, graphs: dict[str, Graph], where: str) -> list[dict]:
    if not isinstance(specs, list) or not specs:
        raise PackageError(f"{where}: want a non-empty list of stage entries")
    seen = set()
    for i, d in enumerate(specs):
        w = f"{where}[{i}]"
        entry, variant, stage = (_field(d, k, str, w) for k in ("entry", "variant", "stage"))
        ins, outs = (_field(d, k, list, w) for k in ("inputs", "outputs"))
        if stage not in STAGES:
            raise PackageError(f"{w}: stage {stage!r} is not one of {', '.join(STAGES)}")
        if (variant, stage) in seen:
            raise PackageError(f"{w}: a second {variant}/{stage} entry")
        seen.add((variant, stage))
        g = graphs.get(entry)
        if g is None:
            raise PackageError(f"{w}: entry {entry!r} has no graph (graphs: {', '.join(graphs)})")
        if ins != [v.name for v in g.inputs] or outs != [v.name for v in g.outputs]:
            raise PackageError(f"{w}: entry {entry!r} declares {ins} -> {outs}, its graph has "
                               f"{[v.name for v in g.inputs]} -> {[v.name for v in g.outputs]}")
    for v in {d["variant"] for d in specs}:
        missing = [s for s in STAGES if (v, s) not in seen]
        if missing:
            raise PackageError(f"{where}: variant {v!r} lacks the {', '.join(missing)} stage")
    return specs


def _check_info(info: Any, variants: set[str], where: str) -> dict:
    """The fields BevModelStages reads, with plausible ranges."""
    img = _field(info, "image", dict, where)
    _int(img, "height", 8, 8192, f"{where}.image")
    _int(img, "width", 8, 8192, f"{where}.image")
    og = _field(info, "output_grid", dict, where)
    _int(og, "size", 4, 1024, f"{where}.output_grid")
    _num(og, "cell_m", 0.01, 10.0, f"{where}.output_grid")
    vs = _field(info, "variants", dict, where)
    if not variants <= set(vs):
        raise PackageError(f"{where}.variants has no record for {sorted(variants - set(vs))}")
    for v in variants:
        w = f"{where}.variants.{v}"
        mg = _field(vs[v], "model_grid", dict, w)
        _int(mg, "size", 4, 1024, f"{w}.model_grid")
        _num(mg, "cell_m", 0.01, 10.0, f"{w}.model_grid")
        feat = _field(vs[v], "feat", list, w)
        if len(feat) != 4 or not all(isinstance(x, int) and not isinstance(x, bool) and 1 <= x <= 4096
                                     for x in feat):
            raise PackageError(f"{w}.feat must be 4 dims in [1, 4096], got {feat!r:.80}")
        if feat[0] * feat[1] * feat[2] * feat[3] * 4 > F.DEFAULT_MAX_VALUE_BYTES:
            raise PackageError(f"{w}.feat {feat} is over the value budget")
        _int(vs[v], "bev_ch", 1, 4096, w)
    return info


def _check_shapes(specs: list[dict], info: dict, rig: Rig, graphs: dict[str, Graph], where: str) -> None:
    """Static dims of the graphs against bev/model (a mismatch would fail mid-stream otherwise)."""
    for d in specs:
        g, vinfo = graphs[d["entry"]], info["variants"][d["variant"]]
        want = {"backbone": {d["outputs"][0]: [None, *vinfo["feat"][1:]]},
                "fuse": {d["inputs"][0]: vinfo["feat"], d["outputs"][0]: [1, vinfo["bev_ch"], None, None]},
                "heads": {}}[d["stage"]]
        for vi in list(g.inputs) + list(g.outputs):
            if vi.name not in want:
                continue
            exp = want[vi.name]
            if len(vi.shape) != len(exp) or any(e is not None and isinstance(s, int) and s != e
                                                 for s, e in zip(vi.shape, exp)):
                raise PackageError(f"{where}: graph {d['entry']!r} {vi.name!r} has shape {vi.shape}; "
                                   f"bev/model says {exp}")
    for v, vinfo in info["variants"].items():
        if v in {d["variant"] for d in specs} and vinfo["feat"][0] != len(rig.cameras):
            raise PackageError(f"{where}: variant {v!r} has features for {vinfo['feat'][0]} cameras, "
                               f"bev/rig has {len(rig.cameras)}")


def read_bev_sections(pkg, where: str) -> BevSections:
    """The three BEV sections of a read package, checked against its graphs."""
    names = pkg.extra_names()
    missing = [s for s in SECTIONS if s not in names]
    if missing:
        raise PackageError(f"{where}: not a BEV package (no {', '.join(missing)} section; extra sections: "
                           f"{', '.join(names) or 'none'})")
    specs = _check_specs(_json(pkg.extra(STAGES_SECTION), f"{where}: {STAGES_SECTION}"), pkg.graphs,
                         f"{where}: {STAGES_SECTION}")
    try:
        rig = Rig.from_json(_json(pkg.extra(RIG_SECTION), f"{where}: {RIG_SECTION}"))
    except InputError as e:
        raise PackageError(f"{where}: {RIG_SECTION}: {e}") from None
    info = _check_info(_json(pkg.extra(MODEL_SECTION), f"{where}: {MODEL_SECTION}"),
                       {d["variant"] for d in specs}, f"{where}: {MODEL_SECTION}")
    _check_shapes(specs, info, rig, pkg.graphs, where)
    return BevSections(specs, rig, info)


class GraphSession:
    """One checked, prepared graph behind onnxruntime's `run(None, feeds) -> [outputs]` call, so the
    stage runner drives package graphs and ONNX sessions alike; every run's shapes go through the
    graph's budget (`GraphPlan.check_feeds`)."""

    def __init__(self, graph: Graph, backend: str = "auto", threads: int = 0):
        from edgert.backends.base import BackendOptions, get_backend
        from edgert.graphcheck import check_graph

        self.graph = graph
        self.plan = check_graph(graph)
        be = get_backend(backend)
        self.backend = be.name
        self._exe = be.prepare(graph, BackendOptions(threads=threads))
        self.outputs = [v.name for v in graph.outputs]

    def run(self, names: list[str] | None, feeds: dict) -> list:
        self.plan.check_feeds(feeds)
        got = self._exe.run(feeds)
        return [got[n] for n in (names or self.outputs)]


def is_package(path: str | Path) -> bool:
    """The file starts with the package magic (a cheap probe; read_package validates the rest)."""
    try:
        with open(path, "rb") as f:
            return f.read(len(F.MAGIC)) == F.MAGIC
    except OSError:
        return False


def load_package_stages(path: str | Path, rig: Rig | None = None, threads: int = 1, backend: str = "auto"):
    """A BEV package's stage graphs, checked and prepared on `backend` ("auto": ort when installed,
    else the numpy oracle) -> edgert.bev.stages.BevModelStages."""
    from edgert.bev.stages import BevModelStages, check_rig
    from edgert.package import ReadOptions, read_package

    p = Path(path)
    pkg = read_package(p, ReadOptions())
    try:
        sec = read_bev_sections(pkg, str(p))
        check_rig(p, sec.rig, rig)
        sessions = {(d["variant"], d["stage"]): GraphSession(pkg.graphs[d["entry"]], backend, threads)
                    for d in sec.specs}
        stages = BevModelStages(sessions, sec.info, rig or sec.rig)
    except BaseException:
        pkg.close()
        raise
    stages.package = pkg            # the graphs' weights are views of its mapping
    return stages

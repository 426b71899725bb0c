"""`edgert inspect`: a readable (or JSON) description of a validated package."""
from __future__ import annotations

import dataclasses
import math
from collections import Counter

import numpy as np


def _section(s) -> dict:
    d = dataclasses.asdict(s)
    for k, v in list(d.items()):
        if isinstance(v, (bytes, bytearray)):
            d[k] = v.hex()
        elif hasattr(v, "name") and hasattr(v, "value"):      # enums
            d[k] = v.name.lower()
    return d


def _scale_stats(graph, layer) -> dict | None:
    w = layer.weight
    if not w:
        return None
    name = f"{w}__scale"          # docs/design.md naming
    s = graph.initializers.get(name)
    if s is None:
        return None
    s = np.asarray(s, dtype=np.float32)
    return {"tensor": name, "count": int(s.size), "min": float(s.min()), "max": float(s.max())}


def describe(pkg) -> dict:
    info = {
        "file": str(pkg.path), "size_bytes": int(pkg.size_bytes), "sha256": pkg.file_sha256,
        "signed": bool(pkg.signed), "format": pkg.manifest["format_version"],
        "producer": pkg.manifest.get("producer"),
        "sections": [_section(s) for s in pkg.sections], "models": [],
    }
    for name, g in pkg.graphs.items():
        ops = Counter(n.op for n in g.nodes)
        params = sum(int(np.asarray(a).size) for a in g.initializers.values())
        layers = []
        for L in g.layers:
            row = dataclasses.asdict(L)
            sc = _scale_stats(g, L)
            if sc:
                row["scales"] = sc
            enc = g.encodings.get(f"{L.weight}__q")
            if enc is not None:
                row["encoding"] = dataclasses.asdict(enc)
            layers.append(row)
        info["models"].append({
            "name": name,
            "inputs": [dataclasses.asdict(v) for v in g.inputs],
            "outputs": [dataclasses.asdict(v) for v in g.outputs],
            "nodes": len(g.nodes), "ops": dict(ops.most_common()), "parameters": params,
            "preprocess": g.preprocess.to_json() if g.preprocess else None,
            "metadata": {k: v for k, v in g.metadata.items() if k != "value_shapes"},
            "layers": layers,
        })
    return info


def _db(err, unit: bool = True) -> str:
    """A relative squared output error as SQNR in dB (the mixed-precision probes' unit)."""
    if not isinstance(err, (int, float)):
        return "-"
    if err <= 0:
        return "inf" + (" dB" if unit else "")
    return f"{-10 * math.log10(err):.1f}" + (" dB" if unit else "")


def _fmt_shape(shape) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def format_description(info: dict, layers: bool = True) -> str:
    out = [f"package  {info['file']}",
           f"size     {info['size_bytes']:,} bytes   sha256 {info['sha256']}",
           f"format   {info['format']}   signed {'yes' if info['signed'] else 'no'}   "
           f"producer {info.get('producer')}", "", "sections:"]
    for s in info["sections"]:
        name = s["name"]
        out.append(f"  {name:<24} {s['kind']:<10} {s['codec']:<6} {s['stored_bytes']:>12,} B stored  "
                   f"{s['raw_bytes']:>12,} B raw  sha256 {s['sha256'][:16]}…")
    for m in info["models"]:
        out += ["", f"model {m['name']!r}: {m['nodes']} nodes, {m['parameters']:,} parameters"]
        for v in m["inputs"]:
            out.append(f"  input  {v['name']} {v['dtype']} {_fmt_shape(v['shape'])}")
        for v in m["outputs"]:
            out.append(f"  output {v['name']} {v['dtype']} {_fmt_shape(v['shape'])}")
        if m["preprocess"]:
            out.append(f"  preprocess {m['preprocess']}")
        md = m["metadata"]
        if md:
            out.append("  metadata " + ", ".join(f"{k}={v}" for k, v in md.items()
                                                  if not isinstance(v, (dict, list))))
        out.append("  ops " + ", ".join(f"{k}×{v}" for k, v in m["ops"].items()))
        mixed = (md.get("quantization") or {}).get("mixed") if isinstance(md.get("quantization"), dict) else None
        if isinstance(mixed, dict):
            out.append(f"  mixed precision for {mixed.get('budget')}: {mixed.get('avg_bits', 0):.2f} bits/weight "
                       f"(scales included); output SQNR predicted {_db(mixed.get('predicted_error'))}, "
                       f"measured {_db(mixed.get('measured_error'))} with these weights alone, "
                       f"{_db(mixed.get('package_error'))} quantized (activations too)")
        if layers and m["layers"]:
            probe = any("probe_error" in (L.get("extra") or {}) for L in m["layers"])
            out.append(f"  {'layer':<36} {'op':<14} {'w':>2} {'a':>2} {'gran':<8} {'sparse':>6} "
                       f"{'params':>9} {'SQNR dB':>8}" + (f" {'probe dB':>8}" if probe else "") + "  scales")
            for L in m["layers"]:
                sc = L.get("scales")
                sc_txt = f"{sc['count']}× [{sc['min']:.3g}, {sc['max']:.3g}]" if sc else ""
                sq = L.get("sqnr_db")
                out.append(f"  {L['name'][:36]:<36} {L['op']:<14} {L.get('wbits') or '-':>2} "
                           f"{L.get('abits') or '-':>2} {str(L.get('granularity') or '-'):<8} "
                           f"{L.get('sparsity', 0.0):>6.1%} {L.get('params', 0):>9,} "
                           f"{'' if sq is None else f'{sq:.1f}':>8}"
                           + (f" {_db((L.get('extra') or {}).get('probe_error'), unit=False):>8}" if probe else "")
                           + f"  {sc_txt}")
    return "\n".join(out)

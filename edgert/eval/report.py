"""The report folder of one evaluation result record: result.json, report.md, report.html and plots.

    write_report(result, out_dir, overlays, class_names) -> {"json": ..., "markdown": ..., ...}

Everything but `verdict` is optional in the record: a crashed or invalid run still gets a report that
says why.  Plots need matplotlib (imported here only, through the object API on an Agg canvas, so no
pyplot global state is touched); without it the JSON, Markdown and HTML are written and say that the
plots were skipped.  Overlays need Pillow (the harness already needs it to read images).
"""
from __future__ import annotations

import html
import json
import math
import re
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from edgert.errors import EvalError

# A fixed 14-colour palette (matplotlib's tab10, then the light halves of tab20's first four pairs), so
# class c has the same colour in every overlay, every report and every run.  Labels past the palette
# (e.g. 255 = ignore) are drawn black.
PALETTE = np.array([
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
    (174, 199, 232), (255, 187, 120), (152, 223, 138), (255, 152, 150)], dtype=np.uint8)
IGNORE_RGB = (0, 0, 0)

TIMED_REGION_TEXT = {
    "end-to-end": "end-to-end (image decode + preprocessing + inference + postprocessing)",
    "inference": "inference only (decode, preprocessing and postprocessing not timed)",
}

Overlay = tuple[str, np.ndarray, np.ndarray, np.ndarray]


# ---- small helpers ----------------------------------------------------------------------------------

def _get(d: Any, *keys, default=None):
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return default
        d = d[k]
    return default if d is None else d


def _num(v) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def _fmt(v, digits: int = 4, unit: str = "") -> str:
    f = _num(v)
    if f is None:
        return "n/a"
    s = f"{f:.{digits}f}" if abs(f) < 1e6 else f"{f:.4g}"
    return s + unit


def _jsonable(o):
    """Strict JSON: numpy scalars/arrays become Python values, NaN/inf become null, Paths strings."""
    if isinstance(o, dict):
        return {str(k): _jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_jsonable(v) for v in o]
    if isinstance(o, np.ndarray):
        return _jsonable(o.tolist())
    if isinstance(o, np.generic):
        return _jsonable(o.item())
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, Path):
        return str(o)
    if o is None or isinstance(o, (str, int, bool)):
        return o
    return str(o)


def _safe_name(name: str) -> str:
    s = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(name)).strip("._")
    return s[:80] or "image"


def colorize(label: np.ndarray) -> np.ndarray:
    """(H, W) class map -> (H, W, 3) uint8 with the fixed palette."""
    lab = np.asarray(label).astype(np.int64)
    out = np.empty(lab.shape + (3,), np.uint8)
    out[...] = IGNORE_RGB
    ok = (lab >= 0) & (lab < len(PALETTE))
    out[ok] = PALETTE[lab[ok]]
    return out


def _class_name(c, class_names: list[str] | None) -> str:
    if isinstance(c, (int, np.integer)) and class_names and 0 <= int(c) < len(class_names):
        return f"{int(c)} {class_names[int(c)]}"
    return str(c)


def _label_of(pc: dict, i: int, class_names: list[str] | None) -> str:
    """A per-class entry's label: "3 road" from its own name or `class_names`, else its index."""
    c = pc.get("class", i)
    if pc.get("name"):
        return f"{c} {pc['name']}"
    return _class_name(c, class_names)


def _class_index(c, i: int) -> int:
    return int(c) if isinstance(c, (int, np.integer)) else i


# ---- record -> tables -------------------------------------------------------------------------------

def _accuracy_rows(result: dict) -> list[tuple[str, str]]:
    m = result.get("metrics") or {}
    task = _get(result, "dataset", "task")
    rows = []
    if task == "classification" or ("top1" in m and "dice_mean" not in m):
        rows += [("Top-1", _fmt(m.get("top1"))), ("Top-5", _fmt(m.get("top5")))]
    else:
        rows += [("Mean Dice", _fmt(m.get("dice_mean"))), ("mIoU", _fmt(m.get("miou"))),
                 ("Pixel accuracy", _fmt(m.get("pixel_accuracy")))]
    if m.get("images") is not None:
        rows.append(("Images scored", str(m["images"])))
    return rows


def timed_region_text(result: dict) -> str:
    region = result.get("timed_region")
    text = TIMED_REGION_TEXT.get(region, str(region) if region else "not stated")
    warm = result.get("warmup")
    if warm is not None:
        text += f"; after {int(warm)} warm-up image{'s' if int(warm) != 1 else ''} (untimed, unscored)"
    return text


def headline_rows(result: dict) -> list[tuple[str, str]]:
    v = result.get("verdict") or {}
    sc = result.get("score") or {}
    t = result.get("timing") or {}
    rows = [("Verdict", str(v.get("status", "unknown")) + (f" — {v['reason']}" if v.get("reason") else ""))]
    if sc:
        better = sc.get("higher_is_better")
        rows.append(("Score", _fmt(sc.get("value")) + ("" if better is None else
                                                        f" ({'higher' if better else 'lower'} is better)")))
        formula = str(sc.get("formula", "n/a"))
        if sc.get("description"):
            formula += f": {sc['description']}"
        rows.append(("Formula", formula))
        inputs = sc.get("inputs") or {}
        if inputs:
            rows.append(("Score inputs", ", ".join(f"{k} = {_fmt(x, 6) if _num(x) is not None else x}"
                                                   for k, x in inputs.items())))
    else:
        rows.append(("Score", "n/a"))
    rows += _accuracy_rows(result)
    mean_s = _num(t.get("mean_s"))
    rows.append(("Mean time per image", "n/a" if mean_s is None else f"{mean_s * 1000:.3f} ms"))
    rows.append(("p50 / p90 / p99", " / ".join(_fmt(t.get(k), 3) for k in ("p50_ms", "p90_ms", "p99_ms"))
                 + " ms"))
    rows.append(("Throughput", _fmt(t.get("throughput_ips"), 2, " images/s")))
    rows.append(("Peak RSS", _fmt(result.get("peak_rss_mb"), 1, " MB")))
    e = result.get("energy")
    if e and _num(e.get("j_per_image")) is not None:
        how = "estimated" if e.get("estimated") else "measured"
        sensor = f", {e['sensor']}" if e.get("sensor") else ""
        rows.append(("Energy", f"{_fmt(e['j_per_image'], 4)} J/image ({how}{sensor})"))
    elif e and e.get("error"):
        rows.append(("Energy", f"n/a ({e['error']})"))
    else:
        rows.append(("Energy", "n/a (no power sensor)"))
    rows.append(("Timed region", timed_region_text(result)))
    if t.get("images") is not None:
        rows.append(("Images timed", str(t["images"])))
    return rows


def per_class_rows(result: dict, class_names: list[str] | None) -> list[tuple[str, ...]]:
    rows = []
    for i, pc in enumerate(_get(result, "metrics", "per_class", default=[]) or []):
        rows.append((_label_of(pc, i, class_names),
                     "absent" if _absent(pc) else _fmt(pc.get("dice")),
                     _fmt(pc.get("iou")), str(pc.get("pixels", "n/a")),
                     str(pc.get("images_present", "n/a"))))
    return rows


def _absent(pc: dict) -> bool:
    """A class with no truth pixels in the dataset: its Dice is undefined (or only counts false
    positives), and the mean over present classes leaves it out."""
    px = pc.get("pixels")
    return (px is not None and int(px) == 0) or _num(pc.get("dice")) is None


def robustness_rows(result: dict) -> list[tuple[str, ...]]:
    rows = []
    for r in result.get("robustness") or []:
        delta = _num(r.get("delta"))
        sev = r.get("severity")
        rows.append((str(r.get("variant", "?")), str(r.get("kind", "")), "-" if sev is None else str(sev),
                     str(r.get("metric", "")), _fmt(r.get("value")),
                     "n/a" if delta is None else f"{delta:+.4f}"))
    return rows


def provenance_rows(result: dict) -> list[tuple[str, str]]:
    sub = result.get("submission") or {}
    ds = result.get("dataset") or {}
    rows = [("Submission",
             f"{sub.get('path', 'n/a')} ({sub.get('kind', '?')}, {sub.get('bytes', '?')} bytes)"),
            ("Submission SHA-256", str(sub.get("sha256", "n/a"))),
            ("Dataset", f"{ds.get('path', 'n/a')} ({ds.get('task', '?')}, {ds.get('images', '?')} images, "
                        f"{ds.get('classes', '?')} classes)"),
            ("Dataset SHA-256", str(ds.get("sha256", "n/a")))]
    dev = result.get("device")
    if isinstance(dev, dict):
        rows += [(f"Device {k}", v if isinstance(v, str) else json.dumps(_jsonable(v)))
                 for k, v in dev.items()]
    elif dev:
        rows.append(("Device", str(dev)))
    vers = result.get("versions")
    if isinstance(vers, dict) and vers:
        rows.append(("Versions", ", ".join(f"{k} {v}" for k, v in vers.items())))
    for key, label in (("started_utc", "Started (UTC)"), ("wall_s", "Wall time (s)"),
                       ("schema", "Result schema")):
        if result.get(key) is not None:
            rows.append((label, str(result[key])))
    return rows


# ---- plots (matplotlib, optional) ---------------------------------------------------------------

def _figure_class():
    """matplotlib's Figure, or None when matplotlib is not installed."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return None
    return Figure


def _plot_latency(Figure, result: dict, path: Path) -> bool:
    t = result.get("timing") or {}
    ms = np.asarray([v for v in (t.get("per_image_ms") or []) if _num(v) is not None], np.float64)
    if ms.size == 0:
        return False
    fig = Figure(figsize=(7, 3.6), dpi=100)
    ax = fig.subplots()
    ax.hist(ms, bins=int(min(50, max(10, ms.size // 3))), color="#4c72b0", alpha=0.85)
    for q, style in ((50, "-"), (90, "--"), (99, ":")):
        v = _num(t.get(f"p{q}_ms"))
        v = float(np.percentile(ms, q)) if v is None else v
        ax.axvline(v, color="#c44e52", linestyle=style, linewidth=1.5, label=f"p{q} {v:.2f} ms")
    ax.set_xlabel("ms per image")
    ax.set_ylabel("images")
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.set_title(f"Latency, {result.get('timed_region', '?')} ({ms.size} timed images)", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    return True


def _plot_per_class(Figure, result: dict, class_names: list[str] | None, path: Path) -> bool:
    pcs = _get(result, "metrics", "per_class", default=[]) or []
    if not pcs:
        return False
    fig = Figure(figsize=(max(6.0, 0.5 * len(pcs) + 2), 3.8), dpi=100)
    ax = fig.subplots()
    xs = np.arange(len(pcs))
    labels = []
    for i, pc in enumerate(pcs):
        labels.append(_label_of(pc, i, class_names))
        ci = _class_index(pc.get("class", i), i)
        color = PALETTE[ci] / 255.0 if 0 <= ci < len(PALETTE) else (0.5, 0.5, 0.5)
        d = _num(pc.get("dice"))
        if _absent(pc):
            ax.bar(i, 1.0, color="none", edgecolor="#999999", hatch="//", linewidth=0.8)
            ax.text(i, 0.5, "absent", rotation=90, ha="center", va="center", fontsize=7, color="#666666")
        else:
            ax.bar(i, d or 0.0, color=color, edgecolor="black", linewidth=0.5)
            ax.text(i, (d or 0.0) + 0.01, f"{d or 0.0:.2f}", ha="center", va="bottom", fontsize=7)
    mean = _num(_get(result, "metrics", "dice_mean"))
    if mean is not None:
        ax.axhline(mean, color="black", linestyle="--", linewidth=1,
                   label=f"mean Dice {mean:.3f} (per image, as scored)")
        ax.legend(fontsize=8, loc="upper right")
    ax.set_xticks(xs)
    ax.set_xticklabels(labels, rotation=45, ha="right", fontsize=8)
    ax.set_ylim(0, 1.08)
    ax.set_ylabel("Dice")
    ax.set_title("Per-class Dice over all pixels (hatched: class absent from the truth)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    return True


def _plot_robustness(Figure, result: dict, path: Path) -> bool:
    rows = result.get("robustness") or []
    if not rows:
        return False
    fig = Figure(figsize=(7, max(2.5, 0.35 * len(rows) + 1.2)), dpi=100)
    ax = fig.subplots()
    ys = np.arange(len(rows))
    deltas = [_num(r.get("delta")) for r in rows]
    ax.barh(ys, [d or 0.0 for d in deltas],
            color=["#999999" if d is None else ("#c44e52" if d < 0 else "#55a868") for d in deltas])
    for y, d in zip(ys, deltas):
        ax.text(0 if d is None else d, y, " n/a " if d is None else f" {d:+.3f} ", va="center",
                ha="right" if d is not None and d < 0 else "left", fontsize=7)
    ax.margins(x=0.2)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_yticks(ys)
    ax.set_yticklabels([f"{r.get('variant', '?')}" + (f" ({r['severity']})" if r.get("severity") not in
                                                       (None, "") else "") for r in rows], fontsize=8)
    ax.invert_yaxis()
    metric = rows[0].get("metric", "accuracy")
    ax.set_xlabel(f"change in {metric} vs clean")
    ax.set_title("Robustness (untimed)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    return True


# ---- overlays (Pillow) ------------------------------------------------------------------------------

def _nearest(a: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    h, w = a.shape[:2]
    if (h, w) == tuple(hw):
        return a
    rows = np.minimum((np.arange(hw[0]) * h) // hw[0], h - 1)
    cols = np.minimum((np.arange(hw[1]) * w) // hw[1], w - 1)
    return a[rows[:, None], cols[None, :]]


def overlay_panel(image: np.ndarray, label: np.ndarray, pred: np.ndarray, alpha: float = 0.6,
                  gap: int = 4) -> np.ndarray:
    """image | truth | prediction, side by side; the class maps are blended over the image (a map of
    another size than the image is resized to it by nearest neighbour)."""
    img = np.asarray(image)
    if img.ndim not in (2, 3) or np.ndim(label) != 2 or np.ndim(pred) != 2:
        raise EvalError(f"an overlay needs an (H, W[, 3]) image and (h, w) label and prediction maps, "
                        f"got {img.shape}, {np.shape(label)}, {np.shape(pred)}")
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    img = img[:, :, :3].astype(np.uint8)
    hw = img.shape[:2]
    lab = _nearest(np.asarray(label), hw)
    prd = _nearest(np.asarray(pred), hw)
    base = img.astype(np.float32)
    panels = [img] + [(alpha * colorize(m).astype(np.float32) + (1 - alpha) * base).astype(np.uint8)
                      for m in (lab, prd)]
    sep = np.full((hw[0], gap, 3), 255, np.uint8)
    return np.concatenate([panels[0], sep, panels[1], sep, panels[2]], axis=1)


def _save_png(arr: np.ndarray, path: Path) -> None:
    from PIL import Image
    Image.fromarray(arr).save(path)


# ---- markdown / html ------------------------------------------------------------------------------

def _md_table(header: Iterable[str], rows: list[tuple[str, ...]]) -> list[str]:
    def cell(s):
        return str(s).replace("|", "\\|").replace("\n", " ")
    header = list(header)
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(cell(c) for c in r) + " |" for r in rows]
    return out


def _html_table(header: Iterable[str] | None, rows: list[tuple[str, ...]]) -> str:
    e = html.escape
    parts = ["<table>"]
    if header:
        parts.append("<tr>" + "".join(f"<th>{e(str(h))}</th>" for h in header) + "</tr>")
    for r in rows:
        parts.append("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in r) + "</tr>")
    parts.append("</table>")
    return "\n".join(parts)


_CSS = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;"
        "text-align:left;font-size:14px}th{background:#f3f3f3}img{max-width:100%;margin:.3em 0}"
        ".sw{display:inline-block;width:12px;height:12px;border:1px solid #555;margin-right:4px;"
        "vertical-align:middle}.note{color:#a33}")


def write_report(result: dict, out_dir: str | Path, overlays: Iterable[Overlay] = (),
                 class_names: list[str] | None = None) -> dict[str, Path]:
    """Write the report folder; returns {"json", "markdown", "html", plot names, "overlay_<name>"}: paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}

    files["json"] = out / "result.json"
    files["json"].write_text(json.dumps(_jsonable(result), indent=2) + "\n", encoding="utf-8")

    notes: list[str] = []
    plots: dict[str, Path] = {}
    Figure = _figure_class()
    if Figure is None:
        notes.append("matplotlib is not installed: plots were skipped (pip install 'matplotlib>=3.7').")
    else:
        for key, fn in (("latency_hist", lambda p: _plot_latency(Figure, result, p)),
                        ("per_class_dice", lambda p: _plot_per_class(Figure, result, class_names, p)),
                        ("robustness", lambda p: _plot_robustness(Figure, result, p))):
            path = out / f"{key}.png"
            if fn(path):
                plots[key] = path
    files.update(plots)

    overlay_files: list[tuple[str, Path]] = []
    used: set[str] = set()
    for name, image, label, pred in overlays:
        stem = _safe_name(name)
        while stem in used:
            stem += "_"
        used.add(stem)
        path = out / f"overlay_{stem}.png"
        try:
            panel = overlay_panel(image, label, pred)
        except EvalError as e:
            raise EvalError(f"overlay {name!r}: {e}") from None
        try:
            _save_png(panel, path)
        except ImportError:
            notes.append("Pillow is not installed: overlays were skipped.")
            break
        files[f"overlay_{stem}"] = path
        overlay_files.append((str(name), path))

    md, body = _render(result, class_names, plots, overlay_files, notes)
    files["markdown"] = out / "report.md"
    files["markdown"].write_text(md, encoding="utf-8")
    files["html"] = out / "report.html"
    files["html"].write_text(body, encoding="utf-8")
    return files


def _render(result: dict, class_names, plots: dict[str, Path], overlay_files, notes):
    """(markdown, html) from the same sections."""
    e = html.escape
    sub = result.get("submission") or {}
    title = f"Evaluation report: {Path(str(sub['path'])).name}" if sub.get("path") else "Evaluation report"
    md = [f"# {title}", ""]
    hb = [f"<!doctype html><html><head><meta charset='utf-8'><title>{e(title)}</title>"
          f"<style>{_CSS}</style></head><body>", f"<h1>{e(title)}</h1>"]
    for n in notes:
        md += [f"> **Note:** {n}", ""]
        hb.append(f"<p class='note'><b>Note:</b> {e(n)}</p>")

    def section(name, header, rows, plot_key=None, empty=None):
        md.append(f"## {name}")
        md.append("")
        hb.append(f"<h2>{e(name)}</h2>")
        if rows:
            md.extend(_md_table(header, rows))
            hb.append(_html_table(header, rows))
        elif empty:
            md.append(empty)
            hb.append(f"<p>{e(empty)}</p>")
        md.append("")
        if plot_key and plot_key in plots:
            fname = plots[plot_key].name
            md.extend([f"![{plot_key}]({fname})", ""])
            hb.append(f"<img src='{e(fname)}' alt='{e(plot_key)}'>")

    section("Headline", ("", "value"), headline_rows(result), "latency_hist")
    task = _get(result, "dataset", "task")
    if task != "classification":
        section("Per-class results", ("class", "Dice", "IoU", "pixels", "images present"),
                per_class_rows(result, class_names), "per_class_dice",
                empty="No per-class metrics in this result.")
    if result.get("robustness"):
        section("Robustness (accuracy change per variant, untimed)",
                ("variant", "kind", "severity", "metric", "value", "delta"),
                robustness_rows(result), "robustness")
    if overlay_files:
        md += ["## Prediction overlays", "", "image | truth | prediction", ""]
        hb += ["<h2>Prediction overlays</h2>", "<p>image | truth | prediction</p>"]
        for name, path in overlay_files:
            md += [f"**{name}**", "", f"![{name}]({path.name})", ""]
            hb.append(f"<h3>{e(name)}</h3><img src='{e(path.name)}' alt='{e(name)}'>")
        legend = [(_class_name(c, class_names),
                   "#%02x%02x%02x" % tuple(int(v) for v in PALETTE[c])) for c in range(len(PALETTE))]
        md += ["Palette: " + ", ".join(f"{n} `{h}`" for n, h in legend), ""]
        hb.append("<p>" + " ".join(f"<span class='sw' style='background:{h}'></span>{e(n)}&nbsp;"
                                   for n, h in legend) + "</p>")
    section("Provenance", ("", "value"), provenance_rows(result))
    hb.append("<p>The full record: <a href='result.json'>result.json</a></p></body></html>")
    md += ["The full record: [result.json](result.json)", ""]
    return "\n".join(md), "\n".join(hb) + "\n"

"""`edgert bev run --report DIR`: plots of a session (matplotlib, imported only here) and its JSON.

    latency.png      end-to-end latency of every output over the run, per policy, with the budget
    staleness.png    staleness of the output in use at every ground-truth query, per policy
    accuracy.png     streaming BEV IoU and AP per policy, beside the offline reference
    session.json     the metrics (SessionResult.to_json) and every output record
"""
from __future__ import annotations

import json
from pathlib import Path

from scheduler.session import SessionResult


def write_report(result: SessionResult, out_dir: str | Path) -> list[Path]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []

    fig, ax = plt.subplots(figsize=(8, 3.5))
    for name, run in result.runs.items():
        t = [(o.finish_us - run.outputs[0].source_t_us) / 1e6 for o in run.outputs] if run.outputs else []
        ax.plot(t, [o.latency_ms for o in run.outputs], ".-", ms=3, lw=0.8, label=name)
    budget = next(iter(result.metrics.values())).budget_ms if result.metrics else None
    if budget:
        ax.axhline(budget, color="k", ls="--", lw=0.8, label=f"budget {budget:g} ms")
    ax.set(xlabel="time (s)", ylabel="end-to-end latency (ms)", yscale="log")
    ax.legend(fontsize=8)
    fig.tight_layout()
    written.append(out / "latency.png")
    fig.savefig(written[-1], dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(8, 3.5))
    for name, m in result.metrics.items():
        ax.plot(m.staleness_ms, lw=0.8, label=name)
    ax.set(xlabel="ground-truth query", ylabel="staleness (ms)", yscale="log")
    ax.legend(fontsize=8)
    fig.tight_layout()
    written.append(out / "staleness.png")
    fig.savefig(written[-1], dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 3.5))
    names = list(result.metrics)
    iou = [result.metrics[n].streaming.iou_mean for n in names]
    ap = [result.metrics[n].streaming.ap_mean for n in names]
    xs = range(len(names))
    ax.bar([x - 0.2 for x in xs], iou, 0.4, label="streaming IoU")
    ax.bar([x + 0.2 for x in xs], ap, 0.4, label="streaming AP")
    off = next((m.offline for m in result.metrics.values() if m.offline), None)
    if off:
        ax.axhline(off.iou_mean, color="C0", ls="--", lw=0.8, label="offline IoU")
        ax.axhline(off.ap_mean, color="C1", ls="--", lw=0.8, label="offline AP")
    ax.set_xticks(list(xs), names)
    ax.set(ylim=(0, 1))
    ax.legend(fontsize=8)
    fig.tight_layout()
    written.append(out / "accuracy.png")
    fig.savefig(written[-1], dpi=110)
    plt.close(fig)

    doc = result.to_json()
    doc["outputs"] = {name: [o.to_json() for o in run.outputs] for name, run in result.runs.items()}
    written.append(out / "session.json")
    written[-1].write_text(json.dumps(doc, indent=1))
    return written

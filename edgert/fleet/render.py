"""FleetSnapshot -> a rich table plus an alerts panel (the live view), or one JSON line (--json).

rich is imported inside the functions: it ships with the ``agent`` and ``convert`` extras only.
"""
from __future__ import annotations

import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edgert.fleet.monitor import FleetSnapshot

STATUS_STYLE = {"online": "green", "stale": "yellow", "offline": "red"}
SHORT_SHA = 12
DASH = "-"


def _num(value: float | None, digits: int = 1) -> str:
    return DASH if value is None else f"{value:.{digits}f}"


def _energy(value: float | None, estimated: bool | None) -> str:
    # "~" marks energy from a utilisation model rather than a power sensor (the birth's sensor.estimated)
    if value is None:
        return DASH
    return f"{'~' if estimated else ''}{value:.3g}"


def _age(seconds: float) -> str:
    if seconds < 1:
        return "now"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.0f} h"


def _temp(value: float | None, throttled: bool | None) -> str:
    return DASH if value is None else f"{value:.0f}{' (throttled)' if throttled else ''}"


def render_table(snapshot: FleetSnapshot):
    """One row per device, sorted by fleet and device; the caption carries the fleet totals."""
    from rich.table import Table
    from rich.text import Text

    t = snapshot.totals
    table = Table(title="edgert fleet", title_justify="left", expand=False,
                  caption=(f"{t['devices']} devices, {t['online']} online · {t['messages']} msgs · "
                           f"{t['seq_received']} seqs, {t['seq_missing']} missing, {t['duplicates']} dup · "
                           f"{t['malformed']} malformed"),
                  caption_justify="left")
    for name, justify in (("fleet", "left"), ("device", "left"), ("status", "left"), ("model", "left"),
                          ("backend", "left"), ("package", "left"), ("p50 ms", "right"),
                          ("p99 ms", "right"), ("J/inf", "right"), ("temp °C", "right"),
                          ("last seen", "right"), ("msgs", "right"), ("missing", "right"),
                          ("dup", "right")):
        table.add_column(name, justify=justify, no_wrap=name in ("device", "status", "package"))
    for d in snapshot.devices:
        regressed = "latency_regression" in d.alerts
        table.add_row(
            d.fleet, d.device,
            Text(d.status, style=STATUS_STYLE.get(d.status, "")),
            d.model or DASH, d.backend or DASH,
            (d.package_sha256 or "")[:SHORT_SHA] or DASH,
            Text(_num(d.p50_ms, 2), style="bold red" if regressed else ""),
            _num(d.p99_ms, 2),
            _energy(d.j_per_inference, d.energy_estimated),
            Text(_temp(d.temp_c, d.throttled), style="yellow" if d.throttled else ""),
            _age(d.last_seen_s),
            str(d.messages),
            Text(str(d.seq_missing), style="bold red" if d.seq_missing else ""),
            str(d.duplicates))
    return table


def render_alerts(snapshot: FleetSnapshot):
    from rich.panel import Panel
    from rich.text import Text

    if not snapshot.alerts:
        return Panel(Text("no alerts", style="green"), title="alerts", title_align="left")
    body = Text()
    for i, a in enumerate(snapshot.alerts):
        who = f"{a.fleet}/{a.device}" if a.device else "(unknown device)"
        body.append(("\n" if i else "") + f"{who:<24} ", style="bold")
        body.append(f"{a.kind:<19}", style=STATUS_STYLE.get(a.kind, "red"))
        body.append(f" {a.message}  ({_age(a.since_s)})")
    return Panel(body, title=f"alerts ({len(snapshot.alerts)})", title_align="left", border_style="red")


def render(snapshot: FleetSnapshot):
    """The table and the alerts panel, as one renderable for rich.live.Live."""
    from rich.console import Group

    return Group(render_table(snapshot), render_alerts(snapshot))


def snapshot_json_line(snapshot: FleetSnapshot) -> str:
    return json.dumps(snapshot.to_json(), separators=(",", ":"), allow_nan=False)

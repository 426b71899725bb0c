"""`edgert bev ...`: streaming multi-camera BEV perception (issue 13).

    edgert bev record --out seq/ --seconds 60 --seed 3     render a synthetic drive (6 cameras, 12 Hz)
    edgert bev info seq/                                   validate a recording and summarise it
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import click


@click.group("bev")
def bev() -> None:
    """Streaming multi-camera BEV perception: record, info."""


@bev.command("record")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), required=True, help="an empty directory")
@click.option("--seconds", type=click.FloatRange(0.1, 24 * 3600), default=60.0, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="the world (roads, traffic, route)")
@click.option("--size", default="160x96", show_default=True, help="camera image WxH")
@click.option("--format", "image_format", type=click.Choice(["jpg", "png"]), default="jpg", show_default=True)
@click.option("--json", "as_json", is_flag=True)
def record_cmd(out_dir: Path, seconds: float, seed: int, size: str, image_format: str, as_json: bool) -> None:
    """Render a synthetic drive through a nuScenes-like 6-camera rig, with BEV ground truth."""
    from edgert.bev.recording import RecordOptions, record
    from edgert.bev.rig import nuscenes_like_rig
    from edgert.bev.world import World, WorldOptions
    from edgert.cli import CliError

    try:
        w_px, h_px = (int(v) for v in size.lower().split("x"))
    except ValueError:
        raise CliError(f"--size wants WxH (e.g. 160x96), got {size!r}") from None
    if not (16 <= w_px <= 4096 and 16 <= h_px <= 4096):
        raise CliError(f"--size {size}: each side must be 16-4096 pixels")
    world = World(nuscenes_like_rig(w_px, h_px), WorldOptions(seed=seed))
    t0 = time.perf_counter()
    shown = [0.0]

    def progress(i: int, n: int) -> None:
        now = time.perf_counter()
        if not as_json and (now - shown[0] > 2 or i == n):
            shown[0] = now
            click.echo(f"\r  {i}/{n} samples", nl=i == n, err=True)
    meta = record(world, out_dir, RecordOptions(seconds=seconds, image_format=image_format), progress)
    dt = time.perf_counter() - t0
    res = {"out": str(out_dir), "samples": meta["samples"], "cameras": len(world.rig.cameras),
           "rate_hz": meta["rate_hz"], "seconds": seconds, "wall_s": round(dt, 2),
           "ms_per_sample": round(1000 * dt / meta["samples"], 1)}
    if as_json:
        click.echo(json.dumps(res))
    else:
        click.echo(f"{out_dir}: {res['samples']} samples x {res['cameras']} cameras at {res['rate_hz']:g} Hz "
                   f"({seconds:g} s of driving) in {dt:.1f} s ({res['ms_per_sample']} ms per sample)")


@bev.command("info")
@click.argument("recording", type=click.Path(path_type=Path))
@click.option("--check", is_flag=True, help="decode every frame and report corrupt frames and discontinuities")
@click.option("--json", "as_json", is_flag=True)
def info_cmd(recording: Path, check: bool, as_json: bool) -> None:
    """Validate a recording's meta and index (and with --check every frame) and summarise it."""
    from edgert.bev.recording import Recording

    rec = Recording(recording)
    res = {"path": str(recording), "samples": len(rec), "rate_hz": rec.rate_hz, "cameras": rec.rig.names,
           "grid": {"size": rec.rig.grid.size, "cell_m": rec.rig.grid.cell_m}, "source": rec.meta.get("source")}
    if check:
        events = []
        for s in rec.samples():
            events += [f"sample {s.index}: {e}" for e in s.events]
        res["events"] = events
    if as_json:
        click.echo(json.dumps(res))
        return
    cams = ", ".join(rec.rig.names)
    click.echo(f"{recording}: {len(rec)} samples at {rec.rate_hz:g} Hz, {len(rec.rig.names)} cameras ({cams}), "
               f"BEV grid {rec.rig.grid.size}x{rec.rig.grid.size} at {rec.rig.grid.cell_m:g} m")
    for e in res.get("events", []):
        click.echo(f"  {e}")
    if check:
        click.echo(f"  {len(res['events'])} events")

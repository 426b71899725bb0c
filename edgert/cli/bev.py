"""`edgert bev ...`: streaming multi-camera BEV perception (issue 13).

    edgert bev record --out seq/ --seconds 60 --seed 3     render a synthetic drive (6 cameras, 12 Hz)
    edgert bev info seq/                                   validate a recording and summarise it
    edgert bev run MODEL --source seq/ | --source synthetic --policy deadline --budget-ms 83 \
        [--speed-factor 4] [--json] [--report out/]        stream under a policy, score it like sAP

MODEL is a BEV package or ONNX (edgert bev train), or `oracle`: a simulation that answers from ground
truth with declared stage costs (scheduler/sim_stages.py), for studying policies without a model.
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


@bev.command("run")
@click.argument("model")
@click.option("--source", "source", default=None,
              help="a recording directory (edgert bev record), synthetic[:SEED], or rig:synthetic[:SEED] "
                   "[default: synthetic]")
@click.option("--camera", "cameras", multiple=True,
              help="a live rig: one per camera in the rig's order (device index, /dev/videoN, URL or video "
                   "file); runs in real time with one policy")
@click.option("--rig", "rig_path", type=click.Path(path_type=Path), default=None,
              help="the live rig's calibration: a recording directory or a rig JSON [default: the model's]")
@click.option("--realtime", is_flag=True,
              help="run the lanes on real threads against the wall clock, frames played at their timestamps "
                   "(always on with --camera; default: the reproducible virtual clock)")
@click.option("--policy", "policies", default="deadline", show_default=True,
              help="fifo, latest, shrinking-tail, deadline, comma-separated, or all")
@click.option("--budget-ms", type=click.FloatRange(1, 10_000), default=83.0, show_default=True,
              help="each frame's output is due this long after its capture (12 Hz: one period)")
@click.option("--speed-factor", type=click.FloatRange(0.01, 1000), default=1.0, show_default=True,
              help="stretch measured stage times to emulate a slower device (1 on the device itself)")
@click.option("--seconds", type=click.FloatRange(0.1, 24 * 3600), default=None,
              help="stream at most this much (default: a whole recording, 20 s of synthetic)")
@click.option("--report", "report_dir", type=click.Path(path_type=Path), default=None,
              help="write latency / staleness / accuracy plots and session.json here")
@click.option("--mqtt", "mqtt_url", default=None, help="publish telemetry to this broker, e.g. mqtt://host:1883")
@click.option("--fleet", default="default", show_default=True)
@click.option("--device-id", default=None, help="device name in telemetry topics (default: host name)")
@click.option("--spool", type=click.Path(path_type=Path), default=None,
              help="telemetry spool file (SQLite; default: a temporary one)")
@click.option("--json", "as_json", is_flag=True)
def run_cmd(model: str, source: str | None, cameras: tuple[str, ...], rig_path: Path | None, realtime: bool,
            policies: str, budget_ms: float, speed_factor: float, seconds: float | None,
            report_dir: Path | None, mqtt_url: str | None, fleet: str, device_id: str | None, spool: Path | None,
            as_json: bool) -> None:
    """Stream a rig through a BEV model under one or more scheduling policies and score the outputs
    the way streaming AP does (the latest output available at every ground-truth time).  With
    --camera, stream a live rig in real time and print each output as it is made."""
    from edgert.cli import CliError
    from edgert.sources import RigSource, SourceOptions, open_source
    from scheduler.policies import known_policies
    from scheduler.session import SessionOptions, run_session, take

    names = tuple(known_policies()) if policies == "all" else tuple(p.strip() for p in policies.split(",") if p.strip())
    if cameras:
        if source is not None:
            raise CliError("--camera and --source are alternatives: a live rig or a recording")
        opts = SessionOptions(policies=names, budget_ms=budget_ms, speed_factor=speed_factor, seconds=seconds,
                              realtime=True)
        res = _live_session(model, cameras, rig_path, opts, as_json)
        _finish_run(res, model, mqtt_url, fleet, device_id, spool, report_dir, as_json)
        return
    if rig_path is not None:
        raise CliError("--rig is the calibration of a live rig (--camera); a recording carries its own")
    source = source or "synthetic"
    spec = "rig:" + source if source == "synthetic" or source.startswith("synthetic:") else source
    src = open_source(spec, SourceOptions())
    if not isinstance(src, RigSource):
        raise CliError(f"--source {source!r} is not a camera rig (a recording directory or synthetic[:SEED])")
    if seconds is None and src.recording is None:
        seconds = 20.0
    opts = SessionOptions(policies=names, budget_ms=budget_ms, speed_factor=speed_factor, seconds=seconds,
                          realtime=realtime)
    make_stages = _stages_factory(model, src.rig)
    samples = take(src.samples(), seconds, src.fps)

    def show(name, m):
        if not as_json:
            click.echo(_metrics_line(name, m))
    if not as_json:
        click.echo(f"{len(samples)} samples from {source} at {src.fps:g} Hz; budget {budget_ms:g} ms, "
                   f"speed factor {speed_factor:g}, {'real time' if realtime else 'virtual clock'}, model {model}")
    from edgert.cli.run import _open_meter
    meter = _open_meter()
    try:
        res = run_session(samples, make_stages, opts, rig=src.rig, on_policy=show, meter=meter)
    finally:
        if meter is not None:
            meter.stop()
    _finish_run(res, model, mqtt_url, fleet, device_id, spool, report_dir, as_json)


def _finish_run(res, model: str, mqtt_url: str | None, fleet: str, device_id: str | None, spool: Path | None,
                report_dir: Path | None, as_json: bool) -> None:
    """Telemetry, the report and the final JSON / events line of a `bev run`."""
    if mqtt_url:
        telemetry = _open_telemetry(mqtt_url, fleet, device_id, spool, model)
        try:
            _publish(telemetry, res)
        finally:
            telemetry.close()
    if report_dir is not None:
        from scheduler.report import write_report
        files = write_report(res, report_dir)
        if not as_json:
            click.echo(f"report: {', '.join(str(f) for f in files)}")
    if as_json:
        click.echo(json.dumps(res.to_json()))
    elif res.events:
        click.echo(f"{len(res.events)} source events, e.g. {res.events[0]}")


def _live_session(model: str, cameras: tuple[str, ...], rig_path: Path | None, opts, as_json: bool):
    """A live rig through the model in real time (scheduler/live.py): one line (or JSON object) per
    output as it is made; Ctrl-C or --seconds ends it."""
    import itertools

    from edgert.bev.live_rig import open_live_rig
    from edgert.cli import CliError
    from scheduler.live import run_live
    from scheduler.metrics import evaluate
    from scheduler.policies import make_policy
    from scheduler.session import SessionResult
    from scheduler.stream import StreamOptions

    if len(opts.policies) != 1:
        raise CliError("a live rig is streamed once: give one --policy")
    if model == "oracle":
        raise CliError("the oracle needs ground truth; a live rig has none (use --source)")
    p = Path(model)
    if not p.exists():
        raise CliError(f"no such model: {model} (a BEV package or an ONNX from `edgert bev train`)")
    from edgert.bev.stages import load_stages
    rig = _read_rig(rig_path) if rig_path is not None else None
    stages = load_stages(p, rig)
    rig = stages.rig
    if rig is None:
        raise CliError(f"{model} carries no rig calibration; give --rig")
    if len(cameras) != len(rig.cameras):
        raise CliError(f"the rig has {len(rig.cameras)} cameras ({', '.join(rig.names)}), "
                       f"got {len(cameras)} --camera")
    rate_hz = 12.0
    events: list[str] = []

    def show(o) -> None:
        if as_json:
            click.echo(json.dumps(o.to_json() | {"boxes": len(o.output.boxes)}))
        else:
            click.echo(f"  sample {o.source_index}: {o.latency_ms:.0f} ms {'ok' if o.deadline_met else 'LATE'}  "
                       f"{o.variant} on {len(o.cams)} cameras ({o.rung.value})  {len(o.output.boxes)} objects")

    def noted(samples):
        for s in samples:
            events.extend(f"sample {s.index}: {e}" for e in s.events if e != "no_odometry")
            yield s

    with open_live_rig(rig, list(cameras), rate_hz=rate_hz) as live:
        samples = live.samples()
        if opts.seconds is not None:
            samples = itertools.islice(samples, max(1, round(opts.seconds * rate_hz)))
        if not as_json:
            click.echo(f"live rig {', '.join(cameras)} at {rate_hz:g} Hz (no odometry: temporal fusion off); "
                       f"budget {opts.budget_ms:g} ms, policy {opts.policies[0]}, model {model}; Ctrl-C stops")
        res = run_live(noted(samples), stages, make_policy(opts.policies[0]),
                       StreamOptions(budget_ms=opts.budget_ms, speed_factor=opts.speed_factor, rig=rig),
                       on_output=show)
    m = evaluate(res)
    if not as_json:
        click.echo(_metrics_line(opts.policies[0], m))
    return SessionResult({opts.policies[0]: m}, {opts.policies[0]: res}, None, len(res.frames), events)


def _read_rig(path: Path):
    """A rig calibration: a recording directory (its meta.json) or a JSON file holding the rig object
    (docs/bev.md), bare or under "rig"."""
    from edgert.bev.rig import Rig
    from edgert.cli import CliError

    f = path / "meta.json" if path.is_dir() else path
    try:
        doc = json.loads(f.read_text(encoding="utf-8"))
        return Rig.from_json(doc.get("rig", doc))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError) as e:
        raise CliError(f"{f}: not a rig calibration ({type(e).__name__}: {e})") from None


def _stages_factory(model: str, rig):
    from edgert.cli import CliError

    if model == "oracle":
        from scheduler.sim_stages import GroundTruthStages
        return lambda samples: GroundTruthStages(samples, rig)
    p = Path(model)
    if not p.exists():
        raise CliError(f"no such model: {model} (a BEV package, an ONNX from `edgert bev train`, or oracle)")
    from edgert.bev.stages import load_stages
    stages = load_stages(p, rig)
    return lambda samples: stages.fresh()


def _metrics_line(name: str, m) -> str:
    s, off = m.streaming, m.offline
    ref = f" (offline IoU {off.iou_mean:.3f} AP {off.ap_mean:.3f})" if off else ""
    scored = s.iou_mean == s.iou_mean        # NaN: no ground truth (a live rig)
    return (f"  {name:15s} " + (f"streaming IoU {s.iou_mean:.3f} AP {s.ap_mean:.3f}{ref}  " if scored else "")
            + f"miss {m.deadline_miss_rate:.1%}  "
            + (f"stale {m.staleness_ms_mean:.0f} ms ({m.staleness_frames_mean:.1f} frames)  " if scored else "")
            + f"latency p50 {m.latency_ms_p50:.0f} p99 {m.latency_ms_p99:.0f} ms  dropped {m.frames_dropped}/{m.frames_total}"
            + (f"  {m.energy_per_output_mj:.1f} mJ/output" if m.energy_per_output_mj is not None else ""))


@bev.command("train")
@click.option("--data", "data", multiple=True, type=click.Path(path_type=Path),
              help="recordings with ground truth (repeatable; default: synthetic worlds rendered on the fly)")
@click.option("--out", "out", type=click.Path(path_type=Path), required=True, help="the ONNX to write")
@click.option("--minutes", type=click.FloatRange(0.1, 600), default=25.0, show_default=True,
              help="wall-clock budget, rendering included")
@click.option("--steps", type=click.IntRange(1), default=None, help="stop after this many steps")
@click.option("--variants", default="full,small", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--eval-seed", type=int, default=9999, show_default=True, help="held-out world for the report")
@click.option("--eval-samples", type=click.IntRange(0), default=96, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def train_cmd(data: tuple[Path, ...], out: Path, minutes: float, steps: int | None, variants: str, seed: int,
              eval_seed: int, eval_samples: int, as_json: bool) -> None:
    """Train the example BEV model (zoo/bev: JAX on CPU, the `train` extra) and export it to ONNX with
    its stages, variants and rig calibration in the metadata."""
    from edgert.bev.recording import Recording
    from edgert.cli import CliError

    try:
        from zoo.bev.export import export_onnx
        from zoo.bev.train import TrainOptions, train
    except ImportError as e:
        raise CliError(f"bev train needs the `train` extra (jax, optax) and onnx: {e.name} is missing") from None
    sources = [Recording(d) for d in data] or None
    o = TrainOptions(variants=tuple(v.strip() for v in variants.split(",") if v.strip()), minutes=minutes,
                     steps=steps, seed=seed, eval_seed=eval_seed, eval_samples=eval_samples)
    params, report = train(o, sources, log=None if as_json else (lambda m: click.echo("  " + m, err=True)))
    rig = sources[0].rig if sources else None
    if rig is None:
        from edgert.bev.rig import nuscenes_like_rig
        rig = nuscenes_like_rig()
    size = export_onnx(params, rig, out)
    res = report.to_json() | {"out": str(out), "onnx_bytes": size}
    if as_json:
        click.echo(json.dumps(res))
        return
    click.echo(f"{out}: {size / 1e6:.2f} MB fp32 ONNX, {report.steps} steps in {report.seconds:.0f} s "
               f"(render {report.render_s:.0f} s, {report.step_ms:.0f} ms/step)")
    for v, r in report.heldout.items():
        click.echo(f"  held-out world {eval_seed} ({r.samples} samples), {v}: BEV mIoU {r.miou:.3f} "
                   f"(without temporal fusion {r.miou_no_temporal:.3f}), detection recall {r.det_recall:.2f} "
                   f"precision {r.det_precision:.2f}")


def _open_telemetry(url: str, fleet: str, device_id: str | None, spool: Path | None, model: str):
    """The run pipeline's telemetry path (edgert.telemetry.run_link: spool, recorder, QoS-1 link)."""
    from types import SimpleNamespace

    from edgert.eval.submission import sha256_file
    from edgert.telemetry.run_link import RunTelemetry

    p = Path(model)
    app = SimpleNamespace(file_sha256=sha256_file(p) if p.is_file() else "0" * 64,
                          backend="oracle" if model == "oracle" else "ort")
    return RunTelemetry.open(url, fleet, device_id, spool, p if p.is_file() else Path(__file__), app)


def _publish(telemetry, res) -> None:
    """One telemetry record per output (its stage window on the run's clock, anchored now) and one
    `bev_summary` event per policy with its streaming metrics."""
    import time as _time

    now_ns = _time.time_ns()
    for name, run in res.runs.items():
        if run.outputs:
            t0 = run.outputs[0].backbone_start_us
            base = now_ns - (run.outputs[-1].finish_us - t0) * 1000
            for o in run.outputs:
                telemetry.recorder.record(base + (o.backbone_start_us - t0) * 1000, base + (o.finish_us - t0) * 1000)
        m = res.metrics[name]
        detail = {"policy": name, "speed_factor": m.speed_factor, "budget_ms": m.budget_ms,
                  "streaming_iou": round(m.streaming.iou_mean, 4), "streaming_ap": round(m.streaming.ap_mean, 4),
                  "deadline_miss_rate": round(m.deadline_miss_rate, 4),
                  "staleness_ms_mean": round(m.staleness_ms_mean, 1), "latency_ms_p50": round(m.latency_ms_p50, 1),
                  "latency_ms_p99": round(m.latency_ms_p99, 1), "frames_dropped": m.frames_dropped,
                  "frames_total": m.frames_total}
        telemetry.recorder.event("bev_summary", True, f"bev run {name}: streaming IoU {m.streaming.iou_mean:.3f}",
                                 detail={k: v for k, v in detail.items() if v == v})

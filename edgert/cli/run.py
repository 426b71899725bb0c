"""`edgert run`: one input file, or a stream of frames (cameras, streams, videos, images, synthetic)
through the threaded pipeline (edgert.pipeline) with the package's task post-processing."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from edgert.cli import CliError, _load_session

_backend_opt = click.option("--backend", default="auto", show_default=True, help="auto|ort|numpy")
_threads_opt = click.option("--threads", type=click.IntRange(0, 256), default=0,
                            help="intra-op threads (0 = backend default)")


@click.command()
@click.argument("package", type=click.Path(path_type=Path))
@click.option("--input", "inputs", multiple=True, type=click.Path(path_type=Path),
              help="image file, .npy array, or NAME=file.npy (repeatable): one run")
@click.option("--camera", "cameras", multiple=True, is_flag=False, flag_value="0",
              help="camera index, /dev/videoN, rtsp://… or http://… (bare: the first camera); repeatable")
@click.option("--video", "videos", multiple=True, help="video file (repeatable)")
@click.option("--images", "images", multiple=True, help="image folder or glob, e.g. 'frames/*.png'")
@click.option("--synthetic", is_flag=True, help="a moving test scene")
@click.option("--sources", "sources_file", type=click.Path(path_type=Path), default=None,
              help="a file of source specs, one per line")
@click.option("--out", "out", type=click.Path(path_type=Path), default=None,
              help="annotated video (.mp4/.avi) or folder; with --input: the output folder")
@click.option("--max-frames", type=click.IntRange(0), default=0, help="stop after N frames (0 = all)")
@click.option("--realtime", is_flag=True, help="play files at their native frame rate (latest frame wins)")
@click.option("--loop", is_flag=True, help="restart files at their end")
@click.option("--show", is_flag=True, help="show the annotated frames in a window (needs a display)")
@click.option("--json", "as_json", is_flag=True,
              help="JSON: one line per frame (files), a summary line per second (live)")
@click.option("--mqtt", "mqtt_url", default=None, help="publish telemetry to this broker, e.g. mqtt://host:1883")
@click.option("--fleet", default="default", show_default=True)
@click.option("--device-id", default=None, help="device name in telemetry topics (default: host name)")
@click.option("--spool", type=click.Path(path_type=Path), default=None,
              help="telemetry spool file (default: a temporary one)")
@_backend_opt
@_threads_opt
@click.option("--require-signature", is_flag=True, help="refuse unsigned packages")
@click.option("--public-key", type=click.Path(path_type=Path), default=None,
              help="Ed25519 public key that must have signed the package")
@click.option("--model", default=None, help="model name inside a multi-model package")
@click.option("--workers", type=click.IntRange(0, 64), default=0,
              help="frames in inference at once (0 = auto: one per core, one backend thread each, "
                   "for files; 1 for live sources, where the newest frame matters)")
@click.option("--camera-index", type=int, default=None, hidden=True)        # before `--camera N`
@click.option("--frames", type=click.IntRange(0), default=None, hidden=True)  # before --max-frames
def run(package, inputs, cameras, videos, images, synthetic, sources_file, out, max_frames, realtime,
        loop, show, as_json, mqtt_url, fleet, device_id, spool, backend, threads, require_signature,
        public_key, model, workers, camera_index, frames):
    """Run a package on an input file, or live on cameras / streams / videos / images."""
    from edgert.sources import SourceOptions, open_sources, parse_sources_file

    if camera_index is not None:
        cameras = tuple(cameras) + (str(camera_index),)
    if frames is not None:
        max_frames = frames
    specs = [*cameras, *videos, *images, *(["synthetic"] if synthetic else [])]
    if sources_file is not None:
        specs += parse_sources_file(sources_file)
    if inputs and specs:
        raise CliError("give either --input FILE or a frame source (--camera/--video/--images/"
                       "--synthetic/--sources), not both")
    if not inputs and not specs:
        raise CliError("give --input FILE (image or .npy), or a frame source: --camera [N], "
                       "--video FILE, --images GLOB, --synthetic or --sources FILE")
    if inputs:
        app = _open_app(package, backend, threads, require_signature, public_key, model)
        _run_once(app, list(inputs), out, as_json)
        return

    from edgert.pipeline import Pipeline, PipelineOptions, can_show

    if show and not can_show():
        click.echo("note: --show needs a display and an OpenCV build with a GUI; not showing", err=True)
        show = False
    source = open_sources(specs, SourceOptions(realtime=realtime, loop=loop))
    live = bool(getattr(source, "live", False))
    try:
        workers, threads = _plan_workers(workers, threads, backend, live, package)
        app = _open_app(package, backend, threads, require_signature, public_key, model)
    except BaseException:
        source.close()
        raise
    telemetry = None
    if mqtt_url:
        from edgert.telemetry.run_link import RunTelemetry
        telemetry = RunTelemetry.open(mqtt_url, fleet, device_id, spool, package, app)
    meter = _open_meter()
    echo = (lambda s: click.echo(s, err=True, nl=False)) if not as_json else (lambda s: None)
    opts = PipelineOptions(max_frames=max_frames, out=out, json_frames=as_json and not live,
                           json_every_s=1.0 if (as_json and live) else 0.0, show=show,
                           status_every_s=1.0 if (not as_json and sys.stderr.isatty()) else 0.0,
                           workers=workers)
    pipe = Pipeline(app.pipeline_app, source, opts, echo=echo,
                    emit=lambda d: click.echo(json.dumps(d)),
                    on_frame=None if telemetry is None else telemetry.on_frame, meter=meter)

    def on_event(kind: str, detail: dict) -> None:      # outages and skipped files: said, and sent
        if kind != "reconnect_failed":
            click.echo(f"\n{kind}: " + ", ".join(f"{k}={v}" for k, v in detail.items()), err=True)
        if telemetry is not None:
            telemetry.on_source_event(kind, detail)
    source.on_event = on_event
    try:
        summary = pipe.run()
    finally:
        source.close()
        if meter is not None:
            meter.close()
        if telemetry is not None:
            telemetry.close()
    if as_json:
        click.echo(json.dumps({"summary": summary.to_json()}))
    else:
        click.echo("", err=True)
        click.echo(summary.format())


class _OpenedApp:
    def __init__(self, session=None, ocr=None):
        self.session, self.ocr = session, ocr

    @property
    def pipeline_app(self):
        from edgert.pipeline import ModelApp, OcrApp
        return OcrApp(self.ocr) if self.ocr is not None else ModelApp(self.session)

    @property
    def backend(self) -> str:
        return self.ocr.backend if self.ocr is not None else self.session.backend

    @property
    def file_sha256(self) -> str:
        pkg = self.ocr.package if self.ocr is not None else self.session.package
        return pkg.file_sha256


def _open_app(package, backend, threads, require_signature, public_key, model) -> _OpenedApp:
    from edgert.ocr import is_ocr_package, load_ocr

    if model is None and package.is_file() and is_ocr_package(package):
        key = None
        if public_key is not None:
            from edgert.package.signing import load_public_key
            key = load_public_key(public_key)
        from edgert.ocr import OcrLoadOptions
        return _OpenedApp(ocr=load_ocr(package, options=OcrLoadOptions(
            backend=backend, threads=threads, require_signature=require_signature or key is not None,
            public_key=key)))
    return _OpenedApp(session=_load_session(package, backend, threads, require_signature, public_key,
                                            model))


def _run_once(app: _OpenedApp, inputs: list[Path], out_dir: Path | None, as_json: bool) -> None:
    from edgert import outputs as outmod

    if app.ocr is not None:
        if len(inputs) != 1:
            raise CliError("an OCR package takes one --input image")
        from edgert.preprocess import load_image
        result = app.ocr(load_image(inputs[0])).to_json()
        if out_dir is not None:
            from edgert.pipeline import OcrApp
            from PIL import Image
            out_dir.mkdir(parents=True, exist_ok=True)
            img = OcrApp(app.ocr).render(load_image(inputs[0]), result)
            Image.fromarray(img).save(out_dir / f"{inputs[0].stem}.ocr.png")
            (out_dir / "result.json").write_text(json.dumps(result, indent=2, ensure_ascii=False))
        if as_json:
            click.echo(json.dumps(result, ensure_ascii=False))
        else:
            for line in result["lines"]:
                click.echo(f"{line['score']:.2f}  {line['text']}")
            t = result["timings_ms"]
            click.echo(f"{len(result['lines'])} lines in {t['total']:.0f} ms "
                       f"(det {t['det']:.0f}, cls {t['cls']:.0f}, rec {t['rec']:.0f})", err=True)
        return
    sess = app.session
    feeds, source = outmod.read_inputs(sess, inputs)
    result = outmod.timed_run(sess, feeds)
    summary = outmod.summarize(sess, result, source)
    task = getattr(sess, "task", None)
    if task is not None and task.name != "raw":
        summary["result"] = _task_result(sess, task, result.outputs, inputs, feeds)
    if out_dir is not None:
        summary["files"] = outmod.write_outputs(out_dir, result.outputs, summary)
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        click.echo(outmod.format_summary(summary))
        if "result" in summary:
            click.echo(json.dumps(summary["result"]))


def _task_result(sess, task, outputs, inputs, feeds) -> dict:
    """Task post-processing for a single image input (a .npy has no source image size)."""
    from edgert.outputs import IMAGE_SUFFIXES
    from edgert.preprocess import load_image, target_size
    from edgert.tasks import FrameMeta

    first = inputs[0]
    if first.suffix.lower() in IMAGE_SUFFIXES and sess.preprocess is not None:
        hw = load_image(first).shape[:2]
        in_hw = target_size(hw, sess.preprocess)
    else:
        x = next(iter(feeds.values()))
        layout = sess.preprocess.layout if sess.preprocess is not None else "nchw"
        in_hw = tuple(x.shape[1:3]) if layout == "nhwc" else tuple(x.shape[2:4])
        hw = in_hw
    return task.postprocess(outputs, FrameMeta(image_hw=tuple(hw), input_hw=tuple(in_hw)))


def _plan_workers(workers: int, threads: int, backend: str, live: bool, package: Path) -> tuple[int, int]:
    """(inference workers, backend threads per worker).  On files, throughput is what counts: with
    ONNX Runtime, N single-threaded runs in flight beat one N-threaded run (no per-op thread
    synchronisation) and leave gaps for decode / encode — measured on 2 cores with PP-OCRv4 det
    640² W8A8: 2 × 1 thread gave 1.26× the throughput of 1 × 2 threads.  Live sources keep one
    worker with all threads: the newest frame, soonest.  An OCR bundle keeps one worker."""
    import os

    from edgert.ocr import is_ocr_package

    if workers:
        return workers, threads
    cores = os.cpu_count() or 1
    if live or threads or cores < 2 or backend not in ("auto", "ort") or is_ocr_package(package):
        return 1, threads
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return 1, threads
    return min(cores, 4), 1


def _open_meter():
    """The device's energy meter when a real power sensor exists, else None (no J/frame)."""
    try:
        from devices.meter import EnergyMeter
        from devices.sensors import probe_all
    except ImportError:
        return None
    sensors = [s for s in probe_all() if not getattr(s, "estimated", False)]
    if not sensors:
        return None
    return EnergyMeter(sensors).start()

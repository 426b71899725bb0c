"""`edgert run` on a stream of frames: capture, inference and rendering on separate threads.

    source (edgert.sources) --q_in--> [capture thread: read + preprocess]
                            --q_run--> [inference thread (the caller's): app.infer]
                            --q_out--> [output thread: render, stats overlay, video / images, JSON]

Queues are bounded (`queue_size`), so a slow stage back-pressures the one before it; a live source
then drops at its own capture thread (latest wins), never in a queue, and files lose nothing.
The *app* is what runs on a frame: a single-model package with its recorded task
(`ModelApp`: preprocess as recorded, `session.run`, `task.postprocess`) or the OCR bundle
(`edgert.ocr`).  Per-frame timings are kept so the summary reports FPS, inference p50 / p99,
end-to-end (capture to written) latency, frames dropped, and J/frame when a power sensor exists.
Ctrl-C (KeyboardInterrupt in the caller's thread) stops the source and still drains, finalises the
output file and returns the summary.
"""
from __future__ import annotations

import json
import queue
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np

from edgert.errors import InputError

VIDEO_OUT_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov")
_DONE = object()


class App(Protocol):
    """What `Pipeline` runs on each frame."""
    name: str

    def prepare(self, image_rgb: np.ndarray) -> Any: ...            # capture thread
    def infer(self, prepared: Any) -> tuple[Any, float]: ...         # -> (raw output, inference ms)
    def finish(self, raw: Any) -> dict: ...                          # output thread: result JSON
    def render(self, image_rgb: np.ndarray, result: dict) -> np.ndarray: ...


class ModelApp:
    """One model with its task post-processing (edgert.tasks), preprocessed as recorded."""

    def __init__(self, session):
        from edgert.preprocess import target_size

        if session.preprocess is None:
            raise InputError("this package records no image preprocessing, so it cannot run on "
                             "frames; convert it with --size / --mean / --std, or feed a .npy")
        self.session, self.task = session, session.task
        self.name = self.task.name
        self._target_size = target_size

    def prepare(self, image_rgb: np.ndarray):
        from edgert.preprocess import preprocess_array
        from edgert.tasks import FrameMeta

        meta = FrameMeta(image_hw=image_rgb.shape[:2],
                         input_hw=self._target_size(image_rgb.shape[:2], self.session.preprocess))
        return self.session.check_feeds(preprocess_array(image_rgb, self.session.preprocess)), meta

    def infer(self, prepared) -> tuple[Any, float]:
        feeds, meta = prepared
        t0 = time.perf_counter_ns()
        outs = self.session._exe.run(feeds)          # feeds were checked in prepare()
        return (outs, meta), (time.perf_counter_ns() - t0) / 1e6

    def finish(self, raw) -> dict:
        outs, meta = raw
        return self.task.postprocess(outs, meta)

    def render(self, image_rgb: np.ndarray, result: dict) -> np.ndarray:
        return self.task.render(image_rgb, result)


class OcrApp:
    """The OCR bundle (edgert.ocr): det -> cls -> rec on each frame; lines drawn with their text."""

    name = "ocr"

    def __init__(self, ocr):
        self.ocr = ocr

    def prepare(self, image_rgb: np.ndarray):
        return image_rgb

    def infer(self, image_rgb) -> tuple[Any, float]:
        res = self.ocr(image_rgb)
        return res.to_json(), float(res.timings_ms["total"])

    def finish(self, raw: dict) -> dict:
        return raw

    def render(self, image_rgb: np.ndarray, result: dict) -> np.ndarray:
        """Boxes in green; each line's text on a dark band above its box (Pillow: any script the
        default font has; others become '?')."""
        import cv2
        from PIL import Image, ImageDraw, ImageFont
        out = image_rgb.copy()
        lines = result.get("lines", [])
        if not lines:
            return out
        polys = [np.asarray(ln["box"], np.float32).round().astype(np.int32) for ln in lines]
        cv2.polylines(out, polys, True, (0, 200, 0), 2)
        img = Image.fromarray(out)
        draw = ImageDraw.Draw(img)
        size = int(np.clip(round(image_rgb.shape[0] / 40), 11, 48))    # legible at any frame size
        try:
            font = ImageFont.load_default(size=size)                    # Pillow >= 10.1
        except TypeError:
            font = ImageFont.load_default()
        for ln, p in zip(lines, polys):
            x, y = int(p[:, 0].min()), int(p[:, 1].min())
            text = ln["text"]
            try:
                l, t, r, b = draw.textbbox((x, y), text, font=font)
            except UnicodeEncodeError:
                text = text.encode("ascii", "replace").decode()
                l, t, r, b = draw.textbbox((x, y), text, font=font)
            h = b - t
            draw.rectangle((x, max(0, y - h - 4), x + (r - l) + 4, y), fill=(0, 0, 0))
            draw.text((x + 2, max(0, y - h - 3) - t + y), text, fill=(255, 255, 0), font=font)
        return np.asarray(img)


@dataclass
class PipelineOptions:
    max_frames: int = 0                 # 0 = until the source ends (or Ctrl-C)
    queue_size: int = 2
    out: Path | None = None             # a video file (by suffix) or a folder (one PNG per frame)
    out_fps: float | None = None        # output video rate; default: the source's, else 30
    json_frames: bool = False           # one JSON line per frame (files) ...
    json_every_s: float = 0.0           # ... or a summary line every N s (live sources); 0 = never
    draw_stats: bool = True             # FPS / latency on the output frames
    show: bool = False                  # an OpenCV window, when a display exists
    status_every_s: float = 1.0         # the terminal status line (0 = none)
    workers: int = 1                    # inference threads (frames in flight); output stays in order


@dataclass
class FrameRecord:
    source: str
    index: int
    path: str | None
    capture_ns: int
    infer_ms: float
    done_ns: int = 0


@dataclass
class RunSummary:
    frames: int = 0
    elapsed_s: float = 0.0
    fps: float = 0.0
    infer_ms: dict[str, float] = field(default_factory=dict)       # p50 / p99 / mean
    e2e_ms: dict[str, float] = field(default_factory=dict)         # capture -> written
    captured: int = 0
    dropped: int = 0
    failed: int = 0
    reconnects: int = 0
    j_per_frame: float | None = None
    energy_estimated: bool | None = None
    out: str | None = None
    interrupted: bool = False
    per_source: dict[str, dict] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {k: v for k, v in self.__dict__.items()}

    def format(self) -> str:
        lines = [f"{self.frames} frames in {self.elapsed_s:.1f} s: {self.fps:.1f} FPS"
                 + ("  (interrupted)" if self.interrupted else "")]
        if self.infer_ms:
            lines.append(f"inference p50 {self.infer_ms['p50']:.1f} ms  p99 {self.infer_ms['p99']:.1f} ms"
                         f"   end-to-end p50 {self.e2e_ms['p50']:.1f} ms  p99 {self.e2e_ms['p99']:.1f} ms")
        lines.append(f"captured {self.captured}  dropped {self.dropped}  unreadable {self.failed}"
                     f"  reconnects {self.reconnects}")
        if self.j_per_frame is not None:
            est = " (estimated)" if self.energy_estimated else ""
            lines.append(f"energy {self.j_per_frame * 1e3:.1f} mJ/frame{est}")
        if self.out:
            lines.append(f"wrote {self.out}")
        return "\n".join(lines)


def _pct(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    a = np.asarray(values)
    return {"p50": round(float(np.percentile(a, 50)), 3), "p99": round(float(np.percentile(a, 99)), 3),
            "mean": round(float(a.mean()), 3)}


class _Writer:
    """Annotated frames to a video file (OpenCV) or a folder of PNGs (Pillow)."""

    def __init__(self, out: Path, fps: float):
        self.out, self.fps = out, fps
        self.video = out.suffix.lower() in VIDEO_OUT_SUFFIXES
        self._vw = None
        self.count = 0
        if not self.video:
            out.mkdir(parents=True, exist_ok=True)

    def write(self, image_rgb: np.ndarray, rec: FrameRecord) -> None:
        if self.video:
            import cv2
            if self._vw is None:
                h, w = image_rgb.shape[:2]
                self.out.parent.mkdir(parents=True, exist_ok=True)
                fourcc = cv2.VideoWriter_fourcc(*("mp4v" if self.out.suffix.lower() in (".mp4", ".mov")
                                                  else "MJPG"))
                self._vw = cv2.VideoWriter(str(self.out), fourcc, self.fps, (w, h))
                if not self._vw.isOpened():
                    raise InputError(f"cannot write video {self.out} (OpenCV has no encoder for it)")
                self._size = (w, h)
            if (image_rgb.shape[1], image_rgb.shape[0]) != self._size:
                import cv2
                image_rgb = cv2.resize(image_rgb, self._size)
            self._vw.write(np.ascontiguousarray(image_rgb[:, :, ::-1]))
        else:
            from PIL import Image
            stem = Path(rec.path).stem if rec.path else f"frame{rec.index:06d}"
            Image.fromarray(image_rgb).save(self.out / f"{stem}.png")
        self.count += 1

    def close(self) -> None:
        if self._vw is not None:
            self._vw.release()
            self._vw = None


def draw_stats(image_rgb: np.ndarray, text: str) -> np.ndarray:
    import cv2
    out = image_rgb if image_rgb.flags.writeable else image_rgb.copy()
    scale = max(0.4, image_rgb.shape[1] / 1600)
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    cv2.rectangle(out, (0, 0), (tw + 8, th + base + 8), (0, 0, 0), -1)
    cv2.putText(out, text, (4, th + 4), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1,
                cv2.LINE_AA)
    return out


class Pipeline:
    def __init__(self, app: App, source, options: PipelineOptions | None = None,
                 echo: Callable[[str], None] | None = None, emit: Callable[[dict], None] | None = None,
                 on_frame: Callable[[FrameRecord, dict], None] | None = None, meter=None):
        """echo: status lines (stderr); emit: JSON lines (stdout); on_frame: per-frame hook
        (telemetry); meter: a devices.meter.EnergyMeter already started, or None."""
        self.app, self.source = app, source
        self.opt = options or PipelineOptions()
        self.echo = echo or (lambda s: print(s, file=sys.stderr))
        self.emit = emit or (lambda d: print(json.dumps(d), flush=True))
        self.on_frame, self.meter = on_frame, meter
        self.records: list[FrameRecord] = []
        self._stop = threading.Event()
        self._errors: list[BaseException] = []
        self._lock = threading.Lock()

    # -- threads -------------------------------------------------------------------------------
    def _capture(self, q_run: queue.Queue) -> None:
        try:
            n = 0
            for frame in self.source:
                if self._stop.is_set():
                    break
                prepared = self.app.prepare(frame.image)
                self._put(q_run, (n, frame, prepared))
                n += 1
                if self.opt.max_frames and n >= self.opt.max_frames:
                    break
        except BaseException as e:           # noqa: BLE001 - handed to the caller's thread
            self._errors.append(e)
        finally:
            self._put(q_run, _DONE, force=True)

    def _put(self, q: queue.Queue, item, force: bool = False) -> None:
        while True:
            try:
                q.put(item, timeout=0.1)
                return
            except queue.Full:
                if self._stop.is_set() and not force:
                    return

    def _output(self, q_out: queue.Queue, writer: _Writer | None) -> None:
        try:
            window = None
            pending: dict[int, tuple] = {}        # workers finish out of order; frames go out in order
            next_seq = 0
            while True:
                item = q_out.get()
                if item is _DONE:
                    if not pending:
                        break
                    next_seq = min(pending)         # a frame lost to Ctrl-C: close the gap
                else:
                    pending[item[0]] = item[1:]
                if next_seq not in pending:
                    continue
                frame, raw, rec = pending.pop(next_seq)
                next_seq += 1
                if item is _DONE:
                    q_out.put(_DONE)                # come back for what is still pending
                result = self.app.finish(raw)        # task post-processing, off the inference thread
                if writer is not None or self.opt.show:
                    img = self.app.render(frame.image, result)
                    if self.opt.draw_stats:
                        img = draw_stats(img, self._overlay())
                    if writer is not None:
                        writer.write(img, rec)
                    if self.opt.show:
                        window = _show(img, window)
                rec.done_ns = time.monotonic_ns()
                with self._lock:
                    self.records.append(rec)
                if self.on_frame is not None:
                    self.on_frame(rec, result)
                if self.opt.json_frames:
                    self.emit({"source": rec.path or rec.source, "frame": rec.index,
                               "infer_ms": round(rec.infer_ms, 3), **result})
        except BaseException as e:           # noqa: BLE001
            self._errors.append(e)
            self._stop.set()
            while q_out.get() is not _DONE:   # keep the inference thread unblocked
                pass
        finally:
            if writer is not None:
                writer.close()

    def _overlay(self) -> str:
        with self._lock:
            recent = self.records[-30:]
        if len(recent) < 2:
            return self.app.name
        span = (recent[-1].done_ns - recent[0].done_ns) / 1e9
        fps = (len(recent) - 1) / span if span > 0 else 0.0
        lat = np.median([r.infer_ms for r in recent])
        return f"{self.app.name}  {fps:.1f} FPS  {lat:.1f} ms"

    # -- the run -------------------------------------------------------------------------------
    def run(self) -> RunSummary:
        if "cv2" in sys.modules:
            # The pipeline already runs decode, inference and encode side by side; OpenCV's own
            # worker pool on top only competes with the backend's threads for the same cores.
            sys.modules["cv2"].setNumThreads(1)
        q_run: queue.Queue = queue.Queue(self.opt.queue_size)
        q_out: queue.Queue = queue.Queue(self.opt.queue_size)
        writer = None
        if self.opt.out is not None:
            writer = _Writer(self.opt.out, self.opt.out_fps or getattr(self.source, "fps", None) or 30.0)
        cap = threading.Thread(target=self._capture, args=(q_run,), name="edgert-run:capture", daemon=True)
        out = threading.Thread(target=self._output, args=(q_out, writer), name="edgert-run:output",
                               daemon=True)
        t0 = time.monotonic_ns()
        e0 = t0 if self.meter is not None else None        # the meter's clock is monotonic_ns too
        interrupted = False
        cap.start()
        out.start()
        helpers = [threading.Thread(target=self._infer_loop, args=(q_run, q_out, None),
                                    name=f"edgert-run:infer{i + 1}", daemon=True)
                   for i in range(max(1, self.opt.workers) - 1)]
        for h in helpers:
            h.start()
        try:
            self._infer_loop(q_run, q_out, (t0, e0))       # the caller's thread is worker 0
        except KeyboardInterrupt:
            interrupted = True
        finally:
            self._stop.set()
            for h in helpers:
                while h.is_alive():                 # each finishes the frame it holds
                    try:
                        h.join(0.1)
                    except KeyboardInterrupt:
                        interrupted = True
            self.source.close()
            while cap.is_alive():            # unblock a capture thread waiting on a full queue
                try:
                    q_run.get(timeout=0.1)
                except queue.Empty:
                    pass
            self._put(q_out, _DONE, force=True)
            out.join()
        if self._errors:
            raise self._errors[0]            # an EdgertError from a stage thread (or a bug)
        summary = self._summary(t0, e0, interrupted)
        if writer is not None:
            summary.out = str(self.opt.out)
        return summary

    def _infer_loop(self, q_run: queue.Queue, q_out: queue.Queue, status: tuple | None) -> None:
        """One inference worker: frames from q_run, raw outputs to q_out.  `status` (t0, e0) makes
        this the worker that also prints the status line / JSON summaries."""
        last_status = last_json = time.monotonic()
        while not self._errors and not (status is None and self._stop.is_set()):
            item = q_run.get()
            if item is _DONE:
                try:
                    q_run.put_nowait(_DONE)         # the other workers end too
                except queue.Full:
                    pass
                return
            seq, frame, prepared = item
            try:
                raw, ms = self.app.infer(prepared)
            except BaseException as e:               # noqa: BLE001 - KeyboardInterrupt included
                if status is not None or not isinstance(e, Exception):
                    raise
                self._errors.append(e)
                return
            rec = FrameRecord(frame.source, frame.index, frame.path, frame.t_ns, ms)
            self._put(q_out, (seq, frame, raw, rec), force=True)
            if status is None:
                continue
            now = time.monotonic()
            if self.opt.status_every_s and now - last_status >= self.opt.status_every_s:
                self.echo(self._status_line(status[0]))
                last_status = now
            if self.opt.json_every_s and now - last_json >= self.opt.json_every_s:
                self.emit({"summary": self._summary(status[0], status[1], False).to_json()})
                last_json = now

    def _status_line(self, t0: int) -> str:
        s = self._summary(t0, t0 if self.meter is not None else None, False)
        lat = s.infer_ms.get("p50", 0.0)
        energy = "" if s.j_per_frame is None else f"  {s.j_per_frame * 1e3:.1f} mJ/frame"
        return (f"\r{s.frames} frames  {s.fps:.1f} FPS  p50 {lat:.1f} ms  p99 "
                f"{s.infer_ms.get('p99', 0.0):.1f} ms  dropped {s.dropped}{energy}")

    def _summary(self, t0: int, e0: int | None, interrupted: bool) -> RunSummary:
        with self._lock:
            recs = list(self.records)
        t1 = time.monotonic_ns()
        elapsed = (t1 - t0) / 1e9
        st = self.source.stats
        s = RunSummary(frames=len(recs), elapsed_s=round(elapsed, 3),
                       fps=round(len(recs) / elapsed, 2) if elapsed > 0 else 0.0,
                       infer_ms=_pct([r.infer_ms for r in recs]),
                       e2e_ms=_pct([(r.done_ns - r.capture_ns) / 1e6 for r in recs if r.done_ns]),
                       captured=st.captured, dropped=st.dropped, failed=st.failed,
                       reconnects=st.reconnects, interrupted=interrupted)
        per = getattr(self.source, "per_source", None)
        if per:
            s.per_source = {k: {"captured": v.captured, "delivered": v.delivered, "dropped": v.dropped,
                                "failed": v.failed, "reconnects": v.reconnects} for k, v in per.items()}
        if e0 is not None and recs and self.meter is not None:
            j = self.meter.energy_j(e0, t1)
            if j is not None:
                s.j_per_frame = round(j / len(recs), 6)
                s.energy_estimated = bool(self.meter.estimated)
        return s


def can_show() -> bool:
    """A display exists and this OpenCV build has a GUI (opencv-python-headless has none)."""
    import os
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return False
    import cv2
    try:
        cv2.namedWindow("edgert")
        return True
    except cv2.error:
        return False


def _show(img: np.ndarray, window):
    import cv2
    cv2.imshow("edgert", np.ascontiguousarray(img[:, :, ::-1]))
    cv2.waitKey(1)
    return True

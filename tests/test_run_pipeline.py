"""`edgert run` on frame streams (edgert.pipeline): a video written here stands in for a camera.

Frame accounting (processed + dropped == captured), a decodable annotated output, JSON lines per
frame, a source that fails mid-stream (the reconnect path), a missing camera (one line, exit 2),
Ctrl-C (a clean stop with a playable file) and telemetry over MQTT."""
from __future__ import annotations

import json
import time

import numpy as np
import pytest
from click.testing import CliRunner

import edgert
from converters.package_writer import WriteOptions, write_package
from edgert.cli import main as cli
from edgert.pipeline import ModelApp, Pipeline, PipelineOptions
from edgert.sources import SourceOptions, open_source
from tiny_pkg import tiny_graph

cv2 = pytest.importorskip("cv2")


@pytest.fixture
def seg_pkg(tmp_path):
    """The tiny Conv+Relu model (2 output channels) recorded as a 2-class segmenter."""
    g = tiny_graph()
    g.metadata["task"] = {"name": "segmentation", "labels": ["bg", "fg"]}
    p = tmp_path / "seg.pkg"
    write_package(p, [g], WriteOptions(zstd_level=1))
    return p


def _video(path, n=12, hw=(48, 64), fps=15.0):
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (hw[1], hw[0]))
    for i in range(n):
        f = np.zeros(hw + (3,), np.uint8)
        f[:, (i * 4) % hw[1]:(i * 4) % hw[1] + 8] = (255, 128, 0)
        vw.write(f)
    vw.release()
    return path


def _frames_in(path) -> int:
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n


def test_video_to_annotated_video(seg_pkg, tmp_path):
    clip = _video(tmp_path / "clip.avi", n=12)
    out = tmp_path / "annotated.mp4"
    r = CliRunner().invoke(cli, ["run", str(seg_pkg), "--video", str(clip), "--out", str(out),
                                 "--backend", "numpy", "--json"])
    assert r.exit_code == 0, r.output
    lines = [json.loads(ln) for ln in r.output.splitlines() if ln.startswith("{")]
    frames, summary = lines[:-1], lines[-1]["summary"]
    assert [f["frame"] for f in frames] == list(range(12))
    assert all(f["source"] == str(clip) and "classes" in f for f in frames)
    assert summary["frames"] == summary["captured"] == 12 and summary["dropped"] == 0
    assert _frames_in(out) == 12                                     # decodable, every frame


def test_images_glob_json_per_file(seg_pkg, tmp_path):
    from PIL import Image
    d = tmp_path / "frames"
    d.mkdir()
    for i in range(3):
        Image.fromarray(np.full((20, 30, 3), 60 * i, np.uint8)).save(d / f"f{i}.png")
    r = CliRunner().invoke(cli, ["run", str(seg_pkg), "--images", str(d / "*.png"), "--json",
                                 "--backend", "numpy", "--out", str(tmp_path / "out")])
    assert r.exit_code == 0, r.output
    per = [json.loads(ln) for ln in r.output.splitlines() if ln.startswith('{"source"')]
    assert [p["source"] for p in per] == [str(d / f"f{i}.png") for i in range(3)]
    assert sorted(x.name for x in (tmp_path / "out").iterdir()) == ["f0.png", "f1.png", "f2.png"]


class SlowApp:
    """Wraps an app and sleeps in infer: a consumer slower than the source's frame rate."""

    def __init__(self, app, delay_s, interrupt_after=None):
        self.app, self.delay_s, self.n, self.interrupt_after = app, delay_s, 0, interrupt_after
        self.name = app.name

    def prepare(self, image):
        return self.app.prepare(image)

    def infer(self, prepared):
        self.n += 1
        if self.interrupt_after is not None and self.n > self.interrupt_after:
            raise KeyboardInterrupt
        time.sleep(self.delay_s)
        return self.app.infer(prepared)

    def finish(self, raw):
        return self.app.finish(raw)

    def render(self, image, result):
        return self.app.render(image, result)


def test_realtime_source_drops_and_accounts_every_frame(seg_pkg, tmp_path):
    clip = _video(tmp_path / "clip.avi", n=30, fps=60.0)
    app = SlowApp(ModelApp(edgert.load(seg_pkg, backend="numpy")), delay_s=0.05)
    src = open_source(str(clip), SourceOptions(realtime=True))
    summary = Pipeline(app, src, PipelineOptions(status_every_s=0), echo=lambda s: None).run()
    st = src.stats
    assert summary.frames == st.delivered
    assert st.dropped > 0 and summary.frames + st.dropped == st.captured


def test_stream_failing_mid_run_reconnects(seg_pkg):
    from test_frame_sources import FakeWorld

    world = FakeWorld(fail_after=5)
    src = open_source("rtsp://cam/1", SourceOptions(capture_factory=world, backoff_s=(0.01, 0.04),
                                                    max_frames=12))
    events = []
    src.on_event = lambda kind, detail: events.append(kind)
    app = ModelApp(edgert.load(seg_pkg, backend="numpy"))
    summary = Pipeline(app, src, PipelineOptions(status_every_s=0), echo=lambda s: None).run()
    assert summary.frames == 12 and summary.reconnects >= 1
    assert "disconnected" in events and "reconnected" in events
    assert summary.frames + summary.dropped == summary.captured


def test_ctrl_c_stops_cleanly_with_a_playable_file(seg_pkg, tmp_path):
    clip = _video(tmp_path / "clip.avi", n=30)
    out = tmp_path / "partial.mp4"
    app = SlowApp(ModelApp(edgert.load(seg_pkg, backend="numpy")), delay_s=0.0, interrupt_after=7)
    summary = Pipeline(app, open_source(str(clip)), PipelineOptions(out=out, status_every_s=0),
                       echo=lambda s: None).run()
    assert summary.interrupted and summary.frames == 7
    assert _frames_in(out) == 7


def test_missing_camera_is_one_line_exit_2(seg_pkg):
    r = CliRunner().invoke(cli, ["run", str(seg_pkg), "--camera", "/dev/video97"])
    assert r.exit_code == 2
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "/dev/video97" in lines[0] and "video devices here" in lines[0], r.output


def test_no_source_and_both_sources_are_errors(seg_pkg, tmp_path):
    r = CliRunner().invoke(cli, ["run", str(seg_pkg)])
    assert r.exit_code == 2 and "--camera" in r.output
    r = CliRunner().invoke(cli, ["run", str(seg_pkg), "--synthetic", "--input", str(tmp_path / "x.npy")])
    assert r.exit_code == 2 and "not both" in r.output


def test_synthetic_source_runs(seg_pkg):
    r = CliRunner().invoke(cli, ["run", str(seg_pkg), "--synthetic", "--max-frames", "5",
                                 "--backend", "numpy"])
    assert r.exit_code == 0, r.output
    assert "5 frames" in r.output


def test_mqtt_telemetry_of_a_run(seg_pkg, tmp_path, mosquitto):
    from mqtt_collector import Collector

    clip = _video(tmp_path / "clip.avi", n=10)
    with Collector(mosquitto.port) as col:
        r = CliRunner().invoke(cli, ["run", str(seg_pkg), "--video", str(clip), "--backend", "numpy",
                                     "--mqtt", f"mqtt://127.0.0.1:{mosquitto.port}", "--fleet", "lab",
                                     "--device-id", "pi-01", "--spool", str(tmp_path / "spool.db")])
        assert r.exit_code == 0, r.output
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            n = sum(len(p["t_ms"]) for p in col.of("telemetry", "records"))
            if n >= 10:
                break
            time.sleep(0.1)
    assert col.of("birth") and col.of("birth")[0]["device"] == "pi-01"
    assert sum(len(p["t_ms"]) for p in col.of("telemetry", "records")) == 10
    assert any(p.get("event") == "started" for p in col.of("event"))


class JitterApp(SlowApp):
    """Inference times that vary per frame, so concurrent workers finish out of order."""

    def infer(self, prepared):
        self.n += 1
        time.sleep(0.03 if self.n % 3 == 0 else 0.001)
        return self.app.infer(prepared)


def test_two_workers_keep_frame_order_and_count(seg_pkg, tmp_path):
    clip = _video(tmp_path / "clip.avi", n=20)
    out = tmp_path / "o.avi"
    app = JitterApp(ModelApp(edgert.load(seg_pkg, backend="ort", threads=1)), delay_s=0.0)
    emitted = []
    pipe = Pipeline(app, open_source(str(clip)), PipelineOptions(out=out, workers=2, json_frames=True,
                                                                 status_every_s=0),
                    echo=lambda s: None, emit=emitted.append)
    summary = pipe.run()
    assert summary.frames == 20 and [e["frame"] for e in emitted] == list(range(20))
    assert [r.index for r in pipe.records] == list(range(20))
    assert _frames_in(out) == 20


def test_two_workers_ctrl_c(seg_pkg, tmp_path):
    clip = _video(tmp_path / "clip.avi", n=30)
    out = tmp_path / "partial.avi"
    app = SlowApp(ModelApp(edgert.load(seg_pkg, backend="ort", threads=1)), delay_s=0.005,
                  interrupt_after=9)
    summary = Pipeline(app, open_source(str(clip)), PipelineOptions(out=out, workers=2, status_every_s=0),
                       echo=lambda s: None).run()
    assert summary.interrupted and 8 <= summary.frames <= 12
    assert _frames_in(out) == summary.frames


def test_cli_plans_workers_for_files_only(seg_pkg, tmp_path):
    from edgert.cli.run import _plan_workers
    import os
    cores = os.cpu_count() or 1
    assert _plan_workers(0, 0, "auto", live=True, package=seg_pkg) == (1, 0)
    assert _plan_workers(0, 2, "auto", live=False, package=seg_pkg) == (1, 2)     # threads given
    assert _plan_workers(3, 0, "ort", live=True, package=seg_pkg) == (3, 0)       # workers given
    assert _plan_workers(0, 0, "numpy", live=False, package=seg_pkg) == (1, 0)
    if cores >= 2:
        assert _plan_workers(0, 0, "auto", live=False, package=seg_pkg) == (min(cores, 4), 1)

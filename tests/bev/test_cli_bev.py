"""`edgert bev record` / `edgert bev info` through click's CliRunner."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

pytest.importorskip("cv2")

from edgert.cli import main  # noqa: E402


def test_record_then_info(tmp_path):
    out = tmp_path / "seq"
    r = CliRunner().invoke(main, ["bev", "record", "--out", str(out), "--seconds", "0.25", "--seed", "3",
                                  "--size", "64x48", "--json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.output.strip().splitlines()[-1])
    assert res["samples"] == 3 and res["cameras"] == 6
    assert len(list((out / "sweeps" / "CAM_FRONT").glob("*.jpg"))) == 3
    r = CliRunner().invoke(main, ["bev", "info", str(out), "--check", "--json"])
    assert r.exit_code == 0, r.output
    info = json.loads(r.output)
    assert info["samples"] == 3 and info["cameras"][0] == "CAM_FRONT" and info["events"] == []
    # a second record into the same directory: one line, exit 2, nothing overwritten
    before = (out / "samples.jsonl").read_bytes()
    r = CliRunner().invoke(main, ["bev", "record", "--out", str(out), "--seconds", "0.1"])
    assert r.exit_code == 2 and "already holds a recording" in r.output and "Traceback" not in r.output
    assert (out / "samples.jsonl").read_bytes() == before


@pytest.mark.parametrize("args, match", [
    (["bev", "info", "/nonexistent/seq"], "not a recording"),
    (["bev", "record", "--out", "{tmp}/x", "--size", "big"], "--size wants WxH"),
])
def test_bad_input_is_one_line(tmp_path, args, match):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 2 and match in r.output and "Traceback" not in r.output


def test_run_oracle_all_policies_with_report(bev_seq, tmp_path):
    d, _ = bev_seq
    r = CliRunner().invoke(main, ["bev", "run", "oracle", "--source", str(d), "--policy", "all",
                                  "--speed-factor", "3", "--report", str(tmp_path / "rep"), "--json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.output.strip().splitlines()[-1])
    pol = res["policies"]
    assert set(pol) == {"fifo", "latest", "shrinking-tail", "deadline"} and res["samples"] == 6
    # the oracle answers from ground truth: every frame processed offline is exact
    assert pol["fifo"]["offline"]["iou_mean"] == 1.0
    # at 3x the declared costs fifo queues up: it is never fresher than latest
    assert pol["fifo"]["staleness_ms_mean"] >= pol["latest"]["staleness_ms_mean"]
    for f in ("latency.png", "staleness.png", "accuracy.png", "session.json"):
        assert (tmp_path / "rep" / f).stat().st_size > 0


def test_run_realtime_plays_the_recording_on_the_wall_clock(bev_seq):
    import time

    d, _ = bev_seq
    t0 = time.monotonic()
    r = CliRunner().invoke(main, ["bev", "run", "oracle", "--source", str(d), "--policy", "latest,fifo",
                                  "--realtime", "--json"])
    assert r.exit_code == 0, r.output
    assert time.monotonic() - t0 >= 2 * 5 / 12          # each policy plays the 6 samples at 12 Hz
    pol = json.loads(r.output.strip().splitlines()[-1])["policies"]
    assert pol["fifo"]["offline"]["iou_mean"] == 1.0 and pol["fifo"]["frames_dropped"] == 0
    # the oracle's declared costs (62 + 16 + 4 ms on 6 cameras) are slept for real: latency is at least that
    assert 80 <= pol["latest"]["latency_ms_p50"] < 300


@pytest.mark.parametrize("args, match", [
    (["bev", "run", "oracle", "--camera", "0", "--camera", "1"], "oracle needs ground truth"),
    (["bev", "run", "oracle", "--source", "synthetic", "--camera", "0"], "alternatives"),
    (["bev", "run", "oracle", "--source", "synthetic", "--rig", "rig.json"], "--rig is the calibration"),
    (["bev", "run", "oracle", "--camera", "0", "--policy", "fifo,latest"], "one --policy"),
])
def test_live_rig_bad_input_is_one_line(args, match):
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 2 and match in r.output and "Traceback" not in r.output, r.output


@pytest.mark.parametrize("args, match", [
    (["bev", "run", "/nonexistent.pkg", "--source", "synthetic", "--seconds", "0.2"], "no such model"),
    (["bev", "run", "oracle", "--source", "synthetic", "--policy", "fastest", "--seconds", "0.2"],
     "unknown policy 'fastest'"),
    (["bev", "run", "oracle", "--source", "/nonexistent/seq"], "cannot use"),
])
def test_run_bad_input_is_one_line(args, match):
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 2 and match in r.output and "Traceback" not in r.output, r.output


def test_run_publishes_telemetry_over_mqtt(bev_seq, tmp_path, mosquitto):
    import time

    from mqtt_collector import Collector

    d, _ = bev_seq
    with Collector(mosquitto.port) as col:
        r = CliRunner().invoke(main, ["bev", "run", "oracle", "--source", str(d), "--policy", "latest,deadline",
                                      "--mqtt", f"mqtt://127.0.0.1:{mosquitto.port}", "--fleet", "lab",
                                      "--device-id", "car-01", "--spool", str(tmp_path / "spool.db")])
        assert r.exit_code == 0, r.output
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if len([p for p in col.of("event") if p.get("event") == "bev_summary"]) >= 2:
                break
            time.sleep(0.1)
    assert col.of("birth") and col.of("birth")[0]["device"] == "car-01"
    summaries = [p for p in col.of("event") if p.get("event") == "bev_summary"]
    assert {s["detail"]["policy"] for s in summaries} == {"latest", "deadline"}
    assert all(0 <= s["detail"]["streaming_iou"] <= 1 for s in summaries)

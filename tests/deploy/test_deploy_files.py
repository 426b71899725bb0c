"""Static checks of the deploy/ files and deploy/install.sh run in --dry-run and --root (staging) modes,
with nothing on the real system touched."""
from __future__ import annotations

import configparser
import os
import shutil
import stat
import subprocess
import tomllib
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(60)

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
INSTALL = DEPLOY / "install.sh"
AGENT_UNIT = "edgert-agent.service"
BROKER_UNIT = "edgert-fleet-broker.service"

# What the agent's config dataclass reads, with the example's values.
AGENT_KEYS = {
    "broker": "mqtt://127.0.0.1:1883", "fleet": "default", "device_id": "",
    "package": "/var/lib/edgert/current.pkg", "source": "synthetic", "rate_hz": 10.0,
    "spool": "/var/lib/edgert/spool.db", "spool_max_bytes": 67108864, "backend": "auto",
    "username": "", "password_file": "", "tls_ca": "", "tls_cert": "", "tls_key": "",
    "summary_interval_s": 10.0, "flush_interval_s": 0.5, "sensor": "auto", "public_key": "",
}


def unit(name: str) -> configparser.ConfigParser:
    # strict=False: systemd allows repeated keys (Environment=); no interpolation of '%' specifiers.
    cp = configparser.ConfigParser(strict=False, interpolation=None)
    cp.optionxform = str  # keys are case-sensitive in systemd
    cp.read_string((DEPLOY / "systemd" / name).read_text())
    return cp


def test_agent_unit_has_the_required_settings():
    u = unit(AGENT_UNIT)
    assert "network-online.target" in u["Unit"]["After"].split()
    assert "network-online.target" in u["Unit"]["Wants"].split()
    assert int(u["Unit"]["StartLimitIntervalSec"]) > 0 and int(u["Unit"]["StartLimitBurst"]) > 1
    s = u["Service"]
    assert s["ExecStart"] == "/opt/edgert/venv/bin/edgert agent --config /etc/edgert/agent.toml"
    assert s["User"] == "edgert"
    assert s["Restart"] == "always" and s["RestartSec"] == "5"
    assert s["StateDirectory"] == "edgert"
    assert s["NoNewPrivileges"] == "true"
    assert s["ProtectSystem"] == "strict" and "/var/lib/edgert" in s["ReadWritePaths"].split()
    assert s["ProtectHome"] == "true" and s["PrivateTmp"] == "true"
    assert {"i2c", "video", "gpio"} <= set(s["SupplementaryGroups"].split())
    assert u["Install"]["WantedBy"] == "multi-user.target"


def test_broker_unit_runs_the_embedded_broker():
    u = unit(BROKER_UNIT)
    assert u["Service"]["ExecStart"] == "/opt/edgert/venv/bin/edgert fleet broker"
    assert u["Service"]["User"] == "edgert"
    assert "edgert-agent.service" in u["Unit"]["Before"].split()
    assert u["Install"]["WantedBy"] == "multi-user.target"


def test_agent_example_has_exactly_the_config_keys():
    doc = tomllib.loads((DEPLOY / "agent.example.toml").read_text())
    assert list(doc) == ["agent"]
    assert doc["agent"] == AGENT_KEYS
    assert {k: type(v) for k, v in doc["agent"].items()} == {k: type(v) for k, v in AGENT_KEYS.items()}


def test_mosquitto_conf_has_the_production_settings():
    settings = [line.split(None, 1) for line in (DEPLOY / "mosquitto" / "mosquitto.conf").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    conf = {}
    for key, *value in settings:
        conf.setdefault(key, []).append(value[0] if value else "")
    assert conf["per_listener_settings"] == ["false"]
    assert conf["allow_anonymous"] == ["false"]
    assert conf["password_file"] == ["/etc/mosquitto/passwd"] and conf["acl_file"] == ["/etc/mosquitto/acl"]
    assert conf["persistence"] == ["true"] and conf["persistence_location"]
    assert conf["listener"] == ["1883", "8883"]
    assert all(conf[k][0].startswith("/etc/mosquitto/certs/") for k in ("cafile", "certfile", "keyfile"))
    assert conf["require_certificate"] == ["false"]
    assert int(conf["max_queued_messages"][0]) > 0 and int(conf["max_inflight_messages"][0]) > 0


@pytest.mark.parametrize("script", ["install.sh", "mosquitto/add-device.sh"])
def test_scripts_parse_and_are_executable(script):
    path = DEPLOY / script
    subprocess.run(["bash", "-n", str(path)], check=True, timeout=30)
    assert path.stat().st_mode & stat.S_IXUSR
    assert "set -euo pipefail" in path.read_text()


@pytest.mark.parametrize("bad", ["a/b", "a+b", "a#b", "a b", "a\tb", "a:b", ""])
def test_add_device_refuses_ids_that_are_not_one_topic_level(tmp_path, bad):
    passwd = tmp_path / "passwd"
    r = subprocess.run([str(DEPLOY / "mosquitto" / "add-device.sh"), "-f", str(passwd), bad, "pw"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and "add-device:" in r.stderr
    assert not passwd.exists()


# -- install.sh -------------------------------------------------------------------------------------

def _shims(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """PATH shims for every command that changes the system: each logs its call and fails."""
    bin_dir, log = tmp_path / "shims", tmp_path / "shim-calls.log"
    bin_dir.mkdir()
    for cmd in ("systemctl", "useradd", "groupadd", "usermod", "pip", "pip3", "apt-get", "install", "sed"):
        (bin_dir / cmd).write_text(f'#!/bin/sh\necho "{cmd} $*" >> "{log}"\nexit 97\n')
        (bin_dir / cmd).chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}, log


def install(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(INSTALL), *args], capture_output=True, text=True, timeout=60, env=env)


def test_dry_run_prints_every_step_and_changes_nothing(tmp_path):
    stage = tmp_path / "stage"
    stage.mkdir()
    env, log = _shims(tmp_path)
    r = install("--dry-run", "--root", str(stage), env=env)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert f"+ install -m 644 {DEPLOY}/systemd/{AGENT_UNIT} {stage}/etc/systemd/system/{AGENT_UNIT}" in out
    assert f"+ systemctl --root={stage} enable {AGENT_UNIT}" in out
    assert f"{stage}/etc/edgert/agent.toml" in out
    assert "-m pip install" in out and "useradd --system" in out
    assert list(stage.iterdir()) == []          # the staging root is untouched
    assert not log.exists(), log.read_text()    # and no system-changing command ran


def test_root_install_writes_config_and_unit_and_keeps_an_edited_config(tmp_path):
    stage = tmp_path / "stage"
    stage.mkdir()
    args = ("--root", str(stage), "--no-pip", "--no-user", "--no-systemctl")
    r = install(*args)
    assert r.returncode == 0, r.stderr
    config = stage / "etc/edgert/agent.toml"
    assert config.read_text() == (DEPLOY / "agent.example.toml").read_text()
    unit_file = stage / "etc/systemd/system" / AGENT_UNIT
    assert unit_file.read_text() == (DEPLOY / "systemd" / AGENT_UNIT).read_text()
    assert not (stage / "etc/systemd/system" / BROKER_UNIT).exists()

    config.write_text('[agent]\nbroker = "mqtts://fleet.example:8883"\n')
    r = install(*args, "--with-broker", "--prefix", "/srv/edgert/venv")
    assert r.returncode == 0, r.stderr
    assert "keeping existing" in r.stdout
    assert config.read_text() == '[agent]\nbroker = "mqtts://fleet.example:8883"\n'
    assert unit(AGENT_UNIT)["Service"]["ExecStart"].replace("/opt/edgert/venv", "/srv/edgert/venv") in \
        unit_file.read_text()
    assert "/srv/edgert/venv/bin/edgert fleet broker" in (stage / "etc/systemd/system" / BROKER_UNIT).read_text()


@pytest.mark.skipif(shutil.which("systemctl") is None, reason="systemctl is not installed")
def test_root_install_enables_the_unit_offline(tmp_path):
    stage = tmp_path / "stage"
    stage.mkdir()
    r = install("--root", str(stage), "--no-pip", "--no-user")
    assert r.returncode == 0, r.stdout + r.stderr
    link = stage / "etc/systemd/system/multi-user.target.wants" / AGENT_UNIT
    assert link.is_symlink()
    assert os.readlink(link) == f"/etc/systemd/system/{AGENT_UNIT}"


@pytest.mark.parametrize("model,nv_release,platform", [
    (b"Raspberry Pi 5 Model B Rev 1.0\0", False, "rpi"),
    (b"NVIDIA Jetson Orin Nano Developer Kit\0", True, "jetson"),
    (None, False, "generic"),
])
def test_platform_detection(tmp_path, model, nv_release, platform):
    probe = tmp_path / "probe"
    if model is not None:
        (probe / "proc/device-tree").mkdir(parents=True)
        (probe / "proc/device-tree/model").write_bytes(model)
    if nv_release:
        (probe / "etc").mkdir(parents=True)
        (probe / "etc/nv_tegra_release").write_text("# R36 (release), REVISION: 4.0\n")
    r = install("--dry-run", "--root", str(tmp_path / "stage"), "--probe-root", str(probe))
    assert r.returncode == 0, r.stderr
    assert f"install: platform: {platform}" in r.stdout
    jetson_hint = "onnxruntime-gpu" in r.stdout and "--system-site-packages" in r.stdout
    assert jetson_hint == (platform == "jetson")


def test_install_rejects_unknown_options():
    r = install("--frobnicate")
    assert r.returncode == 2 and "unknown option --frobnicate" in r.stderr


def test_missing_mosquitto_skips_unless_ci_requires_it(monkeypatch):
    import mqtt_broker

    monkeypatch.setattr(mqtt_broker, "mosquitto_available", lambda: False)
    monkeypatch.delenv(mqtt_broker.REQUIRE_ENV, raising=False)
    with pytest.raises(pytest.skip.Exception, match="mosquitto is not installed"):
        mqtt_broker.require_mosquitto()
    monkeypatch.setenv(mqtt_broker.REQUIRE_ENV, "1")
    with pytest.raises(pytest.fail.Exception, match="forbids skipping"):
        mqtt_broker.require_mosquitto()

"""A real Mosquitto broker for tests: one process per test, loopback only, everything in a workdir.

Import as ``from mqtt_broker import Mosquitto, Probe, require_mosquitto`` (tests/ is on sys.path: pytest puts
it there for the rootdir conftest, and tests/conftest.py inserts it explicitly as well).  The
``mosquitto`` fixture in tests/conftest.py wraps this class.

    with Mosquitto(tmp_path) as broker:          # started; stopped (SIGTERM, db saved) on exit
        client.connect("127.0.0.1", broker.port)
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

# Debian installs the broker to /usr/sbin, which is not on PATH for every user or CI runner.
_SBIN_DIRS = ("/usr/sbin", "/usr/local/sbin", "/sbin")
_START_ATTEMPTS = 5  # fresh free ports tried when another process (an xdist worker) wins the race
_READY_LINE = "running"  # "mosquitto version 2.0.11 running": logged after every listener is open


def _which(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path=os.pathsep.join(_SBIN_DIRS))


def mosquitto_binary() -> str | None:
    return _which("mosquitto")


def mosquitto_available() -> bool:
    return mosquitto_binary() is not None


# CI sets it so the real-broker tests fail instead of silently skipping when mosquitto is missing.
REQUIRE_ENV = "EDGERT_REQUIRE_MOSQUITTO"


def require_mosquitto() -> None:
    """Skip the calling test when mosquitto is missing, or fail it when $EDGERT_REQUIRE_MOSQUITTO=1."""
    import pytest

    if mosquitto_available():
        return
    reason = "mosquitto is not installed (apt-get install -y mosquitto)"
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{reason}, and {REQUIRE_ENV}=1 forbids skipping", pytrace=False)
    pytest.skip(reason)


def free_port() -> int:
    """A port the kernel just handed out.  Another process may take it before the broker binds it;
    Mosquitto.start() retries on "Address already in use" for that reason."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MosquittoError(RuntimeError):
    pass


class Mosquitto:
    """One mosquitto process with its config, log, persistence, password and ACL files in ``workdir``.

    ``acl`` is the ACL file's text.  ``users`` (name → password) are written with mosquitto_passwd;
    ``password_file`` uses an existing file instead (e.g. one made by deploy/mosquitto/add-device.sh).
    Either turns anonymous access off.  ``extra_conf`` is appended to the generated config.
    ``config_text`` replaces the generated config altogether (give ``port`` = its listener's port).
    """

    def __init__(self, workdir: Path, port: int | None = None, acl: str | None = None,
                 users: dict[str, str] | None = None, persistence: bool = True, extra_conf: str = "",
                 *, password_file: Path | None = None, config_text: str | None = None,
                 max_queued_messages: int = 10000) -> None:
        binary = mosquitto_binary()
        if binary is None:
            raise MosquittoError("mosquitto is not installed (apt-get install -y mosquitto)")
        self.binary = binary
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._fixed_port = port is not None
        self._port = port
        self.acl = acl
        self.users = dict(users or {})
        self.password_file = Path(password_file) if password_file is not None else None
        self.persistence = persistence
        self.extra_conf = extra_conf
        self.config_text = config_text
        self.max_queued_messages = max_queued_messages  # per client; 0 = unlimited
        if config_text is not None and port is None:
            raise MosquittoError("config_text needs the port of its listener")
        self.conf_path = self.workdir / "mosquitto.conf"
        self.log_path = self.workdir / "mosquitto.log"
        self.stderr_path = self.workdir / "mosquitto.stderr"
        self.proc: subprocess.Popen[bytes] | None = None
        self._log_from = (0, 0)

    # -- addressing ------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise MosquittoError("the broker has no port until start()")
        return self._port

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # -- config ----------------------------------------------------------------------------------

    def _write_files(self) -> None:
        if self.config_text is not None:
            self.conf_path.write_text(self.config_text)
            return
        lines = []
        if os.geteuid() == 0:
            # As root, mosquitto drops to user "mosquitto" unless told otherwise, and then cannot
            # write its log or db in a root-owned tmp dir.  Tests stay root; production drops.
            lines.append("user root")
        lines += [
            f"listener {self._port} 127.0.0.1",  # loopback only, never 1883 (a system broker may own it)
            f"log_dest file {self.log_path}",
            "log_type error", "log_type warning", "log_type notice", "log_type information",
            "connection_messages true",
            "log_timestamp true",
            # As deploy/mosquitto/mosquitto.conf: the default (1000) drops QoS 1 messages for a Python
            # subscriber that falls behind a burst ("Outgoing messages are being dropped" in the log).
            f"max_queued_messages {self.max_queued_messages}",
        ]
        password_file = self.password_file
        if self.users:
            password_file = self.workdir / "passwd"
            self._write_passwords(password_file)
        if password_file is not None:
            lines += ["allow_anonymous false", f"password_file {password_file}"]
        else:
            lines.append("allow_anonymous true")
        if self.acl is not None:
            acl_path = self.workdir / "acl"
            acl_path.write_text(self.acl)
            lines.append(f"acl_file {acl_path}")
        if self.persistence:
            lines += ["persistence true", f"persistence_location {self.workdir}",
                      "persistence_file mosquitto.db"]
        else:
            lines.append("persistence false")
        if self.extra_conf:
            lines.append(self.extra_conf)
        self.conf_path.write_text("\n".join(lines) + "\n")

    def _write_passwords(self, path: Path) -> None:
        tool = _which("mosquitto_passwd")
        if tool is None:
            raise MosquittoError("mosquitto_passwd is not installed (it ships with the mosquitto package)")
        path.unlink(missing_ok=True)
        path.touch(mode=0o600)
        for name, password in self.users.items():
            subprocess.run([tool, "-b", str(path), name, password], check=True, timeout=30,
                           capture_output=True)

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self, timeout_s: float = 10.0) -> Mosquitto:
        if self.running:
            return self
        for attempt in range(_START_ATTEMPTS):
            if not self._fixed_port and (self._port is None or attempt > 0):
                self._port = free_port()
            self._write_files()
            # Both files are appended to across restarts; readiness only looks at what this run wrote.
            self._log_from = (_size(self.log_path), _size(self.stderr_path))
            with open(self.stderr_path, "ab") as err:
                self.proc = subprocess.Popen([self.binary, "-c", str(self.conf_path)],
                                             stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                                             start_new_session=True)
            state = self._wait_ready(timeout_s)
            if state == "ready":
                # Restarts keep this port (clients reconnect to the same URL) and fail if it is taken.
                self._fixed_port = True
                return self
            if state == "in-use" and not self._fixed_port:
                continue  # lost the port race to another process: pick a new port
            break
        self.kill()
        raise MosquittoError(f"mosquitto did not start on 127.0.0.1:{self._port} "
                             f"within {timeout_s:g} s\n{self.log_tail()}")

    def _wait_ready(self, timeout_s: float) -> str:
        deadline = time.monotonic() + timeout_s
        assert self.proc is not None
        while time.monotonic() < deadline:
            log = self._this_run_log()
            if self.proc.poll() is not None:
                return "in-use" if "Address already in use" in log else "exited"
            # The log line alone could be stale from a racing bind; also check the port answers.
            if _READY_LINE in log and _accepts(self.port):
                return "ready"
            time.sleep(0.02)
        return "timeout"

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM and wait: mosquitto writes its persistence db on a clean exit."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout_s)
        self.proc = None

    def kill(self) -> None:
        """SIGKILL: a crash, nothing saved since the last autosave."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def restart(self, timeout_s: float = 10.0) -> Mosquitto:
        """Stop and start on the same port (clients reconnect to the same URL)."""
        self.stop()
        return self.start(timeout_s)

    def _this_run_log(self) -> str:
        log_from, err_from = self._log_from
        return self._read(self.log_path)[log_from:] + self._read(self.stderr_path)[err_from:]

    def log_tail(self, lines: int = 20) -> str:
        text = self._read(self.log_path) + self._read(self.stderr_path)
        return "\n".join(text.splitlines()[-lines:]) or "(mosquitto wrote no log)"

    @staticmethod
    def _read(path: Path) -> str:
        try:
            return path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def __enter__(self) -> Mosquitto:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def _size(path: Path) -> int:
    try:
        return len(path.read_text(errors="replace"))
    except FileNotFoundError:
        return 0


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class Probe:
    """A paho 2.x client for tests: every wait is bounded, messages land in a queue.

        with Probe(broker.port, "d1", username="d1", password="p") as d1:
            d1.subscribe("edgert/v1/+/d1/cmd")
            d1.publish("edgert/v1/f/d1/telemetry", b"x")      # returns once PUBACKed
            topic, payload = d1.get(timeout_s=5)
    """

    def __init__(self, port: int, client_id: str, *, username: str | None = None,
                 password: str | None = None, will: tuple[str, bytes] | None = None,
                 tls_ca: str | None = None, host: str = "127.0.0.1", timeout_s: float = 5.0) -> None:
        import queue
        import threading

        import paho.mqtt.client as mqtt

        self.host, self.port, self.client_id, self.timeout_s = host, port, client_id, timeout_s
        self.messages: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.connack = None  # the CONNACK reason code once one arrived
        self._connected = threading.Event()
        self._subacks: dict[int, list] = {}
        self._subacked = threading.Condition()
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
        if username is not None:
            c.username_pw_set(username, password)
        if will is not None:
            c.will_set(will[0], will[1], qos=1)
        if tls_ca is not None:
            c.tls_set(ca_certs=tls_ca)
        # paho sleeps out its reconnect delay (1 s minimum by default) before loop_stop() returns.
        c.reconnect_delay_set(min_delay=0.1, max_delay=1)  # type: ignore[arg-type]
        c.on_connect = self._on_connect
        c.on_message = lambda _c, _u, msg: self.messages.put((msg.topic, msg.payload))
        c.on_subscribe = self._on_subscribe
        self.client = c

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        self.connack = reason_code
        self._connected.set()

    def _on_subscribe(self, client, userdata, mid, reason_code_list, properties) -> None:
        with self._subacked:
            self._subacks[mid] = list(reason_code_list)
            self._subacked.notify_all()

    def connect(self, background: bool = True) -> Probe:
        """Connect and wait for the CONNACK; raises MosquittoError when refused or silent.

        background=False runs no network thread (nothing is received, nothing reconnects): for a
        client that only connects and then abort()s, e.g. to fire its will.
        """
        self.client.connect(self.host, self.port, keepalive=30)
        if background:
            self.client.loop_start()
        else:
            deadline = time.monotonic() + self.timeout_s
            while not self._connected.is_set() and time.monotonic() < deadline:
                self.client.loop(0.05)
        if not self._connected.wait(self.timeout_s):
            self.close()
            raise MosquittoError(f"{self.client_id}: no CONNACK within {self.timeout_s:g} s")
        if self.connack.is_failure:
            self.close()  # stop paho from retrying a refused login in the background
            raise MosquittoError(f"{self.client_id}: connection refused: {self.connack}")
        return self

    def subscribe(self, topic: str, qos: int = 1) -> list:
        """Subscribe and wait for the SUBACK; returns its reason codes."""
        rc, mid = self.client.subscribe(topic, qos)
        assert rc == 0, rc
        with self._subacked:
            if not self._subacked.wait_for(lambda: mid in self._subacks, self.timeout_s):
                raise MosquittoError(f"{self.client_id}: no SUBACK for {topic} within {self.timeout_s:g} s")
            return self._subacks.pop(mid)

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        """Publish and, for QoS ≥ 1, wait for the broker's acknowledgement."""
        info = self.client.publish(topic, payload, qos)
        if qos:
            info.wait_for_publish(self.timeout_s)
            if not info.is_published():
                raise MosquittoError(f"{self.client_id}: no PUBACK for {topic} within {self.timeout_s:g} s")

    def get(self, timeout_s: float | None = None) -> tuple[str, bytes]:
        import queue

        try:
            return self.messages.get(timeout=self.timeout_s if timeout_s is None else timeout_s)
        except queue.Empty:
            raise MosquittoError(f"{self.client_id}: no message within "
                                 f"{self.timeout_s if timeout_s is None else timeout_s:g} s") from None

    def drain(self, quiet_s: float = 0.3, max_s: float = 5.0) -> list[tuple[str, bytes]]:
        """Everything that arrives until nothing has come for quiet_s seconds (at most max_s)."""
        import queue

        out: list[tuple[str, bytes]] = []
        deadline = time.monotonic() + max_s
        while time.monotonic() < deadline:
            try:
                out.append(self.messages.get(timeout=quiet_s))
            except queue.Empty:
                break
        return out

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def abort(self) -> None:
        """Drop the TCP connection without DISCONNECT, as a crash or power cut would (fires the will).
        Quick only after connect(background=False); otherwise loop_stop() waits up to 1 s."""
        self.client.loop_stop()
        sock = self.client.socket()
        if sock is not None:
            sock.close()

    def __enter__(self) -> Probe:
        return self.connect()

    def __exit__(self, *exc: object) -> None:
        self.close()

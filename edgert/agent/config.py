"""The agent's configuration: one typed dataclass, read from TOML (`[agent]` table), overridden by flags.

deploy/agent.example.toml documents every key; every key is also a command-line flag.
"""
from __future__ import annotations

import dataclasses
import socket
import sys
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from edgert.errors import InputError
from edgert.telemetry.mqtt import DEFAULT_BROKER, BrokerOptions


@dataclass(frozen=True)
class AgentConfig:
    broker: str = DEFAULT_BROKER
    fleet: str = "default"
    device_id: str = ""                     # "" = this machine's hostname
    package: str = ""                       # the package to start with when none was deployed yet
    source: str = "synthetic"               # synthetic | images:DIR | camera[:INDEX]
    rate_hz: float = 10.0                   # inferences per second; 0 = as fast as possible
    spool: str = "/var/lib/edgert/spool.db"
    spool_max_bytes: int = 64 * 1024 * 1024
    backend: str = "auto"
    username: str = ""
    password_file: str = ""
    tls_ca: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    summary_interval_s: float = 10.0
    flush_interval_s: float = 0.5
    sensor: str = "auto"                    # auto = best available; or a sensor name (devices/sensors)
    public_key: str = ""                    # Ed25519 public key file; set = packages must be signed by it

    @property
    def store_dir(self) -> Path:
        """Deployed packages live beside the spool (one state directory, e.g. /var/lib/edgert)."""
        return Path(self.spool).parent / "packages"

    def device(self) -> str:
        return self.device_id or _hostname()

    def broker_options(self) -> BrokerOptions:
        return BrokerOptions(url=self.broker, username=self.username, password_file=self.password_file,
                             tls_ca=self.tls_ca, tls_cert=self.tls_cert, tls_key=self.tls_key)


KEYS = tuple(f.name for f in fields(AgentConfig))


def _hostname() -> str:
    # a topic level may not hold '.', '/', '+', '#': keep the first label of the host name
    name = socket.gethostname().split(".")[0] or "device"
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in name)


def _coerce(name: str, value: Any, where: str) -> Any:
    want = {f.name: f.type for f in fields(AgentConfig)}[name]
    if want == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InputError(f"{where}: {name} must be a number, got {value!r}")
        value = float(value)
    elif want == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise InputError(f"{where}: {name} must be an integer, got {value!r}")
    elif not isinstance(value, str):
        raise InputError(f"{where}: {name} must be a string, got {value!r}")
    if name in ("rate_hz",) and value < 0:
        raise InputError(f"{where}: {name} must be >= 0, got {value}")
    if name in ("summary_interval_s", "flush_interval_s", "spool_max_bytes") and value <= 0:
        raise InputError(f"{where}: {name} must be > 0, got {value}")
    return value


def _read_toml(path: Path) -> dict[str, Any]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as e:
        raise InputError(f"cannot read config {path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise InputError(f"config {path} is not valid TOML: {e}") from None
    table = data.get("agent", data)
    if not isinstance(table, dict):
        raise InputError(f"config {path}: [agent] must be a table")
    return table


def load_config(path: str | Path | None = None, **overrides: Any) -> AgentConfig:
    """Defaults <- the TOML file's [agent] table <- overrides (flags; None = not given)."""
    values: dict[str, Any] = {}
    if path is not None:
        table = _read_toml(Path(path))
        unknown = sorted(set(table) - set(KEYS))
        if unknown:
            raise InputError(f"config {path}: unknown key(s) {', '.join(unknown)}; known: {', '.join(KEYS)}")
        values.update({k: _coerce(k, v, f"config {path}") for k, v in table.items()})
    for k, v in overrides.items():
        if k not in KEYS:
            raise InputError(f"unknown agent option {k!r}")
        if v is not None:
            values[k] = _coerce(k, v, "option")
    return dataclasses.replace(AgentConfig(), **values)

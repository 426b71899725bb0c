"""`edgert fleet`: watch a fleet of agents (monitor), command one (send), run a local broker (broker).

paho and rich are imported inside the commands, so `edgert --help` stays cheap.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import click

from edgert.cli import CliError
from edgert.telemetry.mqtt import DEFAULT_BROKER
from edgert.telemetry.schema import COMMANDS

QUIET_S = 0.3  # --once: this long without a message after the retained burst means the picture is in


def _broker_options(f):
    opts = [
        click.option("--broker", "broker_url", default=DEFAULT_BROKER, show_default=True,
                     help="mqtt://host[:port] or mqtts://host[:port]"),
        click.option("--username", default="", help="broker user name"),
        click.option("--password-file", type=click.Path(path_type=Path), default=None,
                     help="file holding the broker password"),
        click.option("--tls-ca", type=click.Path(path_type=Path), default=None,
                     help="CA bundle (turns TLS on)"),
        click.option("--tls-cert", type=click.Path(path_type=Path), default=None,
                     help="client certificate (mutual TLS)"),
        click.option("--tls-key", type=click.Path(path_type=Path), default=None, help="client key"),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def _broker(broker_url, username, password_file, tls_ca, tls_cert, tls_key):
    from edgert.telemetry.mqtt import BrokerOptions

    return BrokerOptions(url=broker_url, username=username, password_file=str(password_file or ""),
                         tls_ca=str(tls_ca or ""), tls_cert=str(tls_cert or ""), tls_key=str(tls_key or ""))


@click.group()
def fleet() -> None:
    """Watch and command a fleet of edgert agents over MQTT."""


# --------------------------------------------------------------------------- monitor
class _Activity:
    """When the last message arrived (set from paho's thread; a float store is atomic under the GIL)."""

    def __init__(self) -> None:
        self.count = 0
        self.last = 0.0

    def touch(self) -> None:
        self.count += 1
        self.last = time.monotonic()

    def settle(self, interval_s: float) -> None:
        """Wait ~interval, or less once the retained burst has arrived and gone quiet."""
        deadline = time.monotonic() + interval_s
        while (now := time.monotonic()) < deadline:
            if self.count and now - self.last >= QUIET_S:
                return
            time.sleep(min(0.05, deadline - now))


def _ticks(interval_s: float, duration_s: float | None):
    """Sleep to each tick (every interval); with a duration, end at it (one tick at least)."""
    start = time.monotonic()
    k = 1
    while True:
        t = start + k * interval_s
        if duration_s is not None and t > start + duration_s:
            if k == 1:
                time.sleep(max(0.0, start + duration_s - time.monotonic()))
                yield
            return
        time.sleep(max(0.0, t - time.monotonic()))
        yield
        k += 1


@fleet.command()
@_broker_options
@click.option("--fleet", "fleet_id", default="+", show_default=True, help="fleet to watch (+ = all)")
@click.option("--json", "as_json", is_flag=True, help="one JSON snapshot per line per interval")
@click.option("--interval", type=click.FloatRange(0.05, 3600), default=1.0, show_default=True,
              help="seconds between refreshes")
@click.option("--duration", type=click.FloatRange(0, min_open=True), default=None,
              help="stop after S seconds")
@click.option("--once", is_flag=True, help="print one snapshot (after ~interval) and exit")
@click.option("--stale-after", type=click.FloatRange(0, min_open=True), default=None,
              help="seconds of silence before an online device is stale "
                   "(default 3 x its summary interval, at least 30)")
@click.option("--regression-factor", type=click.FloatRange(1, min_open=True), default=1.5,
              show_default=True, help="alert when p50 exceeds this times the device's baseline")
@click.option("--client-id", default="", help="fixed MQTT client id (default: random)")
@click.option("--persistent", is_flag=True,
              help="persistent session: the broker queues QoS 1 messages while we are away (needs --client-id)")
def monitor(broker_url, username, password_file, tls_ca, tls_cert, tls_key, fleet_id, as_json, interval,
            duration, once, stale_after, regression_factor, client_id, persistent):
    """Live table of every device: status, latency, energy, temperature and lost/duplicate messages."""
    from edgert.fleet.monitor import FleetMonitor, MonitorOptions
    from edgert.fleet.render import render, snapshot_json_line

    opts = MonitorOptions(fleet=fleet_id, stale_after_s=stale_after, regression_factor=regression_factor,
                          client_id=client_id, persistent=persistent)
    activity = _Activity()
    mon = FleetMonitor(_broker(broker_url, username, password_file, tls_ca, tls_cert, tls_key), opts,
                       on_update=activity.touch)

    def emit_json() -> None:
        click.echo(snapshot_json_line(mon.snapshot()))  # click.echo flushes every line

    try:
        mon.start()
        if once:
            activity.settle(interval)
            if as_json:
                emit_json()
            else:
                from rich.console import Console
                Console().print(render(mon.snapshot()))
        elif as_json:
            for _ in _ticks(interval, duration):
                emit_json()
        else:
            from rich.live import Live
            with Live(render(mon.snapshot()), auto_refresh=False) as live:
                for _ in _ticks(interval, duration):
                    live.update(render(mon.snapshot()), refresh=True)
    except KeyboardInterrupt:
        pass  # Ctrl-C is how a live view ends: exit 0
    except BrokenPipeError:
        # `edgert fleet monitor --json | head -1`: the reader is done, which is not an error.  Point
        # stdout at /dev/null so the interpreter's final flush does not complain again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    finally:
        mon.stop()


# --------------------------------------------------------------------------- send
@fleet.command()
@click.argument("device")
@click.option("--fleet", "fleet_id", required=True, help="the device's fleet")
@click.option("--cmd", "cmd_name", type=click.Choice(COMMANDS), required=True)
@click.option("--url", default=None, help="deploy: where the device downloads the package")
@click.option("--sha256", default=None, help="deploy: the package's sha256 (64 hex digits)")
@click.option("--iterations", type=click.IntRange(1), default=None, help="bench: iterations to run")
@_broker_options
def send(device, fleet_id, cmd_name, url, sha256, iterations, broker_url, username, password_file, tls_ca,
         tls_cert, tls_key):
    """Publish a command (QoS 1) to one device's cmd topic; the answer arrives as an event."""
    from edgert.fleet.monitor import publish_command
    from edgert.telemetry.topics import topic

    if cmd_name != "deploy" and (url or sha256):
        raise CliError("--url and --sha256 belong to --cmd deploy")
    if cmd_name == "deploy" and not (url and sha256):
        raise CliError("--cmd deploy needs --url and --sha256")
    if cmd_name != "bench" and iterations is not None:
        raise CliError("--iterations belongs to --cmd bench")
    cmd: dict = {"cmd": cmd_name}
    if url:
        cmd["url"], cmd["sha256"] = url, sha256.lower()
    if iterations is not None:
        cmd["iterations"] = iterations
    payload = publish_command(_broker(broker_url, username, password_file, tls_ca, tls_cert, tls_key),
                              fleet_id, device, cmd)
    click.echo(f"sent {cmd_name} (id {payload['id']}) to {topic(fleet_id, device, 'cmd')}")


# --------------------------------------------------------------------------- broker
@fleet.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="address to bind (loopback by default)")
@click.option("--port", type=click.IntRange(1, 65535), default=1883, show_default=True)
def broker(host, port):
    """Run an embedded MQTT broker (amqtt) for one machine or a small bench; Ctrl-C stops it."""
    from edgert.fleet.broker import EmbeddedBroker

    server = EmbeddedBroker(host, port)
    # the line is printed only once the port is bound, so it is true when a script reads it
    server.serve_forever(on_ready=lambda: click.echo(f"embedded broker listening on mqtt://{host}:{port}"))

"""`edgert agent`: the on-device agent (library: edgert/agent)."""
from __future__ import annotations

import signal
from pathlib import Path

import click


def _opt(flag: str, key: str, type_=str, help_: str = ""):
    return click.option(flag, key, type=type_, default=None, help=help_)


@click.command()
@click.option("--config", "config_path", type=click.Path(path_type=Path), default=None,
              help="agent.toml ([agent] table); flags override its keys")
@_opt("--broker", "broker", help_="mqtt://host:port or mqtts://host:port (default mqtt://127.0.0.1:1883)")
@_opt("--fleet", "fleet")
@_opt("--device-id", "device_id", help_="default: the host name")
@_opt("--package", "package", help_="package to run until one is deployed")
@_opt("--source", "source", help_="synthetic | images:DIR | camera[:INDEX]")
@_opt("--rate", "rate_hz", float, "inferences per second (0 = as fast as possible)")
@_opt("--spool", "spool", help_="SQLite spool file (deployed packages go beside it)")
@_opt("--spool-max-bytes", "spool_max_bytes", int)
@_opt("--backend", "backend")
@_opt("--username", "username")
@_opt("--password-file", "password_file")
@_opt("--tls-ca", "tls_ca")
@_opt("--tls-cert", "tls_cert")
@_opt("--tls-key", "tls_key")
@_opt("--summary-interval", "summary_interval_s", float, "seconds between summaries")
@_opt("--flush-interval", "flush_interval_s", float, "seconds between record batches")
@_opt("--sensor", "sensor", help_="auto or a sensor name")
@_opt("--public-key", "public_key", help_="deployed packages must be signed by this key")
@click.option("--duration", type=float, default=None, help="stop after this many seconds")
@click.option("--max-inferences", type=int, default=None, help="stop after this many inferences")
def agent(config_path, duration, max_inferences, **flags):
    """Run a package continuously, measure latency and energy, and report to the fleet over MQTT."""
    from edgert.agent.agent import Agent
    from edgert.agent.config import load_config

    cfg = load_config(config_path, **flags)
    runner = Agent(cfg)

    def _stop(signum, frame):
        runner.stop()

    old = {s: signal.signal(s, _stop) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        runner.start()
        click.echo(f"edgert agent: device {cfg.device()} fleet {cfg.fleet} -> {cfg.broker} "
                   f"(spool {cfg.spool}), package {runner.session.package.file_sha256[:12]} on "
                   f"{runner.session.backend}", err=True)
        report = runner.serve(duration_s=duration, max_inferences=max_inferences)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    click.echo(f"edgert agent: stopped after {report.inferences} inferences, {report.errors} errors, "
               f"{report.commands} commands", err=True)

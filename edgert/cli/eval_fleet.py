"""`edgert eval worker` and `edgert eval dispatch`: fleet mode (library: edgert/eval/fleet.py).

    edgert eval worker --broker mqtt://HOST --fleet F --worker-id ID --dataset DIR --cache DIR [--heartbeat 5]
    edgert eval dispatch --broker mqtt://HOST --fleet F --queue DIR --dataset-name NAME [--timeout 900] [--once]

paho is imported by the library, inside the commands, so `edgert --help` stays cheap.
"""
from __future__ import annotations

import dataclasses
import json
import signal
import socket
import threading
from contextlib import contextmanager
from pathlib import Path

import click

from edgert.cli.eval import DEFAULT_QUEUE, _build_options, _limits, eval_options, limit_options
from edgert.cli.fleet import _broker, _broker_options
from edgert.errors import EvalError


@contextmanager
def _stop_on_signals():
    """SIGINT / SIGTERM set the event: the worker finishes its job first, the dispatcher returns."""
    stop = threading.Event()
    old = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _host_id() -> str:
    return socket.gethostname().split(".")[0] or "worker"


@click.command()
@_broker_options
@click.option("--fleet", "fleet_id", required=True, help="the evaluation fleet")
@click.option("--worker-id", default=None, help="this device's id (default: the host name)")
@click.option("--dataset", type=click.Path(path_type=Path), required=True, help="this device's copy of the dataset")
@click.option("--dataset-name", default=None,
              help="the name dispatchers ask for (default: the --dataset folder's name)")
@click.option("--cache", "cache_dir", type=click.Path(path_type=Path), required=True,
              help="where fetched submissions are kept (by sha256)")
@click.option("--heartbeat", "heartbeat_s", type=click.FloatRange(0, min_open=True), default=5.0,
              show_default=True, help="seconds between heartbeats while a job runs")
@click.option("--max-jobs", type=click.IntRange(1), default=None, help="exit after N jobs")
def worker(broker_url, username, password_file, tls_ca, tls_cert, tls_key, fleet_id, worker_id, dataset,
           dataset_name, cache_dir, heartbeat_s, max_jobs):
    """Evaluation device: take jobs from the fleet one at a time, run them isolated, report results."""
    from edgert.eval.fleet import FleetWorker

    if not dataset.is_dir():
        raise EvalError(f"dataset not found: {dataset}")
    w = FleetWorker(_broker(broker_url, username, password_file, tls_ca, tls_cert, tls_key), fleet_id,
                    worker_id or _host_id(), dataset.resolve(), cache_dir, heartbeat_s=heartbeat_s,
                    dataset_name=dataset_name)
    click.echo(f"edgert eval worker {w.worker_id}: fleet {w.fleet} on {broker_url}, dataset "
               f"{w.dataset_name!r} ({w.dataset})", err=True)
    with _stop_on_signals() as stop:
        stats = w.run(stop=stop, max_jobs=max_jobs)
    for job_id, attempt, status in stats.results:
        click.echo(f"#{job_id} (attempt {attempt}): {status}")
    click.echo(f"edgert eval worker {w.worker_id}: stopped after {stats.jobs} job(s), {stats.declined} "
               f"declined, {stats.malformed} malformed", err=True)


@click.command()
@_broker_options
@click.option("--fleet", "fleet_id", required=True, help="the evaluation fleet")
@click.option("--queue", "queue_dir", type=click.Path(path_type=Path), default=DEFAULT_QUEUE, show_default=True)
@click.option("--dataset-name", required=True,
              help="the dataset to evaluate on: only workers announcing this name get jobs")
@eval_options
@limit_options
@click.option("--lease", "lease_s", type=click.FloatRange(0, min_open=True), default=30.0, show_default=True,
              help="a job whose worker is silent this long is re-queued")
@click.option("--heartbeat", "heartbeat_s", type=click.FloatRange(0, min_open=True), default=5.0,
              show_default=True, help="the workers' heartbeat interval (must be below --lease)")
@click.option("--max-attempts", type=click.IntRange(1), default=3, show_default=True,
              help="worker losses before a job is finished as crashed")
@click.option("--serve-files", default=None, metavar="[HOST:]PORT",
              help="serve the queue folder over HTTP for workers without the shared filesystem")
@click.option("--files-url", default=None,
              help="the base URL workers use for --serve-files (default http://HOST:PORT)")
@click.option("--once", is_flag=True, help="exit when the queue is empty and every job has a result")
@click.option("--duration", "duration_s", type=click.FloatRange(0, min_open=True), default=None,
              help="stop after S seconds (jobs still running are re-queued by the next run)")
@click.option("--json", "as_json", is_flag=True, help="print the summary as JSON")
def dispatch(broker_url, username, password_file, tls_ca, tls_cert, tls_key, fleet_id, queue_dir, dataset_name,
             timeout_s, memory_mb, cpu_s, lease_s, heartbeat_s, max_attempts, serve_files, files_url, once,
             duration_s, as_json, **kw):
    """Referee side: hand queued submissions to the fleet's workers and record their results."""
    from edgert.eval.fleet import FleetDispatcher, serve_directory
    from edgert.eval.queue import EvalQueue, QueueOptions

    queue_dir = Path(queue_dir)
    queue = EvalQueue(QueueOptions(queue_dir))
    server = None
    url = ""
    if serve_files:
        host, _, port = serve_files.rpartition(":")
        if not port.isdigit() or not 0 <= int(port) <= 65535:
            raise EvalError(f"--serve-files wants [HOST:]PORT, got {serve_files!r}")
        # the submissions folder only: never queue.db or other entrants' results
        server, url = serve_directory((queue_dir / "submissions").resolve(), host or "127.0.0.1", int(port))
        url = files_url or url
        click.echo(f"serving {queue_dir / 'submissions'} at {url}", err=True)
    elif files_url:
        raise EvalError("--files-url goes with --serve-files")
    try:
        d = FleetDispatcher(_broker(broker_url, username, password_file, tls_ca, tls_cert, tls_key), fleet_id,
                            queue, _build_options(**kw), _limits(timeout_s, memory_mb, cpu_s), lease_s=lease_s,
                            heartbeat_s=heartbeat_s, max_attempts=max_attempts, dataset_name=dataset_name,
                            serve_files_url=url, files_root=queue_dir / "submissions" if url else None)
        with _stop_on_signals() as stop:
            stats = d.run(stop=stop, once=once, timeout_s=duration_s)
    finally:
        if server is not None:
            server.shutdown()
    if as_json:
        click.echo(json.dumps(dataclasses.asdict(stats)))
    else:
        click.echo(f"dispatched {stats.finished} result(s): {stats.published} job message(s), "
                   f"{stats.republished} republished, {stats.requeued} re-queued after a lost worker, "
                   f"{stats.duplicates} duplicate and {stats.malformed} malformed message(s) ignored")
    if once and stats.timed_out:   # --once with --duration: the queue was not done in time
        raise click.exceptions.Exit(1)

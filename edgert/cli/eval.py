"""`edgert eval …`: LPCVC-style timed evaluation (library: edgert/eval).

    edgert eval SUBMISSION --dataset DIR [--task segmentation --classes 14] [--json] [--report DIR]
    edgert eval submit SUBMISSION --queue DIR [--entrant NAME] [--dataset DIR]
    edgert eval serve --queue DIR --dataset DIR [--timeout 900] [--once]
    edgert eval leaderboard [--queue DIR] [--json]
    edgert eval make-dataset DIR [--n 16] [--size 512]
"""
from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import click

from edgert.errors import EvalError

DEFAULT_QUEUE = os.environ.get("EDGERT_EVAL_QUEUE", "queue")


class EvalGroup(click.Group):
    """`edgert eval FILE …` is `edgert eval run FILE …`: the common case needs no sub-command."""

    def parse_args(self, ctx, args):
        if args and not args[0].startswith("-") and args[0] not in self.commands:
            args = ["run", *args]
        return super().parse_args(ctx, args)


def _floats3(value: str | None, name: str) -> tuple[float, float, float] | None:
    if value is None:
        return None
    try:
        parts = tuple(float(v) for v in value.split(","))
    except ValueError:
        raise EvalError(f"--{name} wants three comma-separated numbers, got {value!r}") from None
    if len(parts) != 3:
        raise EvalError(f"--{name} wants three comma-separated numbers, got {value!r}")
    return parts


def _size(value: str | None) -> tuple[int, int] | None:
    if not value:
        return None
    try:
        parts = [int(v) for v in value.lower().split("x")]
    except ValueError:
        raise EvalError(f"--size wants HxW, got {value!r}") from None
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or min(parts) <= 0:
        raise EvalError(f"--size wants HxW, got {value!r}")
    return parts[0], parts[1]


def eval_options(f):
    """The options every evaluating command shares."""
    opts = [
        click.option("--task", type=click.Choice(["segmentation", "classification"]), default="segmentation",
                     show_default=True),
        click.option("--classes", type=int, default=14, show_default=True),
        click.option("--warmup", type=int, default=5, show_default=True, help="untimed warm-up images"),
        click.option("--timed-region", type=click.Choice(["end-to-end", "inference"]), default="end-to-end",
                     show_default=True, help="end-to-end = decode + preprocess + inference + postprocess"),
        click.option("--score", "score_name", default="lpcvc2023", show_default=True,
                     help="lpcvc2023 | accuracy | accuracy_per_joule"),
        click.option("--backend", default="auto", show_default=True, help="for packages: auto | ort | numpy"),
        click.option("--threads", type=int, default=0),
        click.option("--limit", type=int, default=0, help="only the first N images (0 = all)"),
        click.option("--robustness", is_flag=True, help="add the corruption / system-noise suite"),
        click.option("--size", "size_", default=None, help="ONNX/TFLite input HxW (packages carry their own)"),
        click.option("--mean", default=None, help="ONNX/TFLite: r,g,b mean on [0,1] pixels"),
        click.option("--std", default=None, help="ONNX/TFLite: r,g,b std on [0,1] pixels"),
        click.option("--layout", type=click.Choice(["", "nchw", "nhwc"]), default="",
                     help="ONNX/TFLite input layout (default nchw for ONNX, nhwc for TFLite)"),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def limit_options(f):
    opts = [
        click.option("--timeout", "timeout_s", type=float, default=900.0, show_default=True,
                     help="wall-clock limit per evaluation (s)"),
        click.option("--memory-mb", type=int, default=8192, show_default=True, help="address-space limit"),
        click.option("--cpu-s", type=int, default=3600, show_default=True, help="CPU-time limit"),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _build_options(task, classes, warmup, timed_region, score_name, backend, threads, limit, robustness,
                   size_, mean, std, layout):
    from edgert.eval.types import EvalOptions

    return EvalOptions(task=task, classes=classes, warmup=warmup, timed_region=timed_region, score=score_name,
                       backend=backend, threads=threads, limit=limit, robustness=robustness, size=_size(size_),
                       mean=_floats3(mean, "mean") or (0.0, 0.0, 0.0), std=_floats3(std, "std") or (1.0, 1.0, 1.0),
                       layout=layout)


def _limits(timeout_s, memory_mb, cpu_s):
    from edgert.eval.types import Limits
    return Limits(timeout_s=timeout_s, address_space_mb=memory_mb, cpu_time_s=cpu_s)


def _check_dataset(dataset: Path, opts, sensor_root: Path = Path("/")) -> None:
    """The referee's data and device are checked here, before any child runs: a broken dataset, or
    an energy score on a device with no power sensor, is the harness's problem (an error now), never
    a submission's verdict."""
    from edgert.eval.dataset import open_dataset
    from edgert.eval.harness import check_energy
    open_dataset(dataset, opts.task, opts.classes, check="full")
    check_energy(opts, sensor_root)


def _summary_line(record: dict) -> str:
    m, t, s = record["metrics"], record["timing"], record["score"]
    acc = f"Dice {m['dice_mean']:.4f}  mIoU {m['miou']:.4f}" if "dice_mean" in m else f"top-1 {m['top1']:.4f}"
    return (f"{acc}  {t['mean_s'] * 1000:.2f} ms/image (p50 {t['p50_ms']:.2f}, p99 {t['p99_ms']:.2f}; "
            f"{record['timed_region']}, after {record['warmup']} warm-up)  score {s['formula']} = {s['value']:.4f}")


@click.group(cls=EvalGroup)
def eval_group() -> None:
    """LPCVC-style timed evaluation of submissions (packages, ONNX, TFLite)."""


@eval_group.command("run")
@click.argument("submission", type=click.Path(path_type=Path))
@click.option("--dataset", type=click.Path(path_type=Path), required=True)
@eval_options
@limit_options
@click.option("--json", "as_json", is_flag=True, help="print the result record as JSON")
@click.option("--report", "report_dir", type=click.Path(path_type=Path), default=None,
              help="write result.json, report.md/.html and plots here")
@click.option("--no-isolation", is_flag=True, help="evaluate in this process (debugging; no limits, no timeout)")
@click.option("--sensor-root", type=click.Path(path_type=Path), default=Path("/"), hidden=True,
              help="probe power sensors under this root (tests: a fake sysfs tree)")
def run_cmd(submission, dataset, as_json, report_dir, no_isolation, sensor_root, timeout_s, memory_mb, cpu_s, **kw):
    """Evaluate one submission on a dataset: accuracy, harness-measured time, score."""
    opts = _build_options(**kw)
    if not submission.is_file():
        raise EvalError(f"submission not found: {submission}")
    _check_dataset(dataset, opts, sensor_root)
    if no_isolation:
        from edgert.eval.harness import evaluate

        run = evaluate(submission, dataset, opts, sensor_root=sensor_root)
        record = run.record
        if report_dir is not None:
            from edgert.eval.report import write_report
            write_report(record, report_dir, run.overlays, class_names=record["dataset"].get("class_names"))
    else:
        from edgert.eval.isolation import EvalRequest, run_isolated

        verdict, record = run_isolated(EvalRequest(submission.resolve(), dataset.resolve(), opts,
                                                   report_dir.resolve() if report_dir else None, sensor_root),
                                       _limits(timeout_s, memory_mb, cpu_s))
        if verdict.status != "ok":
            record = {**(record or {}), "verdict": verdict.to_json()}
            if as_json:
                click.echo(json.dumps(record, indent=1, default=str))
            raise EvalError(f"verdict {verdict.status}: {verdict.reason}")
    if as_json:
        click.echo(json.dumps(record, indent=1, default=str))
    else:
        click.echo(_summary_line(record))
        if report_dir is not None:
            click.echo(f"report: {report_dir / 'report.md'}")


@eval_group.command()
@click.argument("submission", type=click.Path(path_type=Path))
@click.option("--queue", "queue_dir", type=click.Path(path_type=Path), default=DEFAULT_QUEUE, show_default=True)
@click.option("--entrant", default=None, help="team name (default: the user name)")
@click.option("--dataset", type=click.Path(path_type=Path), default=None,
              help="a local copy of (part of) the dataset for the dry run")
@eval_options
def submit(submission, queue_dir, entrant, dataset, **kw):
    """Entrant side: validate a submission locally (structure, hash, dry run), then queue it."""
    from edgert.eval.queue import EvalQueue, QueueOptions
    from edgert.eval.submission import kind_of, sha256_file

    if not submission.is_file():
        raise EvalError(f"submission not found: {submission}")
    kind = kind_of(submission)
    if kind == "package":       # structure and every hash, before anything else
        from edgert.package import read_package
        pkg = read_package(submission)
        getattr(pkg, "close", lambda: None)()
    if dataset is not None:
        from edgert.eval.harness import dry_run
        dr = dry_run(submission, dataset, _build_options(**kw))
        click.echo(f"dry run ok: {dr['image']} in {dr['ms']:.1f} ms", err=True)
    job_id = EvalQueue(QueueOptions(queue_dir)).submit(submission, entrant or _user())
    click.echo(f"queued #{job_id}: {submission.name} sha256 {sha256_file(submission)[:16]} ({kind})")


def _user() -> str:
    import getpass
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "anonymous"


@eval_group.command()
@click.option("--queue", "queue_dir", type=click.Path(path_type=Path), default=DEFAULT_QUEUE, show_default=True)
@click.option("--dataset", type=click.Path(path_type=Path), required=True)
@eval_options
@limit_options
@click.option("--once", is_flag=True, help="process the queue until it is empty, then exit")
@click.option("--poll", "poll_s", type=float, default=1.0, show_default=True)
def serve(queue_dir, dataset, timeout_s, memory_mb, cpu_s, once, poll_s, **kw):
    """Referee side: evaluate queued submissions one at a time on this device; Ctrl-C stops."""
    import signal

    from edgert.eval.queue import EvalQueue, QueueOptions
    from edgert.eval.queue import serve as serve_queue

    _check_dataset(dataset, _build_options(**kw))
    queue = EvalQueue(QueueOptions(queue_dir))
    stop = threading.Event()
    old = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}

    def on_job(job, verdict, result):
        score = "" if verdict.status != "ok" else f" score {result['score']['value']:.4f}"
        click.echo(f"#{job.id} {job.entrant}: {verdict.status}{score} {verdict.reason}".rstrip())

    try:
        n = serve_queue(queue, Path(dataset).resolve(), _build_options(**kw), _limits(timeout_s, memory_mb, cpu_s),
                        once=once, poll_s=poll_s, stop=stop, on_job=on_job)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    click.echo(f"served {n} submission(s)", err=True)


@eval_group.command()
@click.option("--queue", "queue_dir", type=click.Path(path_type=Path), default=DEFAULT_QUEUE, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def leaderboard(queue_dir, as_json):
    """The leaderboard: best ok score per entrant; failed submissions listed with their verdicts."""
    from edgert.eval.queue import EvalQueue, QueueOptions

    if not (Path(queue_dir) / "queue.db").is_file():
        raise EvalError(f"no queue at {queue_dir} (submit something first, or pass --queue)")
    rows = EvalQueue(QueueOptions(queue_dir)).leaderboard()
    if as_json:
        click.echo(json.dumps(rows, indent=1, default=str))
        return
    if not rows:
        click.echo("no results yet")
        return
    for r in rows:
        click.echo(_board_line(r))


def _board_line(r: dict) -> str:
    if r.get("rank") is not None:
        score = r.get("score")
        score = score.get("value") if isinstance(score, dict) else score
        return (f"{r['rank']:>3}. {r['entrant']:<20} #{r['job_id']:<5} score {score:.4f}  "
                + "  ".join(f"{k} {v}" for k, v in r.items()
                            if k not in ("rank", "entrant", "job_id", "score") and v is not None))
    return f"  -  {r.get('entrant', '?'):<20} #{r.get('job_id', '?'):<5} {r.get('verdict')}: {r.get('reason', '')}"


@eval_group.command("make-dataset")
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--n", "count", type=int, default=16, show_default=True)
@click.option("--size", type=int, default=512, show_default=True)
@click.option("--classes", type=int, default=14, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
def make_dataset(out, count, size, classes, seed):
    """Write a synthetic UAV-style segmentation set (images/ + labels/) for tests and demos."""
    from edgert.eval.synthetic import write_synthetic_segmentation

    write_synthetic_segmentation(out, count, size=size, classes=classes, seed=seed)
    click.echo(f"wrote {count} images ({size}x{size}, {classes} classes) to {out}")


def _register_fleet_commands() -> None:
    try:
        from edgert.cli.eval_fleet import dispatch, worker
    except ImportError:   # pragma: no cover - the fleet module ships with edgert
        return
    eval_group.add_command(worker)
    eval_group.add_command(dispatch)


_register_fleet_commands()

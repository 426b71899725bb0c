"""The isolated child: ``python -m edgert.eval.child REQUEST.json``.

Reads the request, evaluates in this process (which isolation.py started with resource limits, no
network and a read-only dataset), writes the result record atomically to ``result_path``, writes the
report folder if asked.  Exit codes: 0 = ok; 3 = the submission is invalid (the record says why);
anything else = crashed (the parent reads the exit status and stderr).
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

EXIT_OK = 0
EXIT_INVALID = 3
EXIT_USAGE = 4


def write_json_atomic(path: Path, obj: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1, allow_nan=False, default=str)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def options_from_json(d: dict):
    from edgert.eval.types import EvalOptions

    d = dict(d)
    for key in ("size", "mean", "std"):
        if d.get(key) is not None:
            d[key] = tuple(d[key])
    return EvalOptions(**d)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m edgert.eval.child REQUEST.json", file=sys.stderr)
        return EXIT_USAGE
    req = json.loads(Path(argv[0]).read_text())
    result_path = Path(req["result_path"])
    from edgert.errors import EdgertError
    from edgert.eval.harness import evaluate

    try:
        opts = options_from_json(req["options"])
        run = evaluate(req["submission"], req["dataset"], opts, sensor_root=Path(req.get("sensor_root") or "/"))
    except EdgertError as e:
        write_json_atomic(result_path, {"verdict": {"status": "invalid", "reason": str(e).splitlines()[0]},
                                        "submission": {"path": req["submission"]}})
        return EXIT_INVALID
    if req.get("report_dir"):
        from edgert.eval.report import write_report

        write_report(run.record, Path(req["report_dir"]), run.overlays,
                     class_names=run.record["dataset"].get("class_names"))
    write_json_atomic(result_path, run.record)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

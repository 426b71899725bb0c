"""Driving the CLI in tests (import: ``from cli_helpers import invoke, assert_one_line_error``)."""
from __future__ import annotations

from click.testing import CliRunner

from edgert.cli import main


def invoke(*args, env: dict | None = None, input: str | None = None):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False, env=env, input=input)


def assert_one_line_error(res, *needles: str) -> None:
    """Bad input: exit code 2 and exactly one line starting with 'error:' (never a traceback)."""
    assert res.exit_code == 2, res.output
    text = res.output.strip()
    assert "Traceback" not in text
    assert text.startswith("error:") and len(text.splitlines()) == 1, text
    for n in needles:
        assert n in text, text


def convert_metadata(src, pkg, *args) -> dict:
    """`edgert convert SRC -o PKG ARGS --quiet` must succeed; the package's first model's metadata."""
    import json
    res = invoke("convert", src, "-o", pkg, *args, "--quiet")
    assert res.exit_code == 0, res.output
    return json.loads(invoke("inspect", pkg, "--json").output)["models"][0]["metadata"]

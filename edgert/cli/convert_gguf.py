"""`edgert convert model.gguf -o model.pkg`: the GGUF branch of the convert command
(converters/gguf).  Without --wbits the weights are repacked losslessly; --wbits N [--group-size G]
requantizes every attn_* / ffn_* matrix, --embed-bits N the token embedding too."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import click
from click.core import ParameterSource

# convert options that mean something for an ONNX source only
ONNX_ONLY = ("abits", "granularity", "method", "mixed", "small_layer_params", "observer", "calib_dir",
             "calib_random", "calib_count", "layer_bits", "keep_float", "size", "input_shape",
             "pad_multiple", "mean", "std", "channels", "layout", "scale_dtype", "sparsity", "nm",
             "task_name", "labels_file", "task_params", "size_budget", "avg_bits", "passes")
GGUF_DEFAULTS = {"group_size": 32, "compress": "none"}   # LLM weights stay uncompressed (mappable)


def is_gguf(source: Path) -> bool:
    from converters.source_format import sniff

    if source.suffix.lower() == ".gguf":
        return True
    try:
        return source.is_file() and sniff(source) == "gguf"
    except OSError:
        return False


def convert_gguf_source(ctx: click.Context, source: Path, output: Path, params: dict) -> None:
    """Run the GGUF converter with the options given on the command line; print its report."""
    from converters.gguf import GgufConvertOptions, convert_gguf
    from edgert.cli import CliError

    def given(name: str) -> bool:
        return ctx.get_parameter_source(name) not in (ParameterSource.DEFAULT, None)

    stray = [name for name in ONNX_ONLY if given(name)]
    if stray:
        flag = "--" + {"task_name": "task", "labels_file": "labels", "task_params": "task-param",
                       "calib_dir": "calib"}.get(stray[0], stray[0]).replace("_", "-")
        raise CliError(f"{flag} applies to ONNX models, not to a GGUF source")
    if not source.is_file():
        raise CliError(f"source model not found: {source}")
    signing_key = None
    if params["sign_key"] is not None:
        from edgert.package.signing import load_private_key
        signing_key = load_private_key(params["sign_key"])
    opts = GgufConvertOptions(
        wbits=params["wbits"] if given("wbits") else None,
        group_size=params["group_size"] if given("group_size") else GGUF_DEFAULTS["group_size"],
        embed_bits=params["embed_bits"], zero_mode=params["zero_mode"],
        compress=params["compress"] if given("compress") else GGUF_DEFAULTS["compress"],
        signing_key=signing_key, progress=not params["quiet"] and not params["as_json"])
    report = convert_gguf(source, output, opts)
    src_bytes = source.stat().st_size
    if params["as_json"]:
        click.echo(json.dumps({"source": str(source), "source_bytes": src_bytes, **dataclasses.asdict(report),
                               "options": {k: v for k, v in dataclasses.asdict(opts).items()
                                           if k not in ("signing_key", "progress")}}, indent=2))
        return
    how = ", ".join(filter(None, [
        f"matrices requantized to {opts.wbits} bits" if opts.wbits else "matrices lossless",
        f"embedding to {opts.embed_bits} bits" if opts.embed_bits else "",
        f"group {opts.group_size}, {opts.zero_mode} zero" if opts.wbits or opts.embed_bits else ""]))
    click.echo(f"{source} -> {output}: {how}")
    click.echo(f"  {src_bytes:,} bytes -> {report.size_bytes:,} bytes ({report.size_bytes / src_bytes:.3f}x)"
               f"   sha256 {report.file_sha256}{'   signed' if report.signed else ''}")

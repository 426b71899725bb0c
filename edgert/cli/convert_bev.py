"""`edgert convert bev.onnx -o bev.pkg --wbits 4 --abits 6 --calib seq/`: the BEV branch of the
convert command (converters/bev_bundle.py).  A BEV ONNX is recognised by its "edgert.bev.stages"
metadata; --calib names a recording (`edgert bev record`), which calibrates every stage through the
float model's cascade."""
from __future__ import annotations

import json
import mmap
from pathlib import Path

import click
from click.core import ParameterSource

MARKER = b"edgert.bev.stages"
# convert options that mean nothing for a BEV model (its inputs, preprocessing and post-processing
# are fixed by the export's metadata)
NOT_FOR_BEV = ("calib_random", "size", "input_shape", "pad_multiple", "mean", "std", "channels", "layout",
               "scale_dtype", "sparsity", "nm", "task_name", "labels_file", "task_params", "embed_bits",
               "zero_mode", "size_budget", "avg_bits", "passes")


def is_bev_source(source: Path) -> bool:
    """Cheap probe: the metadata key appears in the file and the ONNX declares it."""
    if not source.is_file() or source.stat().st_size == 0:
        return False
    try:
        with open(source, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            if mm.find(MARKER) < 0:
                return False
    except (OSError, ValueError):
        return False
    from converters.bev_bundle import is_bev_onnx
    return is_bev_onnx(source)


def convert_bev_source(ctx: click.Context, source: Path, output: Path, params: dict) -> None:
    from converters.bev_bundle import BevConvertOptions, convert_bev
    from edgert.cli import CliError, _layer_bits

    def given(name: str) -> bool:
        return ctx.get_parameter_source(name) not in (ParameterSource.DEFAULT, None)

    if given("calib_random"):
        raise CliError("a BEV model calibrates on a recording of its rig: --calib DIR (from `edgert bev "
                       "record`), not --calib-random")
    stray = [name for name in NOT_FOR_BEV if given(name)]
    if stray:
        flag = "--" + {"task_name": "task", "labels_file": "labels", "task_params": "task-param"
                       }.get(stray[0], stray[0]).replace("_", "-")
        raise CliError(f"{flag} does not apply to a BEV model (its inputs and outputs come from the export)")
    signing_key = None
    if params["sign_key"] is not None:
        from edgert.package.signing import load_private_key
        signing_key = load_private_key(params["sign_key"])
    quiet = params["quiet"] or params["as_json"]
    opts = BevConvertOptions(
        wbits=params["wbits"], abits=params["abits"], granularity=params["granularity"],
        group_size=params["group_size"], method=params["method"], mixed_precision=params["mixed"],
        small_layer_params=params["small_layer_params"], layer_bits=_layer_bits(params["layer_bits"]),
        keep_float=set(filter(None, (params["keep_float"] or "").split(","))),
        calib_dir=params["calib_dir"], calib_count=params["calib_count"],
        observer=params["observer"] or "minmax", compress=params["compress"], signing_key=signing_key,
        progress=not quiet, log=None if quiet else (lambda m: click.echo("  " + m, err=True)))
    if params.get("distill", "none") == "view-guided":
        source = _distilled(source, output, params, opts.log)
    report = convert_bev(source, output, opts)
    click.echo(json.dumps(report.to_json(), indent=2) if params["as_json"] else report.format_table())


def _distilled(source: Path, output: Path, params: dict, log) -> Path:
    """QD-BEV view-guided distillation (zoo/bev/qat.py: W/A fake quantization, task loss + image- and
    BEV-feature MSE against the fp32 model) on the --calib recording; the fine-tuned weights (already
    on the weight grid) are exported next to the output and converted from there."""
    from edgert.bev.recording import Recording
    from edgert.cli import CliError

    if params["calib_dir"] is None:
        raise CliError("--distill view-guided trains on the --calib recording: give --calib DIR")
    try:
        from zoo.bev.export import META_RIG, export_onnx, params_from_onnx
        from zoo.bev.qat import QatOptions, qat
    except ImportError as e:
        raise CliError(f"--distill needs the `train` extra (jax, optax): {e.name} is missing") from None
    import onnx

    from edgert.bev.rig import Rig
    rec = Recording(params["calib_dir"])
    model = onnx.load(str(source))
    meta = {m.key: m.value for m in model.metadata_props}
    rig = Rig.from_json(json.loads(meta[META_RIG])) if META_RIG in meta else rec.rig
    if rig != rec.rig:
        raise CliError(f"--calib {params['calib_dir']} was recorded with another rig calibration than the model's")
    fp32 = params_from_onnx(model)
    qo = QatOptions(wbits=params["wbits"] or 4, abits=params["abits"] or 8, minutes=params["distill_minutes"],
                    lr=5e-5, eval_samples=0)
    tuned, report = qat(fp32, qo, sources=[rec], log=log)
    out = output.with_name(output.stem + ".distilled.onnx")
    export_onnx(tuned, rig, out)
    if log:
        log(f"view-guided distillation: {report.steps} steps in {report.seconds:.0f} s -> {out}")
    return out

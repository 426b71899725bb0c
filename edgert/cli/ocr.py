"""`edgert convert-ocr`: PP-OCR det + cls + rec ONNX models -> one quantized OCR bundle
(converters/ocr_bundle.py; run it with `edgert.ocr.load_ocr`)."""
from __future__ import annotations

import json
from pathlib import Path

import click


def _globs(value: str | None) -> set[str]:
    return set(filter(None, (v.strip() for v in (value or "").split(","))))


_bits = click.IntRange(1, 8)
_abits = click.IntRange(2, 8)


@click.command("convert-ocr")
@click.option("--det", "det", type=click.Path(path_type=Path), required=True, help="text detection ONNX")
@click.option("--cls", "cls", type=click.Path(path_type=Path), default=None,
              help="text direction classifier ONNX (required unless --no-cls)")
@click.option("--no-cls", is_flag=True, help="bundle without the direction classifier")
@click.option("--rec", "rec", type=click.Path(path_type=Path), required=True, help="text recognition ONNX")
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="bundle to write")
@click.option("--wbits", type=_bits, default=8, show_default=True, help="weight bits of every stage")
@click.option("--abits", type=_abits, default=8, show_default=True, help="activation bits of every stage")
@click.option("--det-wbits", type=_bits, default=None, help="det weight bits (default --wbits)")
@click.option("--cls-wbits", type=_bits, default=None, help="cls weight bits (default --wbits)")
@click.option("--rec-wbits", type=_bits, default=None, help="rec weight bits (default --wbits)")
@click.option("--det-abits", type=_abits, default=None, help="det activation bits (default --abits)")
@click.option("--cls-abits", type=_abits, default=None, help="cls activation bits (default --abits)")
@click.option("--rec-abits", type=_abits, default=None, help="rec activation bits (default --abits)")
@click.option("--weight-only", "weight_only", multiple=True, type=click.Choice(["det", "cls", "rec"]),
              help="no activation quantization in this stage (repeatable)")
@click.option("--det-keep-float", default=None, help="det layers (globs, comma-separated) kept in float")
@click.option("--cls-keep-float", default=None, help="cls layers kept in float")
@click.option("--rec-keep-float", default=None, help="rec layers kept in float")
@click.option("--det-avg-bits", type=click.FloatRange(1, 32), default=None,
              help="det mixed precision: this many bits per weight on average (probes + knapsack)")
@click.option("--cls-avg-bits", type=click.FloatRange(1, 32), default=None, help="cls mixed precision")
@click.option("--rec-avg-bits", type=click.FloatRange(1, 32), default=None,
              help="rec mixed precision (8.3 with 8-bit activations keeps rec's sensitive layers float)")
@click.option("--det-pass", multiple=True, help="det compression pass: os+ | os-gamma | adaround | qdrop (repeatable)")
@click.option("--cls-pass", multiple=True, help="cls compression pass")
@click.option("--rec-pass", multiple=True, help="rec compression pass")
@click.option("--calib", "calib_dir", type=click.Path(path_type=Path), default=None,
              help="folder of page images (det calibration; its text lines calibrate cls and rec)")
@click.option("--calib-count", type=click.IntRange(1, 100000), default=16, show_default=True,
              help="pages used")
@click.option("--det-calib-side", type=click.IntRange(32, 8192), default=None,
              help="det short side while calibrating (default: the runtime's 736)")
@click.option("--max-calib-lines", type=click.IntRange(1, 100000), default=96, show_default=True,
              help="text lines kept for cls / rec calibration")
@click.option("--cascade", type=click.Choice(["quantized", "float"]), default="quantized",
              show_default=True, help="which previous stage finds / turns the calibration lines")
@click.option("--sqnr-batches", type=click.IntRange(0, 1000), default=1, show_default=True,
              help="calibration batches replayed for the per-layer SQNR column (0 = skip)")
@click.option("--keys", "keys_path", type=click.Path(path_type=Path), default=None,
              help="dictionary file, one entry per line (default: the rec model's metadata)")
@click.option("--granularity", type=click.Choice(["tensor", "channel", "group"]), default="channel",
              show_default=True)
@click.option("--method", default="auto", show_default=True, help="rtn | rtn_mse | auto")
@click.option("--mixed", type=click.Choice(["auto", "off"]), default="auto", show_default=True,
              help="below 8 bits, keep depthwise and small layers at 8 bits")
@click.option("--observer", default="minmax", show_default=True, help="minmax | percentile | mse")
@click.option("--compress", type=click.Choice(["zstd", "none"]), default="zstd", show_default=True)
@click.option("--sign-key", type=click.Path(path_type=Path), default=None, help="Ed25519 private key")
@click.option("--quiet", is_flag=True, help="no progress output")
@click.option("--json", "as_json", is_flag=True, help="print the summary as JSON")
def convert_ocr(det, cls, no_cls, rec, output, wbits, abits, det_wbits, cls_wbits, rec_wbits, det_abits,
                cls_abits, rec_abits, weight_only, det_keep_float, cls_keep_float, rec_keep_float,
                det_avg_bits, cls_avg_bits, rec_avg_bits, det_pass, cls_pass, rec_pass, calib_dir, calib_count, det_calib_side, max_calib_lines, cascade, sqnr_batches,
                keys_path, granularity, method, mixed, observer, compress, sign_key, quiet, as_json):
    """Convert PP-OCR det, cls and rec models into one quantized OCR bundle."""
    from converters.ocr_bundle import OcrConvertOptions, StageOptions, convert_ocr as run
    from edgert.cli import CliError

    if no_cls and cls is not None:
        raise CliError("give either --cls MODEL or --no-cls, not both")
    if cls is None and not no_cls:
        raise CliError("--cls MODEL is required (or --no-cls for a bundle without it)")
    for flag, p in (("--det", det), ("--cls", cls), ("--rec", rec), ("--keys", keys_path)):
        if p is not None and not p.is_file():
            raise CliError(f"{flag}: file not found: {p}")
    signing_key = None
    if sign_key is not None:
        from edgert.package.signing import load_private_key
        signing_key = load_private_key(sign_key)
    from edgert.cli import _split_passes
    stages = {
        name: StageOptions(wbits=w, abits=a, weight_only=name in weight_only, keep_float=_globs(kf), avg_bits=ab,
                           **_split_passes(ps))
        for name, w, a, kf, ab, ps in (("det", det_wbits, det_abits, det_keep_float, det_avg_bits, det_pass),
                                       ("cls", cls_wbits, cls_abits, cls_keep_float, cls_avg_bits, cls_pass),
                                       ("rec", rec_wbits, rec_abits, rec_keep_float, rec_avg_bits, rec_pass))}
    log = None if quiet or as_json else (lambda s: click.echo(s, err=True))
    opts = OcrConvertOptions(
        wbits=wbits, abits=abits, **stages, calib_dir=calib_dir, calib_count=calib_count,
        det_calib_side=det_calib_side, max_calib_lines=max_calib_lines, cascade=cascade,
        sqnr_batches=sqnr_batches, observer=observer, granularity=granularity, method=method,
        mixed_precision=mixed, keys_path=keys_path, compress=compress, signing_key=signing_key, progress=not quiet,
        log=log)
    report = run(det, cls, rec, output, opts)
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2))
    elif quiet:
        click.echo("\n".join(report.summary_lines()))
    else:
        click.echo(report.format_table())

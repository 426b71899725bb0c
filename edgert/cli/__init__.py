"""The edgert command line: parse, call the library, print.  Only here do errors become messages."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from edgert.errors import EdgertError

EXIT_BAD_INPUT = 2


class CliError(click.ClickException):
    exit_code = EXIT_BAD_INPUT

    def show(self, file=None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


class EdgertGroup(click.Group):
    """Turns library errors into one-line messages with exit code 2 (never a traceback)."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except EdgertError as e:
            raise CliError(str(e)) from None
        except (FileNotFoundError, PermissionError, IsADirectoryError) as e:
            raise CliError(f"{e.strerror}: {e.filename}") from None
        except MemoryError:
            raise CliError("out of memory") from None


def _parse_hw(value: str | None) -> tuple[int, int] | None:
    if not value:
        return None
    try:
        parts = [int(p) for p in value.lower().replace("×", "x").split("x")]
    except ValueError:
        raise CliError(f"--size wants HxW (e.g. 640x640), got {value!r}") from None
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or min(parts) <= 0:
        raise CliError(f"--size wants HxW (e.g. 640x640), got {value!r}")
    return parts[0], parts[1]


def _floats(value: str | None, name: str) -> tuple[float, ...] | None:
    if value is None:
        return None
    try:
        return tuple(float(v) for v in value.split(","))
    except ValueError:
        raise CliError(f"--{name} wants comma-separated numbers, got {value!r}") from None


def _split_passes(passes: tuple[str, ...]) -> dict[str, str | None]:
    """--pass names -> ConvertOptions' outlier (before calibration) and recon (after) passes."""
    from converters.outliers import known_outlier_passes
    from converters.recon import known_passes

    out: dict[str, str | None] = {"outlier": None, "recon": None}
    for name in passes:
        key = "outlier" if name in known_outlier_passes() else "recon" if name in known_passes() else None
        if key is None:
            raise CliError(f"unknown --pass {name!r} (known: {', '.join(known_outlier_passes() + known_passes())})")
        if out[key] is not None:
            raise CliError(f"--pass {out[key]} and {name} are alternatives; give one")
        out[key] = name
    return out


def _layer_bits(value: str | None) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in filter(None, (value or "").split(",")):
        name, sep, bits = item.partition("=")
        if not sep or not bits.strip().isdigit() or not 1 <= int(bits) <= 8:
            raise CliError(f"--layer-bits wants name=BITS[,name=BITS] with BITS 1..8, got {item!r}")
        out[name.strip()] = int(bits)
    return out


def _shape(value: str | None) -> list[int] | None:
    if not value:
        return None
    try:
        return [int(v) for v in value.lower().split("x")]
    except ValueError:
        raise CliError(f"--shape wants dims like 1x3x640x640, got {value!r}") from None


def _task(name: str | None, labels_file: Path | None, items: tuple[str, ...]):
    """--task NAME [--labels FILE] [--task-param KEY=VALUE ...] -> an edgert.tasks.Task (or None)."""
    if name is None:
        if labels_file is not None or items:
            raise CliError("--labels and --task-param need --task")
        return None
    from edgert.tasks import get_task, read_labels

    record: dict = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise CliError(f"--task-param wants KEY=VALUE, got {item!r}")
        try:
            value = json.loads(text)
        except ValueError:
            value = text                # a bare word: format=ssd
        record[key.strip()] = value
    if labels_file is not None:
        record["labels"] = list(read_labels(labels_file))
    return get_task(name).from_json(record)


def _input_shapes(values: tuple[str, ...]) -> dict[str, list[int]]:
    """('x:1x3x48x320', ...) -> {"x": [1, 3, 48, 320]}; the name ends at the last ':' (TF-style
    names such as 'input:0' keep theirs)."""
    out: dict[str, list[int]] = {}
    for value in values:
        name, sep, dims = value.rpartition(":")
        try:
            shape = [int(d) for d in dims.lower().replace("×", "x").split("x")]
        except ValueError:
            shape = []
        if not sep or not name or not shape or min(shape) <= 0:
            raise CliError(f"--input-shape wants NAME:DIMS with positive dims, e.g. "
                           f"x:1x3x48x320; got {value!r}")
        if name in out:
            raise CliError(f"--input-shape gives input {name!r} twice")
        out[name] = shape
    return out


def _fmt_bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return str(n)


@click.group(cls=EdgertGroup)
@click.version_option(package_name="edgert")
def main() -> None:
    """edgert: compressed model packages for edge devices."""


# --------------------------------------------------------------------------- convert
@main.command()
@click.argument("source", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="package to write")
@click.option("--wbits", type=click.IntRange(1, 8), default=8, show_default=True, help="weight bits")
@click.option("--abits", type=click.IntRange(2, 8), default=8, show_default=True, help="activation bits")
@click.option("--granularity", type=click.Choice(["tensor", "channel", "group"]), default="channel",
              show_default=True)
@click.option("--group-size", type=click.IntRange(8, 4096), default=128, show_default=True)
@click.option("--method", default="auto", show_default=True,
              help="weight quantization method: rtn | rtn_mse (auto: rtn_mse at >= 5 bits, else rtn)")
@click.option("--mixed", type=click.Choice(["auto", "off"]), default="auto", show_default=True,
              help="below 8 bits, keep depthwise and small layers (--small-layer-params) at 8 bits")
@click.option("--small-layer-params", type=click.IntRange(0), default=10000, show_default=True)
@click.option("--observer", default=None, help="activation observer (minmax|percentile|mse|tokenclip)")
@click.option("--calib", "calib_dir", type=click.Path(path_type=Path), help="folder of calibration images (a BEV model: a recording)")
@click.option("--calib-random", type=click.IntRange(0, 10000), default=0,
              help="use N random inputs instead of images (smoke runs)")
@click.option("--calib-count", type=click.IntRange(1, 100000), default=32, show_default=True)
@click.option("--layer-bits", default=None, help="per-layer weight bits, e.g. conv1=8,conv2=4")
@click.option("--keep-float", default=None, help="comma-separated layers (globs) kept in float")
@click.option("--size-budget", default=None,
              help="mixed precision: the stored weights within this size, e.g. 0.6MB; per-layer widths "
                   "(2-8 bits or float) from output-error probes on the calibration data and an exact "
                   "knapsack (overrides --wbits / --mixed / --layer-bits)")
@click.option("--avg-bits", type=click.FloatRange(1, 32), default=None,
              help="mixed precision: this many bits per weight on average, scales included")
@click.option("--sensitivity", type=click.Choice(["probe", "hutchinson"]), default="probe", show_default=True,
              help="mixed precision's per-layer cost: measured output errors of every width, or "
                   "Hessian traces (Hutchinson, JAX: the `train` extra)")
@click.option("--pass", "passes", multiple=True,
              help="a compression pass (repeatable, one of each kind). Before calibration (activation "
                   "outliers): os+, os-gamma, qllm, qllm-assemble, noisyquant, ptq4sam-bimodal. After: "
                   "adaround | qdrop (learned rounding fitted to each layer's float output), qdrop-block | "
                   "brecq (blocks fitted in JAX on the quantized network's inputs; the `train` extra)")
@click.option("--recon-iters", type=click.IntRange(0, 100000), default=None,
              help="reconstruction steps (per layer or per block)  [default: the pass's own, 300 / 200]")
@click.option("--recon-crop", type=click.IntRange(8, 8192), default=None,
              help="block reconstruction on random SxS crops of the calibration images (fully "
                   "convolutional models: a quarter of the cost at half the side)")
@click.option("--size", default=None,
              help="image input HxW, e.g. 640x640: images are resized to it (recorded in the "
                   "package); it also sizes random calibration inputs whose H, W are dynamic")
@click.option("--input-shape", "input_shape", multiple=True, metavar="NAME:DIMS",
              help="pin an input's dims in the package, e.g. x:1x3x48x320 (repeatable)")
@click.option("--pad-multiple", type=click.IntRange(1, 1024), default=None,
              help="dynamic H, W of an image input must be multiples of it; images are padded up "
                   "to it when there is no --size  [default: 32, or 1 when --size is not a "
                   "multiple of 32]")
@click.option("--mean", default=None, help="per-channel mean after scaling pixels to [0,1]")
@click.option("--std", default=None, help="per-channel std after scaling pixels to [0,1]")
@click.option("--channels", type=click.Choice(["rgb", "bgr", "gray"]), default="rgb", show_default=True)
@click.option("--layout", type=click.Choice(["nchw", "nhwc"]), default="nchw", show_default=True)
@click.option("--scale-dtype", type=click.Choice(["fp16", "fp32"]), default="fp16", show_default=True)
@click.option("--sparsity", type=click.FloatRange(0.0, 0.99), default=0.0, help="magnitude sparsity")
@click.option("--nm", default=None, help="N:M structured sparsity, e.g. 2:4")
@click.option("--compress", type=click.Choice(["zstd", "none"]), default="zstd", show_default=True)
@click.option("--sign-key", type=click.Path(path_type=Path), default=None, help="Ed25519 private key")
@click.option("--task", "task_name", default=None,
              help="post-processing recorded in the package: classification | segmentation | "
                   "detection | text-detection | raw")
@click.option("--labels", "labels_file", type=click.Path(path_type=Path), default=None,
              help="class names, one per line (classification, segmentation, detection)")
@click.option("--task-param", "task_params", multiple=True, metavar="KEY=VALUE",
              help="a task parameter, e.g. top_k=3 or format=ssd (value parsed as JSON when it is)")
@click.option("--embed-bits", type=click.IntRange(1, 8), default=None,
              help="GGUF: requantize the token embedding to this many bits (default: keep it lossless)")
@click.option("--zero", "zero_mode", type=click.Choice(["int", "float"]), default="int", show_default=True,
              help="GGUF requantization: integer zero point per group, or an fp16 group minimum (Q4_1's form)")
@click.option("--distill", type=click.Choice(["none", "view-guided"]), default="none", show_default=True,
              help="BEV: QD-BEV's view-guided distillation (image + BEV feature distillation from the fp32 "
                   "model) as a quantization-aware fine-tune on the --calib recording before conversion")
@click.option("--distill-minutes", type=click.FloatRange(0.1, 600), default=5.0, show_default=True,
              help="BEV: the distillation's wall-clock budget")
@click.option("--quiet", is_flag=True, help="no progress bar")
@click.option("--json", "as_json", is_flag=True, help="print the summary as JSON")
@click.pass_context
def convert(ctx, source, output, wbits, abits, granularity, group_size, method, mixed, small_layer_params,
            observer, calib_dir,
            calib_random, calib_count, layer_bits, keep_float, size_budget, avg_bits, sensitivity, passes, recon_iters,
            recon_crop, size, input_shape,
            pad_multiple, mean, std, channels, layout, scale_dtype, sparsity, nm, compress, sign_key, task_name,
            labels_file, task_params, embed_bits, zero_mode, distill, distill_minutes, quiet, as_json):
    """Convert an ONNX model to a quantized edgert package, or a GGUF LLM to an LLM package
    (lossless unless --wbits; --group-size defaults to 32 and --compress to none for GGUF), or a BEV
    ONNX from `edgert bev train` to one package of its stages (--calib: a recording)."""
    from edgert.cli.convert_gguf import convert_gguf_source, is_gguf

    if is_gguf(source):
        return convert_gguf_source(ctx, source, output, dict(ctx.params))
    from edgert.cli.convert_bev import convert_bev_source, is_bev_source
    if is_bev_source(source):
        return convert_bev_source(ctx, source, output, dict(ctx.params))
    if distill != "none":
        raise CliError("--distill applies to BEV models (an ONNX from `edgert bev train`)")
    if embed_bits is not None or ctx.get_parameter_source("zero_mode") != click.core.ParameterSource.DEFAULT:
        raise CliError("--embed-bits / --zero apply to GGUF models only")
    from converters.convert import convert as run_convert
    from converters.options import ConvertOptions
    from converters.source_format import check_source
    from edgert.ir import Preprocess

    if not source.is_file():
        raise CliError(f"source model not found: {source}")
    check_source(source)                # a file of another kind is named before anything else
    if calib_dir is None and not calib_random:
        raise CliError("activation quantization needs calibration data: --calib DIR or --calib-random N")
    nm_pair = None
    if nm:
        try:
            n, m = (int(v) for v in nm.split(":"))
            assert 0 < n < m <= 16
        except (ValueError, AssertionError):
            raise CliError(f"--nm wants N:M with 0 < N < M <= 16, e.g. 2:4; got {nm!r}") from None
        nm_pair = (n, m)
    hw = _parse_hw(size)
    if pad_multiple is None:            # 32: the stride of detection backbones (PP-OCR det, FPNs)
        pad_multiple = 1 if hw and any(d % 32 for d in hw) else 32
    pp = Preprocess(size=hw, mean=_floats(mean, "mean") or (0.0, 0.0, 0.0),
                    std=_floats(std, "std") or (1.0, 1.0, 1.0), channels=channels, layout=layout,
                    pad_multiple=pad_multiple)
    task = _task(task_name, labels_file, task_params)
    signing_key = None
    if sign_key is not None:
        from edgert.package.signing import load_private_key
        signing_key = load_private_key(sign_key)
    opts = ConvertOptions(
        wbits=wbits, abits=abits, granularity=granularity, group_size=group_size, method=method,
        mixed_precision=mixed, small_layer_params=small_layer_params,
        calib_dir=calib_dir, calib_random=calib_random, calib_count=calib_count,
        layer_bits=_layer_bits(layer_bits),
        keep_float=set(filter(None, (keep_float or "").split(","))), scale_dtype=scale_dtype,
        sparsity=sparsity, nm=nm_pair, preprocess=pp, input_shapes=_input_shapes(input_shape),
        compress=compress, progress=not quiet,
        signing_key=signing_key, task=task, size_budget=size_budget, avg_bits=avg_bits,
        mixed_sensitivity=sensitivity, recon_iters=recon_iters, recon_crop=recon_crop, **_split_passes(passes))
    if observer:
        opts.observer = observer
    report = run_convert(source, output, opts)
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2))
    else:
        click.echo(report.format_table())


# --------------------------------------------------------------------------- inspect
@main.command()
@click.argument("package", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.option("--layers/--no-layers", default=True, help="show the per-layer table")
def inspect(package, as_json, layers):
    """Show a package's header, sections, models, per-layer bits/sparsity/scales, sizes and hashes."""
    from edgert.inspect import describe, format_description
    from edgert.package import read_package

    pkg = read_package(package)
    info = describe(pkg)
    if as_json:
        click.echo(json.dumps(info, indent=2))
    else:
        click.echo(format_description(info, layers=layers))


# --------------------------------------------------------------------------- run
def _load_session(package: Path, backend: str, threads: int, require_signature: bool,
                  public_key: Path | None, model: str | None = None):
    import edgert
    from edgert.runtime import LoadOptions

    key = None
    if public_key is not None:
        from edgert.package.signing import load_public_key
        key = load_public_key(public_key)
    return edgert.load(package, LoadOptions(backend=backend, threads=threads, model=model,
                                            require_signature=require_signature or key is not None,
                                            public_key=key))


_backend_opt = click.option("--backend", default="auto", show_default=True, help="auto|ort|numpy")
_threads_opt = click.option("--threads", type=click.IntRange(0, 256), default=0,
                            help="intra-op threads (0 = backend default)")
_sig_opt = click.option("--require-signature", is_flag=True, help="refuse unsigned packages")
_key_opt = click.option("--public-key", type=click.Path(path_type=Path), default=None,
                        help="Ed25519 public key that must have signed the package")


# --------------------------------------------------------------------------- bench
@main.command()
@click.argument("package", type=click.Path(path_type=Path))
@_backend_opt
@_threads_opt
@click.option("--warmup", type=click.IntRange(0), default=5, show_default=True)
@click.option("--iters", type=click.IntRange(1), default=50, show_default=True)
@click.option("--shape", default=None, help="input shape for dynamic models, e.g. 1x3x640x640")
@click.option("--input", "input_path", type=click.Path(path_type=Path), default=None,
              help="benchmark on this image / .npy instead of random data")
@click.option("--model", default=None)
@click.option("--json", "as_json", is_flag=True)
def bench(package, backend, threads, warmup, iters, shape, input_path, model, as_json):
    """Latency (p50/p90/p99), throughput, peak RSS and package size."""
    from edgert import outputs as outmod
    from edgert.bench import BenchOptions, run_bench, synthetic_feeds

    sess = _load_session(package, backend, threads, False, None, model)
    if input_path is not None:
        feeds, _ = outmod.read_inputs(sess, [input_path])
    else:
        pp = sess.preprocess
        hw = tuple(pp.size) if pp is not None and pp.size else None
        over = {sess.inputs[0].name: _shape(shape)} if shape else None
        feeds = synthetic_feeds(sess.inputs, hw, over)
    res = run_bench(sess, feeds, BenchOptions(warmup=warmup, iters=iters),
                    package_bytes=package.stat().st_size)
    if as_json:
        click.echo(json.dumps(res.to_json(), indent=2))
        return
    lat = res.latency_ms
    shapes = ", ".join(f"{k} {'x'.join(map(str, v))}" for k, v in res.input_shapes.items())
    click.echo(f"package   {package}  ({_fmt_bytes(res.package_bytes)})\n"
               f"backend   {res.backend}   threads {threads or 'default'}   input {shapes}\n"
               f"latency   p50 {lat['p50']:.2f} ms   p90 {lat['p90']:.2f} ms   p99 {lat['p99']:.2f} ms"
               f"   (mean {lat['mean']:.2f}, min {lat['min']:.2f}; {res.iters} iters after "
               f"{res.warmup} warm-up)\n"
               f"throughput {res.throughput_ips:.1f} inferences/s   peak RSS {res.peak_rss_mb:.0f} MB")


# --------------------------------------------------------------------------- signing
@main.command()
@click.option("--out", "prefix", type=click.Path(path_type=Path), required=True,
              help="writes PREFIX.key (private) and PREFIX.pub")
def keygen(prefix):
    """Create an Ed25519 key pair for signing packages."""
    from edgert.package.signing import generate_keypair, write_keypair

    priv, pub = generate_keypair()
    paths = write_keypair(prefix, priv, pub)
    click.echo(f"wrote {paths[0]} (keep private) and {paths[1]}")


@main.command()
@click.argument("package", type=click.Path(path_type=Path))
@click.option("--key", type=click.Path(path_type=Path), required=True, help="Ed25519 private key")
def sign(package, key):
    """Sign a package in place (only its footer is rewritten)."""
    from edgert.package.signing import load_private_key, sign_package

    sign_package(package, load_private_key(key))
    click.echo(f"signed {package}")


@main.command()
@click.argument("package", type=click.Path(path_type=Path))
@click.option("--key", type=click.Path(path_type=Path), default=None,
              help="public key that must have signed it (default: the key in the file)")
def verify(package, key):
    """Check every hash and the signature of a package."""
    from edgert.package import ReadOptions, read_package
    from edgert.package.signing import load_public_key

    pub = load_public_key(key) if key is not None else None
    pkg = read_package(package, ReadOptions(require_signature=True, public_key=pub))
    click.echo(f"ok: {package} sha256 {pkg.file_sha256} signed, all section hashes match")


from edgert.cli.agent import agent as _agent_command  # noqa: E402

main.add_command(_agent_command)

from edgert.cli.fleet import fleet as _fleet_group  # noqa: E402

main.add_command(_fleet_group)

from edgert.cli.eval import eval_group as _eval_group  # noqa: E402

main.add_command(_eval_group, name="eval")

from edgert.cli.ocr import convert_ocr as _convert_ocr_command  # noqa: E402

main.add_command(_convert_ocr_command)

from edgert.cli.run import run as _run_command  # noqa: E402

main.add_command(_run_command)

from edgert.cli.llm import bench_llm as _bench_llm, chat as _chat, generate as _generate  # noqa: E402
from edgert.cli.llm import perplexity as _perplexity  # noqa: E402

for _cmd in (_generate, _chat, _perplexity, _bench_llm):
    main.add_command(_cmd)

from edgert.cli.train_heads import train_heads as _train_heads  # noqa: E402

main.add_command(_train_heads)

from edgert.cli.bev import bev as _bev_group  # noqa: E402

main.add_command(_bev_group)

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

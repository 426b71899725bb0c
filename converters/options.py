"""Typed options of the converter (no string-keyed option dicts; see /work/shared/STYLE.md rule 8).

`ConvertOptions` is what `converters.convert.convert()` and the CLI take; `QuantizeOptions` is the
part the graph rewrite (`converters.quantize`) needs, derived with `ConvertOptions.quantize_options()`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from edgert.errors import ConversionError
from edgert.ir import Preprocess
from edgert.tasks import Task

GRANULARITIES = ("channel", "tensor", "group")
SCALE_DTYPES = ("fp16", "fp32")


@dataclass
class QuantizeOptions:
    """What the quantization rewrite decides per layer."""
    wbits: int = 8                      # 1..8 packed weight width
    abits: int | None = 8               # 2..8 activation width; None = weight-only everywhere
    granularity: str = "channel"        # "channel" | "tensor" | "group"
    group_size: int = 128
    method: str = "rtn_mse"             # converters/methods/<name>.py
    layer_bits: dict[str, int] = field(default_factory=dict)   # node/output name or glob -> wbits
    keep_float: set[str] = field(default_factory=set)         # node/output names or globs
    scale_dtype: str = "fp16"           # weight scales rounded to (and stored as) fp16 by default
    sparsity: float = 0.0               # unstructured magnitude sparsity (fraction of zeros)
    nm: tuple[int, int] | None = None   # N:M structured sparsity, e.g. (2, 4)
    midrise_2bit: bool = False          # 2-bit weights as ±1, ±3 levels instead of -1, 0, 1
    fold_activations: bool = True       # fold a Relu / Clip(0, c) only-consumer into the QLinear op
    # Mixed precision when wbits < 8: depthwise convs and layers with at most `small_layer_params`
    # weights stay at 8 bits.  They are a few % of the bytes but dominate the error (measured on
    # PP-OCRv4 det W4A8 at 320x320: mask IoU 0.52 -> 0.90 for +6% package size).  "off" disables.
    mixed_precision: str = "auto"       # "auto" | "off"
    small_layer_params: int = 10000

    def validate(self) -> None:
        if not 1 <= self.wbits <= 8:
            raise ConversionError(f"wbits must be 1..8, got {self.wbits}")
        if self.abits is not None and not 2 <= self.abits <= 8:
            raise ConversionError(f"abits must be 2..8, got {self.abits}")
        if self.granularity not in GRANULARITIES:
            raise ConversionError(f"granularity must be one of {GRANULARITIES}, "
                                  f"got {self.granularity!r}")
        if self.group_size < 1:
            raise ConversionError(f"group_size must be >= 1, got {self.group_size}")
        if self.mixed_precision not in ("auto", "off"):
            raise ConversionError(f"mixed_precision must be 'auto' or 'off', got {self.mixed_precision!r}")
        if self.scale_dtype not in SCALE_DTYPES:
            raise ConversionError(f"scale_dtype must be one of {SCALE_DTYPES}, "
                                  f"got {self.scale_dtype!r}")
        if not 0.0 <= self.sparsity < 1.0:
            raise ConversionError(f"sparsity must be in [0, 1), got {self.sparsity}")
        if self.nm is not None:
            n, m = self.nm
            if not 0 < n < m:
                raise ConversionError(f"N:M sparsity needs 0 < N < M, got {n}:{m}")
            if self.sparsity:
                raise ConversionError("use either --sparsity or --nm, not both")
        for name, bits in self.layer_bits.items():
            if not 1 <= int(bits) <= 8:
                raise ConversionError(f"layer_bits[{name!r}] must be 1..8, got {bits}")


def parse_nm(text: str) -> tuple[int, int]:
    """'2:4' -> (2, 4)."""
    try:
        n, m = (int(p) for p in text.split(":"))
    except ValueError:
        raise ConversionError(f"N:M sparsity must look like '2:4', got {text!r}") from None
    return n, m


@dataclass
class ConvertOptions:
    # weights
    wbits: int = 8
    granularity: str = "channel"
    group_size: int = 128
    # "auto" = rtn_mse at >= 5 bits, plain rtn below: at 4 bits the weight-MSE-optimal clip cut
    # channels the det model needs (IoU 0.86 vs 0.90 with rtn, measured at 320x320).
    method: str = "auto"
    scale_dtype: str = "fp16"
    sparsity: float = 0.0
    nm: tuple[int, int] | None = None
    midrise_2bit: bool = False
    layer_bits: dict[str, int] = field(default_factory=dict)
    keep_float: set[str] = field(default_factory=set)
    mixed_precision: str = "auto"       # see QuantizeOptions.mixed_precision
    small_layer_params: int = 10000
    # mixed precision under a budget (converters/mixed): one of these -> per-layer widths from
    # output-error probes and an exact knapsack allocator (overrides mixed_precision / layer_bits)
    size_budget: str | None = None      # stored weights, e.g. "0.6MB" (converters.mixed.parse_size)
    avg_bits: float | None = None       # bits per quantizable weight, scales included
    mixed_widths: tuple[int, ...] = (2, 3, 4, 5, 6, 8)
    mixed_float: bool = True            # the allocator may keep a layer float
    mixed_batches: int = 4              # calibration batches the probes run on
    mixed_sensitivity: str = "probe"    # "probe" (measured output errors) | "hutchinson" (Hessian traces, JAX)
    # reconstruction pass after calibration (converters/recon: adaround, qdrop, qdrop-block, brecq); None = plain
    recon: str | None = None
    outlier: str | None = None          # activation-outlier pass before calibration (converters/outliers: "os+")
    recon_batches: int = 4              # calibration batches whose rows the reconstruction fits
    recon_crop: int | None = None       # block passes: fit on random SxS crops of the calibration images
    recon_iters: int | None = None      # None: the pass's own (layer-wise 300, block 200 per block)
    # activations / calibration
    abits: int | None = 8
    observer: str = "minmax"            # measured best on PP-OCRv4 det W8A8 (percentile / mse clip
                                        # the outlier channels the network needs)
    percentile: float = 99.99
    calib_dir: Path | None = None
    calib_random: int = 0               # > 0: that many random-normal batches (smoke runs)
    calib_count: int = 32
    seed: int = 0
    sqnr_batches: int = 2               # calibration batches replayed for per-layer SQNR (0 = skip)
    fold_activations: bool = True
    backend_for_calibration: str = "auto"   # "auto" (ort if installed, else numpy) | "ort" | "numpy"
    # model / package
    preprocess: Preprocess | None = None
    input_shapes: dict[str, list[int]] = field(default_factory=dict)
    compress: str = "zstd"
    progress: bool = True
    signing_key: bytes | None = None     # raw Ed25519 private key: sign the package while writing
    task: Task | None = None             # post-processing recorded as graph.metadata["task"] (edgert.tasks)

    @property
    def budgeted(self) -> bool:
        return self.size_budget is not None or self.avg_bits is not None

    def resolved_method(self) -> str:
        if self.method != "auto":
            return self.method
        return "rtn_mse" if self.wbits >= 5 else "rtn"

    def quantize_options(self) -> QuantizeOptions:
        q = QuantizeOptions(
            wbits=self.wbits, abits=self.abits, granularity=self.granularity,
            group_size=self.group_size, method=self.resolved_method(),
            layer_bits=dict(self.layer_bits), mixed_precision=self.mixed_precision,
            small_layer_params=self.small_layer_params,
            keep_float=set(self.keep_float), scale_dtype=self.scale_dtype,
            sparsity=self.sparsity, nm=self.nm, midrise_2bit=self.midrise_2bit,
            fold_activations=self.fold_activations)
        q.validate()
        if self.budgeted and self.layer_bits:
            raise ConversionError("a size budget / average bits allocates every layer's width: "
                                  "drop the per-layer bits")
        if self.recon is not None:
            from converters.recon import get_pass
            get_pass(self.recon)                  # an unknown name fails before any work
        if self.outlier is not None:
            from converters.outliers import get_outlier_pass
            get_outlier_pass(self.outlier)
        if self.size_budget is not None and self.avg_bits is not None:
            raise ConversionError("give a size budget or an average bit width, not both")
        return q

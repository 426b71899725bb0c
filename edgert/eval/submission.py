"""Submissions as predictors: an edgert package (default), a plain ONNX model, or a TFLite model.

No submitted code ever runs: every kind is data interpreted by a backend.  A predictor turns a decoded
RGB image into feeds (`prepare`), runs the model (`infer`), and turns its first output into a
prediction at full resolution (`postprocess`): a class map for segmentation, scores for classification.
Outputs are checked (shape, class count, NaN/Inf) and a bad one is an EvalError: verdict ``invalid``.
"""
from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np

from edgert.errors import BackendUnavailable, EvalError
from edgert.eval.types import EvalOptions
from edgert.ir import Preprocess

KIND_BY_SUFFIX = {".pkg": "package", ".onnx": "onnx", ".tflite": "tflite"}


def kind_of(path: Path) -> str:
    kind = KIND_BY_SUFFIX.get(path.suffix.lower())
    if kind is None:
        raise EvalError(f"{path}: unknown submission type {path.suffix!r}; expected "
                        f"{', '.join(KIND_BY_SUFFIX)}")
    return kind


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def resize_nearest(pred: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a class map (pixel centres), without interpolating labels."""
    h, w = pred.shape
    H, W = hw
    if (h, w) == (H, W):
        return pred
    rows = np.minimum(((np.arange(H) + 0.5) * h / H).astype(np.int64), h - 1)
    cols = np.minimum(((np.arange(W) + 0.5) * w / W).astype(np.int64), w - 1)
    return pred[rows[:, None], cols[None, :]]


def argmax_classes(scores: np.ndarray) -> np.ndarray:
    """argmax over axis 0 of (C, H, W) as uint8, first maximum wins (as np.argmax), but as C
    full-image passes: ~2x faster than numpy's strided argmax over the class axis."""
    best = scores[0].copy()
    idx = np.zeros(scores.shape[1:], np.uint8)
    for c in range(1, scores.shape[0]):
        more = scores[c] > best
        idx[more] = c
        np.maximum(best, scores[c], out=best)
    return idx


class Predictor(ABC):
    kind: str

    def __init__(self, path: Path, opts: EvalOptions):
        self.path = path
        self.opts = opts
        self.sha256 = sha256_file(path)
        self.bytes = path.stat().st_size

    @property
    @abstractmethod
    def preprocess(self) -> Preprocess:
        """How images become the model input (recorded in a package; from options otherwise)."""

    def input_hw(self, image_hw: tuple[int, int]) -> tuple[int, int]:
        from edgert.preprocess import target_size
        return target_size(image_hw, self.preprocess)

    def prepare(self, img: np.ndarray, interpolation: str = "bilinear") -> np.ndarray:
        """What `edgert run` does to an image (edgert.preprocess: the one resize, then normalise)."""
        from edgert.preprocess import preprocess_array
        return preprocess_array(img, self.preprocess, interpolation)

    @abstractmethod
    def infer(self, x: np.ndarray) -> np.ndarray:
        """The model's first output for one batch-of-one input."""

    def postprocess(self, out: np.ndarray, image_hw: tuple[int, int]) -> np.ndarray:
        out = np.asarray(out)
        if out.dtype.kind == "f" and not np.isfinite(out).all():
            raise EvalError("the submission's output contains NaN or Inf")
        c = self.opts.classes
        if self.opts.task == "classification":
            scores = out.reshape(-1) if out.ndim == 2 and out.shape[0] == 1 else out
            if scores.ndim != 1 or scores.shape[0] != c:
                raise EvalError(f"classification output has shape {list(out.shape)}; expected [1, {c}]")
            return scores.astype(np.float32)
        if out.ndim == 4 and out.shape[0] == 1:
            layout_c = 1 if out.shape[1] == c else (3 if out.shape[3] == c else None)
            if layout_c is None:
                raise EvalError(f"segmentation output has shape {list(out.shape)}; expected "
                                f"[1, {c}, h, w] or [1, h, w, {c}] class scores")
            pred = argmax_classes(out[0] if layout_c == 1 else np.moveaxis(out[0], -1, 0))
        elif out.ndim in (2, 3) and out.dtype.kind in "iu":
            pred = out[0] if out.ndim == 3 else out
            if pred.size and (pred.min() < 0 or pred.max() >= c):
                raise EvalError(f"segmentation output holds class ids outside 0..{c - 1}")
        else:
            raise EvalError(f"segmentation output has shape {list(out.shape)} {out.dtype}; expected "
                            f"[1, {c}, h, w] scores or an integer [1, h, w] class map")
        return resize_nearest(pred.astype(np.uint8), image_hw)

    def close(self) -> None:
        pass


class PackagePredictor(Predictor):
    kind = "package"

    def __init__(self, path: Path, opts: EvalOptions):
        super().__init__(path, opts)
        import edgert
        self.session = edgert.load(path, backend=opts.backend, threads=opts.threads)
        if len(self.session.inputs) != 1:
            raise EvalError(f"{path}: the model takes {len(self.session.inputs)} inputs; an image model takes one")
        self._name = self.session.inputs[0].name
        self._pp = self.session.preprocess or _options_preprocess(opts)

    @property
    def preprocess(self) -> Preprocess:
        return self._pp

    def infer(self, x: np.ndarray) -> np.ndarray:
        out = self.session.run({self._name: x})
        return next(iter(out.values()))

    def close(self) -> None:
        self.session.close()


class OnnxPredictor(Predictor):
    kind = "onnx"

    def __init__(self, path: Path, opts: EvalOptions):
        super().__init__(path, opts)
        try:
            import onnxruntime as ort
        except ImportError:
            raise BackendUnavailable("ONNX submissions need onnxruntime: pip install 'edgert[ort]'") from None
        so = ort.SessionOptions()
        if opts.threads:
            so.intra_op_num_threads = opts.threads
        so.log_severity_level = 3
        try:
            self.sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 - ORT raises its own exception types for bad models
            raise EvalError(f"{path}: onnxruntime cannot load the model: {_first_line(e)}") from None
        inputs = self.sess.get_inputs()
        if len(inputs) != 1:
            raise EvalError(f"{path}: the model takes {len(inputs)} inputs; an image model takes one")
        self._name = inputs[0].name
        self._pp = _options_preprocess(opts)

    @property
    def preprocess(self) -> Preprocess:
        return self._pp

    def infer(self, x: np.ndarray) -> np.ndarray:
        try:
            return self.sess.run(None, {self._name: x})[0]
        except Exception as e:  # noqa: BLE001
            first = _first_line(e)
            if "allocate" in first.lower():    # ORT's bad_alloc: the child dies as out of memory (crashed)
                raise MemoryError(f"onnxruntime: {first}") from None
            raise EvalError(f"onnxruntime failed on the submission: {first}") from None


# TFLite's flatbuffer schema (schema.fbs: `file_identifier "TFL3"`): bytes 4..8, after the root offset
TFLITE_FILE_IDENTIFIER = b"TFL3"
# input dtypes the predictor feeds: float as is (float16 cast), int8/uint8 quantized with the tensor's own
# scale and zero point
TFLITE_INPUT_DTYPES = (np.float32, np.float16, np.int8, np.uint8)


class TflitePredictor(Predictor):
    """A .tflite flatbuffer on ai-edge-litert (or tflite-runtime / tensorflow.lite).

    The input's layout and size come from the model when the options leave them open: [1, 3, H, W] is
    NCHW, anything else NHWC; a static H, W is the input size (images are resized to it, predictions
    compared at full resolution), a -1 in the shape signature means the dataset's own resolution, and
    the input is resized to each prepared batch's shape when that changes."""
    kind = "tflite"

    def __init__(self, path: Path, opts: EvalOptions):
        super().__init__(path, opts)
        _check_tflite_file(path)
        interp_cls = _tflite_interpreter()
        try:
            self.interp = interp_cls(model_path=str(path), num_threads=opts.threads or None)
            self.interp.allocate_tensors()
            ins, outs = self.interp.get_input_details(), self.interp.get_output_details()
        except (ValueError, RuntimeError) as e:
            raise EvalError(f"{path}: the TFLite interpreter cannot load the model: {_first_line(e)}") from None
        if len(ins) != 1:
            raise EvalError(f"{path}: the model takes {len(ins)} inputs; an image model takes one")
        if not outs:
            raise EvalError(f"{path}: the model has no outputs")
        self._in, self._out = ins[0], outs[0]
        self._allocated = tuple(int(v) for v in self._in["shape"])
        dtype = np.dtype(self._in["dtype"])
        if dtype.type not in TFLITE_INPUT_DTYPES:
            raise EvalError(f"{path}: the model input is {dtype}; expected one of "
                            f"{', '.join(np.dtype(t).name for t in TFLITE_INPUT_DTYPES)}")
        self._dtype = dtype
        self._quant = _input_quantization(self._in, path) if dtype.kind in "iu" else None
        sig = self._in.get("shape_signature")     # -1 marks a resizable dim; older runtimes lack the key
        sig = [int(v) for v in (sig if sig is not None and len(sig) else self._in["shape"])]
        layout, model_hw = _tflite_layout_and_size(sig, opts.layout, path)
        self._pp = _options_preprocess(opts, default_layout=layout, model_hw=model_hw)

    @property
    def preprocess(self) -> Preprocess:
        return self._pp

    def infer(self, x: np.ndarray) -> np.ndarray:
        if self._quant is not None:              # a fully-quantized model takes quantized input
            scale, zp = self._quant
            info = np.iinfo(self._dtype)
            x = np.clip(np.round(x / scale + zp), info.min, info.max).astype(self._dtype)
        elif x.dtype != self._dtype:
            x = x.astype(self._dtype)
        try:
            if x.shape != self._allocated:       # a resizable input (or --size on a static one)
                self.interp.resize_tensor_input(self._in["index"], list(x.shape))
                self.interp.allocate_tensors()
                self._allocated = x.shape
            self.interp.set_tensor(self._in["index"], x)
            self.interp.invoke()
            y = self.interp.get_tensor(self._out["index"])
        except (ValueError, RuntimeError) as e:
            raise EvalError(f"the TFLite interpreter failed on the submission: {_first_line(e)}") from None
        if self._out["dtype"] in (np.int8, np.uint8) and self.opts.task == "classification":
            scale, zp = self._out["quantization"]
            if scale > 0:
                y = (y.astype(np.float32) - zp) * np.float32(scale)
        return y

    def close(self) -> None:
        self.interp = None


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0][:300] if lines else type(e).__name__


def _check_tflite_file(path: Path) -> None:
    """The identifier before the interpreter sees the bytes (its own verifier runs after)."""
    with open(path, "rb") as f:
        head = f.read(8)
    if len(head) < 8 or head[4:8] != TFLITE_FILE_IDENTIFIER:
        raise EvalError(f"{path}: not a TFLite model (no {TFLITE_FILE_IDENTIFIER.decode()} identifier at byte 4)")


def _input_quantization(d: dict, path: Path) -> tuple[float, int]:
    scale, zp = d["quantization"]
    if scale > 0:
        return float(scale), int(zp)
    if d["dtype"] == np.uint8:                   # no parameters: raw 0..255 pixels (of [0, 1]-scaled input)
        return 1.0 / 255.0, 0
    raise EvalError(f"{path}: the model's int8 input has no quantization scale")


def _tflite_layout_and_size(sig: list[int], layout: str, path: Path) -> tuple[str, tuple[int, int] | None]:
    """NCHW for [1, 3, H, W] unless the options say otherwise, else NHWC; H, W when both are static."""
    if len(sig) != 4:
        raise EvalError(f"{path}: the model input has shape {sig}; expected [1, H, W, 3] or [1, 3, H, W]")
    if not layout:
        layout = "nchw" if sig[1] == 3 and sig[3] != 3 else "nhwc"
    c, h, w = (sig[1], sig[2], sig[3]) if layout == "nchw" else (sig[3], sig[1], sig[2])
    if c not in (3, -1):
        want = "[1, 3, H, W]" if layout == "nchw" else "[1, H, W, 3]"
        raise EvalError(f"{path}: the model input has shape {sig}; as {layout.upper()} expected {want}")
    return layout, ((h, w) if h > 0 and w > 0 else None)


def _tflite_interpreter():
    for mod, attr in (("ai_edge_litert.interpreter", "Interpreter"), ("tflite_runtime.interpreter", "Interpreter"),
                      ("tensorflow.lite", "Interpreter")):
        try:
            module = __import__(mod, fromlist=[attr])
            return getattr(module, attr)
        except ImportError:
            continue
    raise BackendUnavailable("TFLite submissions need a TFLite interpreter: pip install ai-edge-litert "
                             "(or tflite-runtime)")


def _options_preprocess(opts: EvalOptions, default_layout: str = "nchw",
                        model_hw: tuple[int, int] | None = None) -> Preprocess:
    """From the options; a model's own static input size stands in when no --size is given."""
    layout = opts.layout if opts.layout else default_layout
    size = tuple(opts.size) if opts.size else model_hw
    return Preprocess(size=size, mean=tuple(opts.mean), std=tuple(opts.std), channels="rgb", layout=layout)


_PREDICTORS = {"package": PackagePredictor, "onnx": OnnxPredictor, "tflite": TflitePredictor}


def open_submission(path: str | Path, opts: EvalOptions) -> Predictor:
    p = Path(path)
    if not p.is_file():
        raise EvalError(f"submission not found: {p}")
    return _PREDICTORS[kind_of(p)](p, opts)

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
            raise EvalError(f"{path}: onnxruntime cannot load the model: {str(e).splitlines()[0][:300]}") from None
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
            first = str(e).splitlines()[0][:300]
            if "allocate" in first.lower():    # ORT's bad_alloc: the child dies as out of memory (crashed)
                raise MemoryError(f"onnxruntime: {first}") from None
            raise EvalError(f"onnxruntime failed on the submission: {first}") from None


class TflitePredictor(Predictor):
    kind = "tflite"

    def __init__(self, path: Path, opts: EvalOptions):
        super().__init__(path, opts)
        interp_cls = _tflite_interpreter()
        try:
            self.interp = interp_cls(model_path=str(path), num_threads=opts.threads or None)
            self.interp.allocate_tensors()
        except (ValueError, RuntimeError) as e:
            raise EvalError(f"{path}: the TFLite interpreter cannot load the model: {e}") from None
        ins = self.interp.get_input_details()
        if len(ins) != 1:
            raise EvalError(f"{path}: the model takes {len(ins)} inputs; an image model takes one")
        self._in = ins[0]
        self._out = self.interp.get_output_details()[0]
        self._pp = _options_preprocess(opts, default_layout="nhwc")

    @property
    def preprocess(self) -> Preprocess:
        return self._pp

    def infer(self, x: np.ndarray) -> np.ndarray:
        d = self._in
        if d["dtype"] in (np.int8, np.uint8):        # a fully-quantized model takes quantized input
            scale, zp = d["quantization"]
            info = np.iinfo(d["dtype"])
            x = np.clip(np.round(x / scale + zp), info.min, info.max).astype(d["dtype"])
        self.interp.set_tensor(d["index"], x)
        self.interp.invoke()
        y = self.interp.get_tensor(self._out["index"])
        if self._out["dtype"] in (np.int8, np.uint8) and self.opts.task == "classification":
            scale, zp = self._out["quantization"]
            y = (y.astype(np.float32) - zp) * scale
        return y


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


def _options_preprocess(opts: EvalOptions, default_layout: str = "nchw") -> Preprocess:
    layout = opts.layout if opts.layout else default_layout
    return Preprocess(size=tuple(opts.size) if opts.size else None, mean=tuple(opts.mean), std=tuple(opts.std),
                      channels="rgb", layout=layout)


_PREDICTORS = {"package": PackagePredictor, "onnx": OnnxPredictor, "tflite": TflitePredictor}


def open_submission(path: str | Path, opts: EvalOptions) -> Predictor:
    p = Path(path)
    if not p.is_file():
        raise EvalError(f"submission not found: {p}")
    return _PREDICTORS[kind_of(p)](p, opts)

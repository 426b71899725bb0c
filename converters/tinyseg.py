"""A tiny segmentation CNN trained with numpy alone, exported to ONNX: the evaluation harness's
reference submission (no torch, so CI stays light).

Architecture with the default `TrainOptions` (NCHW in ONNX, NHWC inside the trainer):

    image [1,3,H,W]   RGB on [0,1], minus `mean`, over `std` (both recorded in the package)
      Conv 3x3 /2 (3->16) + Relu
      Conv 3x3 /2 (16->32) + Relu
      Conv 3x3 dilation 2 (32->32) + Relu
      Conv 3x3 dilation 4 (32->32) + Relu = F
      Conv 3x3 (32->classes)(F) + Conv 1x1 (GlobalAveragePool(F))   logits at H/4 x W/4
      Resize x4, linear, half_pixel                                   logits [1,classes,H,W]

The GlobalAveragePool branch adds one bias per class from image-level features: the harness's LPCVC
Dice is a per-image mean over the classes in the truth *or* the prediction, so a class predicted on
a few stray pixels costs a whole 0 in that image's mean, and image-level context suppresses those.

Training: minibatch Adam (cosine-decayed), class-weighted softmax cross-entropy at the logits'
resolution against soft targets (each cell's class fractions), hand-written forward/backward with
im2col + matmul; flips and transposes as augmentation.  Images are downscaled to the model input
with the harness's own resize (`model_input`), and the held-out Dice is the harness's: argmax at
the model resolution, nearest-neighbour upsampled to the label resolution, then
`edgert.eval.metrics.SegmentationMeter`.

    python -m converters.tinyseg --dataset D --out tinyseg.onnx [--size 128] [--epochs N]
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgert.errors import ConversionError, EdgertError
from edgert.ir import Preprocess

INPUT_NAME = "image"
OUTPUT_NAME = "logits"


# ---- data ---------------------------------------------------------------------------------------

def list_pairs(root: str | Path) -> list[tuple[Path, Path]]:
    """(image, label) PNG pairs of a segmentation folder (images/NAME.png + labels/NAME.png)."""
    root = Path(root)
    img_dir, lab_dir = root / "images", root / "labels"
    if not img_dir.is_dir() or not lab_dir.is_dir():
        raise ConversionError(f"{root} must hold images/ and labels/ folders")
    pairs = []
    for p in sorted(img_dir.glob("*.png")):
        q = lab_dir / p.name
        if not q.is_file():
            raise ConversionError(f"no label {q} for image {p}")
        pairs.append((p, q))
    if not pairs:
        raise ConversionError(f"no images/*.png in {root}")
    return pairs


def load_label(path: str | Path) -> np.ndarray:
    from PIL import Image
    with Image.open(path) as im:
        return np.asarray(im, dtype=np.uint8)


def resize_label(label: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of an (H, W) class map."""
    if label.shape == tuple(hw):
        return label
    from PIL import Image
    return np.asarray(Image.fromarray(label).resize((hw[1], hw[0]), Image.NEAREST), np.uint8)


def upsample_nearest(pred: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """(h, w) class map -> (H, W) by nearest neighbour at pixel centres, as the harness does."""
    h, w = pred.shape
    rows = np.minimum(((np.arange(hw[0]) + 0.5) * h / hw[0]).astype(np.int64), h - 1)
    cols = np.minimum(((np.arange(hw[1]) + 0.5) * w / hw[1]).astype(np.int64), w - 1)
    return pred[rows[:, None], cols[None, :]]


def model_input(img: np.ndarray, hw: tuple[int, int], interpolation: str = "bilinear") -> np.ndarray:
    """uint8 RGB (H, W, 3) -> float32 (h, w, 3) on [0, 1] at the model size, resized exactly as
    `edgert run` and the harness resize a package's input (edgert.preprocess.resize), so the network
    trains on the textures it will be scored on."""
    from edgert.preprocess import preprocess_array
    return preprocess_array(img, Preprocess(size=hw, layout="nhwc"), interpolation)[0]


# ---- layers (NHWC, im2col) ------------------------------------------------------------------------

def conv_pad(k: int, stride: int, dil: int) -> int:
    """Patchify convs (k == stride) take no padding; the others 'same'-style dil*(k-1)//2."""
    return 0 if k == stride else dil * (k - 1) // 2


def _im2col(x: np.ndarray, k: int, stride: int, dil: int) -> np.ndarray:
    """x [N,H,W,C] -> cols [N,Ho,Wo,k*k*C] (padding `conv_pad`), in (ky, kx, c) order."""
    if k == 1 and stride == 1:
        return x
    n, h, w, c = x.shape
    if k == stride and dil == 1 and h % k == 0 and w % k == 0:       # patchify: a reshape
        cols = x.reshape(n, h // k, k, w // k, k, c).transpose(0, 1, 3, 2, 4, 5)
        return cols.reshape(n, h // k, w // k, k * k * c)
    p = conv_pad(k, stride, dil)
    ho, wo = (h + 2 * p - dil * (k - 1) - 1) // stride + 1, (w + 2 * p - dil * (k - 1) - 1) // stride + 1
    xp = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
    cols = np.empty((n, ho, wo, k * k, c), x.dtype)
    for ky in range(k):
        for kx in range(k):
            y0, x0 = ky * dil, kx * dil
            cols[:, :, :, ky * k + kx] = xp[:, y0:y0 + stride * (ho - 1) + 1:stride,
                                            x0:x0 + stride * (wo - 1) + 1:stride]
    return cols.reshape(n, ho, wo, k * k * c)


def _col2im(dcols: np.ndarray, x_shape: tuple[int, ...], k: int, stride: int, dil: int) -> np.ndarray:
    """The adjoint of `_im2col`: scatter-add column gradients back onto the input."""
    if k == 1 and stride == 1:
        return dcols
    p = conv_pad(k, stride, dil)
    n, h, w, c = x_shape
    _, ho, wo, _ = dcols.shape
    dcols = dcols.reshape(n, ho, wo, k * k, c)
    dxp = np.zeros((n, h + 2 * p, w + 2 * p, c), dcols.dtype)
    for ky in range(k):
        for kx in range(k):
            y0, x0 = ky * dil, kx * dil
            dxp[:, y0:y0 + stride * (ho - 1) + 1:stride,
                x0:x0 + stride * (wo - 1) + 1:stride] += dcols[:, :, :, ky * k + kx]
    return dxp[:, p:p + h, p:p + w]


def linear_resize_matrix(n_in: int, n_out: int) -> np.ndarray:
    """U [n_out, n_in] such that U @ v is ONNX Resize(mode=linear, half_pixel) along one axis.

    half_pixel: x_in = (x_out + 0.5) / scale - 0.5 with scale = n_out / n_in, clamped to the edge
    (ONNX Resize spec; onnxruntime clamps the same way)."""
    scale = n_out / n_in
    u = np.zeros((n_out, n_in), np.float32)
    for o in range(n_out):
        x = min(max((o + 0.5) / scale - 0.5, 0.0), n_in - 1.0)
        i0 = int(math.floor(x))
        i1 = min(i0 + 1, n_in - 1)
        f = x - i0
        u[o, i0] += 1.0 - f
        u[o, i1] += f
    return u


# ---- the model ----------------------------------------------------------------------------------

@dataclass
class TrainReport:
    seconds: float
    steps: int
    losses: list[float]                 # mean training loss per epoch
    holdout_dice: float                 # mean Dice of the model on the held-out images
    baseline_dice: float                # the same for a constant prediction of the commonest class
    holdout: list[str]                  # held-out image names
    train_images: int


@dataclass
class TinySegModel:
    """Weights in ONNX layout: conv i has weights[i] [Cout, Cin, k, k] and biases[i] [Cout]."""
    weights: list[np.ndarray]
    biases: list[np.ndarray]
    strides: list[int]
    dilations: list[int]
    input_hw: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    classes: int
    context: np.ndarray | None = None   # [classes, C, 1, 1]: GlobalAveragePool(features) -> logit bias
    report: TrainReport | None = None

    @property
    def upsample(self) -> int:
        return int(np.prod(self.strides))

    def preprocess(self) -> Preprocess:
        """What to record in the package: the harness feeds images at this size and normalisation."""
        return Preprocess(size=tuple(self.input_hw), mean=tuple(self.mean), std=tuple(self.std),
                          channels="rgb", layout="nchw")

    # numpy reference -----------------------------------------------------------------------------

    def forward(self, x: np.ndarray) -> np.ndarray:
        """x [N,3,H,W] float32 (already normalised) -> logits [N,classes,H,W] float32."""
        x = np.asarray(x, np.float32)
        if x.ndim != 4 or x.shape[1] != 3:
            raise ConversionError(f"TinySegModel.forward wants [N,3,H,W], got {x.shape}")
        h = x.transpose(0, 2, 3, 1)
        last = len(self.weights) - 1
        for i, (w, b, s, d) in enumerate(zip(self.weights, self.biases, self.strides, self.dilations)):
            k = w.shape[-1]
            cols = _im2col(h, k, s, d)
            feat = h
            h = cols @ _to_matrix(w) + b
            if i < last:
                h = np.maximum(h, 0.0)
        if self.context is not None:
            h = h + (feat.mean((1, 2)) @ _to_matrix(self.context))[:, None, None, :]
        uh = linear_resize_matrix(h.shape[1], h.shape[1] * self.upsample)
        uw = linear_resize_matrix(h.shape[2], h.shape[2] * self.upsample)
        y = _upsample(h, uh, uw)
        return np.ascontiguousarray(y.transpose(0, 3, 1, 2), np.float32)

    def normalise(self, x01: np.ndarray) -> np.ndarray:
        """(h, w, 3) RGB on [0, 1] -> the model input [1, 3, h, w]."""
        x = (x01 - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return np.ascontiguousarray(x.transpose(2, 0, 1)[None], np.float32)

    def predict(self, img: np.ndarray, interpolation: str = "bilinear") -> np.ndarray:
        """uint8 RGB (H, W, 3) -> uint8 class map at the image's own resolution, through the
        harness's pipeline (resize, argmax, nearest-neighbour back to full size)."""
        logits = self.forward(self.normalise(model_input(img, self.input_hw, interpolation)))
        return upsample_nearest(logits[0].argmax(0).astype(np.uint8), img.shape[:2])

    # ONNX export ---------------------------------------------------------------------------------

    def to_onnx_model(self, opset: int = 13):
        """The ONNX graph: Conv / Relu / GlobalAveragePool / Add / Resize, input [1,3,H,W]."""
        import onnx
        from onnx import TensorProto, helper, numpy_helper
        h, w = self.input_hw
        inits, nodes = [], []
        cur = INPUT_NAME
        last = len(self.weights) - 1
        for i, (wt, b, s, d) in enumerate(zip(self.weights, self.biases, self.strides, self.dilations)):
            k = int(wt.shape[-1])
            p = conv_pad(k, s, d)
            name = "head" if i == last else f"conv{i + 1}"
            inits += [numpy_helper.from_array(wt.astype(np.float32), f"{name}.weight"),
                      numpy_helper.from_array(b.astype(np.float32), f"{name}.bias")]
            out = f"{name}_out"
            nodes.append(helper.make_node("Conv", [cur, f"{name}.weight", f"{name}.bias"], [out],
                                          name=name, kernel_shape=[k, k], strides=[s, s],
                                          dilations=[d, d], pads=[p, p, p, p]))
            if i == last and self.context is not None:
                # image-level context: mean features -> a per-class bias added everywhere
                inits.append(numpy_helper.from_array(self.context.astype(np.float32), "context.weight"))
                nodes += [helper.make_node("GlobalAveragePool", [cur], ["context_pool"], name="context_pool"),
                          helper.make_node("Conv", ["context_pool", "context.weight"], ["context_out"],
                                           name="context", kernel_shape=[1, 1]),
                          helper.make_node("Add", [out, "context_out"], ["head_sum"], name="head_sum")]
                out = "head_sum"
            cur = out
            if i < last:
                nodes.append(helper.make_node("Relu", [cur], [f"{name}_relu"], name=f"{name}_relu"))
                cur = f"{name}_relu"
        f = float(self.upsample)
        inits.append(numpy_helper.from_array(np.array([1, 1, f, f], np.float32), "upsample.scales"))
        nodes.append(helper.make_node("Resize", [cur, "", "upsample.scales"], [OUTPUT_NAME],
                                      name="upsample", mode="linear",
                                      coordinate_transformation_mode="half_pixel"))
        graph = helper.make_graph(
            nodes, "tinyseg",
            [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [1, 3, h, w])],
            [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, [1, self.classes, h, w])],
            inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                                  producer_name="edgert converters.tinyseg")
        model.ir_version = min(model.ir_version, 8)     # loadable by older onnxruntime too
        onnx.checker.check_model(model)
        return model

    def to_onnx(self, path: str | Path, opset: int = 13) -> Path:
        import onnx
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        onnx.save(self.to_onnx_model(opset), str(path))
        return path


def _to_matrix(w: np.ndarray) -> np.ndarray:
    """[Cout, Cin, k, k] -> [k*k*Cin, Cout] in the (ky, kx, c) column order of `_im2col`."""
    co, ci, k, _ = w.shape
    return np.ascontiguousarray(w.transpose(2, 3, 1, 0).reshape(k * k * ci, co))


def _from_matrix(m: np.ndarray, ci: int, k: int) -> np.ndarray:
    co = m.shape[1]
    return np.ascontiguousarray(m.reshape(k, k, ci, co).transpose(3, 2, 0, 1))


def _upsample(low: np.ndarray, uh: np.ndarray, uw: np.ndarray) -> np.ndarray:
    """[N,h,w,C] -> [N,H,W,C] = U_h . low . U_w^T per image and channel."""
    t = np.einsum("ih,nhwc->niwc", uh, low, optimize=True)
    return np.einsum("jw,niwc->nijc", uw, t, optimize=True)


# ---- training -----------------------------------------------------------------------------------

@dataclass
class TrainOptions:
    """The defaults were picked on the synthetic set (edgert.eval.synthetic at 512 px; 150 training,
    50 held-out and 24 independent test images; input 128x128; LPCVC per-image Dice).  Each of the
    3x3 head, the context branch and lr 5e-3 (1e-2 sometimes kills the ReLUs) added 0.02-0.05;
    wider (24/48) or deeper (a 5th conv, dilation 8) nets, a 4x4/4 patchify stem, batch 2 or 8,
    warm-up, colour jitter, mixing in "area" resizes and a stride-2-only net did not pay for their
    time.  1200 steps: held-out 0.50, test 0.49 (the harness on the W8A8 package: 0.495) in 44-48 s
    on the 2 shared cores of the build machine."""
    widths: tuple[int, ...] = (16, 32, 32, 32)  # 3x3 conv widths, then the head
    strides: tuple[int, ...] = (2, 2, 1, 1)     # their product is the final upsampling factor
    dilations: tuple[int, ...] = (1, 1, 2, 4)   # receptive field 63 px (head included)
    head_kernel: int = 3                # 3x3 head: smoother logits, fewer one-cell false classes
    kernels: tuple[int, ...] | None = None      # per conv; None = all 3x3
    context: bool = True                # image-level context branch (GlobalAveragePool -> bias)
    steps: int = 1200                   # Adam steps, when `epochs` is not given
    epochs: int | None = None           # passes over the training images (overrides `steps`)
    batch: int = 4
    lr: float = 5e-3                    # cosine-decayed to 0
    class_balance: float = 0.25         # CE weight per class = freq ** -class_balance (0 = plain CE)
    holdout: float = 0.25               # fraction of the images (the last, by name) kept for Dice
    # the harness's resize interpolations the training inputs are made with (one drawn per image
    # and step); the first is the one the harness uses, and the held-out Dice is measured with it
    resizes: tuple[str, ...] = ("bilinear",)


def _load_split(root: Path, hw: tuple[int, int], low: tuple[int, int], classes: int,
                holdout: float, resizes: tuple[str, ...]):
    pairs = list_pairs(root)
    from edgert.preprocess import load_image
    n_hold = int(round(len(pairs) * holdout)) if len(pairs) > 1 else 0
    n_hold = min(max(n_hold, 1 if holdout > 0 and len(pairs) > 1 else 0), len(pairs) - 1)
    train, hold = pairs[:len(pairs) - n_hold], pairs[len(pairs) - n_hold:]
    xs, ts = [], []
    for p, q in train:
        lab = load_label(q)
        if int(lab[lab != 255].max(initial=0)) >= classes:
            raise ConversionError(f"{q} holds class {int(lab[lab != 255].max())}, but classes={classes}")
        img = load_image(p)
        xs.append([model_input(img, hw, r) for r in resizes])
        ts.append(soft_targets(lab, low, classes))
    held = [(p.stem, load_image(p), load_label(q)) for p, q in hold]
    return np.stack(xs, axis=1), np.stack(ts), held      # xs: [resizes, N, h, w, 3]


def evaluate_dice(predict, held: list[tuple[str, np.ndarray, np.ndarray]], classes: int) -> float:
    """The harness's mean Dice (LPCVC 2023: per-image Dice, mean over images; edgert.eval.metrics) of
    `predict(img uint8 RGB) -> class map at full resolution` over (name, img, label) triples."""
    from edgert.eval.metrics import SegmentationMeter
    meter = SegmentationMeter(classes)
    for _, img, lab in held:
        meter.add(predict(img), lab)
    return float(meter.result()["dice_mean"])


Spec = list[tuple[int, int, int, int, int]]     # per conv: (k, stride, dilation, cin, cout)


def loss_and_grads(params: list[np.ndarray], spec: Spec, xb: np.ndarray, tb: np.ndarray,
                   cw: np.ndarray) -> tuple[float, list[np.ndarray]]:
    """Class-weighted mean cross-entropy of a batch against soft targets, and its gradient.

    params: [W_0 (k*k*cin, cout), b_0, W_1, b_1, ..., W_head, b_head] and, with the context branch,
    W_ctx (C, classes); xb [B,H,W,3] normalised; tb [B,h,w,classes] the class fractions of each
    logit cell (see `soft_targets`); cw [classes] per-class weights.  Dtype-generic (the gradient
    check runs it in float64)."""
    acts, colss = [xb], []
    h = xb
    last = len(spec) - 1
    context = len(params) == 2 * len(spec) + 1
    for li, (k, st, dl, _, _) in enumerate(spec):
        cols = _im2col(h, k, st, dl)
        colss.append(cols)
        h = cols @ params[2 * li] + params[2 * li + 1]
        if li < last:
            h = np.maximum(h, 0)
        acts.append(h)
    if context:
        pooled = acts[last].mean((1, 2))                        # [B, C] image-level features
        h = h + (pooled @ params[-1])[:, None, None, :]
    z = h - h.max(-1, keepdims=True)                            # [B,h,w,classes]
    e = np.exp(z)
    se = e.sum(-1, keepdims=True)
    wt = tb * cw                                                # weighted targets
    wpix = wt.sum(-1, keepdims=True)
    total = max(float(wpix.sum()), 1e-12)                      # 0 only if every pixel is ignored
    loss = float(-(wt * (z - np.log(se))).sum() / total)

    d = (e / se * wpix - wt) / total                            # d loss / d logits
    grads: list[np.ndarray] = [np.empty(0)] * len(params)
    d_ctx = None
    if context:
        dsum = d.sum((1, 2))                                    # [B, classes]
        grads[-1] = pooled.T @ dsum
        hw = d.shape[1] * d.shape[2]
        d_ctx = (dsum @ params[-1].T)[:, None, None, :] / hw    # back through the mean
    for li in range(last, -1, -1):
        k, st, dl, _, co = spec[li]
        if li < last:
            d = d * (acts[li + 1] > 0)
        cols = colss[li]
        d2 = d.reshape(-1, co)
        grads[2 * li] = cols.reshape(-1, cols.shape[-1]).T @ d2
        grads[2 * li + 1] = d2.sum(0)
        if li > 0:
            d = _col2im((d2 @ params[2 * li].T).reshape(cols.shape), acts[li].shape, k, st, dl)
            if li == last and d_ctx is not None:
                d = d + d_ctx
    return loss, grads


def soft_targets(label: np.ndarray, hw: tuple[int, int], classes: int, sub: int = 4) -> np.ndarray:
    """(H, W) class map -> (h, w, classes) float32: the fraction of each class in each of the h x w
    cells, sampled on a sub x sub grid per cell (labels >= classes, e.g. 255 = ignore, count for
    none, so an all-ignored cell has zero weight)."""
    h, w = hw
    lab = resize_label(label, (h * sub, w * sub)).astype(np.int64)
    onehot = np.zeros((h * sub, w * sub, classes), np.float32)
    ok = lab < classes
    onehot[ok, lab[ok]] = 1.0
    return onehot.reshape(h, sub, w, sub, classes).mean((1, 3))


def layer_spec(widths: tuple[int, ...], strides: tuple[int, ...], dilations: tuple[int, ...],
               classes: int, head_kernel: int = 1, kernels: tuple[int, ...] | None = None) -> Spec:
    """Convs (3x3 unless `kernels` says) with the given widths, strides and dilations, then the
    head (1x1 or 3x3)."""
    spec, cin = [], 3
    kernels = kernels or (3,) * len(widths)
    for k, wd, st, dl in zip(kernels, widths, strides, dilations):
        spec.append((int(k), int(st), int(dl), cin, int(wd)))
        cin = int(wd)
    spec.append((int(head_kernel), 1, 1, cin, classes))
    return spec


def init_params(spec: Spec, rng: np.random.Generator, context: bool = False) -> list[np.ndarray]:
    """He-normal weights, zero biases; the head (and the context weights, appended last) start 10x
    smaller, so the first predictions are near-uniform."""
    params = []
    for k, _, _, ci, co in spec:
        fan_in = k * k * ci
        params.append((rng.standard_normal((fan_in, co)) * math.sqrt(2 / fan_in)).astype(np.float32))
        params.append(np.zeros(co, np.float32))
    params[-2] *= np.float32(0.1)
    if context:
        ci, co = spec[-1][3], spec[-1][4]
        params.append((rng.standard_normal((ci, co)) * (0.1 * math.sqrt(2 / ci))).astype(np.float32))
    return params


def train_tiny_segmenter(dataset_root: str | Path, input_hw: tuple[int, int] = (128, 128),
                         epochs: int | None = None, seed: int = 0, classes: int = 14,
                         options: TrainOptions | None = None, log=None) -> TinySegModel:
    """Train on images/ + labels/ of `dataset_root`; the last `holdout` fraction is held out.

    `epochs` (else `options.epochs`, else `options.steps` worth of epochs) and `seed` decide the run;
    `log(str)` receives one line per epoch."""
    opt = options or TrainOptions()
    epochs = opt.epochs if epochs is None else int(epochs)
    hw = (int(input_hw[0]), int(input_hw[1]))
    if not opt.widths or not len(opt.widths) == len(opt.strides) == len(opt.dilations):
        raise ConversionError(f"widths {opt.widths}, strides {opt.strides} and dilations "
                              f"{opt.dilations} must pair up")
    f = int(np.prod(opt.strides))
    if hw[0] % f or hw[1] % f or min(hw) < 2 * f:
        raise ConversionError(f"input size must be a multiple of {f} (the product of the strides) "
                              f"and at least {2 * f}, got {hw[0]}x{hw[1]}")
    t0 = time.perf_counter()
    low = (hw[0] // f, hw[1] // f)
    xs, ts, held = _load_split(Path(dataset_root), hw, low, classes, opt.holdout, opt.resizes)
    rng = np.random.default_rng(seed)

    mean = xs[0].reshape(-1, 3).mean(0)
    std = np.maximum(xs[0].reshape(-1, 3).std(0), 1e-3)
    xs = ((xs - mean) / std).astype(np.float32)

    freq = ts.reshape(-1, classes).sum(0).astype(np.float64)
    freq /= max(freq.sum(), 1.0)
    cw = np.where(freq > 0, np.maximum(freq, 1e-4) ** -opt.class_balance, 0.0)
    cw = (cw / (cw * freq).sum()).astype(np.float32)        # mean weight per pixel = 1

    spec = layer_spec(opt.widths, opt.strides, opt.dilations, classes, opt.head_kernel, opt.kernels)
    params = init_params(spec, rng, opt.context)
    m1 = [np.zeros_like(p) for p in params]
    m2 = [np.zeros_like(p) for p in params]
    b1, b2, eps = 0.9, 0.999, 1e-8

    n = xs.shape[1]
    steps_per_epoch = max(1, math.ceil(n / opt.batch))
    if epochs is None:
        epochs = max(1, round(opt.steps / steps_per_epoch))
    total = epochs * steps_per_epoch
    step = 0
    losses = []
    for ep in range(epochs):
        order = rng.permutation(n)
        ep_loss = 0.0
        for s in range(steps_per_epoch):
            idx = order[s * opt.batch:(s + 1) * opt.batch]
            if idx.size == 0:
                idx = rng.integers(0, n, opt.batch)
            xb = xs[rng.integers(0, len(xs), len(idx)) if len(xs) > 1 else 0, idx]
            tb = ts[idx]
            # flips and 90-degree turns: the scenes are seen from above, so none changes the class
            if rng.random() < 0.5:
                xb, tb = xb[:, :, ::-1], tb[:, :, ::-1]
            if rng.random() < 0.5:
                xb, tb = xb[:, ::-1], tb[:, ::-1]
            if hw[0] == hw[1] and rng.random() < 0.5:
                xb, tb = xb.transpose(0, 2, 1, 3), tb.transpose(0, 2, 1, 3)
            xb, tb = np.ascontiguousarray(xb), np.ascontiguousarray(tb)

            loss, grads = loss_and_grads(params, spec, xb, tb, cw)
            ep_loss += loss

            # Adam with a cosine learning-rate decay
            step += 1
            lr = opt.lr * 0.5 * (1 + math.cos(math.pi * (step - 1) / total))
            c1, c2 = 1 - b1 ** step, 1 - b2 ** step
            for p, g, a, v in zip(params, grads, m1, m2):
                a *= b1
                a += (1 - b1) * g
                v *= b2
                v += (1 - b2) * g * g
                p -= (lr * (a / c1) / (np.sqrt(v / c2) + eps)).astype(np.float32)
        losses.append(ep_loss / steps_per_epoch)
        if log:
            log(f"epoch {ep + 1}/{epochs}  loss {losses[-1]:.4f}")

    model = TinySegModel(
        weights=[_from_matrix(params[2 * i], ci, k) for i, (k, _, _, ci, _) in enumerate(spec)],
        biases=[params[2 * i + 1].copy() for i in range(len(spec))],
        strides=[st for _, st, _, _, _ in spec], dilations=[dl for _, _, dl, _, _ in spec],
        input_hw=hw, mean=tuple(float(v) for v in mean), std=tuple(float(v) for v in std),
        classes=classes,
        context=_from_matrix(params[-1], spec[-1][3], 1) if opt.context else None)
    commonest = int(np.argmax(freq))
    dice = evaluate_dice(model.predict, held, classes) if held else float("nan")
    base = evaluate_dice(lambda img: np.full(img.shape[:2], commonest, np.uint8), held,
                         classes) if held else float("nan")
    model.report = TrainReport(seconds=time.perf_counter() - t0, steps=step, losses=losses,
                               holdout_dice=dice, baseline_dice=base,
                               holdout=[name for name, _, _ in held], train_images=n)
    return model


# ---- CLI ----------------------------------------------------------------------------------------

def _parse_size(text: str) -> tuple[int, int]:
    parts = text.lower().split("x")
    try:
        vals = [int(p) for p in parts]
    except ValueError:
        raise ConversionError(f"size must look like 128 or 128x96, got {text!r}") from None
    return (vals[0], vals[0]) if len(vals) == 1 else (vals[0], vals[1])


def main(argv: list[str] | None = None) -> int:
    import argparse
    import sys
    ap = argparse.ArgumentParser(prog="python -m converters.tinyseg",
                                 description="Train the tiny numpy segmentation CNN and export ONNX.")
    ap.add_argument("--dataset", required=True, type=Path, help="folder with images/ and labels/")
    ap.add_argument("--out", required=True, type=Path, help="ONNX file to write")
    ap.add_argument("--size", default="128", help="model input, 128 or HxW (default 128)")
    ap.add_argument("--steps", type=int, default=TrainOptions.steps,
                    help=f"Adam steps (default {TrainOptions.steps}, under a minute on 2 cores)")
    ap.add_argument("--epochs", type=int, default=None, help="passes over the data (overrides --steps)")
    ap.add_argument("--classes", type=int, default=14)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quiet", action="store_true", help="no per-epoch lines")
    args = ap.parse_args(argv)
    try:
        model = train_tiny_segmenter(args.dataset, _parse_size(args.size), args.epochs, args.seed,
                                     args.classes, TrainOptions(steps=args.steps),
                                     log=None if args.quiet else print)
        model.to_onnx(args.out)
    except EdgertError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    r = model.report
    pp = model.preprocess()
    print(f"trained on {r.train_images} images, {r.steps} steps in {r.seconds:.1f} s; "
          f"final train loss {r.losses[-1]:.4f}")
    print(f"held-out mean Dice {r.holdout_dice:.3f} on {len(r.holdout)} images "
          f"(constant-prediction baseline {r.baseline_dice:.3f})")
    print(f"wrote {args.out}; convert with: --size {pp.size[0]}x{pp.size[1]} "
          f"--mean {','.join(f'{v:.4f}' for v in pp.mean)} "
          f"--std {','.join(f'{v:.4f}' for v in pp.std)} --channels rgb")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

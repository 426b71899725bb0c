"""The robustness suite: common corruptions and system-noise variants of the input pipeline.

Common corruptions follow ImageNet-C (Hendrycks & Dietterich, "Benchmarking Neural Network
Robustness to Common Corruptions and Perturbations", ICLR 2019): the same severity 1..5 parameter
tables, in pixels as published (they were set for 224-px images, so a 512-px image is hurt a little
less). "Robustness of quantized models" studies evaluate quantized networks on exactly these.

System noise follows SysNoise (Wang et al., "SysNoise: Exploring and Benchmarking Training-Deployment
System Inconsistency", MLSys 2023): the same model scored again with a different resize
interpolation, a different JPEG decoder, or after a JPEG round trip with 4:2:0 or 4:4:4 chroma
subsampling.

How the harness uses a `Variant`::

    img = read_image(path, decoder=variant.decoder or "pil")
    img = variant.apply(img, rng)                    # corruption / JPEG round trip; else identity
    x = predictor.prepare(img, variant.resize_interpolation or "bilinear")   # edgert.preprocess.resize

A resize variant changes nothing when the model runs at the dataset's own resolution. Pass a
`rng` seeded per (image, variant) so that runs are repeatable.
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from edgert.errors import EvalError
from edgert.preprocess import DEFAULT_INTERPOLATION, INTERPOLATIONS

SEVERITIES = (1, 2, 3, 4, 5)

# ImageNet-C parameter tables (hendrycks/robustness, ImageNet-C/create_c/make_imagenet_c.py),
# indexed by severity - 1
GAUSSIAN_NOISE_STD = (0.08, 0.12, 0.18, 0.26, 0.38)               # on [0, 1] pixels
IMPULSE_NOISE_AMOUNT = (0.03, 0.06, 0.09, 0.17, 0.27)             # fraction of values salt/pepper
GLASS_BLUR = ((0.7, 1, 2), (0.9, 2, 1), (1.0, 2, 3), (1.1, 3, 2), (1.5, 4, 2))  # sigma, max shift, iterations
MOTION_BLUR = ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15))     # radius, sigma (px)
BRIGHTNESS_DELTA = (0.1, 0.2, 0.3, 0.4, 0.5)                      # added to HSV value
CONTRAST_FACTOR = (0.4, 0.3, 0.2, 0.1, 0.05)                      # scale about the channel mean
JPEG_QUALITY = (25, 18, 15, 10, 7)

DEFAULT_DECODER = "pil"
CHROMA_SUBSAMPLING = {"444": 0, "420": 2}          # Pillow's `subsampling` codes
JPEG_ROUNDTRIP_QUALITY = 90                        # high, so chroma subsampling dominates the error

Corruption = Callable[[np.ndarray, int, np.random.Generator], np.ndarray]
CORRUPTIONS: dict[str, Corruption] = {}


def _cv2():
    try:
        import cv2
    except ImportError as e:  # pragma: no cover - depends on the install
        raise EvalError("corruptions and the cv2 decoder need OpenCV: pip install 'edgert[camera]'") from e
    return cv2


def corruption(name: str) -> Callable[[Corruption], Corruption]:
    def register(fn: Corruption) -> Corruption:
        if name in CORRUPTIONS:
            raise RuntimeError(f"corruption {name} registered twice")
        CORRUPTIONS[name] = fn
        return fn
    return register


def corrupt(img: np.ndarray, name: str, severity: int, rng: np.random.Generator | None = None) -> np.ndarray:
    """Apply the named corruption; checks the name, the severity and the image."""
    fn = CORRUPTIONS.get(name)
    if fn is None:
        raise EvalError(f"unknown corruption {name!r} (known: {', '.join(sorted(CORRUPTIONS))})")
    if severity not in SEVERITIES:
        raise EvalError(f"corruption severity must be 1..5, got {severity}")
    _check_image(img)
    return fn(img, severity, rng if rng is not None else np.random.default_rng(0))


def _check_image(img: np.ndarray) -> None:
    if not (isinstance(img, np.ndarray) and img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3):
        raise EvalError(f"expected an (H, W, 3) uint8 RGB image, got "
                        f"{getattr(img, 'shape', None)} {getattr(img, 'dtype', type(img).__name__)}")


def _to_u8(x: np.ndarray) -> np.ndarray:
    """[0, 1] floats -> uint8, rounded."""
    return (np.clip(x, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


# -- the corruptions: pure functions (img uint8 RGB, severity, rng) -> img uint8 RGB --------------

@corruption("gaussian_noise")
def gaussian_noise(img: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    c = GAUSSIAN_NOISE_STD[severity - 1]
    x = img.astype(np.float32) / 255.0
    return _to_u8(x + rng.standard_normal(img.shape, dtype=np.float32) * np.float32(c))


@corruption("impulse_noise")
def impulse_noise(img: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Salt and pepper on each channel value independently (skimage's 's&p', salt_vs_pepper 0.5)."""
    amount = IMPULSE_NOISE_AMOUNT[severity - 1]
    r = rng.random(img.shape, dtype=np.float32)
    out = img.copy()
    out[r < amount / 2] = 0
    out[r > 1 - amount / 2] = 255
    return out


def _gaussian_blur(x: np.ndarray, sigma: float) -> np.ndarray:
    return _cv2().GaussianBlur(x, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=_cv2().BORDER_REFLECT)


@corruption("glass_blur")
def glass_blur(img: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Blur, jitter pixels locally, blur again. ImageNet-C swaps pixel pairs one at a time in a
    Python loop; here every pixel takes the value of a random neighbour within `max shift` at once
    (the same local scrambling, vectorised)."""
    sigma, delta, iterations = GLASS_BLUR[severity - 1]
    x = _to_u8(_gaussian_blur(img.astype(np.float32) / 255.0, sigma))
    h, w = x.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    for _ in range(iterations):
        dy = rng.integers(-delta, delta, (h, w))          # [-delta, delta), as np.random.randint
        dx = rng.integers(-delta, delta, (h, w))
        x = x[np.clip(yy + dy, 0, h - 1), np.clip(xx + dx, 0, w - 1)]
    return _to_u8(_gaussian_blur(x.astype(np.float32) / 255.0, sigma))


def motion_kernel(radius: int, sigma: float, angle_deg: float) -> np.ndarray:
    """ImageMagick's -motion-blur: a one-sided Gaussian-weighted line of 2*radius+1 taps from the
    centre towards `angle_deg` (what ImageNet-C calls through Wand)."""
    width = 2 * radius + 1
    taps = np.exp(-np.arange(width) ** 2 / (2.0 * sigma ** 2))
    taps /= taps.sum()
    k = np.zeros((2 * width + 1, 2 * width + 1), np.float32)
    dy, dx = math.sin(math.radians(angle_deg)), math.cos(math.radians(angle_deg))
    for i, t in enumerate(taps):
        k[width + int(round(i * dy)), width + int(round(i * dx))] += t
    return k


@corruption("motion_blur")
def motion_blur(img: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    radius, sigma = MOTION_BLUR[severity - 1]
    k = motion_kernel(radius, sigma, rng.uniform(-45.0, 45.0))
    out = _cv2().filter2D(img.astype(np.float32), -1, k, borderType=_cv2().BORDER_REPLICATE)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


@corruption("brightness")
def brightness(img: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    cv2 = _cv2()
    hsv = cv2.cvtColor(img.astype(np.float32) / 255.0, cv2.COLOR_RGB2HSV)
    hsv[:, :, 2] = np.clip(hsv[:, :, 2] + np.float32(BRIGHTNESS_DELTA[severity - 1]), 0.0, 1.0)
    return _to_u8(cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB))


@corruption("contrast")
def contrast(img: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    c = np.float32(CONTRAST_FACTOR[severity - 1])
    x = img.astype(np.float32) / 255.0
    mean = x.mean(axis=(0, 1), keepdims=True)
    return _to_u8((x - mean) * c + mean)


def jpeg_roundtrip(img: np.ndarray, quality: int, subsampling: int = -1) -> np.ndarray:
    """Encode to JPEG with Pillow and decode again. subsampling: -1 Pillow's default (4:2:0),
    0 = 4:4:4, 2 = 4:2:0."""
    try:
        from PIL import Image
    except ImportError as e:  # pragma: no cover - depends on the install
        raise EvalError("JPEG variants need Pillow: pip install 'edgert[image]'") from e
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=quality, subsampling=subsampling)
    buf.seek(0)
    with Image.open(buf) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)


@corruption("jpeg")
def jpeg(img: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    return jpeg_roundtrip(img, JPEG_QUALITY[severity - 1])


# -- variants -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Variant:
    """One way to perturb the input pipeline. Corruptions act on the decoded image; system
    variants change the decoder, the resize interpolation, or add a JPEG round trip."""
    name: str                                 # "gaussian_noise/3", "resize/area", "jpeg_chroma/420"
    kind: str                                 # "corruption" | "system"
    severity: int | None
    resize_interpolation: str | None = None   # None: the harness's default (bilinear)
    decoder: str | None = None                # None: the harness's default (pil)
    jpeg_subsampling: str | None = None       # "420" | "444": JPEG round trip after decoding

    def apply(self, img: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        if self.kind == "corruption":
            return corrupt(img, self.name.split("/")[0], self.severity or 0, rng)
        if self.jpeg_subsampling is not None:
            _check_image(img)
            return jpeg_roundtrip(img, JPEG_ROUNDTRIP_QUALITY, CHROMA_SUBSAMPLING[self.jpeg_subsampling])
        return img

    def to_json(self) -> dict:
        return {"name": self.name, "kind": self.kind, "severity": self.severity,
                "resize_interpolation": self.resize_interpolation, "decoder": self.decoder,
                "jpeg_subsampling": self.jpeg_subsampling}


def _all_system_variants() -> list[Variant]:
    out = [Variant(f"resize/{i}", "system", None, resize_interpolation=i) for i in INTERPOLATIONS]
    out += [Variant(f"decoder/{d}", "system", None, decoder=d) for d in (DEFAULT_DECODER, "cv2")]
    out += [Variant(f"jpeg_chroma/{s}", "system", None, jpeg_subsampling=s) for s in CHROMA_SUBSAMPLING]
    return out


def system_variants() -> list[Variant]:
    """Every system variant that differs from the default pipeline (pil decode, bilinear resize)."""
    return [v for v in _all_system_variants()
            if v.resize_interpolation != DEFAULT_INTERPOLATION and v.decoder != DEFAULT_DECODER]


def suite(severities: tuple[int, ...] = (1, 3, 5)) -> list[Variant]:
    """Each corruption at each severity, then the system variants."""
    bad = [s for s in severities if s not in SEVERITIES]
    if bad:
        raise EvalError(f"corruption severity must be 1..5, got {bad[0]}")
    out = [Variant(f"{name}/{s}", "corruption", s) for name in CORRUPTIONS for s in severities]
    return out + system_variants()


def variant(name: str) -> Variant:
    """The variant called `name` ("motion_blur/2", "resize/area", "decoder/cv2", "jpeg_chroma/444")."""
    base, _, arg = name.partition("/")
    if base in CORRUPTIONS:
        if not arg.isdigit() or int(arg) not in SEVERITIES:
            raise EvalError(f"variant {name!r}: severity must be 1..5 ({base}/1 .. {base}/5)")
        return Variant(name, "corruption", int(arg))
    for v in _all_system_variants():
        if v.name == name:
            return v
    known = sorted(f"{c}/1..5" for c in CORRUPTIONS) + [v.name for v in _all_system_variants()]
    raise EvalError(f"unknown variant {name!r} (known: {', '.join(known)})")

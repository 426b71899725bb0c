"""The BEV model: configs of its two variants, parameters, and the pure-JAX forward in three stages.

  1. backbone  images [n_cams, 3, H, W] -> feat [n_cams, C, h, w]: a small CNN (3x3 convs + ReLU)
               shared by the cameras, which come as one batch
  2. fuse      feat, cam_mask [n_cams], prev_bev [1, B, S, S] -> bev [1, B, S, S]: the view transform
               (zoo/bev/view.py), concatenated with the previous BEV that the caller has warped by the
               ego motion (zeros = reset; BEVFormer's temporal input without the attention), then 3x3
               convs
  3. heads     bev -> seg logits [1, 6, G, G] (upsampled x2 to the ground-truth grid), heatmap
               [1, 4, S, S] (sigmoid), boxreg [1, 10, S, S] (CenterPoint-style, zoo/bev/decode.py)

The "small" variant halves the backbone's resolution (stride 16) and narrows every stage; it shares
the interfaces (same images, same grids), but its BEV features have their own width, so switching
variants resets the temporal state (the scheduler keeps one prev_bev per variant).

Every function here takes a leading batch of rig samples: images [B, n_cams, 3, H, W] etc.; the
ONNX export (zoo/bev/export.py) is the same computation at B = 1 without that axis on images.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from edgert.bev.rig import BevGrid, Rig
from edgert.bev.schema import CLASSES, OBJECT_CLASSES
from zoo.bev.decode import BOX_REG
from zoo.bev.view import MASK_EPS, ViewTables, view_tables

HEAT_PRIOR = 0.1     # initial centre probability (CenterNet / RetinaNet prior: bias = -log((1-p)/p))


@dataclass(frozen=True)
class ModelConfig:
    name: str
    backbone: tuple[tuple[int, int], ...]     # (out channels, stride) of each 3x3 conv
    bev_ch: int                               # fused BEV feature width (= prev_bev's)
    fuse_convs: int = 2
    seg_ch: int = 24
    obj_ch: int = 32
    model_grid: BevGrid = field(default_factory=lambda: BevGrid(50, 1.0))
    heights_m: tuple[float, ...] = (0.25, 1.0)

    @property
    def stride(self) -> int:
        return int(np.prod([s for _, s in self.backbone]))

    @property
    def feat_ch(self) -> int:
        return self.backbone[-1][0]


FULL = ModelConfig("full", ((16, 2), (32, 2), (32, 1), (48, 2), (48, 1)), bev_ch=64)
SMALL = ModelConfig("small", ((12, 2), (16, 2), (24, 2), (32, 2)), bev_ch=32, seg_ch=16, obj_ch=24)
VARIANTS = {c.name: c for c in (FULL, SMALL)}


def variant(name: str) -> ModelConfig:
    try:
        return VARIANTS[name]
    except KeyError:
        raise ValueError(f"unknown BEV model variant {name!r}; known: {', '.join(VARIANTS)}") from None


@dataclass(frozen=True)
class BevNet:
    """A variant bound to a rig: the config, the view tables and the stage shapes."""
    cfg: ModelConfig
    rig: Rig
    tables: ViewTables

    @property
    def n_cams(self) -> int:
        return len(self.rig.cameras)

    @property
    def image_hw(self) -> tuple[int, int]:
        return self.rig.cameras[0].height, self.rig.cameras[0].width

    @property
    def feat_hw(self) -> tuple[int, int]:
        return self.tables.feat_hw


def conv_out(n: int, stride: int) -> int:
    """Output length of a 3x3 conv with padding 1 (ONNX: floor((n + 2 - 3) / s) + 1)."""
    return (n - 1) // stride + 1


def build(cfg: ModelConfig, rig: Rig) -> BevNet:
    cam = rig.cameras[0]
    h, w = cam.height, cam.width
    for _, s in cfg.backbone:
        h, w = conv_out(h, s), conv_out(w, s)
    return BevNet(cfg, rig, view_tables(rig, cfg.model_grid, (h, w), cfg.heights_m))


# -- parameters: {stage: [{"w": [O, I, kh, kw], "b": [O]}, ...]} as numpy float32 -------------------

def _conv_init(rng: np.random.Generator, cin: int, cout: int, k: int, gain: float = 2.0) -> dict:
    std = np.sqrt(gain / (cin * k * k))            # He init for ReLU layers
    return {"w": (rng.standard_normal((cout, cin, k, k)) * std).astype(np.float32),
            "b": np.zeros(cout, np.float32)}


def init_params(net: BevNet, seed: int = 0) -> dict:
    cfg = net.cfg
    rng = np.random.default_rng(seed)
    backbone, cin = [], 3
    for cout, _ in cfg.backbone:
        backbone.append(_conv_init(rng, cin, cout, 3))
        cin = cout
    fuse, cin = [], cfg.feat_ch + cfg.bev_ch
    for _ in range(cfg.fuse_convs):
        fuse.append(_conv_init(rng, cin, cfg.bev_ch, 3))
        cin = cfg.bev_ch
    heat = _conv_init(rng, cfg.obj_ch, len(OBJECT_CLASSES), 1, gain=1.0)
    heat["b"][:] = -np.log((1 - HEAT_PRIOR) / HEAT_PRIOR)
    box = _conv_init(rng, cfg.obj_ch, len(BOX_REG), 1, gain=0.1)
    return {"backbone": backbone, "fuse": fuse,
            "seg": [_conv_init(rng, cfg.bev_ch, cfg.seg_ch, 3), _conv_init(rng, cfg.seg_ch, len(CLASSES), 3, gain=1.0)],
            "obj": [_conv_init(rng, cfg.bev_ch, cfg.obj_ch, 3)], "heat": [heat], "box": [box]}


def conv_specs(cfg: ModelConfig) -> dict[str, list[tuple[int, int]]]:
    """(stride, pad) of every conv, per stage (kernel size comes from the weights): shared by the
    JAX forward and the ONNX export."""
    return {"backbone": [(s, 1) for _, s in cfg.backbone], "fuse": [(1, 1)] * cfg.fuse_convs,
            "seg": [(1, 1), (1, 1)], "obj": [(1, 1)], "heat": [(1, 0)], "box": [(1, 0)]}


# -- the forward (JAX) -------------------------------------------------------------------------------

def _jax():
    import jax
    import jax.numpy as jnp
    return jax, jnp


class FakeQuant(Protocol):
    """Hooks for quantization-aware training (zoo/bev/qat.py): every conv's weights go through
    `weight`, its input through `act(name, x)`; None everywhere else = the fp32 model."""

    def weight(self, w): ...

    def act(self, name: str, x): ...


def _conv(x, p, stride: int, pad: int, fq: FakeQuant | None = None, name: str = ""):
    jax, _ = _jax()
    w = p["w"]
    if fq is not None:
        x, w = fq.act(name, x), fq.weight(w)
    y = jax.lax.conv_general_dilated(x, w, (stride, stride), ((pad, pad), (pad, pad)),
                                     dimension_numbers=("NCHW", "OIHW", "NCHW"))
    return y + p["b"][None, :, None, None]


def upsample2x(x):
    """x2 bilinear on the last two axes, exactly ONNX Resize(mode=linear,
    coordinate_transformation_mode=half_pixel): out[2i] = .75 x[i] + .25 x[i-1],
    out[2i+1] = .75 x[i] + .25 x[i+1], edges clamped."""
    _, jnp = _jax()

    def axis(x, a):
        prev = jnp.concatenate([jnp.take(x, jnp.array([0]), a), jnp.take(x, jnp.arange(x.shape[a] - 1), a)], a)
        nxt = jnp.concatenate([jnp.take(x, jnp.arange(1, x.shape[a]), a),
                               jnp.take(x, jnp.array([x.shape[a] - 1]), a)], a)
        even, odd = 0.75 * x + 0.25 * prev, 0.75 * x + 0.25 * nxt
        y = jnp.stack([even, odd], a + 1)
        return y.reshape(x.shape[:a] + (2 * x.shape[a],) + x.shape[a + 1:])

    return axis(axis(x, x.ndim - 2), x.ndim - 1)


def backbone(params: dict, net: BevNet, images, fq: FakeQuant | None = None):
    """images [B, n_cams, 3, H, W] -> feat [B, n_cams, C, h, w]."""
    _, jnp = _jax()
    b, n = images.shape[:2]
    x = images.reshape((b * n,) + images.shape[2:])
    for i, (p, (s, pad)) in enumerate(zip(params["backbone"], conv_specs(net.cfg)["backbone"])):
        x = jnp.maximum(_conv(x, p, s, pad, fq, f"backbone/{i}"), 0.0)
    return x.reshape((b, n) + x.shape[1:])


def view_transform(net: BevNet, feat, cam_mask):
    """feat [B, n_cams, C, h, w], cam_mask [B, n_cams] -> BEV [B, C, S, S] (zoo/bev/view.py)."""
    _, jnp = _jax()
    b, n, c, h, w = feat.shape
    m = cam_mask[:, :, None, None, None]
    aug = jnp.concatenate([feat * m, jnp.broadcast_to(m, (b, n, 1, h, w))], 2)
    flat = aug.transpose(0, 2, 1, 3, 4).reshape(b, c + 1, n * h * w)
    g = (flat[:, :, net.tables.idx] * net.tables.weight).sum(-1)          # [B, C+1, P]
    bev = g[:, :c] / jnp.maximum(g[:, c:], MASK_EPS)
    s = net.tables.grid.size
    return bev.reshape(b, c, s, s)


def fuse(params: dict, net: BevNet, feat, cam_mask, prev_bev, fq: FakeQuant | None = None):
    """-> bev [B, bev_ch, S, S]."""
    _, jnp = _jax()
    x = jnp.concatenate([view_transform(net, feat, cam_mask), prev_bev], 1)
    for i, (p, (s, pad)) in enumerate(zip(params["fuse"], conv_specs(net.cfg)["fuse"])):
        x = jnp.maximum(_conv(x, p, s, pad, fq, f"fuse/{i}"), 0.0)
    return x


def heads(params: dict, net: BevNet, bev, heat_logits: bool = False, fq: FakeQuant | None = None):
    """-> (seg logits [B, 6, G, G], heatmap [B, 4, S, S] (probabilities, or logits if asked),
    boxreg [B, 10, S, S])."""
    _, jnp = _jax()
    seg = jnp.maximum(_conv(bev, params["seg"][0], 1, 1, fq, "seg/0"), 0.0)
    seg = _conv(upsample2x(seg), params["seg"][1], 1, 1, fq, "seg/1")
    o = jnp.maximum(_conv(bev, params["obj"][0], 1, 1, fq, "obj/0"), 0.0)
    heat = _conv(o, params["heat"][0], 1, 0, fq, "heat/0")
    if not heat_logits:
        heat = 1.0 / (1.0 + jnp.exp(-heat))
    return seg, heat, _conv(o, params["box"][0], 1, 0, fq, "box/0")


def forward(params: dict, net: BevNet, images, cam_mask, prev_bev, heat_logits: bool = False,
            fq: FakeQuant | None = None) -> dict:
    """All three stages: a dict of feat, bev, seg, heatmap, boxreg."""
    feat = backbone(params, net, images, fq)
    bev = fuse(params, net, feat, cam_mask, prev_bev, fq)
    seg, heat, box = heads(params, net, bev, heat_logits, fq)
    return {"feat": feat, "bev": bev, "seg": seg, "heatmap": heat, "boxreg": box}


def warp(bev, idx, w):
    """The previous BEV [B, C, S, S] warped with per-sample tables from decode.warp_tables
    (idx [B, P, 4], w [B, P, 4]): the same sampling as decode.warp_bev, differentiable."""
    jax, _ = _jax()
    b, c, s, _ = bev.shape
    flat = bev.reshape(b, c, s * s)
    out = jax.vmap(lambda f, i, ww: (f[:, i] * ww).sum(-1))(flat, idx, w)
    return out.reshape(b, c, s, s)


def to_jax(params: dict) -> dict:
    _, jnp = _jax()
    import jax
    return jax.tree_util.tree_map(jnp.asarray, params)


def to_numpy(params: dict) -> dict:
    import jax
    return jax.tree_util.tree_map(lambda a: np.asarray(a, np.float32), params)


def save_params(path, params: dict[str, dict]) -> None:
    """{variant: params} -> one .npz (keys "<variant>/<stage>/<i>/<w|b>")."""
    flat = {f"{v}/{stage}/{i}/{k}": a for v, p in params.items() for stage, layers in p.items()
            for i, layer in enumerate(layers) for k, a in layer.items()}
    with open(path, "wb") as f:
        np.savez(f, **flat)


def load_params(path) -> dict[str, dict]:
    out: dict = {}
    with np.load(path) as z:
        for key in z.files:
            v, stage, i, k = key.split("/")
            layers = out.setdefault(v, {}).setdefault(stage, [])
            while len(layers) <= int(i):
                layers.append({})
            layers[int(i)][k] = z[key].astype(np.float32)
    for v, p in out.items():
        variant(v)
        if set(p) != set(conv_specs(VARIANTS[v])):
            raise ValueError(f"{path}: variant {v} has stages {sorted(p)}, expected {sorted(conv_specs(VARIANTS[v]))}")
    return out

"""A BEV model's three stages as separately runnable sessions (scheduler.stages.BevStages).

The model file (`edgert bev train` -> ONNX, or the package `edgert convert` makes of it:
edgert/bev/package.py) declares its stage entries in metadata ("edgert.bev.stages":
per variant a backbone, a fuse and a heads sub-graph, with their input and output tensor names).
Each entry is extracted as its own ONNX Runtime session, so the scheduler can run the backbone of
frame t+1 while fuse + heads of frame t run, refresh only some cameras, and pick a variant per
frame:

- backbone(images, cams, variant): only the given cameras go through the CNN (the batch dimension of
  the extracted sub-graph is made symbolic), their features are scattered into the rig's slots;
- fuse(feats, cams, prev_bev, motion, variant): the previous BEV state (of the same variant; a
  different variant's or none is a reset) is warped by the ego motion exactly as in training
  (edgert.bev.decode.warp_bev) and fused with the refreshed cameras (cam_mask marks them);
- heads(bev, variant): segmentation argmax on the output grid and decoded boxes.

onnx is imported only to split an ONNX model into its stages (at load time); a package runs on the
edgert backends (ort by default, the numpy oracle for checks) without onnx.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgert.bev import decode as D
from edgert.bev.rig import BevGrid, Rig
from edgert.errors import InputError

META_STAGES = "edgert.bev.stages"
META_RIG = "edgert.bev.rig"
META_MODEL = "edgert.bev.model"


@dataclass
class _Feats:
    feat: np.ndarray           # [n_cams, C, h, w], zeros for cameras not refreshed
    mask: np.ndarray           # [n_cams] float32
    variant: str


@dataclass
class _Bev:
    bev: np.ndarray            # [1, C, S, S] fused features (the next step's prev_bev)
    variant: str


class BevModelStages:
    """BevStages over ONNX Runtime sessions, one per declared stage entry."""

    # each variant has its own BEV grid and channels: another variant's state is a reset in `fuse`
    variants_share_state = False

    def __init__(self, sessions: dict[tuple[str, str], object], info: dict, rig: Rig, threads: int = 1):
        self.sessions, self.info, self.rig = sessions, info, rig
        self.variants = tuple(v for v in ("full", "small") if (v, "backbone") in sessions) or \
            tuple(sorted({v for v, _ in sessions}))
        img = info["image"]
        self.image_hw = (int(img["height"]), int(img["width"]))
        self.out_grid = BevGrid(int(info["output_grid"]["size"]), float(info["output_grid"]["cell_m"]))
        self.model_grids = {v: BevGrid(int(d["model_grid"]["size"]), float(d["model_grid"]["cell_m"]))
                            for v, d in info["variants"].items()}
        self.feat_shape = {v: tuple(d["feat"]) for v, d in info["variants"].items()}
        self.bev_ch = {v: int(d["bev_ch"]) for v, d in info["variants"].items()}
        self.package = None        # the edgert package the sessions' weights view, when loaded from one

    def fresh(self) -> "BevModelStages":
        """The same sessions for a new stream (the stages hold no per-stream state)."""
        return self

    def backbone(self, images: list[np.ndarray], cams: list[int], variant: str) -> _Feats:
        n = len(self.rig.cameras)
        x, ok = D.preprocess(list(images), *self.image_hw)
        sess = self.sessions[(variant, "backbone")]
        feat = np.zeros(self.feat_shape[variant], np.float32)
        mask = np.zeros(n, np.float32)
        use = [k for k, good in enumerate(ok) if good]
        if use:
            out = sess.run(None, {"images": x[use]})[0]
            for j, k in enumerate(use):
                feat[cams[k]] = out[j]
                mask[cams[k]] = 1.0
        return _Feats(feat, mask, variant)

    def fuse(self, feats: _Feats, cams: list[int], prev_bev: _Bev | None, ego_motion, variant: str) -> _Bev:
        g = self.model_grids[variant]
        s = g.size
        if prev_bev is None or prev_bev.variant != variant or ego_motion is None:
            prev = np.zeros((1, self.bev_ch[variant], s, s), np.float32)
        else:
            prev = D.warp_bev(prev_bev.bev, g, ego_motion).astype(np.float32, copy=False)
        sess = self.sessions[(variant, "fuse")]
        bev = sess.run(None, {f"{variant}/feat": feats.feat, "cam_mask": feats.mask, f"{variant}/prev_bev": prev})[0]
        return _Bev(bev, variant)

    def heads(self, bev: _Bev, variant: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        seg, heat, reg = self.sessions[(variant, "heads")].run(None, {f"{variant}/bev": bev.bev})
        grid = D.seg_to_grid(seg[0])
        boxes, scores = D.decode_boxes(heat[0], reg[0], self.model_grids[variant])
        return grid, boxes, scores


def symbolic_batch(sub, names: list[str]) -> None:
    """Make dim 0 of the named graph inputs/outputs symbolic (any number of cameras)."""
    for vi in list(sub.graph.input) + list(sub.graph.output):
        if vi.name in names:
            d = vi.type.tensor_type.shape.dim[0]
            d.ClearField("dim_value")
            d.dim_param = "n_cams"
    del sub.graph.value_info[:]


def check_rig(path: Path, model_rig: Rig | None, rig: Rig | None) -> None:
    if rig is not None and model_rig is not None and model_rig != rig:
        raise InputError(f"{path} was built for another rig calibration than the stream's "
                         f"({', '.join(model_rig.names)} at {model_rig.cameras[0].width}x{model_rig.cameras[0].height} "
                         f"vs {rig.cameras[0].width}x{rig.cameras[0].height})")


def load_stages(path: str | Path, rig: Rig | None = None, threads: int = 1, backend: str = "auto") -> BevModelStages:
    """A BEV model split into its stage sessions: an ONNX from `edgert bev train` (onnxruntime
    sessions) or a package from `edgert convert` (edgert backends; `backend` applies to packages
    only).  `rig`: the rig the stream comes from; it must match the calibration the model was built
    for."""
    p = Path(path)
    if p.suffix.lower() != ".onnx":
        from edgert.bev.package import is_package, load_package_stages
        if p.is_file() and is_package(p):
            return load_package_stages(p, rig, threads, backend)
        raise InputError(f"{p}: not a BEV model (an ONNX from `edgert bev train` or a package from "
                         f"`edgert convert`)")
    try:
        import onnx
        import onnx.utils
        import onnxruntime as ort
    except ImportError as e:
        raise InputError(f"running a BEV ONNX needs onnx and onnxruntime ({e.name} is missing)") from None
    try:
        model = onnx.load(str(p))
    except Exception as e:   # onnx raises DecodeError / OSError / ValueError for broken files
        raise InputError(f"{p}: not a readable ONNX model ({type(e).__name__}: {e})") from None
    meta = {m.key: m.value for m in model.metadata_props}
    if META_STAGES not in meta or META_MODEL not in meta:
        raise InputError(f"{p}: no {META_STAGES} metadata; not a BEV model from `edgert bev train`")
    try:
        specs = json.loads(meta[META_STAGES])
        info = json.loads(meta[META_MODEL])
        model_rig = Rig.from_json(json.loads(meta[META_RIG])) if META_RIG in meta else None
    except (json.JSONDecodeError, TypeError) as e:
        raise InputError(f"{p}: corrupt BEV metadata ({e})") from None
    check_rig(p, model_rig, rig)
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    sessions = {}
    for d in specs:
        try:
            sub = onnx.utils.Extractor(model).extract_model(list(d["inputs"]), list(d["outputs"]))
        except Exception as e:
            raise InputError(f"{p}: stage {d.get('entry')} cannot be extracted ({e})") from None
        if d["stage"] == "backbone":
            symbolic_batch(sub, ["images", *d["outputs"]])
        sessions[(d["variant"], d["stage"])] = ort.InferenceSession(sub.SerializeToString(), so,
                                                                    providers=["CPUExecutionProvider"])
    return BevModelStages(sessions, info, rig or model_rig)

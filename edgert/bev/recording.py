"""Recorded rig sequences on disk, and the players that replay them (or the synthetic world) as a
stream of `RigSample`s.

A sequence is a directory (format "edgert.bev_seq", version 1; docs/bev.md):

    meta.json                 format, version, rate_hz, rig calibration (Rig.to_json), classes, box
                              fields, sample count, where it came from
    samples.jsonl             one JSON object per sample, in time order:
                              {"i", "t_us", "pose": [x, y, yaw], "frames": [{"file", "t_us"} per camera,
                               rig order], "gt_grid": "gt/000000.png" | null, "gt_boxes": [[10 floats]] | null}
    sweeps/<CAMERA>/<i:06d>.jpg   one frame per camera per sample (as nuScenes' sweeps), JPEG or PNG
    gt/<i:06d>.png            the BEV class grid, one 8-bit grey pixel per cell

A real rig's recording needs only meta.json, samples.jsonl and the frames (ground truth is optional).
Every path in a sequence is checked to stay inside its directory, every field is type- and
range-checked, and a sample that cannot be parsed raises InputError naming the line.  A frame that
cannot be decoded is reported (RigSample.events "corrupt_frame CAM") and delivered as None -- the
scheduler reuses that camera's previous features -- and a pose jump or a time gap between samples is
reported ("pose_jump", "gap") so temporal fusion resets instead of warping across it.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from edgert.bev.rig import Rig
from edgert.bev.schema import BOX_FIELDS, CLASSES, Pose, RigSample
from edgert.errors import InputError

SEQ_FORMAT = "edgert.bev_seq"
SEQ_VERSION = 1
META_FILE = "meta.json"
SAMPLES_FILE = "samples.jsonl"
FRAMES_DIR = "sweeps"
GT_DIR = "gt"
IMAGE_FORMATS = ("jpg", "png")
MAX_SAMPLES = 10_000_000

# what counts as a discontinuity between consecutive samples
JUMP_SPEED_MPS = 60.0          # faster than any road vehicle: the pose jumped
JUMP_YAW_RAD_S = 3.0           # ~170°/s
GAP_PERIODS = 2.5              # more than 2.5 frame periods without a sample: a gap


@dataclass(frozen=True)
class RecordOptions:
    seconds: float = 10.0
    image_format: str = "jpg"
    jpeg_quality: int = 92

    def __post_init__(self):
        if self.image_format not in IMAGE_FORMATS:
            raise InputError(f"image format must be one of {', '.join(IMAGE_FORMATS)}, got {self.image_format!r}")
        if not (0 < self.seconds <= 24 * 3600):
            raise InputError(f"seconds must be in (0, 86400], got {self.seconds}")
        if not (1 <= self.jpeg_quality <= 100):
            raise InputError(f"JPEG quality must be 1-100, got {self.jpeg_quality}")


def record(world, out_dir: str | Path, options: RecordOptions | None = None,
           progress: Callable[[int, int], None] | None = None) -> dict:
    """Render `world` (edgert.bev.world.World) for options.seconds into a sequence directory; returns
    the meta dict.  samples.jsonl is appended sample by sample and meta.json is written last (to a
    temporary name, then renamed), so an interrupted recording is recognisably incomplete."""
    from PIL import Image

    o = options or RecordOptions()
    out = Path(out_dir)
    if (out / META_FILE).exists() or (out / SAMPLES_FILE).exists():
        raise InputError(f"{out} already holds a recording; choose an empty directory")
    out.mkdir(parents=True, exist_ok=True)
    rig: Rig = world.rig
    for cam in rig.names:
        (out / FRAMES_DIR / cam).mkdir(parents=True, exist_ok=True)
    (out / GT_DIR).mkdir(exist_ok=True)
    n = max(1, int(round(o.seconds * world.rate_hz)))
    save = {"quality": o.jpeg_quality} if o.image_format == "jpg" else {}
    with open(out / SAMPLES_FILE, "w") as f:
        for i in range(n):
            s = world.sample(i)
            frames = []
            for cam, img, t in zip(rig.names, s.frames, s.frame_t_us):
                rel = f"{FRAMES_DIR}/{cam}/{i:06d}.{o.image_format}"
                Image.fromarray(img).save(out / rel, **save)
                frames.append({"file": rel, "t_us": int(t)})
            gt = f"{GT_DIR}/{i:06d}.png"
            Image.fromarray(s.gt_grid).save(out / gt)
            f.write(json.dumps({"i": i, "t_us": s.t_us, "pose": [round(s.pose.x, 4), round(s.pose.y, 4),
                                                                   round(s.pose.yaw, 6)],
                                "frames": frames, "gt_grid": gt,
                                "gt_boxes": np.round(s.gt_boxes.astype(np.float64), 4).tolist()}) + "\n")
            if progress:
                progress(i + 1, n)
    meta = {"format": SEQ_FORMAT, "version": SEQ_VERSION, "rate_hz": world.rate_hz, "samples": n,
            "rig": rig.to_json(), "classes": list(CLASSES), "box_fields": list(BOX_FIELDS),
            "image_format": o.image_format,
            "source": {"kind": "synthetic", "seed": world.o.seed, "seconds": o.seconds}}
    tmp = out / (META_FILE + ".tmp")
    tmp.write_text(json.dumps(meta, indent=1))
    os.replace(tmp, out / META_FILE)
    return meta


def is_recording(path: str | Path) -> bool:
    p = Path(path)
    return p.is_dir() and (p / META_FILE).is_file()


class Recording:
    """A sequence directory, validated on open: len(), rec[i] -> RigSample, iteration in order with
    discontinuity events."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        meta_p = self.path / META_FILE
        if not meta_p.is_file():
            raise InputError(f"{self.path} is not a recording: no {META_FILE} (an unfinished recording "
                             f"has samples but no meta; `edgert bev record` writes it last)")
        try:
            meta = json.loads(meta_p.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise InputError(f"{meta_p}: unreadable JSON ({e})") from None
        if not isinstance(meta, dict) or meta.get("format") != SEQ_FORMAT:
            raise InputError(f"{meta_p}: not an {SEQ_FORMAT} file")
        if meta.get("version") != SEQ_VERSION:
            raise InputError(f"{meta_p}: version {meta.get('version')!r} is not supported (this edgert reads "
                             f"{SEQ_VERSION})")
        rate = meta.get("rate_hz")
        if not isinstance(rate, (int, float)) or not (0.1 <= rate <= 1000):
            raise InputError(f"{meta_p}: implausible rate_hz {rate!r}")
        self.rate_hz = float(rate)
        self.rig = Rig.from_json(meta.get("rig") or {})
        self.meta = meta
        self._samples = self._read_index()

    def _read_index(self) -> list[dict]:
        p = self.path / SAMPLES_FILE
        if not p.is_file():
            raise InputError(f"{self.path}: no {SAMPLES_FILE}")
        out = []
        with open(p, "rb") as f:
            for n, line in enumerate(f, 1):
                if len(out) >= MAX_SAMPLES:
                    raise InputError(f"{p}: more than {MAX_SAMPLES} samples")
                if not line.strip():
                    continue
                try:
                    d = json.loads(line)
                except (UnicodeDecodeError, json.JSONDecodeError) as e:
                    raise InputError(f"{p} line {n}: not JSON ({e})") from None
                out.append(self._check_sample(d, f"{p} line {n}"))
        if not out:
            raise InputError(f"{p}: no samples")
        return out

    def _check_sample(self, d, where: str) -> dict:
        cams = len(self.rig.cameras)
        try:
            i, t = int(d["i"]), int(d["t_us"])
            pose = [float(v) for v in d["pose"]]
            frames = [(self._inside(fr["file"], where), int(fr["t_us"])) for fr in d["frames"]]
            grid = self._inside(d["gt_grid"], where) if d.get("gt_grid") else None
            boxes = d.get("gt_boxes")
            boxes = None if boxes is None else np.asarray(boxes, np.float32).reshape(-1, len(BOX_FIELDS))
        except (KeyError, TypeError, ValueError) as e:
            raise InputError(f"{where}: bad sample ({type(e).__name__}: {e})") from None
        if len(pose) != 3 or not all(math.isfinite(v) for v in pose):
            raise InputError(f"{where}: pose must be 3 finite numbers [x, y, yaw]")
        if len(frames) != cams:
            raise InputError(f"{where}: {len(frames)} frames for a {cams}-camera rig")
        if boxes is not None and not np.isfinite(boxes).all():
            raise InputError(f"{where}: non-finite box values")
        return {"i": i, "t_us": t, "pose": Pose(*pose), "frames": frames, "gt_grid": grid, "gt_boxes": boxes}

    def _inside(self, rel, where: str) -> Path:
        if not isinstance(rel, str) or not rel or os.path.isabs(rel) or "\\" in rel:
            raise InputError(f"{where}: bad file reference {rel!r}")
        p = (self.path / rel).resolve()
        if self.path.resolve() not in p.parents:
            raise InputError(f"{where}: {rel!r} points outside the recording")
        return p

    def __len__(self) -> int:
        return len(self._samples)

    def __getitem__(self, k: int) -> RigSample:
        from edgert.preprocess import load_image

        d = self._samples[k]
        frames, events = [], []
        for cam, (path, _) in zip(self.rig.cameras, d["frames"]):
            try:
                img = load_image(path)
                if img.shape[:2] != (cam.height, cam.width):
                    raise InputError(f"{path.name} is {img.shape[1]}x{img.shape[0]}, calibrated for "
                                     f"{cam.width}x{cam.height}")
                frames.append(img)
            except InputError as e:
                frames.append(None)
                events.append(f"corrupt_frame {cam.name}: {e}")
        grid = None
        if d["gt_grid"] is not None:
            grid = self._load_grid(d["gt_grid"], events)
        return RigSample(index=d["i"], t_us=d["t_us"], frames=frames, frame_t_us=[t for _, t in d["frames"]],
                         pose=d["pose"], gt_grid=grid, gt_boxes=d["gt_boxes"], events=events)

    def sample(self, i: int) -> RigSample:
        """Sample i (as the synthetic world's `sample`, so training reads either)."""
        if not 0 <= i < len(self):
            raise InputError(f"{self.path}: sample {i} out of range (0-{len(self) - 1})")
        return self[i]

    def _load_grid(self, path: Path, events: list[str]) -> np.ndarray | None:
        from PIL import Image, UnidentifiedImageError

        g = self.rig.grid
        try:
            with Image.open(path) as im:
                grid = np.asarray(im.convert("L"))
        except (OSError, UnidentifiedImageError, ValueError) as e:
            events.append(f"corrupt_gt {path.name}: {e}")
            return None
        if grid.shape != (g.size, g.size) or grid.max(initial=0) >= len(CLASSES):
            events.append(f"corrupt_gt {path.name}: shape {grid.shape} or classes beyond {len(CLASSES) - 1}")
            return None
        return grid

    def samples(self, start: int = 0, stop: int | None = None) -> Iterator[RigSample]:
        """Samples in order, each with discontinuity events against the one before."""
        yield from with_discontinuities((self[k] for k in range(start, len(self) if stop is None else stop)),
                                        self.rate_hz)


def with_discontinuities(samples, rate_hz: float) -> Iterator[RigSample]:
    """Adds "gap" / "pose_jump" events where consecutive samples are too far apart in time or pose."""
    prev = None
    for s in samples:
        if prev is not None:
            dt = (s.t_us - prev.t_us) / 1e6
            if dt <= 0 or dt > GAP_PERIODS / rate_hz:
                s.events.append(f"gap {dt * 1000:.0f} ms")
            elif dt > 0:
                dx, dy, dyaw = s.pose.relative_to(prev.pose)
                dist = math.hypot(dx, dy)
                if dist / dt > JUMP_SPEED_MPS or abs(dyaw) / dt > JUMP_YAW_RAD_S:
                    s.events.append(f"pose_jump {dist:.1f} m {math.degrees(dyaw):.0f} deg")
        prev = s
        yield s


def synthetic_samples(seed: int = 0, seconds: float | None = None, rig: Rig | None = None) -> Iterator[RigSample]:
    """The synthetic world rendered live, sample by sample (`--source synthetic`)."""
    from edgert.bev.world import World, WorldOptions

    w = World(rig, WorldOptions(seed=seed))
    n = None if seconds is None else max(1, int(round(seconds * w.rate_hz)))
    i = 0
    while n is None or i < n:
        yield w.sample(i)
        i += 1


RESET_EVENTS = ("gap", "pose_jump", "no_odometry")


def discontinuity(sample: RigSample) -> bool:
    """Whether temporal state must reset before this sample (a gap, a pose jump, or no odometry at all:
    a live rig, edgert.bev.live_rig)."""
    return any(e.startswith(RESET_EVENTS) for e in sample.events)

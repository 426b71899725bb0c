"""`edgert run --camera`: grab frames from a camera (OpenCV), preprocess as recorded, run, report."""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable

import numpy as np

from edgert.errors import InputError


def open_camera(index: int):
    # OpenCV logs its own multi-line probe errors to stderr; edgert reports one line instead.
    os.environ.setdefault("OPENCV_LOG_LEVEL", "OFF")
    try:
        import cv2
    except ImportError:
        raise InputError("--camera needs OpenCV: pip install 'edgert[camera]'") from None
    cap = cv2.VideoCapture(index)
    if not cap.isOpened():
        cap.release()
        raise InputError(f"no camera at index {index} (is one connected, and readable by this user?)")
    return cap


def run_camera(session, index: int = 0, frames: int = 0, out_dir: Path | None = None,
               echo: Callable[[str], None] = print) -> int:
    from edgert.preprocess import preprocess_array

    if session.preprocess is None:
        raise InputError("this package records no image preprocessing, so it cannot run on a camera")
    cap = open_camera(index)
    n = 0
    lat: list[float] = []
    try:
        while frames == 0 or n < frames:
            ok, frame_bgr = cap.read()
            if not ok:
                raise InputError(f"camera {index} stopped delivering frames after {n}")
            rgb = np.ascontiguousarray(frame_bgr[:, :, ::-1])
            x = preprocess_array(rgb, session.preprocess)
            t0 = time.perf_counter_ns()
            outs = session.run(x)
            lat.append((time.perf_counter_ns() - t0) / 1e6)
            n += 1
            if out_dir is not None and n == 1:
                from edgert.outputs import write_outputs
                write_outputs(out_dir, outs, {"camera": index, "frame": n})
            if n % 10 == 0:
                echo(f"frame {n}: p50 {np.percentile(lat[-100:], 50):.1f} ms")
    finally:
        cap.release()
    return n

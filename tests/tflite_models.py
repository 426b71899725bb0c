"""Small honest TFLite models for the eval tests, written with the TFLite flatbuffer schema's object API
(``ai_edge_litert.schema_py_generated``).  Each computes the same function as its ONNX counterpart in
eval_models.py (same rng draws), so a TFLite submission can be checked against an ONNX one.
Import as ``from tflite_models import ...`` (tests/ is on sys.path)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

# numpy dtype -> schema TensorType name (tensorflow/compiler/mlir/lite/schema/schema.fbs)
_TENSOR_TYPE = {np.float32: "FLOAT32", np.float16: "FLOAT16", np.int32: "INT32", np.uint8: "UINT8",
                np.int8: "INT8"}


class _Graph:
    """One subgraph under construction: tensors, constant buffers and operators, in order."""

    def __init__(self):
        from ai_edge_litert import schema_py_generated as fb

        self.fb = fb
        self.buffers = [fb.BufferT()]          # buffer 0 is the schema's empty sentinel
        self.tensors: list = []
        self.ops: list = []
        self.opcodes: dict[int, int] = {}

    def tensor(self, name: str, shape, dtype=np.float32, signature=None, data: np.ndarray | None = None,
               quant: tuple[float, int] | None = None) -> int:
        fb = self.fb
        t = fb.TensorT()
        t.name, t.shape, t.type = name, list(shape), getattr(fb.TensorType, _TENSOR_TYPE[np.dtype(dtype).type])
        if signature is not None:
            t.shapeSignature = list(signature)
        if data is not None:
            b = fb.BufferT()
            b.data = np.ascontiguousarray(data, dtype=dtype).view(np.uint8).reshape(-1)
            self.buffers.append(b)
            t.buffer = len(self.buffers) - 1
        if quant is not None:
            q = fb.QuantizationParametersT()
            q.scale, q.zeroPoint = [float(quant[0])], [int(quant[1])]
            t.quantization = q
        self.tensors.append(t)
        return len(self.tensors) - 1

    def const(self, name: str, value) -> int:
        value = np.asarray(value)
        return self.tensor(name, value.shape, value.dtype.type, data=value)

    def op(self, name: str, inputs: list[int], outputs: list[int], options=None, options_type: str = "") -> None:
        fb = self.fb
        code = getattr(fb.BuiltinOperator, name)
        self.opcodes.setdefault(code, len(self.opcodes))
        o = fb.OperatorT()
        o.opcodeIndex, o.inputs, o.outputs = self.opcodes[code], list(inputs), list(outputs)
        if options is not None:
            o.builtinOptionsType, o.builtinOptions = getattr(fb.BuiltinOptions, options_type), options
        self.ops.append(o)

    def save(self, path: Path, inputs: list[int], outputs: list[int]) -> Path:
        import flatbuffers

        fb = self.fb
        sg = fb.SubGraphT()
        sg.tensors, sg.inputs, sg.outputs, sg.operators, sg.name = self.tensors, inputs, outputs, self.ops, "main"
        m = fb.ModelT()
        m.version, m.description, m.subgraphs, m.buffers = 3, "edgert test model", [sg], self.buffers
        m.operatorCodes = []
        for code in sorted(self.opcodes, key=self.opcodes.get):
            oc = fb.OperatorCodeT()
            # codes past 127 live only in builtinCode; older readers read the deprecated byte
            oc.builtinCode, oc.deprecatedBuiltinCode, oc.version = code, min(code, 127), 1
            m.operatorCodes.append(oc)
        b = flatbuffers.Builder(1024)
        b.Finish(m.Pack(b), file_identifier=b"TFL3")
        path = Path(path)
        path.write_bytes(bytes(b.Output()))
        return path


def _image_input(g: _Graph, hw, input_dtype, layout: str, input_quant) -> tuple[int, int]:
    """The graph input (float32, float16, int8 or uint8; NHWC or NCHW) and the float32 NHWC tensor the
    rest of the graph reads.  By default quantized inputs cover [0, 1] exactly: int8 with scale 1/255,
    zero point -128 (TFLite's usual image input), uint8 with scale 1/255, zero point 0.  A uint8 input
    with input_quant (0.0, 0) has no quantization parameters: raw pixels, CAST and scaled by 1/255."""
    h, w = hw if hw else (1, 1)
    sig_hw = list(hw) if hw else [-1, -1]
    if layout == "nchw":
        shape, sig = [1, 3, h, w], [1, 3, *sig_hw]
    else:
        shape, sig = [1, h, w, 3], [1, *sig_hw, 3]
    dt = np.dtype(input_dtype).type
    quant = input_quant or {np.int8: (1 / 255, -128), np.uint8: (1 / 255, 0)}.get(dt)
    raw = quant is not None and quant[0] == 0
    x = g.tensor("x", shape, dt, signature=sig, quant=None if raw else quant)
    cur = x
    if raw:
        assert dt is np.uint8, "only a uint8 input goes without quantization parameters"
        pixels = g.tensor("x_pixels", shape, signature=sig)
        g.op("CAST", [cur], [pixels])
        cur = g.tensor("x_float", shape, signature=sig)
        g.op("MUL", [pixels, g.const("inv255", np.array([1 / 255], np.float32))], [cur], g.fb.MulOptionsT(),
             "MulOptions")
    elif dt is not np.float32:                 # DEQUANTIZE covers int8, uint8 and float16 -> float32
        cur_f = g.tensor("x_float", shape, signature=sig)
        g.op("DEQUANTIZE", [cur], [cur_f], g.fb.DequantizeOptionsT(), "DequantizeOptions")
        cur = cur_f
    if layout == "nchw":
        nhwc = g.tensor("x_nhwc", [1, h, w, 3], signature=[1, *sig_hw, 3])
        g.op("TRANSPOSE", [cur, g.const("perm", np.array([0, 2, 3, 1], np.int32))], [nhwc],
             g.fb.TransposeOptionsT(), "TransposeOptions")
        cur = nhwc
    return x, cur


def color_segmenter_tflite(path: Path, classes: int = 14, seed: int = 0, scale: float = 1.0,
                           hw: tuple[int, int] | None = None, input_dtype=np.float32, layout: str = "nhwc",
                           input_quant: tuple[float, int] | None = None) -> Path:
    """eval_models.color_segmenter as TFLite: a 1x1 CONV_2D stride 2 then RESIZE_NEAREST_NEIGHBOR x2,
    [1, H, W, 3] -> [1, H', W', classes] (H' = 2*ceil(H/2), as ONNX's Conv + Resize).

    hw=None gives a resizable input (shape_signature [1, -1, -1, 3]) whose resize target is computed
    from the conv output's shape (SHAPE, STRIDED_SLICE, MUL); a fixed hw gives a static graph with a
    constant target.  input_dtype int8/uint8/float16 adds a DEQUANTIZE (input_quant: its (scale, zero
    point), see _image_input); layout "nchw" a TRANSPOSE."""
    g = _Graph()
    fb = g.fb
    rng = np.random.default_rng(seed)
    w_oihw = (rng.standard_normal((classes, 3, 1, 1)) * scale).astype(np.float32)   # the ONNX draws
    bias = rng.standard_normal(classes).astype(np.float32)
    x, cur = _image_input(g, hw, input_dtype, layout, input_quant)
    ch, cw = (-(-hw[0] // 2), -(-hw[1] // 2)) if hw else (1, 1)
    sig = [1, ch, cw, classes] if hw else [1, -1, -1, classes]
    conv = g.tensor("conv", [1, ch, cw, classes], signature=sig)
    opts = fb.Conv2DOptionsT()
    opts.padding, opts.strideH, opts.strideW = fb.Padding.VALID, 2, 2
    g.op("CONV_2D", [cur, g.const("w", w_oihw.transpose(0, 2, 3, 1).copy()), g.const("b", bias)],
         [conv], opts, "Conv2DOptions")                                 # TFLite filters are OHWI
    if hw:
        size = g.const("size", np.array([2 * ch, 2 * cw], np.int32))
    else:
        shape = g.tensor("conv_shape", [4], np.int32)
        g.op("SHAPE", [conv], [shape], fb.ShapeOptionsT(outType=fb.TensorType.INT32), "ShapeOptions")
        hw_t = g.tensor("conv_hw", [2], np.int32)
        g.op("STRIDED_SLICE", [shape, g.const("begin", np.array([1], np.int32)),
                               g.const("end", np.array([3], np.int32)), g.const("stride", np.array([1], np.int32))],
             [hw_t], fb.StridedSliceOptionsT(), "StridedSliceOptions")
        size = g.tensor("size", [2], np.int32)
        g.op("MUL", [hw_t, g.const("two", np.array([2, 2], np.int32))], [size], fb.MulOptionsT(), "MulOptions")
    y = g.tensor("y", [1, 2 * ch, 2 * cw, classes], signature=[1, 2 * ch, 2 * cw, classes] if hw else
                 [1, -1, -1, classes])
    # align_corners = half_pixel_centers = False: source pixel floor(i / 2), as ONNX Resize's nearest
    # (half_pixel, round_prefer_floor) gives for an exact 2x upsample
    g.op("RESIZE_NEAREST_NEIGHBOR", [conv, size], [y], fb.ResizeNearestNeighborOptionsT(),
         "ResizeNearestNeighborOptions")
    return g.save(path, [x], [y])


def classifier_tflite(path: Path, classes: int = 5, seed: int = 0, hw: tuple[int, int] | None = None) -> Path:
    """eval_models.classifier as TFLite: MEAN over H, W then FULLY_CONNECTED, [1, H, W, 3] -> [1, classes]."""
    g = _Graph()
    fb = g.fb
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((3, classes)).astype(np.float32)      # the ONNX MatMul's (3, classes)
    x, cur = _image_input(g, hw, np.float32, "nhwc", None)
    pooled = g.tensor("pooled", [1, 3])
    g.op("MEAN", [cur, g.const("axes", np.array([1, 2], np.int32))], [pooled], fb.ReducerOptionsT(keepDims=False),
         "ReducerOptions")
    y = g.tensor("y", [1, classes])
    # FULLY_CONNECTED weights are [out, in]; -1 = no bias (an optional input)
    g.op("FULLY_CONNECTED", [pooled, g.const("fc_w", w.T.copy()), -1], [y], fb.FullyConnectedOptionsT(),
         "FullyConnectedOptions")
    return g.save(path, [x], [y])


def offset_model_tflite(path: Path, hw: tuple[int, int], classes: int = 14) -> Path:
    """x + a constant [1, h, w, 3] offset, then a 1x1 CONV_2D to class scores: valid at its own static
    size only; resized to any other its ADD cannot broadcast, so allocate_tensors fails (an entrant's
    fixed-size model evaluated at a --size it cannot take)."""
    g = _Graph()
    fb = g.fb
    x = g.tensor("x", [1, *hw, 3])
    shifted = g.tensor("shifted", [1, *hw, 3])
    offset = np.linspace(0, 0.1, 3 * hw[0] * hw[1], dtype=np.float32).reshape(1, *hw, 3)
    g.op("ADD", [x, g.const("offset", offset)], [shifted], fb.AddOptionsT(), "AddOptions")
    y = g.tensor("y", [1, *hw, classes])
    opts = fb.Conv2DOptionsT()
    opts.padding, opts.strideH, opts.strideW = fb.Padding.VALID, 1, 1
    w = np.random.default_rng(0).standard_normal((classes, 1, 1, 3)).astype(np.float32)
    g.op("CONV_2D", [shifted, g.const("w", w), g.const("b", np.zeros(classes, np.float32))], [y], opts,
         "Conv2DOptions")
    return g.save(path, [x], [y])

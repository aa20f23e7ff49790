"""int8 storage for the weights that ONNX Runtime's dynamic quantisation leaves in float32.

`onnxruntime.quantization.quantize_dynamic` quantises `MatMul`/`Gemm` (and `Conv`, as the slow
`ConvInteger`), but has no int8 `GRU`: in a DeepSpeech2 the recurrent weights are 97% of the
parameters, so its "int8" file was as large as the float32 one. `quantize_weights` stores the
weights of `GRU`, `LSTM`, `RNN` and `Conv` nodes as int8 with one float32 scale per output row
or channel (symmetric, zero point 0) behind a `DequantizeLinear` node: the file is about four
times smaller, and ONNX Runtime computes in float32 as before (the dequantised weights are
constants). The error is at most half a quantisation step per weight: max|w| / 254 per row.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from harken.errors import require

# op type -> {input index of a weight: axis of its per-channel scales}. ONNX GRU/LSTM/RNN
# weights are (directions, gates * hidden, input): a scale per gate row (axis 1).
WEIGHT_INPUTS: dict[str, dict[int, int]] = {
    "GRU": {1: 1, 2: 1},
    "LSTM": {1: 1, 2: 1},
    "RNN": {1: 1, 2: 1},
    "Conv": {1: 0},
}
# Smaller tensors (biases, tiny kernels) stay float32: nothing to gain.
MIN_ELEMENTS = 1024
SUFFIX = "_int8"


def quantize_weights(source: str | os.PathLike, target: str | os.PathLike,
                     op_types: tuple[str, ...] = tuple(WEIGHT_INPUTS)) -> dict[str, int]:
    """Rewrite the ONNX file `source` into `target` with the float32 weights of `op_types`
    nodes stored as int8 + per-channel scales. Returns {"tensors", "elements"} quantised."""
    onnx = require("onnx", "onnx")
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(source))
    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    axes: dict[str, int] = {}
    for node in graph.node:
        for index, axis in WEIGHT_INPUTS.get(node.op_type, {}).items():
            if node.op_type in op_types and index < len(node.input):
                name = node.input[index]
                init = initializers.get(name)
                if (init is not None and init.data_type == TensorProto.FLOAT
                        and int(np.prod(init.dims)) >= MIN_ELEMENTS and len(init.dims) > axis):
                    axes.setdefault(name, axis)
    nodes: list[Any] = []
    elements = 0
    for name, axis in axes.items():
        weights = numpy_helper.to_array(initializers[name]).astype(np.float32)
        quantized, scale = quantize_per_channel(weights, axis)
        graph.initializer.remove(initializers[name])
        graph.initializer.extend([
            numpy_helper.from_array(quantized, name + SUFFIX),
            numpy_helper.from_array(scale, name + SUFFIX + "_scale"),
            numpy_helper.from_array(np.zeros_like(scale, dtype=np.int8), name + SUFFIX + "_zero"),
        ])
        nodes.append(helper.make_node(
            "DequantizeLinear", [name + SUFFIX, name + SUFFIX + "_scale", name + SUFFIX + "_zero"],
            [name], name=name + "_dequantize", axis=axis))
        elements += weights.size
    # The weights are graph inputs of their consumers: dequantise them first.
    for node in reversed(nodes):
        graph.node.insert(0, node)
    onnx.save(model, str(Path(target)))
    return {"tensors": len(nodes), "elements": elements}


def quantize_per_channel(weights: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 with one scale per index of `axis`: (int8 weights, float32 scales)."""
    moved = np.moveaxis(weights, axis, 0)
    peak = np.abs(moved.reshape(moved.shape[0], -1)).max(axis=1)
    scale = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
    shape = [1] * weights.ndim
    shape[axis] = -1
    quantized = np.clip(np.rint(weights / scale.reshape(shape)), -127, 127).astype(np.int8)
    return quantized, scale


__all__ = ["MIN_ELEMENTS", "WEIGHT_INPUTS", "quantize_per_channel", "quantize_weights"]

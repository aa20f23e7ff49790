"""Export a model to ONNX (float32, optionally int8), checked against PyTorch.

    from harken import load_model
    from harken.interop.onnx_export import export_onnx

    export_onnx(load_model("en-small"), "en-small-onnx", int8=True)
    model = load_model("en-small-onnx", backend="onnx")   # same Model API, ONNX Runtime inside

An exported model is a folder like a harken model (docs/model-files.md), with the network as ONNX
instead of safetensors:

- ``model.onnx``: the acoustic network, float32, dynamic batch and time axes
  (inputs ``features (B, T, F)`` float32 and ``lengths (B,)`` int64; outputs
  ``log_probs (B, T', V)`` float32 and ``out_lengths (B,)`` int64, the contract of docs/models.md);
- ``model.int8.onnx`` (with ``int8=True``): the same with dynamically quantised weights;
- ``config.json``: the model's `ModelConfig` with an ``export`` entry (format, opset, files, the
  variant ``backend="onnx"`` runs) and the SHA-256 of every file, checked when loading;
- the tokenizer's files.

Feature extraction is not in the graph: `Model` computes log-mels with `harken.features.LogMel`
(torch) and hands them to `OnnxNetwork`, which stands in for the PyTorch network (same call,
same outputs), so decoding, language models, transcription and streaming work unchanged.

The TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``) is used: it handles
`nn.GRU` with a dynamic time axis, which `torch.export` cannot (docs/models.md). Every export is
checked against PyTorch on inputs of another batch size and length than the traced example.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import tempfile
import warnings
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from harken.errors import ConfigError, ModelError, require
from harken.interop.onnx_network import INPUT_NAMES, OUTPUT_NAMES, OnnxNetwork
from harken.modelfile import CONFIG_FILE, LM_INFO_SUFFIX, PUNCTUATOR_FILE, carry_language_model, sha256_file
from harken.written.punctuator import save_punctuator
from harken.interop.onnx_stream import INT8_STREAM_FILE, STREAM_FILE, can_export_stream, export_stream_step
from harken.text import save_tokenizer
from harken.interop.onnx_weights import quantize_weights

if TYPE_CHECKING:
    import torch

    from harken.model import Model

ONNX_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
OPSET = 17

# Operators quantised to int8 (onnxruntime.quantization.quantize_dynamic), per architecture,
# and whether the int8 file is what backend="onnx" runs. Measured in docs/export.md:
# DeepSpeech2's time goes into its GRUs, which dynamic quantisation leaves in float32.
INT8_OPS: dict[str, tuple[str, ...]] = {
    "deepspeech2": ("MatMul", "Gemm"),
    "conformer": ("MatMul", "Gemm"),
    "citrinet": ("MatMul", "Gemm"),
    "jasper": ("MatMul", "Gemm"),
    "wav2vec2": ("MatMul", "Gemm"),
}
INT8_PREFERRED: dict[str, bool] = {"deepspeech2": False, "conformer": True, "citrinet": False,
                                   "jasper": False, "wav2vec2": False}

# The export check: log-probabilities of ONNX fp32 and PyTorch differ by at most this much.
CHECK_TOLERANCE = 1e-4
# Traced example: (batch, frames). The check runs another batch size and length.
_EXAMPLE = (2, 64)
_CHECK = (3, 101)


# ---------------------------------------------------------------------------------------------
# Export
# ---------------------------------------------------------------------------------------------

def export_onnx(model: Model, out_dir: str | os.PathLike, int8: bool = False,
                opset: int = OPSET, check: bool = True) -> Path:
    """Export `model`'s network to ONNX in the folder `out_dir`; returns the folder.

    `int8=True` also writes ``model.int8.onnx`` (weights of the architecture's `INT8_OPS`
    quantised dynamically). With `check` (the default) the export is run with ONNX Runtime on
    inputs of a batch size and length other than the traced example and compared with PyTorch;
    a difference above `CHECK_TOLERANCE` raises `ModelError`. The folder is written atomically.
    """
    import torch

    if model.is_transducer:  # three graphs: harken.interop.transducer_onnx
        # only transducers need it (three graphs)
        from harken.interop.transducer_onnx import export_transducer_onnx

        if int8:
            raise ConfigError("int8 export is for CTC models; transducers export in float32")
        return export_transducer_onnx(model, out_dir, opset=opset, check=check)
    if isinstance(model.network, OnnxNetwork):
        raise ModelError(f"{model.path}: this model already runs from ONNX; export the original "
                         "(PyTorch) model instead")
    architecture = model.config.architecture
    if architecture not in INT8_OPS:
        raise ConfigError(f"cannot export architecture {architecture!r}; expected one of "
                          f"{sorted(INT8_OPS)}")
    require("onnx", "onnx")
    network = copy.deepcopy(model.network).cpu().eval()
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.") as tmp:
        folder = Path(tmp) / "export"
        folder.mkdir()
        _export_network(network, folder / ONNX_FILE, opset)
        if check:
            _check_export(network, folder / ONNX_FILE)
        if int8:
            quantize_int8(folder / ONNX_FILE, folder / INT8_FILE, INT8_OPS[architecture])
        stream_info = _export_stream(network, folder, opset, check, int8,
                                     INT8_OPS[architecture])
        tokenizer_config = save_tokenizer(model.tokenizer, folder)
        if getattr(model, "punctuator", None) is not None:  # written text travels along
            punct = model.punctuator
            save_punctuator(punct.network, punct.config, punct.vocabulary,
                            folder / PUNCTUATOR_FILE)
        decoding = carry_language_model(model, folder)
        files = {p.name: sha256_file(p) for p in sorted(folder.iterdir())
                 if not p.name.endswith(LM_INFO_SUFFIX)}
        export_info = {
            "format": "onnx",
            "opset": opset,
            "fp32": ONNX_FILE,
            "int8": INT8_FILE if int8 else None,
            "int8_ops": list(INT8_OPS[architecture]) if int8 else [],
            "default": "int8" if int8 and INT8_PREFERRED[architecture] else "fp32",
            "subsampling": int(network.subsampling),
            "input_dim": int(network.input_dim),
            "vocab_size": int(network.vocab_size),
            "exporter": f"torch {torch.__version__} (TorchScript-based torch.onnx.export)",
            "stream": stream_info,
            "parameters": sum(int(p.numel()) for p in network.parameters()),
        }
        config = replace(model.config, tokenizer=tokenizer_config, files=files,
                         decoding=decoding, export=export_info)  # type: ignore[call-arg]
        (folder / CONFIG_FILE).write_text(json.dumps(asdict(config), indent=2) + "\n")
        if out.exists():
            os.replace(out, Path(tmp) / "old")
        os.replace(folder, out)
    return out




def _export_network(network: torch.nn.Module, path: Path, opset: int) -> None:
    import torch

    batch, frames = _EXAMPLE
    frames *= _frames_scale(network)
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(batch, frames, network.input_dim, generator=generator)
    lengths = torch.tensor([frames] + [frames * 3 // 4] * (batch - 1), dtype=torch.long)
    dynamic_axes = {"features": {0: "batch", 1: "frames"}, "lengths": {0: "batch"},
                    "log_probs": {0: "batch", 1: "out_frames"}, "out_lengths": {0: "batch"}}
    with warnings.catch_warnings():
        # Tracer warnings about shape checks turned into constants, and the exporter's own
        # notice that the TorchScript path is deprecated: both expected here.
        warnings.simplefilter("ignore")
        with torch.no_grad():
            torch.onnx.export(network, (features, lengths), str(path), dynamo=False,
                              opset_version=opset, input_names=list(INPUT_NAMES),
                              output_names=list(OUTPUT_NAMES), dynamic_axes=dynamic_axes)


def _export_stream(network: torch.nn.Module, folder: Path, opset: int, check: bool,
                   int8: bool, int8_ops: tuple[str, ...]) -> dict[str, Any] | None:
    """The streaming step graph (harken.interop.onnx_stream) of networks that have one, else None."""

    if not can_export_stream(network):
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the same expected exporter notices as above
        info = export_stream_step(network, folder / STREAM_FILE, opset, check)
    info["int8_file"] = None
    if int8:
        quantize_int8(folder / STREAM_FILE, folder / INT8_STREAM_FILE, int8_ops)
        info["int8_file"] = INT8_STREAM_FILE
    return info


def _frames_scale(network: torch.nn.Module) -> int:
    """Longer example inputs for networks that stride far (wav2vec2 reads samples: 320)."""
    return max(1, int(network.subsampling) // 16)


def _check_export(network: torch.nn.Module, path: Path) -> None:
    """Compare ONNX Runtime with PyTorch on a batch size and length the trace never saw."""
    import torch

    batch, frames = _CHECK
    frames *= _frames_scale(network)
    generator = torch.Generator().manual_seed(1)
    features = torch.randn(batch, frames, network.input_dim, generator=generator)
    lengths = torch.tensor([frames, frames // 2, frames - 7], dtype=torch.long)[:batch]
    with torch.no_grad():
        expected, expected_lengths = network(features, lengths)
    onnx_net = OnnxNetwork(path, network.subsampling, network.input_dim, network.vocab_size,
                           threads=1)
    got, got_lengths = onnx_net(features.numpy(), lengths.numpy())
    if not np.array_equal(got_lengths, expected_lengths.numpy()):
        raise ModelError(f"{path}: export check failed: output lengths {got_lengths.tolist()}, "
                         f"PyTorch gives {expected_lengths.tolist()}")
    difference = valid_max_difference(got, expected.numpy(), got_lengths)
    if not difference <= CHECK_TOLERANCE:
        raise ModelError(f"{path}: export check failed: log-probabilities differ from PyTorch "
                         f"by {difference:.3g} (tolerance {CHECK_TOLERANCE})")


def valid_max_difference(a: np.ndarray, b: np.ndarray, lengths: np.ndarray) -> float:
    """Largest |a - b| over the valid frames of (B, T', V) outputs with (B,) lengths."""
    if a.shape != b.shape:
        return float("inf")
    valid = np.arange(a.shape[1])[None, :] < np.asarray(lengths)[:, None]
    return float(np.abs(a - b)[valid].max(initial=0.0))


def quantize_int8(source: str | os.PathLike, target: str | os.PathLike,
                  op_types: tuple[str, ...] = ("MatMul", "Gemm")) -> Path:
    """Dynamically quantise the weights of `op_types` in the ONNX file `source` to int8, and
    store the recurrent and convolution weights as int8 (`harken.interop.onnx_weights`: float32
    compute, a quarter of the size)."""
    require("onnxruntime", "onnx")
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # The quantiser logs "please consider pre-processing" on the root logger: optional here.
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        quantize_dynamic(Path(source), Path(target), op_types_to_quantize=list(op_types),
                         weight_type=QuantType.QInt8)
    finally:
        root.setLevel(level)

    quantize_weights(target, target)
    return Path(target)


# ---------------------------------------------------------------------------------------------
# Running exported models
# ---------------------------------------------------------------------------------------------













# ---------------------------------------------------------------------------------------------
# Command line: harken export
# ---------------------------------------------------------------------------------------------





__all__ = ["BACKENDS", "OnnxNetwork", "export_onnx", "load_onnx_network", "quantize_int8"]

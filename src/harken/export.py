"""Export a model to ONNX (float32, optionally int8) and run exported models with ONNX Runtime.

    from harken import load_model
    from harken.export import export_onnx

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

import argparse
import copy
import json
import logging
import os
import tempfile
import warnings
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

from harken.errors import ConfigError, ModelError, require

if TYPE_CHECKING:
    import torch

    from harken.model import Model, ModelConfig

ONNX_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
OPSET = 17
INPUT_NAMES = ("features", "lengths")
OUTPUT_NAMES = ("log_probs", "out_lengths")
# "torch": the PyTorch network (weights.safetensors); "onnx": the export's recommended variant
# (int8 where it was exported and is faster, else float32); "onnx-fp32"/"onnx-int8": that file.
BACKENDS = ("torch", "onnx", "onnx-fp32", "onnx-int8")

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

    from harken.model import CONFIG_FILE, sha256_file
    from harken.text import save_tokenizer

    if getattr(model.network, "is_transducer", False):  # three graphs: harken.transducer_export
        from harken.transducer_export import export_transducer_onnx

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
            from harken.model import PUNCTUATOR_FILE
            from harken.punctuator import save_punctuator

            punct = model.punctuator
            save_punctuator(punct.network, punct.config, punct.vocabulary,
                            folder / PUNCTUATOR_FILE)
        files = {p.name: sha256_file(p) for p in sorted(folder.iterdir())}
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
        }
        config = replace(model.config, tokenizer=tokenizer_config, files=files,
                         export=export_info)  # type: ignore[call-arg]
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
    """The streaming step graph (harken.onnx_stream) of networks that have one, else None."""
    from harken.onnx_stream import INT8_STREAM_FILE, STREAM_FILE, can_export_stream, export_stream_step

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
    """Dynamically quantise the weights of `op_types` in the ONNX file `source` to int8."""
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
    return Path(target)


# ---------------------------------------------------------------------------------------------
# Running exported models
# ---------------------------------------------------------------------------------------------

class OnnxNetwork:
    """An exported acoustic network run by ONNX Runtime, callable like the PyTorch network.

    `net(features (B, T, F), lengths (B,)) -> (log_probs (B, T', V) float32, out_lengths (B,))`.
    Torch tensors in give torch tensors out; numpy arrays in give numpy arrays out (so the
    network also runs without PyTorch). `threads` sets ONNX Runtime's intra-op threads (None:
    PyTorch's `torch.get_num_threads()` when torch is loaded, else ONNX Runtime's default).
    """

    def __init__(self, path: str | os.PathLike, subsampling: int, input_dim: int,
                 vocab_size: int, threads: int | None = None, device: str = "cpu") -> None:
        ort = require("onnxruntime", "onnx")
        self.path = Path(path)
        self.subsampling = int(subsampling)
        self.input_dim = int(input_dim)
        self.vocab_size = int(vocab_size)
        self.providers = _providers(ort, device)
        options = ort.SessionOptions()
        if threads is None and "torch" in _loaded_modules():
            import torch

            threads = torch.get_num_threads()
        if threads:
            options.intra_op_num_threads = int(threads)
            options.inter_op_num_threads = 1
        self.threads = threads
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=self.providers)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ModelError(f"{self.path}: ONNX Runtime cannot load this file ({exc})") from exc
        names = [i.name for i in self.session.get_inputs()]
        if names != list(INPUT_NAMES):
            raise ModelError(f"{self.path}: expected ONNX inputs {list(INPUT_NAMES)}, got {names}")

    def __call__(self, features: Any, lengths: Any) -> tuple[Any, Any]:
        """features (B, T, F), lengths (B,) -> log_probs (B, T', V) float32, out_lengths (B,)."""
        as_torch = not isinstance(features, np.ndarray)
        x = np.ascontiguousarray(_numpy(features), dtype=np.float32)
        n = _numpy(lengths)
        if x.ndim != 3 or x.shape[-1] != self.input_dim:
            raise ValueError(f"expected features of shape (batch, time, {self.input_dim}), got "
                             f"{tuple(x.shape)}")
        if n.shape != (x.shape[0],) or not np.issubdtype(n.dtype, np.integer):
            raise ValueError(f"expected integer lengths of shape ({x.shape[0]},), got "
                             f"{n.dtype} {tuple(n.shape)}")
        log_probs, out_lengths = self.session.run(
            list(OUTPUT_NAMES), {"features": x, "lengths": n.astype(np.int64)})
        if not as_torch:
            return log_probs, out_lengths
        import torch

        return torch.from_numpy(log_probs), torch.from_numpy(out_lengths)

    def output_lengths(self, lengths: Any) -> Any:
        """ceil(lengths / subsampling), the same formula as the PyTorch network."""
        return (lengths + self.subsampling - 1) // self.subsampling

    # The parts of the nn.Module interface that `Model` uses.
    def to(self, device: Any) -> OnnxNetwork:
        kind = str(device).split(":")[0]
        if kind == "cpu" or (kind == "cuda" and "CUDAExecutionProvider" in self.providers):
            return self
        raise ConfigError(f"this ONNX model was loaded for {self.providers[0]}; load it again "
                          f"with device={str(device)!r}")

    def eval(self) -> OnnxNetwork:
        return self

    def train(self, mode: bool = True) -> OnnxNetwork:
        if mode:
            raise ModelError(f"{self.path}: an ONNX model cannot be trained; train the PyTorch "
                             "model and export it again")
        return self

    def parameters(self) -> Iterator[Any]:
        return iter(())

    # Streaming step by step: exported streaming models carry a step graph
    # (harken.onnx_stream); without one, `model.stream()` runs this network on overlapping
    # windows of audio.
    stream: Any = None

    @property
    def streamable(self) -> bool:
        return self.stream is not None

    @property
    def lookahead_frames(self) -> int | None:
        return self.stream.info["lookahead_frames"] if self.stream is not None else None

    def initial_state(self, *args: Any, **kwargs: Any) -> Any:
        if self.stream is None:
            raise ModelError(f"{self.path}: this export has no streaming step graph; "
                             "model.stream() runs it on overlapping windows")
        return self.stream.initial_state(*args, **kwargs)

    def stream_step(self, features: Any, state: Any, final: bool = False) -> Any:
        if self.stream is None:
            self.initial_state()
        return self.stream.stream_step(features, state, final)

    def state_dict(self) -> dict[str, Any]:
        raise ModelError(f"{self.path}: an ONNX model has no PyTorch weights to save; save the "
                         "original model, or copy the exported folder")

    def __repr__(self) -> str:
        return f"OnnxNetwork({str(self.path)!r}, threads={self.threads})"


def _numpy(x: Any) -> np.ndarray:
    if isinstance(x, np.ndarray):
        return x
    if hasattr(x, "detach"):  # a torch tensor, on any device
        return x.detach().cpu().numpy()  # type: ignore[no-any-return]
    return np.asarray(x)


def _loaded_modules() -> set[str]:
    import sys

    # (a None entry is a module made unimportable, as `sys.modules["torch"] = None` does)
    return {name for name, module in sys.modules.items() if module is not None}


def _providers(ort: Any, device: str) -> list[str]:
    kind = str(device).split(":")[0]
    if kind == "cpu":
        return ["CPUExecutionProvider"]
    if kind == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    raise ConfigError(f"device {device!r} is not available to ONNX Runtime (providers: "
                      f"{ort.get_available_providers()}); use device='cpu'")


def check_backend(backend: str) -> str:
    """`backend` if it is one of `BACKENDS`, else `ConfigError` listing them."""
    if backend not in BACKENDS:
        raise ConfigError(f"unknown backend {backend!r}; expected one of {list(BACKENDS)}")
    return backend


def load_onnx_network(config: ModelConfig, folder: Path, origin: object, backend: str,
                      device: str = "cpu", threads: int | None = None) -> OnnxNetwork:
    """The `OnnxNetwork` of an exported folder whose files were already checked.

    `backend` is "onnx" (the export's recommended variant), "onnx-fp32" or "onnx-int8".
    """
    info = getattr(config, "export", None) or {}
    if info.get("format") != "onnx":
        raise ModelError(f"{origin}: not an ONNX export (no 'export' entry in config.json); "
                         f"run `harken export {origin} --format onnx --out DIR` first, or load "
                         "it with backend='torch'")
    variant = {"onnx": info.get("default", "fp32"), "onnx-fp32": "fp32",
               "onnx-int8": "int8"}[check_backend(backend)]
    name = info.get(variant)
    if not name:
        raise ModelError(f"{origin}: this export has no {variant} model (export it again with "
                         "--int8, or use backend='onnx-fp32')")
    if name not in config.files:
        raise ModelError(f"{origin}: config.json lists no checksum for {name}")
    try:
        network = OnnxNetwork(folder / name, info["subsampling"], info["input_dim"],
                              info["vocab_size"], threads=threads, device=device)
        stream = info.get("stream")
        if stream:
            from harken.onnx_stream import OnnxStreamNetwork

            step_file = stream["int8_file"] if variant == "int8" else stream["file"]
            if step_file not in config.files:
                raise ModelError(f"{origin}: config.json lists no checksum for {step_file}")
            network.stream = OnnxStreamNetwork(folder / step_file, stream, info["input_dim"],
                                               info["vocab_size"], threads=network.threads,
                                               providers=network.providers)
        return network
    except KeyError as exc:
        raise ModelError(f"{origin}: config.json export entry lacks {exc}") from exc


# ---------------------------------------------------------------------------------------------
# Command line: harken export
# ---------------------------------------------------------------------------------------------

def register_export_command(sub: Any) -> None:
    """Add `harken export MODEL --format onnx [--int8] --out DIR` to the CLI."""
    p = sub.add_parser("export", help="export a model to ONNX for ONNX Runtime",
                       description="Export a model's network to ONNX (float32, and int8 with "
                                   "--int8); load the folder with --backend onnx.")
    p.add_argument("model", help="model folder, .harken file or bundled model name")
    p.add_argument("--format", choices=("onnx",), default="onnx")
    p.add_argument("--int8", action="store_true",
                   help="also write model.int8.onnx (dynamic int8 quantisation)")
    p.add_argument("--opset", type=int, default=OPSET, help=f"ONNX opset (default {OPSET})")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.set_defaults(func=_run_export)


def _run_export(args: argparse.Namespace) -> int:
    from harken.model import load_model

    model = load_model(args.model)
    out = export_onnx(model, args.out, int8=args.int8, opset=args.opset)
    info = json.loads((out / "config.json").read_text())["export"]
    if info["format"] == "onnx-transducer":
        print(f"{out}: {', '.join(info['graphs'])} (harken.transducer_export.OnnxTransducer)")
        return 0
    sizes = ", ".join(f"{name} {(out / name).stat().st_size / 1e6:.1f} MB"
                      for name in (info["fp32"], info["int8"]) if name)
    print(f"{out}: {sizes}; --backend onnx runs the {info['default']} model")
    return 0


__all__ = ["BACKENDS", "OnnxNetwork", "export_onnx", "load_onnx_network", "quantize_int8"]

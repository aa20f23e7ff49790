"""Running exported networks: `OnnxNetwork` (an exported acoustic network run by ONNX Runtime,
callable like the PyTorch network) and `load_onnx_network`, the ONNX backends of `load_model`.
Needs no PyTorch."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from harken.errors import ConfigError, ModelError, require
from harken.interop.onnx_stream import OnnxStreamNetwork
from harken.modelfile import ModelConfig


# "torch": the PyTorch network (weights.safetensors); "onnx": the export's recommended variant
# (int8 where it was exported and is faster, else float32); "onnx-fp32"/"onnx-int8": that file.
BACKENDS = ("torch", "onnx", "onnx-fp32", "onnx-int8")


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
        # Fold the DequantizeLinear of int8-stored weights (harken.interop.onnx_weights) into
        # float32 constants once, at load, instead of on every call.
        options.add_session_config_entry("session.disable_quant_qdq", "1")
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
    # (harken.interop.onnx_stream); without one, `model.stream()` runs this network on overlapping
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
            step_file = stream["int8_file"] if variant == "int8" else stream["file"]
            if step_file not in config.files:
                raise ModelError(f"{origin}: config.json lists no checksum for {step_file}")
            network.stream = OnnxStreamNetwork(folder / step_file, stream, info["input_dim"],
                                               info["vocab_size"], threads=network.threads,
                                               providers=network.providers)
        return network
    except KeyError as exc:
        raise ModelError(f"{origin}: config.json export entry lacks {exc}") from exc


INPUT_NAMES = ("features", "lengths")


OUTPUT_NAMES = ("log_probs", "out_lengths")

"""Run exported models without PyTorch: numpy features, ONNX Runtime, harken's decoders.

    from harken.interop.onnx_runtime import load_onnx_model

    model = load_onnx_model("en-small-onnx")     # a folder written by `harken export`
    model.transcribe("talk.wav").text             # greedy, beam search, LM: as `Model`
    stream = model.stream()                       # step by step where the export has a step graph

Needs numpy, onnxruntime and harken's light dependencies (soundfile, soxr, sentencepiece for
SentencePiece tokenizers, flashlight-text for beam search); PyTorch is never imported, so a
server or an edge device can run exported models without installing it.

`OnnxModel` is a `harken.model.Model` whose features come from `harken.features_np` (equal to
`harken.features.LogMel` within 1e-4) and whose network is the exported graph
(`harken.interop.onnx_export.OnnxNetwork`, with the streaming step graph of `harken.interop.onnx_stream` where one
was exported). Everything after the network is `Model`'s own code: long-audio splitting, VAD,
greedy and beam decoding, word times, `stream()`. Its log-probabilities and transcripts equal
`load_model(folder, backend="onnx")`'s, which computes the same features with PyTorch.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from harken.errors import ConfigError, ModelError
from harken.interop.onnx_network import BACKENDS, OnnxNetwork, check_backend, load_onnx_network
from harken.features_np import FeatureConfig, make_numpy_featurizer
from harken.model import Model
from harken.modelfile import ModelConfig, read_zip_model, read_config, resolve_model_path
from harken.text import load_tokenizer

# The backends an exported CTC model can be run with here (not "torch").
ONNX_BACKENDS = tuple(b for b in BACKENDS if b != "torch")


class OnnxModel(Model):
    """An exported model run with numpy and ONNX Runtime: the `Model` API without PyTorch.

    Build one with `load_onnx_model`. `featurizer` is a numpy `NumpyLogMel` or
    `NumpyWaveform`; `network` an `OnnxNetwork` taking and returning numpy arrays.
    """

    def __init__(self, config: ModelConfig, network: OnnxNetwork, tokenizer: Any,
                 path: Path | None = None, device: str = "cpu") -> None:
        # Model.__init__ builds PyTorch featurizers; everything else of Model is reused.
        self.config = config
        self.tokenizer = tokenizer
        self.path = path
        self.feature_config = FeatureConfig.from_dict(config.features)
        self.featurizer = make_numpy_featurizer(self.feature_config)  # type: ignore[assignment]
        self.network = network  # type: ignore[assignment]
        self.device = device  # type: ignore[assignment]
        # Punctuators run with PyTorch: exported models without it give the text as recognised.
        self.punctuator = None

    def to(self, device: Any) -> OnnxModel:
        """Only the device it was loaded for: ONNX Runtime sessions are bound to a provider."""
        self.network.to(device)
        return self

    def eval(self) -> OnnxModel:
        return self

    def __repr__(self) -> str:
        return (f"OnnxModel({self.config.architecture}/{self.config.size}, "
                f"{self.network.path.name}, vocab {self.tokenizer.vocab_size}, "
                f"path={str(self.path) if self.path else None})")

    def _run_batch(self, audios: Sequence[np.ndarray], batch: list[int],
                   results: list[np.ndarray | None]) -> None:
        lengths = np.array([len(audios[i]) for i in batch], np.int64)
        padded = np.zeros((len(batch), int(lengths.max())), np.float32)
        for row, i in enumerate(batch):
            padded[row, : len(audios[i])] = audios[i]
        features, frame_lengths = self.featurizer(padded, lengths)
        log_probs, out_lengths = self.network(features, frame_lengths)
        for row, i in enumerate(batch):
            results[i] = log_probs[row, : int(out_lengths[row])]

    def save(self, path: str | os.PathLike, training: dict[str, Any] | None = None,
             dtype: Any = None) -> Path:
        raise ModelError(f"{self.path}: an exported model has no PyTorch weights to save; "
                         "copy the exported folder instead")


def load_onnx_model(path: str | os.PathLike, backend: str = "onnx", device: str = "cpu",
                    threads: int | None = None) -> OnnxModel:
    """Load a folder (or ``.harken`` file) written by `harken.interop.onnx_export.export_onnx`, without
    PyTorch.

    `backend` is "onnx" (the export's recommended variant), "onnx-fp32" or "onnx-int8", as for
    `load_model`. Every file's SHA-256 is checked. `threads` sets ONNX Runtime's intra-op
    threads (None: its default, all cores). `ModelError` names the folder and the problem.
    """
    if check_backend(backend) == "torch":
        raise ConfigError(f"load_onnx_model runs exported models; expected backend one of "
                          f"{list(ONNX_BACKENDS)}, got 'torch' (use harken.load_model)")
    resolved = resolve_model_path(path)
    if resolved.is_dir():
        return _load_folder(resolved, resolved, backend, device, threads)
    with tempfile.TemporaryDirectory(prefix="harken-model-") as tmp:
        read_zip_model(resolved, Path(tmp))
        return _load_folder(Path(tmp), resolved, backend, device, threads)


def _load_folder(folder: Path, origin: Path, backend: str, device: str,
                 threads: int | None) -> OnnxModel:
    config = read_config(folder, origin, backend)
    if config.export.get("format") == "onnx-transducer":
        raise ModelError(f"{origin}: transducer exports run with PyTorch decoding loops; load "
                         "them with harken.load_model(path, backend='onnx')")
    network = load_onnx_network(config, folder, origin, backend, device, threads)
    return OnnxModel(config, network, load_tokenizer(config.tokenizer, folder), path=origin,
                     device=device)


__all__ = ["ONNX_BACKENDS", "OnnxModel", "load_onnx_model"]

"""ONNX export of transducer models as three graphs, and a greedy decoder that runs them with
ONNX Runtime (the layout of sherpa-onnx's transducer models).

    from harken.interop.transducer_onnx import export_transducer_onnx, OnnxTransducer
    export_transducer_onnx(model, "tiny-rnnt-onnx")
    onnx_model = OnnxTransducer("tiny-rnnt-onnx")
    onnx_model.transcribe(audio).text

The folder holds

- ``encoder.onnx``: ``features (B, T, F)`` float32, ``lengths (B,)`` int64 ->
  ``encoder_out (B, T', J)`` (already projected for the joint network), ``out_lengths (B,)``;
- ``predictor.onnx``: ``tokens (N,)`` int64 (the last emitted token; the blank at the start) and
  the predictor state -> ``predictor_out (N, J)`` (projected) and the new state. The state is
  ``h, c (L, N, H)`` for LSTM predictors, ``h (L, N, H)`` for GRU ones and ``context (N, k - 1)``
  int64 (the previous tokens) for stateless ones; it starts at zeros (blanks);
- ``joint.onnx``: ``encoder_out (N, J)``, ``predictor_out (N, J)`` -> ``log_probs (N, V)``;
- ``config.json`` (the model's config with an ``export`` entry and the SHA-256 of every file)
  and the tokenizer's files.

Features are computed with `harken.features` (torch) as for CTC exports. The streaming encoder
state (attention and convolution caches) is not exported: ONNX streaming would need the
encoder's step function as a graph of its own.
"""

from __future__ import annotations

import copy
import json
import os
import tempfile
import warnings
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from harken.decoding.types import Transcript, build_transcript
from harken.errors import ModelError, require
from harken.audio import load_audio
from harken.features import FeatureConfig, LogMel
from harken.modelfile import (carry_language_model, CONFIG_FILE, LM_INFO_SUFFIX, ModelConfig,
                              sha256_file)
from harken.text import load_tokenizer, save_tokenizer

GRAPHS = ("encoder.onnx", "predictor.onnx", "joint.onnx")
OPSET = 17
# ONNX Runtime and PyTorch agree to this much on every graph (checked at export).
CHECK_TOLERANCE = 1e-4


class _EncoderGraph(nn.Module):
    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, features: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        hidden, out_lengths = self.network(features, lengths)
        return self.network.joint.encoder_proj(hidden), out_lengths


class _PredictorGraph(nn.Module):
    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, tokens: Tensor, *state: Tensor) -> tuple[Tensor, ...]:
        predictor = self.network.predictor
        packed: Any = tuple(state) if predictor.kind == "lstm" else state[0]
        out, new_state = predictor.step(tokens, packed)
        projected = self.network.joint.predictor_proj(out)
        return (projected, *(new_state if predictor.kind == "lstm" else (new_state,)))


class _JointGraph(nn.Module):
    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, encoder_out: Tensor, predictor_out: Tensor) -> Tensor:
        logits = self.network.joint.out(torch.tanh(encoder_out + predictor_out))
        return torch.log_softmax(logits, dim=-1)


def state_names(kind: str) -> list[str]:
    """Names of the predictor state inputs (outputs add the prefix "new_")."""
    return {"lstm": ["h", "c"], "gru": ["h"], "stateless": ["context"]}[kind]


def initial_state(network_config: dict[str, Any], batch: int) -> list[np.ndarray]:
    """The predictor state before any token, as numpy arrays."""
    kind = network_config.get("predictor", "lstm")
    if kind == "stateless":
        return [np.zeros((batch, network_config.get("context_size", 2) - 1), np.int64)]
    shape = (network_config.get("predictor_layers", 1), batch,
             network_config.get("predictor_dim", 320))
    return [np.zeros(shape, np.float32) for _ in state_names(kind)]


def export_transducer_onnx(model: Any, out_dir: str | os.PathLike, opset: int = OPSET,
                           check: bool = True) -> Path:
    """Export a transducer `Model` as encoder, predictor and joint ONNX graphs in `out_dir`.

    With `check`, each graph is run with ONNX Runtime on inputs other than the traced ones and
    compared with PyTorch; a difference above `CHECK_TOLERANCE` raises `ModelError`.
    """

    if not model.is_transducer:
        raise ModelError(f"{model.path}: not a transducer model; use harken.interop.onnx_export.export_onnx")
    require("onnx", "onnx")
    network = copy.deepcopy(model.network).cpu().eval()
    kind = network.predictor.kind
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.") as tmp:
        folder = Path(tmp) / "export"
        folder.mkdir()
        examples = _examples(network, batch=2, frames=64, seed=0)
        names = state_names(kind)
        specs = [
            (_EncoderGraph(network), examples["encoder"], ["features", "lengths"],
             ["encoder_out", "out_lengths"],
             {"features": {0: "batch", 1: "frames"}, "lengths": {0: "batch"},
              "encoder_out": {0: "batch", 1: "out_frames"}, "out_lengths": {0: "batch"}}),
            (_PredictorGraph(network), examples["predictor"], ["tokens", *names],
             ["predictor_out", *[f"new_{n}" for n in names]],
             {"tokens": {0: "n"}, "predictor_out": {0: "n"},
              **{n: {0 if kind == "stateless" else 1: "n"} for n in names},
              **{f"new_{n}": {0 if kind == "stateless" else 1: "n"} for n in names}}),
            (_JointGraph(network), examples["joint"], ["encoder_out", "predictor_out"],
             ["log_probs"], {"encoder_out": {0: "n"}, "predictor_out": {0: "n"},
                             "log_probs": {0: "n"}}),
        ]
        for (module, inputs, input_names, output_names, axes), file in zip(specs, GRAPHS):
            module.eval()  # (the exporter restores the wrapper's mode on the whole network)
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")
                torch.onnx.export(module, inputs, str(folder / file), dynamo=False,
                                  opset_version=opset, input_names=input_names,
                                  output_names=output_names, dynamic_axes=axes)
        if check:
            check_export(network, folder)
        tokenizer_config = save_tokenizer(model.tokenizer, folder)
        decoding = carry_language_model(model, folder)
        files = {p.name: sha256_file(p) for p in sorted(folder.iterdir())
                 if not p.name.endswith(LM_INFO_SUFFIX)}
        export_info = {"format": "onnx-transducer", "opset": opset, "graphs": list(GRAPHS),
                       "predictor_state": names, "subsampling": int(network.subsampling),
                       "joint_dim": int(network.config.joint_dim),
                       "vocab_size": int(network.vocab_size),
                       "exporter": f"torch {torch.__version__} (TorchScript-based)"}
        config = replace(model.config, tokenizer=tokenizer_config, files=files,
                         decoding=decoding, export=export_info)
        (folder / CONFIG_FILE).write_text(json.dumps(asdict(config), indent=2) + "\n")
        if out.exists():
            os.replace(out, Path(tmp) / "old")
        os.replace(folder, out)
    return out


def _examples(network: Any, batch: int, frames: int, seed: int) -> dict[str, tuple[Tensor, ...]]:
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(batch, frames, network.input_dim, generator=generator)
    lengths = torch.tensor([frames] + [frames * 3 // 4] * (batch - 1), dtype=torch.long)
    tokens = torch.randint(1, network.vocab_size, (batch,), generator=generator)
    state = [torch.from_numpy(s) for s in initial_state(network.config.to_dict(), batch)]
    state = [s if s.dtype == torch.long else torch.randn(s.shape, generator=generator)
             for s in state]
    if network.predictor.kind == "stateless":
        state = [torch.randint(0, network.vocab_size, tuple(state[0].shape), generator=generator)]
    dim = network.config.joint_dim
    joint = (torch.randn(batch, dim, generator=generator), torch.randn(batch, dim,
                                                                        generator=generator))
    return {"encoder": (features, lengths), "predictor": (tokens, *state), "joint": joint}


def check_export(network: Any, folder: Path) -> float:
    """Largest difference between ONNX Runtime and PyTorch over the three graphs (inputs of
    another batch size and length than the traced ones); `ModelError` above tolerance."""
    require("onnxruntime", "onnx")
    import onnxruntime

    examples = _examples(network, batch=3, frames=101, seed=1)
    worst = 0.0
    modules = (_EncoderGraph(network).eval(), _PredictorGraph(network).eval(),
               _JointGraph(network).eval())
    for module, file, key in zip(modules, GRAPHS, ("encoder", "predictor", "joint")):
        session = onnxruntime.InferenceSession(str(folder / file),
                                               providers=["CPUExecutionProvider"])
        inputs = examples[key]
        feed = {i.name: t.numpy() for i, t in zip(session.get_inputs(), inputs)}
        got = session.run(None, feed)
        with torch.no_grad():
            expected = module(*inputs)
        expected = expected if isinstance(expected, tuple) else (expected,)
        for g, e in zip(got, expected):
            e = e.numpy()
            if key == "encoder" and g.ndim == 3:  # compare valid frames only
                valid = np.arange(g.shape[1])[None, :] < expected[1].numpy()[:, None]
                g, e = g[valid], e[valid]
            if g.shape != e.shape:
                raise ModelError(f"{folder / file}: export check failed: shape {g.shape}, "
                                 f"PyTorch gives {e.shape}")
            worst = max(worst, float(np.abs(g.astype(np.float64) - e).max(initial=0.0)))
    if not worst <= CHECK_TOLERANCE:
        raise ModelError(f"{folder}: export check failed: ONNX Runtime differs from PyTorch by "
                         f"{worst:.3g} (tolerance {CHECK_TOLERANCE})")
    return worst


class OnnxTransducer:
    """Greedy transcription with the three exported graphs and ONNX Runtime."""

    def __init__(self, folder: str | os.PathLike, threads: int = 1) -> None:
        require("onnxruntime", "onnx")
        import onnxruntime

        self.folder = Path(folder)
        config_path = self.folder / CONFIG_FILE
        if not config_path.is_file():
            raise ModelError(f"{self.folder}: not an exported transducer ({CONFIG_FILE} missing)")
        self.config = ModelConfig.from_dict(json.loads(config_path.read_text(encoding="utf-8")),
                                            source=config_path)
        if self.config.export.get("format") != "onnx-transducer":
            raise ModelError(f"{self.folder}: not an exported transducer (format "
                             f"{self.config.export.get('format')!r})")
        for name, digest in self.config.files.items():
            if sha256_file(self.folder / name) != digest:
                raise ModelError(f"{self.folder}: {name} is corrupt or was changed (SHA-256)")
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        self.sessions = [onnxruntime.InferenceSession(str(self.folder / g), options,
                                                      providers=["CPUExecutionProvider"])
                         for g in GRAPHS]
        self.tokenizer = load_tokenizer(self.config.tokenizer, self.folder)
        self.feature_config = FeatureConfig.from_dict(self.config.features)
        self.featurizer = LogMel(self.feature_config).eval()
        self.state_names = list(self.config.export["predictor_state"])
        self.frame_seconds = (self.feature_config.hop_length * self.config.export["subsampling"]
                              / self.feature_config.sample_rate)

    def encode(self, audio: np.ndarray) -> np.ndarray:
        """16 kHz float32 audio -> encoder frames (T', J)."""
        samples = torch.from_numpy(np.asarray(audio, np.float32))[None]
        with torch.no_grad():
            features, lengths = self.featurizer(samples, torch.tensor([samples.size(1)]))
        frames, out_lengths = self.sessions[0].run(
            None, {"features": features.numpy(), "lengths": lengths.numpy()})
        return frames[0, : int(out_lengths[0])]

    def transcribe(self, audio: Any, max_symbols: int = 3) -> Transcript:
        """Greedy transcript of one input (path, bytes, array, ...), as `Model.transcribe`
        with greedy decoding."""

        wave = load_audio(audio, self.feature_config.sample_rate)
        frames = self.encode(wave)
        predictor, joint = self.sessions[1], self.sessions[2]
        state = initial_state(self.config.network, 1)

        def step(token: int, state: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
            feed = {"tokens": np.array([token], np.int64), **dict(zip(self.state_names, state))}
            out, *new_state = predictor.run(None, feed)
            return out, new_state

        predictor_out, state = step(0, state)
        ids: list[int] = []
        times: list[int] = []
        confidences: list[float] = []
        score = 0.0
        capped = False  # the frame was left after max_symbols tokens, without its blank
        for t, frame in enumerate(frames):
            capped = True
            for _ in range(max_symbols):
                (log_probs,) = joint.run(None, {"encoder_out": frame[None],
                                                "predictor_out": predictor_out})
                token = int(log_probs[0].argmax())
                score += float(log_probs[0, token])
                if token == 0:
                    capped = False
                    break
                ids.append(token)
                times.append(t)
                confidences.append(float(np.exp(log_probs[0, token])))
                predictor_out, state = step(token, state)
        if capped:  # the input ends: the last frame's blank is counted, as in Model.transcribe
            (log_probs,) = joint.run(None, {"encoder_out": frames[-1][None],
                                            "predictor_out": predictor_out})
            score += float(log_probs[0, 0])
        return build_transcript(ids, times, times, confidences, self.tokenizer,
                                self.frame_seconds, score=score,
                                duration=len(wave) / self.feature_config.sample_rate)


__all__ = ["OnnxTransducer", "check_export", "export_transducer_onnx"]

"""Streaming DeepSpeech2 exported to ONNX: one step graph with explicit state in and out.

`DeepSpeech2.stream_step` keeps variable-length buffers in Python objects, which ONNX cannot
express. The exported step works on whole blocks instead: its input is `n * S` feature frames
(S = the model's time stride, n >= 1 free), and its state is fixed-size tensors:

- ``conv{i}``: the last ``kernel - stride`` input frames of conv layer i (zeros at the start,
  which is exactly the layer's left padding);
- ``hidden``: the GRU states, (layers, B, H);
- ``lookahead``: the last `lookahead` GRU outputs, which wait for their future frames before the
  row convolution can use them (zeros at the start: the first `lookahead` outputs of a stream
  are dropped by `OnnxStreamNetwork`).

A ``valid`` input (B,) says how many of the block's frames are real: every layer zeroes its
outputs past the valid ones, as the offline network masks padding. So the end of a stream is
one more step on a zero-padded block (plus `lookahead` blocks of zeros for the row
convolution's right context), and the concatenated outputs equal the offline network's on the
whole stream (tested to 1e-4).

`OnnxStreamNetwork` runs the graph with ONNX Runtime behind the `initial_state()` /
`stream_step(features, state, final)` interface of the PyTorch network, so `model.stream()` on an
exported model gives the offline ONNX model's transcript exactly.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harken.errors import ModelError, require

STREAM_FILE = "stream.onnx"
INT8_STREAM_FILE = "stream.int8.onnx"
TOLERANCE = 1e-4


def can_export_stream(network: Any) -> bool:
    """Whether `network` has an exportable step function (unidirectional DeepSpeech2)."""
    # torch: only when exporting (the ONNX runtime path runs without it)
    from harken.models.deepspeech2 import DeepSpeech2

    return isinstance(network, DeepSpeech2) and network.streamable and all(
        layer.conv.kernel_size[0] > layer.time_stride for layer in network.conv)


def _step_module(network: Any) -> Any:
    """The block step of a streaming DeepSpeech2 as a traceable `torch.nn.Module`."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    class DeepSpeech2Step(nn.Module):
        def __init__(self, net: Any) -> None:
            super().__init__()
            self.net = net
            self.tau = net.config.lookahead or 0

        def forward(self, features: torch.Tensor, valid: torch.Tensor, hidden: torch.Tensor,
                    lookahead: torch.Tensor, *caches: torch.Tensor) -> tuple[torch.Tensor, ...]:
            net = self.net
            x = features.unsqueeze(1)  # (B, 1, n * S, F)
            valid = valid.long()
            new_caches = []
            for layer, cache in zip(net.conv, caches):
                x = torch.cat([cache, x], dim=2)
                left = cache.size(2)
                new_caches.append(x[:, :, x.size(2) - left:])
                x = layer.step(x)
                stride = layer.time_stride
                valid = torch.div(valid + stride - 1, stride, rounding_mode="floor")
                keep = torch.arange(x.size(2), device=x.device)[None, :] < valid[:, None]
                x = x * keep[:, None, :, None].to(x.dtype)
            y = x.permute(0, 2, 1, 3).flatten(2)  # (B, n, C * F')
            states = []
            for i, rnn in enumerate(net.rnns):
                y, h = rnn.step(y, hidden[i: i + 1])
                states.append(h)
            keep = torch.arange(y.size(1), device=y.device)[None, :] < valid[:, None]
            y = y * keep[..., None].to(y.dtype)
            new_lookahead = lookahead
            if self.tau:
                pending = torch.cat([lookahead, y], dim=1)  # (B, tau + n, H)
                new_lookahead = pending[:, pending.size(1) - self.tau:]
                y = net.act(net.lookahead(pending.transpose(1, 2)).transpose(1, 2))
            log_probs = F.log_softmax(net.head(y).float(), dim=-1)
            return (log_probs, torch.cat(states, dim=0), new_lookahead, *new_caches)

    return DeepSpeech2Step(network)


def _initial_arrays(network: Any, batch: int) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Zero hidden, lookahead and conv caches for `batch` streams."""
    hidden = np.zeros((len(network.rnns), batch, network.config.rnn_hidden), np.float32)
    lookahead = np.zeros((batch, network.config.lookahead or 0, network.config.rnn_hidden),
                         np.float32)
    caches, channels, freq = [], 1, network.input_dim
    for layer in network.conv:
        k_time = layer.conv.kernel_size[0]
        caches.append(np.zeros((batch, channels, k_time - layer.time_stride, freq), np.float32))
        channels = layer.conv.out_channels
        k_freq, f_stride = layer.conv.kernel_size[1], layer.conv.stride[1]
        freq = (freq + 2 * (k_freq // 2) - k_freq) // f_stride + 1
    return hidden, lookahead, caches


def export_stream_step(network: Any, path: str | os.PathLike, opset: int = 17,
                       check: bool = True) -> dict[str, Any]:
    """Write the step graph of a streaming DeepSpeech2 `network` to `path`; return its facts
    for config.json (input names, state shapes). With `check`, streaming the graph over a random
    utterance in uneven blocks is compared with the PyTorch network run offline."""
    import torch

    if not can_export_stream(network):
        raise ModelError("only unidirectional DeepSpeech2 models (look-ahead row convolution, "
                         "conv kernels longer than their strides) export a streaming step")
    step = _step_module(network).eval()
    hidden, lookahead, caches = _initial_arrays(network, 2)
    cache_names = [f"conv{i}" for i in range(len(caches))]
    stride = network.subsampling
    example = (torch.randn(2, 3 * stride, network.input_dim), torch.tensor([3 * stride] * 2),
               torch.from_numpy(hidden), torch.from_numpy(lookahead),
               *[torch.from_numpy(c) for c in caches])
    inputs = ["features", "valid", "hidden", "lookahead", *cache_names]
    outputs = ["log_probs", "hidden_out", "lookahead_out", *[f"{n}_out" for n in cache_names]]
    dynamic = {"features": {0: "batch", 1: "frames"}, "valid": {0: "batch"},
               "hidden": {1: "batch"}, "lookahead": {0: "batch"},
               "log_probs": {0: "batch", 1: "blocks"}, "hidden_out": {1: "batch"},
               "lookahead_out": {0: "batch"}}
    dynamic.update({n: {0: "batch"} for n in cache_names})
    dynamic.update({f"{n}_out": {0: "batch"} for n in cache_names})
    with torch.no_grad():
        torch.onnx.export(step, example, str(path), input_names=inputs, output_names=outputs,
                          dynamic_axes=dynamic, opset_version=opset, dynamo=False)
    info = {"file": Path(path).name, "stride": int(stride),
            "lookahead": int(network.config.lookahead or 0),
            "lookahead_frames": int(network.lookahead_frames or 0),
            "hidden": list(hidden.shape[::2]), "rnn_hidden": int(network.config.rnn_hidden),
            "caches": [list(c.shape[1:]) for c in caches]}
    if check:
        difference = check_stream_step(network, path, info)
        if difference > TOLERANCE:
            raise ModelError(f"{path}: the exported streaming step differs from PyTorch by "
                             f"{difference:.2e} (> {TOLERANCE})")
    return info


def check_stream_step(network: Any, path: str | os.PathLike, info: dict[str, Any],
                      frames: int = 157, seed: int = 0) -> float:
    """Largest |ONNX streamed - PyTorch offline| log-probability over a random utterance fed in
    blocks of uneven sizes."""
    import torch

    features = torch.randn(1, frames, network.input_dim, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        offline, _ = network(features, torch.tensor([frames]))
    streamed = OnnxStreamNetwork(path, info, network.input_dim, network.vocab_size, threads=1)
    state = streamed.initial_state()
    outs, start = [], 0
    for size in (1, 7, 30, 2, 64):
        piece, state = streamed.stream_step(features[:, start: start + size], state)
        outs.append(piece)
        start += size
    piece, state = streamed.stream_step(features[:, start:], state, final=True)
    outs.append(piece)
    got = torch.cat(outs, dim=1).numpy()
    if got.shape != tuple(offline.shape):
        raise ModelError(f"{path}: the exported streaming step gave {got.shape[1]} frames for "
                         f"{offline.shape[1]} offline")
    return float(np.abs(got - offline.numpy()).max())


@dataclass
class OnnxStreamState:
    """Where one batch of streams stands: features not yet a whole block, the graph's state
    tensors, how many leading outputs are still to drop, frames seen and outputs given."""

    pending: np.ndarray
    hidden: np.ndarray
    lookahead: np.ndarray
    caches: list[np.ndarray]
    drop: int
    seen: int = 0
    emitted: int = 0
    finished: bool = False


class OnnxStreamNetwork:
    """The exported step graph behind `initial_state()` / `stream_step(features, state, final)`
    (the interface of a streaming PyTorch network; see module docstring)."""

    def __init__(self, path: str | os.PathLike, info: dict[str, Any], input_dim: int,
                 vocab_size: int, threads: int | None = None, providers: list[str] | None = None
                 ) -> None:
        ort = require("onnxruntime", "onnx")
        self.path = Path(path)
        self.info = info
        self.input_dim = int(input_dim)
        self.vocab_size = int(vocab_size)
        self.stride = int(info["stride"])
        self.tau = int(info["lookahead"])
        options = ort.SessionOptions()
        options.add_session_config_entry("session.disable_quant_qdq", "1")  # as OnnxNetwork
        if threads:
            options.intra_op_num_threads = int(threads)
            options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(
                str(self.path), options, providers=providers or ["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ModelError(f"{self.path}: ONNX Runtime cannot load this file ({exc})") from exc
        self.cache_names = [f"conv{i}" for i in range(len(info["caches"]))]

    def initial_state(self, batch: int = 1) -> OnnxStreamState:
        layers, hidden = self.info["hidden"]
        return OnnxStreamState(
            pending=np.zeros((batch, 0, self.input_dim), np.float32),
            hidden=np.zeros((layers, batch, hidden), np.float32),
            lookahead=np.zeros((batch, self.tau, self.info["rnn_hidden"]), np.float32),
            caches=[np.zeros((batch, *shape), np.float32) for shape in self.info["caches"]],
            drop=self.tau)

    def stream_step(self, features: Any, state: OnnxStreamState, final: bool = False
                    ) -> tuple[Any, OnnxStreamState]:
        """features (B, T, F) (T may be 0) -> log_probs (B, T_out, V) float32 and the new
        state; the same outputs, frame for frame, as the PyTorch network's `stream_step`."""
        if state.finished:
            raise ValueError("this stream state is finished; start again from initial_state()")
        as_torch = not isinstance(features, np.ndarray)
        x = features.detach().cpu().numpy() if as_torch else np.asarray(features)
        if x.ndim != 3 or x.shape[-1] != self.input_dim:
            raise ValueError(f"expected features of shape (batch, time, {self.input_dim}), "
                             f"got {tuple(x.shape)}")
        pending = np.concatenate([state.pending, x.astype(np.float32)], axis=1)
        seen = state.seen + x.shape[1]
        batch = pending.shape[0]
        if final:
            valid = pending.shape[1]
            blocks = -(-valid // self.stride) + self.tau
            block = np.zeros((batch, blocks * self.stride, self.input_dim), np.float32)
            block[:, :valid] = pending
            pending = pending[:, :0]
        else:
            valid = pending.shape[1] // self.stride * self.stride
            block, pending = pending[:, :valid], pending[:, valid:]
        if block.shape[1] == 0:
            out = np.zeros((batch, 0, self.vocab_size), np.float32)
            new = OnnxStreamState(pending, state.hidden, state.lookahead, state.caches,
                                  state.drop, seen, state.emitted, final)
        else:
            feeds = {"features": np.ascontiguousarray(block),
                     "valid": np.full((batch,), valid, np.int64),
                     "hidden": state.hidden, "lookahead": state.lookahead}
            feeds.update(zip(self.cache_names, state.caches))
            log_probs, hidden, lookahead, *caches = self.session.run(None, feeds)
            drop = min(state.drop, log_probs.shape[1])
            out = log_probs[:, drop:]
            if final:  # the offline network's ceil(frames / stride) outputs, no more
                out = out[:, : max(0, -(-seen // self.stride) - state.emitted)]
            new = OnnxStreamState(pending, hidden, lookahead, caches, state.drop - drop, seen,
                                  state.emitted + out.shape[1], final)
        if as_torch:
            import torch

            return torch.from_numpy(np.ascontiguousarray(out)), new
        return out, new


__all__ = ["OnnxStreamNetwork", "can_export_stream", "export_stream_step"]

"""DeepSpeech2 (Amodei et al., 2016): 2D convolutions over (time, frequency), a GRU stack, an
optional look-ahead row convolution for streaming, and a linear CTC head.

    features (B, T, F) -> conv front end (B, C, T', F') -> (B, T', C*F') -> GRU x N -> (B, T', H)
    [-> row convolution over t..t+lookahead] -> linear -> log_softmax (B, T', V)

Time stride and receptive field (S = `time_stride`, tau = `lookahead`):

- Every conv layer pads time by `kernel - 1` frames in total, so T' = ceil(T / S) exactly.
- Bidirectional: time padding is centred, the GRUs see the whole utterance.
- Unidirectional: each conv pads `kernel - stride` frames on the left and `stride - 1` on the
  right, so output frame t depends on input frames < (t + 1) * S (its own block of S frames and
  the past), the GRUs are causal, and the row convolution adds tau output frames of future
  context. Output frame t thus depends on input frames < (t + 1 + tau) * S: a look-ahead of
  tau * S input frames. A streaming front end can emit output t once input frame
  (t + 1 + tau) * S - 1 has arrived; the state to carry between steps is the last
  `kernel - stride` input frames of each conv layer, the GRU hidden states and the last tau GRU
  outputs. Nothing here hides state: `forward` is one whole-utterance step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harken.models.registry import (
    ConfigMixin,
    TimeBuffer,
    batch_norm_valid,
    check_inputs,
    conv_output_lengths,
    padding_mask,
)


@dataclass(frozen=True)
class DeepSpeech2Config(ConfigMixin):
    """DeepSpeech2 hyper-parameters. The defaults are the "small" size (~3.8 M parameters)."""

    # One entry per conv layer. Kernels are (time, frequency); frequency is padded to keep
    # ceil(F / stride) bins and reduced by `conv_freq_strides`.
    conv_channels: tuple[int, ...] = (32, 32)
    conv_kernels: tuple[tuple[int, int], ...] = ((11, 41), (5, 11))
    conv_freq_strides: tuple[int, ...] = (2, 2)
    # Total time stride: a power of two; the first log2(time_stride) conv layers get stride 2.
    time_stride: int = 2
    conv_batch_norm: bool = True
    # "hardtanh" is DeepSpeech2's clipped ReLU min(max(x, 0), 20).
    activation: Literal["hardtanh", "relu"] = "hardtanh"
    rnn_hidden: int = 256
    rnn_layers: int = 3
    bidirectional: bool = True
    # BatchNorm on the input of every GRU layer but the first (statistics over valid frames).
    rnn_batch_norm: bool = True
    # Future output frames seen by the row convolution (unidirectional models only).
    lookahead: int = 0
    dropout: float = 0.0

    def __post_init__(self) -> None:
        n = len(self.conv_channels)
        self._require(
            n >= 1 and all(c >= 1 for c in self.conv_channels),
            "conv_channels",
            "at least one positive channel count",
        )
        self._require(
            len(self.conv_kernels) == n,
            "conv_kernels",
            f"{n} (time, frequency) kernels, one per conv layer",
        )
        self._require(
            all(t >= 1 and f >= 1 and f % 2 == 1 for t, f in self.conv_kernels),
            "conv_kernels",
            "positive kernels with odd frequency sizes",
        )
        self._require(
            len(self.conv_freq_strides) == n and min(self.conv_freq_strides) >= 1,
            "conv_freq_strides",
            f"{n} positive strides, one per conv layer",
        )
        self._require(
            self.time_stride >= 1
            and self.time_stride & (self.time_stride - 1) == 0
            and self.time_stride <= 2**n,
            "time_stride",
            f"a power of two <= {2**n} ({n} conv layers)",
        )
        strides = self.conv_time_strides
        self._require(
            all(k >= s for (k, _), s in zip(self.conv_kernels, strides)),
            "conv_kernels",
            "time kernels at least as long as their stride",
        )
        self._require(self.activation in ("hardtanh", "relu"), "activation", "hardtanh or relu")
        self._require(self.rnn_hidden >= 1, "rnn_hidden", "a positive size")
        self._require(self.rnn_layers >= 1, "rnn_layers", "at least 1")
        self._require(self.lookahead >= 0, "lookahead", ">= 0")
        self._require(
            not (self.bidirectional and self.lookahead),
            "lookahead",
            "0 for bidirectional models (set bidirectional=False to stream)",
        )
        self._require(0.0 <= self.dropout < 1.0, "dropout", "a probability in [0, 1)")

    @property
    def conv_time_strides(self) -> tuple[int, ...]:
        """Per-layer time strides: 2 for the first log2(time_stride) layers, then 1."""
        n_strided = int(math.log2(self.time_stride))
        return tuple(2 if i < n_strided else 1 for i in range(len(self.conv_channels)))


def _activation(name: str) -> nn.Module:
    return nn.Hardtanh(0.0, 20.0) if name == "hardtanh" else nn.ReLU()


class ConvLayer(nn.Module):
    """Conv2d over (time, frequency) + BatchNorm + activation, masking frames past the length.

    x (B, C_in, T, F_in), lengths (B,) -> (B, C_out, ceil(T / stride), F_out), new lengths.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: tuple[int, int],
        time_stride: int,
        freq_stride: int,
        causal: bool,
        batch_norm: bool,
        activation: str,
    ) -> None:
        super().__init__()
        k_time, k_freq = kernel
        self.time_stride = time_stride
        # kernel - 1 frames of padding in total -> ceil(T / stride) outputs either way.
        left = k_time - time_stride if causal else (k_time - 1) // 2
        self.time_padding = (left, k_time - 1 - left)
        self.conv = nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size=kernel,
            stride=(time_stride, freq_stride),
            padding=(0, k_freq // 2),
            bias=not batch_norm,
        )
        self.norm = nn.BatchNorm2d(out_channels) if batch_norm else None
        self.act = _activation(activation)

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        x = self.conv(F.pad(x, (0, 0, *self.time_padding)))
        lengths = conv_output_lengths(lengths, self.time_stride)
        mask = padding_mask(lengths, x.size(2))
        if self.norm is not None:
            x = batch_norm_valid(self.norm, x, mask)
        # Zero past the length: the next layer then sees what it would see for this sequence alone.
        return self.act(x) * mask[:, None, :, None], lengths

    def step(self, x: Tensor) -> Tensor:
        """Streaming (eval mode): x (B, C_in, k + (n - 1) * stride, F_in), already holding its
        left context, no time padding -> (B, C_out, n, F_out)."""
        x = self.conv(x)
        if self.norm is not None:
            x = self.norm(x)
        return self.act(x)  # type: ignore[no-any-return]


class RNNLayer(nn.Module):
    """[BatchNorm] -> [dropout] -> GRU over (B, T, D_in) -> (B, T, H * directions).

    A bidirectional layer is two GRUs; the backward one reads each sequence reversed within its
    own length, so padding stays at the end and never reaches valid frames. (Packed sequences
    would do the same, but their backward pass on CPU costs O(T^2) memory traffic.)
    """

    def __init__(
        self, input_size: int, hidden: int, bidirectional: bool, batch_norm: bool, dropout: float
    ) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(input_size) if batch_norm else None
        self.dropout = nn.Dropout(dropout)
        self.rnn = nn.GRU(input_size, hidden, batch_first=True)
        self.rnn_reverse = nn.GRU(input_size, hidden, batch_first=True) if bidirectional else None

    def forward(self, x: Tensor, lengths: Tensor, mask: Tensor) -> Tensor:
        if self.norm is not None:
            x = batch_norm_valid(self.norm, x.transpose(1, 2), mask).transpose(1, 2)
        x = self.dropout(x)
        # Causal: frames past the length cannot reach earlier outputs.
        y = self.rnn(x)[0]  # (B, T, H)
        if self.rnn_reverse is None:
            return y  # type: ignore[no-any-return]
        index = _reverse_index(lengths, x.size(1))[..., None]  # (B, T, 1)
        y_reverse = self.rnn_reverse(x.gather(1, index.expand_as(x)))[0]
        return torch.cat([y, y_reverse.gather(1, index.expand_as(y_reverse))], dim=-1)

    def step(self, x: Tensor, hidden: Tensor | None) -> tuple[Tensor, Tensor]:
        """Streaming (eval mode, unidirectional): x (B, T, D_in), hidden (1, B, H) or None ->
        (B, T, H), new hidden."""
        if self.norm is not None:
            x = self.norm(x.transpose(1, 2)).transpose(1, 2)
        y, hidden = self.rnn(x, hidden)
        return y, hidden


def _reverse_index(lengths: Tensor, max_len: int) -> Tensor:
    """(B, T) time index that reverses frames t < length and leaves the padding in place."""
    t = torch.arange(max_len, device=lengths.device)[None, :]
    return torch.where(t < lengths[:, None], lengths[:, None] - 1 - t, t)


@dataclass(frozen=True)
class DeepSpeech2State:
    """Streaming state of a unidirectional DeepSpeech2 (see `DeepSpeech2.stream_step`).

    `conv`: per conv layer, its last `kernel - stride` input frames and any incomplete stride
    block; `hidden`: per GRU layer, (1, B, H); `lookahead`: GRU outputs waiting for their
    `lookahead` future frames (B, <= tau, H).
    """

    conv: tuple[TimeBuffer, ...] = ()
    hidden: tuple[Tensor | None, ...] = ()
    lookahead: Tensor | None = None
    finished: bool = False


class DeepSpeech2(nn.Module):
    """DeepSpeech2 CTC acoustic model.

    forward(features (B, T, F), lengths (B,)) -> (log_probs (B, T', V) float32, out_lengths (B,))
    with T' = ceil(T / subsampling) and out_lengths = ceil(lengths / subsampling).
    """

    def __init__(self, config: DeepSpeech2Config, input_dim: int, vocab_size: int) -> None:
        super().__init__()
        self.config = config
        self.input_dim = input_dim
        self.vocab_size = vocab_size
        self.subsampling: int = config.time_stride
        causal = not config.bidirectional
        layers = []
        channels, freq = 1, input_dim
        for out_channels, kernel, t_stride, f_stride in zip(
            config.conv_channels,
            config.conv_kernels,
            config.conv_time_strides,
            config.conv_freq_strides,
        ):
            layers.append(
                ConvLayer(
                    channels,
                    out_channels,
                    kernel,
                    t_stride,
                    f_stride,
                    causal,
                    config.conv_batch_norm,
                    config.activation,
                )
            )
            channels, freq = out_channels, (freq - 1) // f_stride + 1
        self.conv = nn.ModuleList(layers)
        directions = 2 if config.bidirectional else 1
        rnn_out = config.rnn_hidden * directions
        self.rnns = nn.ModuleList(
            RNNLayer(
                channels * freq if i == 0 else rnn_out,
                config.rnn_hidden,
                config.bidirectional,
                batch_norm=config.rnn_batch_norm and i > 0,
                dropout=config.dropout if i > 0 else 0.0,
            )
            for i in range(config.rnn_layers)
        )
        # Row convolution (DeepSpeech2 section 3.5): per channel, over frames t .. t + lookahead.
        self.lookahead = (
            nn.Conv1d(rnn_out, rnn_out, config.lookahead + 1, groups=rnn_out, bias=False)
            if config.lookahead
            else None
        )
        self.act = _activation(config.activation)
        self.head = nn.Linear(rnn_out, vocab_size)

    @property
    def lookahead_frames(self) -> int | None:
        """Input frames past the end of output t's block that output t depends on (None: all)."""
        return None if self.config.bidirectional else self.config.lookahead * self.subsampling

    def output_lengths(self, lengths: Tensor) -> Tensor:
        """ceil(lengths / subsampling), as int64."""
        for stride in self.config.conv_time_strides:
            lengths = conv_output_lengths(lengths, stride)
        return lengths.long()

    def forward(self, features: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """features (B, T, F), lengths (B,) -> log_probs (B, T', V) float32, out_lengths (B,)."""
        check_inputs(features, lengths, self.input_dim)
        x = features.unsqueeze(1)  # (B, 1, T, F)
        x = x * padding_mask(lengths, x.size(2))[:, None, :, None]
        for layer in self.conv:
            x, lengths = layer(x, lengths)  # (B, C, T_i, F_i)
        x = x.permute(0, 2, 1, 3).flatten(2)  # (B, T', C * F')
        mask = padding_mask(lengths, x.size(1))
        for rnn in self.rnns:
            x = rnn(x, lengths, mask)  # (B, T', H * directions)
        if self.lookahead is not None:
            x = x * mask[..., None]  # the row conv then sees zeros past the end, as alone
            x = self.lookahead(F.pad(x.transpose(1, 2), (0, self.config.lookahead)))
            x = self.act(x.transpose(1, 2))
        logits = self.head(x)  # (B, T', V)
        return F.log_softmax(logits.float(), dim=-1), lengths.long()

    # -- streaming ------------------------------------------------------------------------
    @property
    def streamable(self) -> bool:
        """Whether `stream_step` works: unidirectional models only."""
        return not self.config.bidirectional

    def initial_state(self) -> DeepSpeech2State:
        """The state before the first `stream_step` (zero left context, zero GRU state)."""
        n_conv, n_rnn = len(self.conv), len(self.rnns)
        return DeepSpeech2State(conv=(TimeBuffer(),) * n_conv, hidden=(None,) * n_rnn)

    @torch.no_grad()
    def stream_step(self, features: Tensor, state: DeepSpeech2State,
                    final: bool = False) -> tuple[Tensor, DeepSpeech2State]:
        """Streaming inference (eval mode): the next feature frames of B streams in, the output
        frames that became computable out.

        features (B, T, F) (T may be 0) -> log_probs (B, T_out, V) float32 and the new state.
        `final=True` flushes the stream (zero right padding as `forward`). Over a stream, the
        outputs concatenated equal `forward` on all its frames: output t is emitted once input
        frame (t + 1 + lookahead) * subsampling - 1 has arrived.
        """
        if not self.streamable:
            raise ValueError("bidirectional DeepSpeech2 models cannot stream step by step; "
                             "build one with bidirectional=False")
        if state.finished:
            raise ValueError("this stream state is finished; start again from initial_state()")
        if features.dim() != 3 or features.size(-1) != self.input_dim:
            raise ValueError(f"expected features of shape (batch, time, {self.input_dim}), "
                             f"got {tuple(features.shape)}")
        x: Tensor | None = features.unsqueeze(1)  # (B, 1, T, F)
        buffers = []
        for layer, buffer in zip(self.conv, state.conv):
            k_time = layer.conv.kernel_size[0]
            s = layer.time_stride
            if x is None:
                x = buffer.frames[:, :, :0] if buffer.frames is not None else None
            if x is None:  # nothing has reached this layer yet
                buffers.append(buffer)
                continue
            ready, buffer = buffer.take(x, 2, k_time, s, k_time - s, final)
            buffers.append(buffer)
            x = layer.step(ready) if ready is not None else None
        hidden = list(state.hidden)
        lookahead = state.lookahead
        if x is not None:
            y = x.permute(0, 2, 1, 3).flatten(2)  # (B, T', C * F')
            for i, rnn in enumerate(self.rnns):
                y, hidden[i] = rnn.step(y, hidden[i])
        else:
            y = features.new_zeros(features.size(0), 0, self.head.in_features)
        if self.lookahead is not None:
            tau = self.config.lookahead
            pending = y if lookahead is None else torch.cat([lookahead, y], dim=1)
            if final:
                pending = F.pad(pending, (0, 0, 0, tau))
            n = max(pending.size(1) - tau, 0)
            if n:
                y = self.act(self.lookahead(pending[:, : n + tau].transpose(1, 2)).transpose(1, 2))
            else:
                y = pending[:, :0]
            lookahead = pending[:, n:]
        logits = self.head(y)
        new_state = DeepSpeech2State(tuple(buffers), tuple(hidden), lookahead, final)
        return F.log_softmax(logits.float(), dim=-1), new_state

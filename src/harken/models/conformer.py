"""Conformer-CTC (Gulati et al., 2020) in the layout of NVIDIA NeMo's ConformerEncoder.

    features (B, T, F) -> striding conv subsampling (B, T', D), T' = ceil(T / 4)
    -> N x [FFN/2 -> rel-pos multi-head self-attention -> conv module -> FFN/2 -> LayerNorm]
    -> 1x1 conv decoder -> log_softmax (B, T', V)

Attention uses Transformer-XL relative positions (`pos_bias_u`/`pos_bias_v`, as NeMo's
RelPositionMultiHeadAttention). Parameter names follow NeMo (`encoder.pre_encode.conv.0`,
`encoder.layers.{i}.self_attn.linear_q`, `decoder.decoder_layers.0`, ...), see docs/models.md.

Limited context for streaming: `att_context=(left, right)` lets frame t attend to frames
t - left .. t + right (-1: unlimited); `chunk_size=C` lets frame t attend to every frame of its
own chunk of C output frames and of `left_chunks` earlier chunks (-1: all). With
`causal_conv=True` the depthwise convolutions only look back, and the subsampling's output
frame t depends on input frames < (t + 1) * 4, so with chunks output t depends only on input
frames before the end of t's chunk: < 4 * C * (t // C + 1).
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

# Added to the attention scores of masked keys (finite, so fully masked rows stay NaN-free).
_MASKED_SCORE = -10000.0


@dataclass(frozen=True)
class ConformerConfig(ConfigMixin):
    """Conformer hyper-parameters. The defaults are the "small" size."""

    d_model: int = 176
    n_layers: int = 8
    n_heads: int = 4
    ff_expansion: int = 4
    conv_kernel: int = 31
    conv_norm: Literal["batch_norm", "layer_norm"] = "batch_norm"
    # Time (and frequency) stride of the conv subsampling: a power of two, one conv per factor 2.
    subsampling_factor: int = 4
    # Channels of the subsampling convs; None: d_model (NeMo's default, ~3x the compute of 8
    # layers at d_model 176 on a CPU, hence 64 for "small").
    subsampling_channels: int | None = 64
    dropout: float = 0.1
    attention_dropout: float = 0.1
    # Multiply the subsampled features by sqrt(d_model) before the first block (NeMo xscaling).
    xscaling: bool = True
    # Depthwise convolutions look only at past frames (needed for chunked streaming).
    causal_conv: bool = False
    # Limited attention context in output frames: (left, right), -1 = unlimited.
    att_context: tuple[int, int] | None = None
    # Chunked attention: chunk length in output frames and how many earlier chunks are visible.
    chunk_size: int | None = None
    left_chunks: int = -1

    def __post_init__(self) -> None:
        self._require(self.d_model >= 1, "d_model", "a positive size")
        self._require(self.n_layers >= 1, "n_layers", "at least 1")
        self._require(
            self.n_heads >= 1 and self.d_model % self.n_heads == 0,
            "n_heads",
            f"a divisor of d_model ({self.d_model})",
        )
        self._require(self.ff_expansion >= 1, "ff_expansion", ">= 1")
        self._require(
            self.conv_kernel >= 1 and (self.causal_conv or self.conv_kernel % 2 == 1),
            "conv_kernel",
            "an odd size (any size with causal_conv)",
        )
        self._require(
            self.conv_norm in ("batch_norm", "layer_norm"), "conv_norm", "batch_norm or layer_norm"
        )
        f = self.subsampling_factor
        self._require(f >= 2 and f & (f - 1) == 0, "subsampling_factor", "a power of two >= 2")
        self._require(
            self.subsampling_channels is None or self.subsampling_channels >= 1,
            "subsampling_channels",
            "a positive count or None (d_model)",
        )
        self._require(0.0 <= self.dropout < 1.0, "dropout", "a probability in [0, 1)")
        self._require(
            0.0 <= self.attention_dropout < 1.0, "attention_dropout", "a probability in [0, 1)"
        )
        self._require(
            self.att_context is None or all(c >= -1 for c in self.att_context),
            "att_context",
            "(left, right) frame counts, -1 for unlimited",
        )
        self._require(
            self.chunk_size is None or self.chunk_size >= 1,
            "chunk_size",
            "a positive number of output frames or None",
        )
        self._require(
            self.chunk_size is None or self.att_context is None,
            "chunk_size",
            "None when att_context is set (one kind of limited context at a time)",
        )
        self._require(self.left_chunks >= -1, "left_chunks", ">= 0, or -1 for all")


class ConvSubsampling(nn.Module):
    """NeMo "striding" subsampling: log2(factor) x [Conv2d 3x3 stride 2 + ReLU] + Linear.

    x (B, T, F), lengths (B,) -> (B, ceil(T / factor), D), ceil(lengths / factor).
    Output frame t depends on input frames < (t + 1) * factor (and earlier ones).
    """

    def __init__(self, input_dim: int, channels: int, d_model: int, factor: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        freq = input_dim
        for i in range(int(math.log2(factor))):
            layers += [nn.Conv2d(1 if i == 0 else channels, channels, 3, 2, padding=1), nn.ReLU()]
            freq = (freq - 1) // 2 + 1
        self.conv = nn.Sequential(*layers)  # names conv.0, conv.2, ... as in NeMo
        self.out = nn.Linear(channels * freq, d_model)

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        x = (x * padding_mask(lengths, x.size(1))[..., None]).unsqueeze(1)  # (B, 1, T, F)
        for i in range(0, len(self.conv), 2):
            x = self.conv[i + 1](self.conv[i](x))  # (B, C, T_i, F_i)
            lengths = conv_output_lengths(lengths, 2)
            x = x * padding_mask(lengths, x.size(2))[:, None, :, None]
        return self.out(x.transpose(1, 2).flatten(2)), lengths

    def step(self, x: Tensor, buffers: tuple[TimeBuffer, ...],
             final: bool) -> tuple[Tensor, tuple[TimeBuffer, ...]]:
        """Streaming (eval mode): x (B, T, F) -> (B, T_out, D) newly computable frames.

        Each conv is padded by one zero frame before the first; `final` flushes the rest."""
        x_: Tensor | None = x.unsqueeze(1)  # (B, 1, T, F)
        new_buffers = []
        for i, buffer in zip(range(0, len(self.conv), 2), buffers):
            if x_ is None and buffer.frames is not None:
                x_ = buffer.frames[:, :, :0]
            if x_ is None:
                new_buffers.append(buffer)
                continue
            ready, buffer = buffer.take(x_, 2, 3, 2, 1, final)
            new_buffers.append(buffer)
            conv = self.conv[i]
            x_ = (self.conv[i + 1](F.conv2d(ready, conv.weight, conv.bias, 2, (0, 1)))
                  if ready is not None else None)
        if x_ is None:
            return x.new_zeros(x.size(0), 0, self.out.out_features), tuple(new_buffers)
        return self.out(x_.transpose(1, 2).flatten(2)), tuple(new_buffers)


def relative_positions(length: int, d_model: int, device: torch.device) -> Tensor:
    """Sinusoidal encodings of relative positions length-1 .. -(length-1): (2 * length - 1, D)."""
    positions = torch.arange(length - 1, -length, -1.0, device=device)[:, None]
    inv_freq = torch.exp(
        torch.arange(0, d_model, 2, device=device, dtype=torch.float32)
        * (-math.log(10000.0) / d_model)
    )
    pe = torch.zeros(2 * length - 1, d_model, device=device)
    pe[:, 0::2] = torch.sin(positions * inv_freq)
    pe[:, 1::2] = torch.cos(positions * inv_freq[: d_model // 2])
    return pe


class RelPositionMultiHeadAttention(nn.Module):
    """Multi-head self-attention with Transformer-XL relative positions (NeMo names).

    x (B, T, D), pos_emb (2T - 1, D), mask (B, T, T) bool True = may not attend -> (B, T, D).
    """

    def __init__(self, d_model: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.h, self.d_k = n_heads, d_model // n_heads
        self.linear_q = nn.Linear(d_model, d_model)
        self.linear_k = nn.Linear(d_model, d_model)
        self.linear_v = nn.Linear(d_model, d_model)
        self.linear_out = nn.Linear(d_model, d_model)
        self.linear_pos = nn.Linear(d_model, d_model, bias=False)
        self.pos_bias_u = nn.Parameter(torch.zeros(n_heads, self.d_k))
        self.pos_bias_v = nn.Parameter(torch.zeros(n_heads, self.d_k))
        nn.init.xavier_uniform_(self.pos_bias_u)
        nn.init.xavier_uniform_(self.pos_bias_v)
        self.dropout = nn.Dropout(dropout)

    @staticmethod
    def rel_shift(x: Tensor) -> Tensor:
        """(B, H, T, 2T - 1) scores by relative position -> column j holds position i - j."""
        b, h, t, n = x.shape
        x = F.pad(x, (1, 0)).view(b, h, n + 1, t)
        return x[:, :, 1:].reshape(b, h, t, n)[..., :t]

    def forward(self, x: Tensor, pos_emb: Tensor, mask: Tensor) -> Tensor:
        b, t, _ = x.shape
        q = self.linear_q(x).view(b, t, self.h, self.d_k)  # (B, T, H, d_k)
        k = self.linear_k(x).view(b, t, self.h, self.d_k).transpose(1, 2)  # (B, H, T, d_k)
        v = self.linear_v(x).view(b, t, self.h, self.d_k).transpose(1, 2)
        p = self.linear_pos(pos_emb).view(-1, self.h, self.d_k).permute(1, 2, 0)  # (H, d_k, 2T-1)
        content = torch.matmul((q + self.pos_bias_u).transpose(1, 2), k.transpose(-2, -1))
        position = self.rel_shift(torch.matmul((q + self.pos_bias_v).transpose(1, 2), p))
        scores = (content + position) / math.sqrt(self.d_k)  # (B, H, T, T)
        scores = scores.masked_fill(mask[:, None], _MASKED_SCORE)
        attn = torch.softmax(scores, dim=-1).masked_fill(mask[:, None], 0.0)
        out = torch.matmul(self.dropout(attn), v)  # (B, H, T, d_k)
        return self.linear_out(out.transpose(1, 2).reshape(b, t, -1))  # type: ignore[no-any-return]

    def step(self, x: Tensor, cache: tuple[Tensor, Tensor] | None
             ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """Streaming: one chunk x (B, C, D) attending to itself and to the cached keys and
        values of earlier frames, cache (k, v) each (B, H, M, d_k) or None.

        -> (B, C, D) and the keys and values of cache + chunk, (B, H, M + C, d_k) each.
        """
        b, c, _ = x.shape
        q = self.linear_q(x).view(b, c, self.h, self.d_k)  # (B, C, H, d_k)
        k = self.linear_k(x).view(b, c, self.h, self.d_k).transpose(1, 2)  # (B, H, C, d_k)
        v = self.linear_v(x).view(b, c, self.h, self.d_k).transpose(1, 2)
        if cache is not None:
            k = torch.cat([cache[0], k], dim=2)
            v = torch.cat([cache[1], v], dim=2)
        m = k.size(2) - c
        # Query i (absolute m + i) and key j: relative position m + i - j, from m + C - 1 down
        # to -(C - 1); relative_positions(m + C) row n holds position m + C - 1 - n.
        pos_emb = relative_positions(m + c, x.size(2), x.device).to(x.dtype)
        p = self.linear_pos(pos_emb).view(-1, self.h, self.d_k).permute(1, 2, 0)
        content = torch.matmul((q + self.pos_bias_u).transpose(1, 2), k.transpose(-2, -1))
        position = torch.matmul((q + self.pos_bias_v).transpose(1, 2), p)  # (B, H, C, 2(M+C)-1)
        i = torch.arange(c, device=x.device)[:, None]
        j = torch.arange(m + c, device=x.device)[None, :]
        index = (c - 1 - i + j).expand(b, self.h, c, m + c)
        scores = (content + position.gather(3, index)) / math.sqrt(self.d_k)  # (B, H, C, M + C)
        out = torch.matmul(torch.softmax(scores, dim=-1), v)  # (B, H, C, d_k)
        return self.linear_out(out.transpose(1, 2).reshape(b, c, -1)), (k, v)


class FeedForward(nn.Module):
    """Linear -> Swish -> dropout -> Linear over (B, T, D)."""

    def __init__(self, d_model: int, expansion: int, dropout: float) -> None:
        super().__init__()
        self.linear1 = nn.Linear(d_model, d_model * expansion)
        self.activation = nn.SiLU()
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(d_model * expansion, d_model)

    def forward(self, x: Tensor) -> Tensor:
        x = self.dropout(self.activation(self.linear1(x)))
        return self.linear2(x)  # type: ignore[no-any-return]


class ConvModule(nn.Module):
    """Pointwise conv + GLU -> depthwise conv -> norm -> Swish -> pointwise conv, (B, T, D).

    Frames past the length are zeroed before the depthwise conv, so they cannot leak.
    """

    def __init__(self, d_model: int, kernel: int, norm: str, causal: bool) -> None:
        super().__init__()
        self.padding = (kernel - 1, 0) if causal else ((kernel - 1) // 2, (kernel - 1) // 2)
        self.pointwise_conv1 = nn.Conv1d(d_model, 2 * d_model, 1)
        self.depthwise_conv = nn.Conv1d(d_model, d_model, kernel, groups=d_model)
        self.norm_type = norm
        if norm == "batch_norm":
            self.batch_norm: nn.Module = nn.BatchNorm1d(d_model)
        else:
            self.batch_norm = nn.LayerNorm(d_model)
        self.activation = nn.SiLU()
        self.pointwise_conv2 = nn.Conv1d(d_model, d_model, 1)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        x = F.glu(self.pointwise_conv1(x.transpose(1, 2)), dim=1)  # (B, D, T)
        x = x * mask[:, None, :]
        x = self.depthwise_conv(F.pad(x, self.padding))
        if self.norm_type == "batch_norm":
            x = batch_norm_valid(self.batch_norm, x, mask)
        else:
            x = self.batch_norm(x.transpose(1, 2)).transpose(1, 2)
        x = self.pointwise_conv2(self.activation(x))
        return x.transpose(1, 2)

    def step(self, x: Tensor, cache: Tensor | None) -> tuple[Tensor, Tensor]:
        """Streaming (causal, eval mode): x (B, C, D), cache (B, D, kernel - 1) of the last
        depthwise-conv inputs (None: zeros) -> (B, C, D), new cache."""
        x = F.glu(self.pointwise_conv1(x.transpose(1, 2)), dim=1)  # (B, D, C)
        left = self.padding[0]
        if cache is None:
            cache = x.new_zeros(x.size(0), x.size(1), left)
        x = torch.cat([cache, x], dim=2)
        cache = x[:, :, x.size(2) - left:]
        x = self.depthwise_conv(x)
        if self.norm_type == "batch_norm":
            x = self.batch_norm(x)
        else:
            x = self.batch_norm(x.transpose(1, 2)).transpose(1, 2)
        x = self.pointwise_conv2(self.activation(x))
        return x.transpose(1, 2), cache


class ConformerLayer(nn.Module):
    """One Conformer block (macaron FFNs with half-step residuals), (B, T, D) -> (B, T, D)."""

    def __init__(self, config: ConformerConfig) -> None:
        super().__init__()
        d = config.d_model
        self.norm_feed_forward1 = nn.LayerNorm(d)
        self.feed_forward1 = FeedForward(d, config.ff_expansion, config.dropout)
        self.norm_self_att = nn.LayerNorm(d)
        self.self_attn = RelPositionMultiHeadAttention(d, config.n_heads, config.attention_dropout)
        self.norm_conv = nn.LayerNorm(d)
        self.conv = ConvModule(d, config.conv_kernel, config.conv_norm, config.causal_conv)
        self.norm_feed_forward2 = nn.LayerNorm(d)
        self.feed_forward2 = FeedForward(d, config.ff_expansion, config.dropout)
        self.dropout = nn.Dropout(config.dropout)
        self.norm_out = nn.LayerNorm(d)

    def forward(self, x: Tensor, pos_emb: Tensor, att_mask: Tensor, pad_mask: Tensor) -> Tensor:
        x = x + 0.5 * self.dropout(self.feed_forward1(self.norm_feed_forward1(x)))
        x = x + self.dropout(self.self_attn(self.norm_self_att(x), pos_emb, att_mask))
        x = x + self.dropout(self.conv(self.norm_conv(x), pad_mask))
        x = x + 0.5 * self.dropout(self.feed_forward2(self.norm_feed_forward2(x)))
        return self.norm_out(x)  # type: ignore[no-any-return]

    def step(self, x: Tensor, cache: "LayerCache") -> tuple[Tensor, "LayerCache"]:
        """Streaming (eval mode): one chunk (B, C, D) -> (B, C, D) and the new cache, keeping
        the keys/values of the last `keep` frames (None: all)."""
        x = x + 0.5 * self.feed_forward1(self.norm_feed_forward1(x))
        y, (k, v) = self.self_attn.step(self.norm_self_att(x), cache.attention)
        x = x + y
        y, conv = self.conv.step(self.norm_conv(x), cache.conv)
        x = x + y
        x = x + 0.5 * self.feed_forward2(self.norm_feed_forward2(x))
        if cache.keep is not None:
            k, v = k[:, :, k.size(2) - min(cache.keep, k.size(2)):], \
                v[:, :, v.size(2) - min(cache.keep, v.size(2)):]
        return self.norm_out(x), LayerCache((k, v), conv, cache.keep)


@dataclass(frozen=True)
class LayerCache:
    """Streaming state of one Conformer layer: attention keys/values (B, H, M, d_k) of the
    visible earlier frames, the depthwise conv's last inputs (B, D, kernel - 1), and how many
    earlier frames stay visible (`left_chunks * chunk_size`; None: all)."""

    attention: tuple[Tensor, Tensor] | None = None
    conv: Tensor | None = None
    keep: int | None = None


@dataclass(frozen=True)
class ConformerState:
    """Streaming state of a chunked causal Conformer (see `Conformer.stream_step`).

    `subsampling`: per subsampling conv, its left context and unconsumed frames; `pending`:
    subsampled frames (B, < chunk_size, D) waiting for their chunk to fill; `layers`: one
    `LayerCache` per block.
    """

    subsampling: tuple[TimeBuffer, ...] = ()
    pending: Tensor | None = None
    layers: tuple[LayerCache, ...] = ()
    finished: bool = False


class ConformerEncoder(nn.Module):
    """Subsampling + Conformer blocks: (B, T, F), (B,) -> (B, T', D), (B,)."""

    def __init__(self, config: ConformerConfig, input_dim: int) -> None:
        super().__init__()
        self.config = config
        channels = config.subsampling_channels or config.d_model
        self.pre_encode = ConvSubsampling(
            input_dim, channels, config.d_model, config.subsampling_factor
        )
        self.xscale = math.sqrt(config.d_model) if config.xscaling else 1.0
        self.dropout = nn.Dropout(config.dropout)
        self.layers = nn.ModuleList(ConformerLayer(config) for _ in range(config.n_layers))

    def context_mask(self, length: int, device: torch.device) -> Tensor | None:
        """(T, T) bool, True where frame i may not attend to frame j; None: no limit."""
        cfg = self.config
        i = torch.arange(length, device=device)[:, None]
        j = torch.arange(length, device=device)[None, :]
        if cfg.chunk_size is not None:
            ci, cj = i // cfg.chunk_size, j // cfg.chunk_size
            blocked = cj > ci
            if cfg.left_chunks >= 0:
                blocked |= cj < ci - cfg.left_chunks
            return blocked
        if cfg.att_context is not None:
            left, right = cfg.att_context
            blocked = torch.zeros(length, length, dtype=torch.bool, device=device)
            if left >= 0:
                blocked |= j < i - left
            if right >= 0:
                blocked |= j > i + right
            return blocked
        return None

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        x, lengths = self.pre_encode(x, lengths)  # (B, T', D)
        x = self.dropout(x * self.xscale)
        t = x.size(1)
        pos_emb = relative_positions(t, x.size(2), x.device).to(x.dtype)  # (2T' - 1, D)
        pad_mask = padding_mask(lengths, t)  # (B, T') True = valid
        att_mask = ~pad_mask[:, None, :]  # (B, 1, T') keys past the length
        context = self.context_mask(t, x.device)
        att_mask = att_mask if context is None else att_mask | context[None]
        att_mask = att_mask.expand(-1, t, -1)  # (B, T', T')
        for layer in self.layers:
            x = layer(x, pos_emb, att_mask, pad_mask)
        return x, lengths


class ConvDecoder(nn.Module):
    """1x1 conv to the vocabulary (NeMo ConvASRDecoder): (B, T, D) -> logits (B, T, V)."""

    def __init__(self, d_model: int, vocab_size: int) -> None:
        super().__init__()
        self.decoder_layers = nn.Sequential(nn.Conv1d(d_model, vocab_size, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.decoder_layers(x.transpose(1, 2)).transpose(1, 2)  # type: ignore[no-any-return]


class Conformer(nn.Module):
    """Conformer-CTC acoustic model.

    forward(features (B, T, F), lengths (B,)) -> (log_probs (B, T', V) float32, out_lengths (B,))
    with T' = ceil(T / subsampling) and out_lengths = ceil(lengths / subsampling).
    """

    def __init__(self, config: ConformerConfig, input_dim: int, vocab_size: int) -> None:
        super().__init__()
        self.config = config
        self.input_dim = input_dim
        self.vocab_size = vocab_size
        self.subsampling: int = config.subsampling_factor
        self.encoder = ConformerEncoder(config, input_dim)
        self.decoder = ConvDecoder(config.d_model, vocab_size)

    def output_lengths(self, lengths: Tensor) -> Tensor:
        """ceil(lengths / subsampling), as int64 (each stride-2 conv gives ceil(L / 2))."""
        for _ in range(int(math.log2(self.subsampling))):
            lengths = conv_output_lengths(lengths, 2)
        return lengths.long()

    def forward(self, features: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """features (B, T, F), lengths (B,) -> log_probs (B, T', V) float32, out_lengths (B,)."""
        check_inputs(features, lengths, self.input_dim)
        x, lengths = self.encoder(features, lengths)
        return F.log_softmax(self.decoder(x).float(), dim=-1), lengths.long()

    # -- streaming ------------------------------------------------------------------------
    @property
    def streamable(self) -> bool:
        """Whether `stream_step` works: chunked attention (`chunk_size`) and `causal_conv`."""
        return self.config.chunk_size is not None and self.config.causal_conv

    def initial_state(self) -> ConformerState:
        """The state before the first `stream_step`."""
        cfg = self.config
        keep = None if cfg.left_chunks < 0 else cfg.left_chunks * (cfg.chunk_size or 0)
        n_sub = int(math.log2(self.subsampling))
        return ConformerState(subsampling=(TimeBuffer(),) * n_sub,
                              layers=(LayerCache(keep=keep),) * cfg.n_layers)

    @torch.no_grad()
    def stream_step(self, features: Tensor, state: ConformerState,
                    final: bool = False) -> tuple[Tensor, ConformerState]:
        """Streaming inference (eval mode): the next feature frames of B streams in, the output
        frames of every completed chunk out.

        features (B, T, F) (T may be 0) -> log_probs (B, T_out, V) float32 and the new state.
        `final=True` flushes the last, possibly shorter, chunk. Over a stream the outputs
        concatenated equal `forward` on all its frames; a chunk is emitted once input frame
        4 * chunk_size * (chunk + 1) - 1 has arrived. With `left_chunks=-1` the attention cache
        (and the cost of a chunk) grows with the stream: set `left_chunks` to stream long audio.
        """
        if not self.streamable:
            raise ValueError("only Conformers with chunk_size and causal_conv=True can stream "
                             "step by step")
        if state.finished:
            raise ValueError("this stream state is finished; start again from initial_state()")
        if features.dim() != 3 or features.size(-1) != self.input_dim:
            raise ValueError(f"expected features of shape (batch, time, {self.input_dim}), "
                             f"got {tuple(features.shape)}")
        encoder = self.encoder
        chunk = self.config.chunk_size
        assert chunk is not None
        x, subsampling = encoder.pre_encode.step(features, state.subsampling, final)
        x = x * encoder.xscale
        if state.pending is not None:
            x = torch.cat([state.pending, x], dim=1)
        layers = state.layers
        outputs = []
        start = 0
        while x.size(1) - start >= chunk or (final and x.size(1) > start):
            y = x[:, start: start + chunk]
            new_layers = []
            for layer, cache in zip(encoder.layers, layers):
                y, cache = layer.step(y, cache)
                new_layers.append(cache)
            layers = tuple(new_layers)
            outputs.append(y)
            start += chunk
        new_state = ConformerState(subsampling, x[:, start:], layers, final)
        if not outputs:
            return features.new_zeros(features.size(0), 0, self.vocab_size), new_state
        logits = self.decoder(torch.cat(outputs, dim=1))
        return F.log_softmax(logits.float(), dim=-1), new_state

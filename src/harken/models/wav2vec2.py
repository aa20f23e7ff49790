"""wav2vec 2.0 / HuBERT CTC models (Baevski et al., 2020; Hsu et al., 2021) reading raw audio.

    samples (B, N, 1) -> conv feature extractor (7 strided convs: B, T', 512)
    -> LayerNorm + Linear (B, T', D) -> + grouped positional conv -> Transformer
    -> Linear CTC head -> log_softmax (B, T', V),   T' = conv_output_lengths(N) (~N / 320)

Two layouts, as in Hugging Face transformers: `layer_norm_first=False` (wav2vec2-base, HuBERT
base: post-LN Transformer, GroupNorm in the first conv only) and `layer_norm_first=True`
(wav2vec2-large-lv60, "stable layer norm": pre-LN layers, a LayerNorm after every conv when
`feat_extract_norm="layer"`). Parameter names are transformers' without the `wav2vec2.` /
`hubert.` prefix (`feature_extractor.conv_layers.0.conv.weight`, `encoder.layers.3.attention.
q_proj.weight`, `lm_head.weight`); the positional conv's weight norm is folded into a plain
weight on import.

Samples past a sequence's length never change its outputs: the first conv's GroupNorm takes
its statistics from the valid frames only, padded frames are zeroed before the positional conv
and masked out of attention. (transformers normalises over the padding too, so harken equals
transformers on each utterance alone.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harken.models.registry import ConfigMixin, check_inputs, padding_mask

ACTIVATIONS = {"gelu": nn.GELU, "gelu_new": lambda: nn.GELU(approximate="tanh"),
               "relu": nn.ReLU, "swish": nn.SiLU, "silu": nn.SiLU}
_GROUP_NORM_EPS = 1e-5  # torch's GroupNorm/LayerNorm default, used by transformers' convs


@dataclass(frozen=True)
class Wav2Vec2Config(ConfigMixin):
    """Hyper-parameters (transformers' names). The defaults are wav2vec2-base (~94 M)."""

    conv_dim: tuple[int, ...] = (512,) * 7
    conv_kernel: tuple[int, ...] = (10, 3, 3, 3, 3, 2, 2)
    conv_stride: tuple[int, ...] = (5, 2, 2, 2, 2, 2, 2)
    conv_bias: bool = False
    feat_extract_norm: Literal["group", "layer"] = "group"
    feat_extract_activation: str = "gelu"
    feat_proj_layer_norm: bool = True
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    num_conv_pos_embeddings: int = 128
    num_conv_pos_embedding_groups: int = 16
    layer_norm_first: bool = False
    layer_norm_eps: float = 1e-5
    dropout: float = 0.1

    def __post_init__(self) -> None:
        n = len(self.conv_dim)
        self._require(n >= 1 and all(c >= 1 for c in self.conv_dim), "conv_dim",
                      "positive channel counts")
        self._require(len(self.conv_kernel) == n and all(k >= 1 for k in self.conv_kernel),
                      "conv_kernel", f"{n} positive kernel sizes")
        self._require(len(self.conv_stride) == n and all(s >= 1 for s in self.conv_stride),
                      "conv_stride", f"{n} positive strides")
        self._require(self.feat_extract_norm in ("group", "layer"), "feat_extract_norm",
                      "'group' or 'layer'")
        for key in ("feat_extract_activation", "hidden_act"):
            self._require(getattr(self, key) in ACTIVATIONS, key, f"one of {sorted(ACTIVATIONS)}")
        self._require(self.hidden_size % max(self.num_attention_heads, 1) == 0
                      and self.num_attention_heads >= 1, "num_attention_heads",
                      f"a divisor of hidden_size ({self.hidden_size})")
        self._require(self.hidden_size % max(self.num_conv_pos_embedding_groups, 1) == 0
                      and self.num_conv_pos_embedding_groups >= 1,
                      "num_conv_pos_embedding_groups", "a divisor of hidden_size")
        for key in ("hidden_size", "num_hidden_layers", "intermediate_size",
                    "num_conv_pos_embeddings"):
            self._require(getattr(self, key) >= 1, key, "a positive size")
        self._require(0.0 <= self.dropout < 1.0, "dropout", "a probability in [0, 1)")

    @property
    def subsampling(self) -> int:
        """Samples per output frame: the product of the conv strides (320 for the defaults)."""
        total = 1
        for s in self.conv_stride:
            total *= s
        return total


def _conv_lengths(lengths: Tensor, kernel: int, stride: int) -> Tensor:
    """Frames out of an unpadded conv: floor((L - kernel) / stride) + 1, at least 0."""
    return (torch.div(lengths - kernel, stride, rounding_mode="floor") + 1).clamp(min=0)


class ConvLayer(nn.Module):
    """conv -> norm ("group": per-channel over valid frames, "layer": per frame, None) -> act.

    x (B, C, T), lengths (B,) -> (B, C', T'), lengths out.
    """

    def __init__(self, config: Wav2Vec2Config, index: int, norm: str | None,
                 input_dim: int = 1) -> None:
        super().__init__()
        c_in = input_dim if index == 0 else config.conv_dim[index - 1]
        c_out = config.conv_dim[index]
        self.kernel, self.stride = config.conv_kernel[index], config.conv_stride[index]
        self.conv = nn.Conv1d(c_in, c_out, self.kernel, self.stride, bias=config.conv_bias)
        self.norm = norm
        if norm == "group":
            self.layer_norm: nn.Module = nn.GroupNorm(c_out, c_out, eps=_GROUP_NORM_EPS)
        elif norm == "layer":
            self.layer_norm = nn.LayerNorm(c_out, eps=_GROUP_NORM_EPS)
        self.activation = ACTIVATIONS[config.feat_extract_activation]()

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        x = self.conv(x)
        lengths = _conv_lengths(lengths, self.kernel, self.stride)
        if self.norm == "group":  # GroupNorm with one channel per group, valid frames only
            mask = padding_mask(lengths, x.size(2))[:, None, :].to(x.dtype)  # (B, 1, T)
            count = lengths.clamp(min=1)[:, None, None].to(x.dtype)
            mean = (x * mask).sum(dim=2, keepdim=True) / count
            var = ((x - mean).square() * mask).sum(dim=2, keepdim=True) / count
            x = (x - mean) / torch.sqrt(var + self.layer_norm.eps)
            x = x * self.layer_norm.weight[:, None] + self.layer_norm.bias[:, None]
        elif self.norm == "layer":
            x = self.layer_norm(x.transpose(1, 2)).transpose(1, 2)
        return self.activation(x), lengths


class FeatureExtractor(nn.Module):
    """The strided convs: samples (B, 1, N) (or frames (B, F, N)), (B,) -> (B, conv_dim[-1], T'),
    (B,)."""

    def __init__(self, config: Wav2Vec2Config, input_dim: int = 1) -> None:
        super().__init__()
        norms = [("group" if i == 0 else None) if config.feat_extract_norm == "group" else "layer"
                 for i in range(len(config.conv_dim))]
        self.conv_layers = nn.ModuleList(ConvLayer(config, i, norm, input_dim)
                                         for i, norm in enumerate(norms))

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        for layer in self.conv_layers:
            x, lengths = layer(x, lengths)
        return x, lengths


class FeatureProjection(nn.Module):
    """(B, T, C) -> optional LayerNorm -> Linear -> (B, T, D)."""

    def __init__(self, config: Wav2Vec2Config) -> None:
        super().__init__()
        self.layer_norm = (nn.LayerNorm(config.conv_dim[-1], eps=config.layer_norm_eps)
                           if config.feat_proj_layer_norm else nn.Identity())
        self.projection = nn.Linear(config.conv_dim[-1], config.hidden_size)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.projection(self.layer_norm(x)))  # type: ignore[no-any-return]


class PositionalConv(nn.Module):
    """Grouped conv over time as relative position embedding: (B, T, D) -> (B, T, D)."""

    def __init__(self, config: Wav2Vec2Config) -> None:
        super().__init__()
        k = config.num_conv_pos_embeddings
        self.conv = nn.Conv1d(config.hidden_size, config.hidden_size, k, padding=k // 2,
                              groups=config.num_conv_pos_embedding_groups)
        self.remove = 1 if k % 2 == 0 else 0  # an even kernel gives one frame too many
        self.activation = ACTIVATIONS[config.feat_extract_activation]()

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv(x.transpose(1, 2))
        if self.remove:
            y = y[:, :, : -self.remove]
        return self.activation(y).transpose(1, 2)  # type: ignore[no-any-return]


class Attention(nn.Module):
    """Multi-head self-attention: x (B, T, D), key mask (B, T) True = valid -> (B, T, D)."""

    def __init__(self, d_model: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.h, self.d_k = n_heads, d_model // n_heads
        self.dropout = dropout
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model)
        self.v_proj = nn.Linear(d_model, d_model)
        self.out_proj = nn.Linear(d_model, d_model)

    def forward(self, x: Tensor, valid: Tensor) -> Tensor:
        b, t, _ = x.shape
        q, k, v = (proj(x).view(b, t, self.h, self.d_k).transpose(1, 2)
                   for proj in (self.q_proj, self.k_proj, self.v_proj))  # (B, H, T, d_k)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=valid[:, None, None, :],
            dropout_p=self.dropout if self.training else 0.0)
        return self.out_proj(out.transpose(1, 2).reshape(b, t, -1))  # type: ignore[no-any-return]


class FeedForward(nn.Module):
    """Linear -> activation -> Linear (transformers' intermediate_dense / output_dense)."""

    def __init__(self, config: Wav2Vec2Config) -> None:
        super().__init__()
        self.intermediate_dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.activation = ACTIVATIONS[config.hidden_act]()
        self.output_dense = nn.Linear(config.intermediate_size, config.hidden_size)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: Tensor) -> Tensor:
        x = self.dropout(self.activation(self.intermediate_dense(x)))
        return self.dropout(self.output_dense(x))  # type: ignore[no-any-return]


class EncoderLayer(nn.Module):
    """One Transformer layer, post-LN or (`layer_norm_first`) pre-LN: (B, T, D) -> (B, T, D)."""

    def __init__(self, config: Wav2Vec2Config) -> None:
        super().__init__()
        self.pre_norm = config.layer_norm_first
        d = config.hidden_size
        self.attention = Attention(d, config.num_attention_heads, config.dropout)
        self.dropout = nn.Dropout(config.dropout)
        self.layer_norm = nn.LayerNorm(d, eps=config.layer_norm_eps)
        self.feed_forward = FeedForward(config)
        self.final_layer_norm = nn.LayerNorm(d, eps=config.layer_norm_eps)

    def forward(self, x: Tensor, valid: Tensor) -> Tensor:
        if self.pre_norm:
            x = x + self.dropout(self.attention(self.layer_norm(x), valid))
            return x + self.feed_forward(self.final_layer_norm(x))  # type: ignore[no-any-return]
        x = self.layer_norm(x + self.dropout(self.attention(x, valid)))
        return self.final_layer_norm(x + self.feed_forward(x))  # type: ignore[no-any-return]


class Encoder(nn.Module):
    """Positional conv + Transformer layers: (B, T, D), valid (B, T) -> (B, T, D)."""

    def __init__(self, config: Wav2Vec2Config) -> None:
        super().__init__()
        self.pre_norm = config.layer_norm_first
        self.pos_conv_embed = PositionalConv(config)
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.dropout)
        self.layers = nn.ModuleList(EncoderLayer(config) for _ in range(config.num_hidden_layers))

    def forward(self, x: Tensor, valid: Tensor) -> Tensor:
        x = x * valid[:, :, None].to(x.dtype)
        x = x + self.pos_conv_embed(x)
        if not self.pre_norm:
            x = self.layer_norm(x)
        x = self.dropout(x)
        for layer in self.layers:
            x = layer(x, valid)
        return self.layer_norm(x) if self.pre_norm else x


class Wav2Vec2(nn.Module):
    """wav2vec 2.0 / HuBERT CTC model on raw samples (`FeatureConfig(kind="waveform")`,
    `input_dim` 1; with F > 1 the first conv reads F-dimensional frames instead).

    forward(samples (B, N, 1), lengths (B,)) -> (log_probs (B, T', V) float32, out_lengths (B,))
    with out_lengths = output_lengths(lengths).
    """

    def __init__(self, config: Wav2Vec2Config, input_dim: int, vocab_size: int) -> None:
        super().__init__()
        self.config = config
        self.input_dim = input_dim
        self.vocab_size = vocab_size
        self.subsampling: int = config.subsampling
        self.feature_extractor = FeatureExtractor(config, input_dim)
        self.feature_projection = FeatureProjection(config)
        self.encoder = Encoder(config)
        self.lm_head = nn.Linear(config.hidden_size, vocab_size)

    def output_lengths(self, lengths: Tensor) -> Tensor:
        """Frames out of the conv feature extractor for `lengths` samples, as int64."""
        for kernel, stride in zip(self.config.conv_kernel, self.config.conv_stride):
            lengths = _conv_lengths(lengths, kernel, stride)
        return lengths.long()

    def forward(self, features: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """samples (B, N, 1), lengths (B,) -> log_probs (B, T', V) float32, out_lengths (B,)."""
        check_inputs(features, lengths, self.input_dim)
        x, lengths = self.feature_extractor(features.transpose(1, 2), lengths)  # (B, C, T')
        x = self.feature_projection(x.transpose(1, 2))  # (B, T', D)
        valid = padding_mask(lengths, x.size(1))
        x = self.encoder(x, valid)
        return F.log_softmax(self.lm_head(x).float(), dim=-1), lengths.long()

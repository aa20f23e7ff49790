"""Convolutional CTC models in the layout of NVIDIA NeMo's ConvASREncoder: Jasper, QuartzNet,
Citrinet (the family harken imports from `.nemo` archives, see docs/importing.md).

    features (B, T, F) -> (B, F, T) -> blocks -> 1x1 conv decoder -> log_softmax (B, T', V)

Each block is described by one entry of every per-block tuple of `JasperConfig` (NeMo's
`encoder.jasper` list): `repeat` x [conv k (depthwise + pointwise when `separable`) ->
BatchNorm -> activation -> dropout], without the activation and dropout after the last repeat;
then squeeze-and-excitation (`se`), the residual branches (a 1x1 conv + BatchNorm from the
block's input, or from the input of every earlier dense block with `residual_dense`), and the
activation + dropout. Every conv zeroes its input past the length (NeMo MaskedConv1d), so
padding never changes the outputs. Parameter names are NeMo's
(`encoder.encoder.{i}.mconv.{j}.conv.weight`, `...res.{k}.0.conv.weight`,
`decoder.decoder_layers.0.weight`), so NeMo weights load by name; the decoder rows are
reordered on import to put the CTC blank first.

`T' = ceil(T / prod(stride))` (a stride applies once per block: to every repeat unless
`stride_last`, but NeMo's pretrained models stride only blocks of one repeat or use
`stride_last`; `output_lengths` follows each conv exactly).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harken.models.citrinet import ConvDecoder
from harken.models.registry import ConfigMixin, batch_norm_valid, check_inputs, padding_mask

# NeMo's JasperBlock BatchNorm epsilon (kept so imported running statistics mean the same).
_BN_EPS = 1e-3

ACTIVATIONS = {"relu": nn.ReLU, "swish": nn.SiLU, "silu": nn.SiLU, "gelu": nn.GELU,
               "tanh": nn.Tanh, "selu": nn.SELU}


@dataclass(frozen=True)
class JasperConfig(ConfigMixin):
    """Per-block settings (one entry per block, NeMo's `encoder.jasper` list) and shared ones.

    The defaults are QuartzNet 5x5 (Kriman et al., 2020): ~6.7 M parameters with 64 mels.
    """

    filters: tuple[int, ...] = (256, 256, 256, 512, 512, 512, 512, 1024)
    repeat: tuple[int, ...] = (1, 5, 5, 5, 5, 5, 1, 1)
    kernel: tuple[int, ...] = (33, 33, 39, 51, 63, 75, 87, 1)
    stride: tuple[int, ...] = (2, 1, 1, 1, 1, 1, 1, 1)
    dilation: tuple[int, ...] = (1, 1, 1, 1, 1, 1, 2, 1)
    residual: tuple[bool, ...] = (False, True, True, True, True, True, False, False)
    separable: tuple[bool, ...] = (True, True, True, True, True, True, True, False)
    se: tuple[bool, ...] = (False,) * 8
    se_reduction: tuple[int, ...] = (8,) * 8
    stride_last: tuple[bool, ...] = (False,) * 8
    residual_dense: tuple[bool, ...] = (False,) * 8
    activation: str = "relu"
    dropout: float = 0.0

    def __post_init__(self) -> None:
        n = len(self.filters)
        self._require(n >= 1, "filters", "at least one block")
        for key in ("repeat", "kernel", "stride", "dilation", "residual", "separable", "se",
                    "se_reduction", "stride_last", "residual_dense"):
            self._require(len(getattr(self, key)) == n, key, f"{n} values, one per block")
        for key in ("filters", "repeat", "kernel", "stride", "dilation", "se_reduction"):
            self._require(all(v >= 1 for v in getattr(self, key)), key, "positive values")
        self._require(all(k % 2 == 1 for k in self.kernel), "kernel", "odd kernel sizes")
        self._require(all(s == 1 or d == 1 for s, d in zip(self.stride, self.dilation)),
                      "dilation", "1 in strided blocks (NeMo's 'same' padding)")
        self._require(self.activation in ACTIVATIONS, "activation", f"one of {sorted(ACTIVATIONS)}")
        self._require(0.0 <= self.dropout < 1.0, "dropout", "a probability in [0, 1)")

    @property
    def conv_strides(self) -> tuple[int, ...]:
        """The stride of every strided conv in order (a block strides each repeat unless
        `stride_last`)."""
        strides: list[int] = []
        for stride, repeat, last in zip(self.stride, self.repeat, self.stride_last):
            if stride > 1:
                strides += [stride] * (1 if last else repeat)
        return tuple(strides)

    @property
    def subsampling(self) -> int:
        """Total time stride."""
        total = 1
        for s in self.conv_strides:
            total *= s
        return total


def _conv_lengths(lengths: Tensor, stride: int) -> Tensor:
    """Frames out of a 'same'-padded conv: floor((L - 1) / stride) + 1 (NeMo's calc_length)."""
    return torch.div(lengths - 1, stride, rounding_mode="floor") + 1


class MaskedConv1d(nn.Module):
    """Conv1d with 'same' padding that zeroes input frames past the length (NeMo MaskedConv1d).

    (B, C, T), (B,) -> (B, C', ceil(T / stride)), new lengths.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int = 1,
                 dilation: int = 1, groups: int = 1) -> None:
        super().__init__()
        self.stride = stride
        self.conv = nn.Conv1d(in_channels, out_channels, kernel, stride=stride,
                              padding=dilation * (kernel - 1) // 2, dilation=dilation,
                              groups=groups, bias=False)

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        x = self.conv(x * padding_mask(lengths, x.size(2))[:, None, :].to(x.dtype))
        return x, _conv_lengths(lengths, self.stride)


class SqueezeExcite(nn.Module):
    """Channel gating from the mean over the valid frames (NeMo SqueezeExcite, global context).

    x (B, C, T), lengths (B,) -> x * sigmoid(fc(mean over t < length of x)), lengths.
    """

    def __init__(self, channels: int, reduction: int, activation: str) -> None:
        super().__init__()
        hidden = channels // reduction
        self.fc = nn.Sequential(nn.Linear(channels, hidden, bias=False),
                                ACTIVATIONS[activation](),
                                nn.Linear(hidden, channels, bias=False))

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        mask = padding_mask(lengths, x.size(2))[:, None, :].to(x.dtype)  # (B, 1, T)
        x = x * mask
        pooled = x.sum(dim=2) / lengths.clamp(min=1)[:, None].to(x.dtype)  # (B, C)
        return x * torch.sigmoid(self.fc(pooled))[:, :, None], lengths


class JasperBlock(nn.Module):
    """One block: xs (outputs of the dense-residual blocks so far, the last is the input),
    lengths -> (B, filters, T'), new lengths."""

    def __init__(self, config: JasperConfig, index: int, in_channels: int,
                 residual_channels: list[int]) -> None:
        super().__init__()
        c, i = config, index
        out, kernel, dilation = c.filters[i], c.kernel[i], c.dilation[i]
        layers: list[nn.Module] = []
        channels = in_channels
        for r in range(c.repeat[i]):
            last = r == c.repeat[i] - 1
            stride = c.stride[i] if last or not c.stride_last[i] else 1
            if c.separable[i]:
                layers += [MaskedConv1d(channels, channels, kernel, stride, dilation,
                                        groups=channels),
                           MaskedConv1d(channels, out, 1)]
            else:
                layers.append(MaskedConv1d(channels, out, kernel, stride, dilation))
            layers.append(nn.BatchNorm1d(out, eps=_BN_EPS))
            if not last:
                layers += [ACTIVATIONS[c.activation](), nn.Dropout(c.dropout)]
            channels = out
        if c.se[i]:
            layers.append(SqueezeExcite(out, c.se_reduction[i], c.activation))
        self.mconv = nn.ModuleList(layers)
        self.res = None
        if c.residual[i]:
            # The residual's stride is the block's (NeMo residual_mode "stride_add" when the
            # block strides, the only way its shapes add up).
            self.res = nn.ModuleList(
                nn.ModuleList([MaskedConv1d(ch, out, 1, c.stride[i]),
                               nn.BatchNorm1d(out, eps=_BN_EPS)])
                for ch in residual_channels)
        self.mout = nn.Sequential(ACTIVATIONS[c.activation](), nn.Dropout(c.dropout))

    def forward(self, xs: list[Tensor], lengths: Tensor) -> tuple[Tensor, Tensor]:
        out, out_lengths = xs[-1], lengths
        for layer in self.mconv:
            if isinstance(layer, (MaskedConv1d, SqueezeExcite)):
                out, out_lengths = layer(out, out_lengths)
            elif isinstance(layer, nn.BatchNorm1d):
                out = batch_norm_valid(layer, out, padding_mask(out_lengths, out.size(2)))
            else:
                out = layer(out)
        if self.res is not None:
            for x, branch in zip(xs, self.res):
                conv, norm = branch
                res, res_lengths = conv(x, lengths)
                out = out + batch_norm_valid(norm, res, padding_mask(res_lengths, res.size(2)))
        return self.mout(out), out_lengths


class JasperEncoder(nn.Module):
    """The blocks: (B, F, T), (B,) -> (B, filters[-1], T'), (B,)."""

    def __init__(self, config: JasperConfig, input_dim: int) -> None:
        super().__init__()
        # A dense block's output also feeds the residuals of later blocks (NeMo: only when
        # the block has a residual itself).
        self.dense = tuple(d and r for d, r in zip(config.residual_dense, config.residual))
        blocks = []
        channels, panes = input_dim, []  # panes: inputs of the dense blocks so far
        for i in range(len(config.filters)):
            residual_channels = [channels]
            if config.residual_dense[i]:
                panes.append(channels)
                residual_channels = list(panes)
            blocks.append(JasperBlock(config, i, channels, residual_channels))
            channels = config.filters[i]
        self.encoder = nn.ModuleList(blocks)

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        xs = [x]
        for block, dense in zip(self.encoder, self.dense):
            out, lengths = block(xs, lengths)
            xs = xs + [out] if dense else [out]
        return xs[-1], lengths


class Jasper(nn.Module):
    """Jasper / QuartzNet / Citrinet CTC acoustic model.

    forward(features (B, T, F), lengths (B,)) -> (log_probs (B, T', V) float32, out_lengths (B,))
    with T' = output_lengths(T).
    """

    def __init__(self, config: JasperConfig, input_dim: int, vocab_size: int) -> None:
        super().__init__()
        self.config = config
        self.input_dim = input_dim
        self.vocab_size = vocab_size
        self.subsampling: int = config.subsampling
        self.encoder = JasperEncoder(config, input_dim)
        self.decoder = ConvDecoder(config.filters[-1], vocab_size)

    def output_lengths(self, lengths: Tensor) -> Tensor:
        """Each strided conv gives floor((L - 1) / stride) + 1 frames, as int64."""
        for stride in self.config.conv_strides:
            lengths = _conv_lengths(lengths, stride)
        return lengths.long()

    def forward(self, features: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """features (B, T, F), lengths (B,) -> log_probs (B, T', V) float32, out_lengths (B,)."""
        check_inputs(features, lengths, self.input_dim)
        x, lengths = self.encoder(features.transpose(1, 2), lengths)
        return F.log_softmax(self.decoder(x).float(), dim=-1), lengths.long()

"""Citrinet (Majumdar et al., 2021) in the layout of NVIDIA NeMo's ConvASREncoder/JasperBlock.

    features (B, T, F) -> (B, F, T) -> prologue block -> mega-blocks of separable-conv blocks
    (the first block of each mega-block strides time by 2) -> epilogue block
    -> 1x1 conv decoder -> log_softmax (B, T', V),   T' = ceil(T / 8) with three mega-blocks

A block is R repeats of [depthwise conv k -> pointwise conv -> BatchNorm -> ReLU -> dropout]
(no ReLU/dropout after the last repeat), squeeze-and-excitation pooled over the valid frames,
a 1x1 conv + BatchNorm residual (with the block's stride), then ReLU + dropout. Every conv
zeroes its input past the length (NeMo MaskedConv1d), so padding cannot leak. Parameter names
follow NeMo (`encoder.encoder.{i}.mconv.{j}.conv.weight`, `...res.0.0.conv.weight`,
`decoder.decoder_layers.0.weight`), see docs/models.md for the mapping.

Citrinet is not streamable: squeeze-and-excitation averages over the whole utterance.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harken.models.registry import (
    ConfigMixin,
    batch_norm_valid,
    check_inputs,
    conv_output_lengths,
    padding_mask,
)

# NeMo's JasperBlock BatchNorm settings (kept so imported running statistics mean the same).
_BN_EPS = 1e-3


@dataclass(frozen=True)
class CitrinetConfig(ConfigMixin):
    """Citrinet hyper-parameters. The defaults are the "small" size (Citrinet-256)."""

    prologue_filters: int = 256
    prologue_kernel: int = 5
    filters: int = 256
    # Kernel size of every block, one tuple per mega-block (Citrinet paper, Table 1).
    block_kernels: tuple[tuple[int, ...], ...] = (
        (11, 13, 15, 17, 19, 21),
        (13, 15, 17, 19, 21, 23, 25),
        (25, 27, 29, 31, 33, 35, 37, 39),
    )
    # Time stride of the first block of each mega-block (2, 2, 2: total stride 8).
    block_strides: tuple[int, ...] = (2, 2, 2)
    repeat: int = 5
    epilogue_filters: int = 640
    epilogue_kernel: int = 41
    se_reduction: int = 8
    dropout: float = 0.1

    def __post_init__(self) -> None:
        kernels = [self.prologue_kernel, self.epilogue_kernel] + [
            k for block in self.block_kernels for k in block
        ]
        self._require(
            all(k >= 1 and k % 2 == 1 for k in kernels),
            "block_kernels",
            "odd kernel sizes (prologue, blocks and epilogue)",
        )
        self._require(
            len(self.block_kernels) >= 1 and all(self.block_kernels),
            "block_kernels",
            "at least one mega-block of at least one block",
        )
        self._require(
            len(self.block_strides) == len(self.block_kernels)
            and all(s in (1, 2) for s in self.block_strides),
            "block_strides",
            f"{len(self.block_kernels)} strides of 1 or 2, one per mega-block",
        )
        for key in ("prologue_filters", "filters", "epilogue_filters", "repeat", "se_reduction"):
            self._require(getattr(self, key) >= 1, key, "a positive count")
        self._require(0.0 <= self.dropout < 1.0, "dropout", "a probability in [0, 1)")

    @property
    def subsampling(self) -> int:
        """Total time stride: the product of `block_strides`."""
        total = 1
        for s in self.block_strides:
            total *= s
        return total


class MaskedConv1d(nn.Module):
    """Conv1d that zeroes input frames past the length: (B, C, T), (B,) -> (B, C', T'), (B,)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: int,
        stride: int = 1,
        groups: int = 1,
        bias: bool = False,
    ) -> None:
        super().__init__()
        self.stride = stride
        self.conv = nn.Conv1d(
            in_channels,
            out_channels,
            kernel,
            stride=stride,
            padding=(kernel - 1) // 2,
            groups=groups,
            bias=bias,
        )

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        x = self.conv(x * padding_mask(lengths, x.size(2))[:, None, :])
        return x, conv_output_lengths(lengths, self.stride)


class SqueezeExcite(nn.Module):
    """Channel gating from the mean over valid frames (NeMo SqueezeExcite, global context).

    x (B, C, T), lengths (B,) -> x * sigmoid(fc(mean over t < length of x)), lengths.
    """

    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.fc = nn.Sequential(
            nn.Linear(channels, hidden, bias=False),
            nn.ReLU(),
            nn.Linear(hidden, channels, bias=False),
        )

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        mask = padding_mask(lengths, x.size(2))[:, None, :]  # (B, 1, T)
        pooled = (x * mask).sum(dim=2) / lengths.clamp(min=1)[:, None].to(x.dtype)  # (B, C)
        return x * torch.sigmoid(self.fc(pooled))[:, :, None], lengths


class CitrinetBlock(nn.Module):
    """One JasperBlock with separable convs, SE and an optional strided 1x1-conv residual.

    x (B, C_in, T), lengths (B,) -> (B, C_out, ceil(T / stride)), new lengths.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: int,
        stride: int,
        repeat: int,
        residual: bool,
        se_reduction: int,
        dropout: float,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for r in range(repeat):
            last = r == repeat - 1
            layers += [
                # The stride goes to the last repeat (NeMo stride_last=True).
                MaskedConv1d(channels, channels, kernel, stride if last else 1, groups=channels),
                MaskedConv1d(channels, out_channels, 1),
                nn.BatchNorm1d(out_channels, eps=_BN_EPS),
            ]
            if not last:
                layers += [nn.ReLU(), nn.Dropout(dropout)]
            channels = out_channels
        layers.append(SqueezeExcite(out_channels, se_reduction))
        self.mconv = nn.ModuleList(layers)
        self.res = (
            nn.ModuleList(
                [
                    nn.ModuleList(
                        [
                            MaskedConv1d(in_channels, out_channels, 1, stride),
                            nn.BatchNorm1d(out_channels, eps=_BN_EPS),
                        ]
                    )
                ]
            )
            if residual
            else None
        )
        self.mout = nn.Sequential(nn.ReLU(), nn.Dropout(dropout))

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        out, out_lengths = x, lengths
        for layer in self.mconv:
            if isinstance(layer, (MaskedConv1d, SqueezeExcite)):
                out, out_lengths = layer(out, out_lengths)
            elif isinstance(layer, nn.BatchNorm1d):
                out = batch_norm_valid(layer, out, padding_mask(out_lengths, out.size(2)))
            else:
                out = layer(out)
        if self.res is not None:
            for branch in self.res:  # one branch (NeMo keeps a list for dense residuals)
                res, res_lengths = x, lengths
                for layer in branch.children():
                    if isinstance(layer, MaskedConv1d):
                        res, res_lengths = layer(res, res_lengths)
                    else:
                        res = batch_norm_valid(layer, res, padding_mask(res_lengths, res.size(2)))
                out = out + res
        return self.mout(out), out_lengths


class CitrinetEncoder(nn.Module):
    """Prologue, mega-blocks and epilogue: (B, F, T), (B,) -> (B, C_epilogue, T'), (B,)."""

    def __init__(self, config: CitrinetConfig, input_dim: int) -> None:
        super().__init__()
        c = config

        def block(
            c_in: int, c_out: int, kernel: int, stride: int, repeat: int, residual: bool
        ) -> CitrinetBlock:
            return CitrinetBlock(
                c_in, c_out, kernel, stride, repeat, residual, c.se_reduction, c.dropout
            )

        blocks = [block(input_dim, c.prologue_filters, c.prologue_kernel, 1, 1, False)]
        channels = c.prologue_filters
        for kernels, stride in zip(c.block_kernels, c.block_strides):
            for i, kernel in enumerate(kernels):
                blocks.append(
                    block(channels, c.filters, kernel, stride if i == 0 else 1, c.repeat, True)
                )
                channels = c.filters
        blocks.append(block(channels, c.epilogue_filters, c.epilogue_kernel, 1, 1, False))
        self.encoder = nn.ModuleList(blocks)

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        for block in self.encoder:
            x, lengths = block(x, lengths)
        return x, lengths


class ConvDecoder(nn.Module):
    """1x1 conv to the vocabulary (NeMo ConvASRDecoder): (B, C, T) -> logits (B, T, V)."""

    def __init__(self, channels: int, vocab_size: int) -> None:
        super().__init__()
        self.decoder_layers = nn.Sequential(nn.Conv1d(channels, vocab_size, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.decoder_layers(x).transpose(1, 2)  # type: ignore[no-any-return]


class Citrinet(nn.Module):
    """Citrinet CTC acoustic model.

    forward(features (B, T, F), lengths (B,)) -> (log_probs (B, T', V) float32, out_lengths (B,))
    with T' = ceil(T / subsampling) and out_lengths = ceil(lengths / subsampling).
    """

    def __init__(self, config: CitrinetConfig, input_dim: int, vocab_size: int) -> None:
        super().__init__()
        self.config = config
        self.input_dim = input_dim
        self.vocab_size = vocab_size
        self.subsampling: int = config.subsampling
        self.encoder = CitrinetEncoder(config, input_dim)
        self.decoder = ConvDecoder(config.epilogue_filters, vocab_size)

    def output_lengths(self, lengths: Tensor) -> Tensor:
        """ceil(lengths / subsampling), as int64 (each stride-2 block gives ceil(L / 2))."""
        for stride in self.config.block_strides:
            lengths = conv_output_lengths(lengths, stride)
        return lengths.long()

    def forward(self, features: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """features (B, T, F), lengths (B,) -> log_probs (B, T', V) float32, out_lengths (B,)."""
        check_inputs(features, lengths, self.input_dim)
        x, lengths = self.encoder(features.transpose(1, 2), lengths)  # (B, C, T')
        logits = self.decoder(x)  # (B, T', V)
        return F.log_softmax(logits.float(), dim=-1), lengths.long()

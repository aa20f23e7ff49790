"""Acoustic model registry: one config dataclass and one network per architecture, sizes as data.

Every network follows one contract (see docs/models.md):

    net = build_model(architecture, config, input_dim, vocab_size)
    log_probs, out_lengths = net(features, lengths)
    # features (B, T, F) float, lengths (B,) int64
    # log_probs (B, T', V) float32 log_softmax over V, index 0 = CTC blank
    # out_lengths (B,) int64 == net.output_lengths(lengths); T' == net.output_lengths(T)
    net.subsampling  # total time stride (input frames per output frame)

Frames beyond `lengths` never change the outputs of a sequence (eval mode), so a sequence
gives the same log-probabilities alone or in a padded batch.

    config = model_config("conformer", "small", n_layers=12)
    net = build_model("conformer", config, input_dim=80, vocab_size=29)
"""

from __future__ import annotations

import dataclasses
import importlib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar, Union, cast

import torch
from torch import Tensor, nn

from harken.errors import ConfigError

if TYPE_CHECKING:
    from typing import TypeAlias

    from harken.models.citrinet import CitrinetConfig
    from harken.models.conformer import ConformerConfig
    from harken.models.deepspeech2 import DeepSpeech2Config

    NetworkConfig: TypeAlias = DeepSpeech2Config | ConformerConfig | CitrinetConfig

# Named sizes: field values that differ from the config class defaults (the defaults are "small").
# "tiny" is for tests and smoke runs (< 100k parameters, trains in seconds on a CPU).
# Parameter counts and CPU step times: docs/models.md.
DEEPSPEECH2_SIZES: dict[str, dict[str, Any]] = {
    "tiny": {
        "conv_channels": (8, 8),
        "conv_kernels": ((5, 11), (5, 11)),
        "rnn_hidden": 32,
        "rnn_layers": 2,
    },
    # 2 conv + 3 x bidirectional GRU(256), ~3.8 M parameters (the TRAINING-NOTES baseline with a
    # lighter second conv); time stride 2 keeps character CTC feasible at any speaking rate.
    "small": {},
    # DeepSpeech2 paper kernels, 4 x bidirectional GRU(512): ~18 M parameters.
    "medium": {"conv_kernels": ((11, 41), (11, 21)), "rnn_hidden": 512, "rnn_layers": 4},
}

CONFORMER_SIZES: dict[str, dict[str, Any]] = {
    "tiny": {
        "d_model": 32,
        "n_layers": 2,
        "n_heads": 2,
        "ff_expansion": 2,
        "conv_kernel": 7,
        "subsampling_channels": 16,
    },
    # NeMo Conformer-CTC small widths (d_model 176, 4 heads, kernel 31) with 8 instead of 16
    # layers and 64 subsampling channels: ~6.3 M parameters, ~2x faster on a CPU. NeMo's exact
    # small: model_config("conformer", "small", n_layers=16, subsampling_channels=None).
    "small": {},
    # NeMo Conformer-CTC medium: ~30 M parameters.
    "medium": {"d_model": 256, "n_layers": 18, "subsampling_channels": None},
}

CITRINET_SIZES: dict[str, dict[str, Any]] = {
    "tiny": {
        "prologue_filters": 32,
        "filters": 32,
        "block_kernels": ((5,), (7,), (9,)),
        "repeat": 1,
        "epilogue_filters": 64,
        "epilogue_kernel": 11,
        "se_reduction": 4,
    },
    # Citrinet-256 exactly (NeMo stt_en_citrinet_256 shapes, ~9.8 M with 256 tokens), so its
    # weights can be mapped in; repeat=3 gives a ~6.6 M variant ~35% faster on a CPU.
    "small": {},
    # Citrinet-384 (NeMo stt_en_citrinet_384 shapes): ~21 M parameters.
    "medium": {"prologue_filters": 384, "filters": 384},
}

# Transducers (harken.models.transducer): an encoder of another family + predictor + joint networks.
TRANSDUCER_SIZES: dict[str, dict[str, Any]] = {
    "tiny": {"encoder_size": "tiny", "predictor_dim": 32, "joint_dim": 32},
    # the encoder's "small" size, a 320-wide LSTM predictor and joint (icefall/NeMo widths).
    "small": {},
    "medium": {"encoder_size": "medium", "predictor_dim": 640, "joint_dim": 640},
}

# Imported families (harken.interop.importers): NeMo's ConvASREncoder and Hugging Face's wav2vec2.
JASPER_SIZES: dict[str, dict[str, Any]] = {
    "tiny": {"filters": (16, 16, 32), "repeat": (1, 2, 1), "kernel": (5, 7, 1),
             "stride": (2, 1, 1), "dilation": (1, 1, 1), "residual": (False, True, False),
             "separable": (True, True, False), "se": (False,) * 3, "se_reduction": (8,) * 3,
             "stride_last": (False,) * 3, "residual_dense": (False,) * 3},
    "small": {},  # QuartzNet 5x5
    # QuartzNet 15x5: each of the five middle blocks three times, ~18.9 M parameters.
    "medium": {"filters": (256,) * 7 + (512,) * 9 + (512, 1024),
               "repeat": (1,) + (5,) * 15 + (1, 1),
               "kernel": (33, 33, 33, 33, 39, 39, 39, 51, 51, 51, 63, 63, 63, 75, 75, 75, 87, 1),
               "stride": (2,) + (1,) * 17, "dilation": (1,) * 16 + (2, 1),
               "residual": (False,) + (True,) * 15 + (False, False),
               "separable": (True,) * 17 + (False,), "se": (False,) * 18,
               "se_reduction": (8,) * 18, "stride_last": (False,) * 18,
               "residual_dense": (False,) * 18},
}
WAV2VEC2_SIZES: dict[str, dict[str, Any]] = {
    "tiny": {"conv_dim": (8, 8), "conv_kernel": (10, 3), "conv_stride": (5, 2),
             "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
             "intermediate_size": 32, "num_conv_pos_embeddings": 8,
             "num_conv_pos_embedding_groups": 2},
    "small": {},  # wav2vec2-base
    # wav2vec2-large-lv60 layout (LayerNorm convs, pre-LN Transformer): ~315 M parameters.
    "medium": {"conv_bias": True, "feat_extract_norm": "layer", "layer_norm_first": True,
               "hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16,
               "intermediate_size": 4096},
}


@dataclass(frozen=True)
class Architecture:
    """One registry entry: where the config and network classes live, and the named sizes.

    The classes are imported on first use: the network modules import the shared helpers
    below from this module.
    """

    name: str
    module: str
    config_name: str
    model_name: str
    sizes: Mapping[str, Mapping[str, Any]]

    @property
    def config_class(self) -> type:
        config_class: type = getattr(importlib.import_module(self.module), self.config_name)
        return config_class

    @property
    def model_class(self) -> type[nn.Module]:
        module = importlib.import_module(self.module)
        model_class: type[nn.Module] = getattr(module, self.model_name)
        return model_class


ARCHITECTURES: dict[str, Architecture] = {
    "deepspeech2": Architecture(
        "deepspeech2", "harken.models.deepspeech2", "DeepSpeech2Config", "DeepSpeech2", DEEPSPEECH2_SIZES
    ),
    "conformer": Architecture(
        "conformer", "harken.models.conformer", "ConformerConfig", "Conformer", CONFORMER_SIZES
    ),
    "citrinet": Architecture(
        "citrinet", "harken.models.citrinet", "CitrinetConfig", "Citrinet", CITRINET_SIZES
    ),
    "transducer": Architecture(
        "transducer", "harken.models.transducer", "TransducerConfig", "Transducer", TRANSDUCER_SIZES
    ),
    "jasper": Architecture("jasper", "harken.models.jasper", "JasperConfig", "Jasper", JASPER_SIZES),
    "wav2vec2": Architecture(
        "wav2vec2", "harken.models.wav2vec2", "Wav2Vec2Config", "Wav2Vec2", WAV2VEC2_SIZES
    ),
}


def get_architecture(architecture: str) -> Architecture:
    """The registry entry for `architecture`; `ConfigError` naming the valid ones otherwise."""
    try:
        return ARCHITECTURES[architecture]
    except (KeyError, TypeError):
        raise ConfigError(
            f"unknown architecture {architecture!r}; expected one of {sorted(ARCHITECTURES)}"
        ) from None


def model_config(architecture: str, size: str = "small", **overrides: Any) -> NetworkConfig:
    """The config of a named size of `architecture`, with fields replaced by `overrides`.

    e.g. a streamable DeepSpeech2:
        model_config("deepspeech2", "small", bidirectional=False, lookahead=10)
    """
    arch = get_architecture(architecture)
    if size not in arch.sizes:
        raise ConfigError(
            f"unknown size {size!r} for {architecture}; expected one of {list(arch.sizes)}"
        )
    values = {**arch.sizes[size], **overrides}
    return config_from_dict(architecture, values, source=f"{architecture} {size} overrides")


def config_from_dict(
    architecture: str, data: Mapping[str, Any], source: str | None = None
) -> NetworkConfig:
    """Build the config of `architecture` from a dict (e.g. read from a model's config.json).

    Lists become tuples (JSON has no tuples); unknown keys and wrongly typed values raise
    `ConfigError` naming the key and what was expected.
    """
    arch = get_architecture(architecture)
    config = dataclass_from_dict(arch.config_class, data, source=source or f"{architecture} config")
    return cast("NetworkConfig", config)


def build_model(
    architecture: str,
    config: NetworkConfig | Mapping[str, Any],
    input_dim: int,
    vocab_size: int,
) -> nn.Module:
    """Build the network of `architecture` from `config` (a config dataclass or a dict).

    `input_dim` is the feature size F (e.g. 80 mel bins), `vocab_size` the number of CTC outputs
    including the blank at index 0.
    """
    arch = get_architecture(architecture)
    if isinstance(config, Mapping):
        config = config_from_dict(architecture, config)
    if not isinstance(config, arch.config_class):
        raise ConfigError(
            f"{architecture} needs a {arch.config_class.__name__}, got {type(config).__name__}"
        )
    if not isinstance(input_dim, int) or input_dim < 1:
        raise ConfigError(f"input_dim must be a positive int, got {input_dim!r}")
    if not isinstance(vocab_size, int) or vocab_size < 2:
        raise ConfigError(f"vocab_size must be an int >= 2 (blank + 1 token), got {vocab_size!r}")
    return arch.model_class(config, input_dim, vocab_size)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters of `model` (works on models built on the "meta" device)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


# ---------------------------------------------------------------------------------------------
# Shared by the config dataclasses of every family.

C = TypeVar("C", bound="ConfigMixin")


class ConfigMixin:
    """`to_dict`/`from_dict` for the frozen config dataclasses (JSON next to the weights)."""

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values: tuples become lists."""
        values = dataclasses.asdict(self)  # type: ignore[call-overload]
        return {k: _lists(v) for k, v in values.items()}

    @classmethod
    def from_dict(cls: type[C], data: Mapping[str, Any]) -> C:
        """Inverse of `to_dict`; `ConfigError` names unknown keys and the valid ones."""
        return dataclass_from_dict(cls, data)  # type: ignore[no-any-return]

    def _require(self, ok: bool, key: str, expected: str) -> None:
        """`ConfigError` naming the key, its value and what was expected unless `ok`."""
        if not ok:
            raise ConfigError(
                f"{type(self).__name__}.{key} = {getattr(self, key)!r}: expected {expected}"
            )


def dataclass_from_dict(cls: type, data: Mapping[str, Any], source: str | None = None) -> Any:
    """Instantiate the frozen config dataclass `cls` from `data`, checking keys and value types."""
    source = source or cls.__name__
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: expected a mapping of settings, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {unknown}; valid keys: {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    values = {}
    for key, value in data.items():
        value = _tuples(value)
        if hints[key] is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not _matches(value, hints[key]):
            raise ConfigError(
                f"{source}: {key} = {value!r} is not a valid {_type_name(hints[key])}"
            )
        values[key] = value
    return cls(**values)


def _lists(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_lists(v) for v in value]
    return value


def _tuples(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return tuple(_tuples(v) for v in value)
    return value


def _matches(value: Any, hint: Any) -> bool:
    """Whether `value` is an instance of the type annotation `hint` (the subset configs use)."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return True
    if hint is type(None):
        return value is None
    if origin in (Union, types.UnionType):
        return any(_matches(value, a) for a in args)
    if origin is Literal:
        return value in args
    if origin is tuple:
        if not isinstance(value, tuple):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_matches(v, args[0]) for v in value)
        return len(value) == len(args) and all(_matches(v, a) for v, a in zip(value, args))
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


# ---------------------------------------------------------------------------------------------
# Tensor helpers shared by the networks.


def check_inputs(features: Tensor, lengths: Tensor, input_dim: int) -> None:
    """`ValueError` unless features is (B, T, input_dim) and lengths is (B,) integer."""
    if features.dim() != 3 or features.size(-1) != input_dim:
        raise ValueError(
            f"expected features of shape (batch, time, {input_dim}), got {tuple(features.shape)}"
        )
    if lengths.shape != (features.size(0),) or lengths.is_floating_point():
        raise ValueError(
            f"expected integer lengths of shape ({features.size(0)},), "
            f"got {lengths.dtype} {tuple(lengths.shape)}"
        )


def padding_mask(lengths: Tensor, max_len: int) -> Tensor:
    """(B, max_len) bool, True at valid frames (index < length)."""
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


def conv_output_lengths(lengths: Tensor, stride: int) -> Tensor:
    """Frames out of a conv with this stride and `kernel - 1` total padding: ceil(L / stride)."""
    return torch.div(lengths + stride - 1, stride, rounding_mode="floor")


def batch_norm_valid(norm: nn.Module, x: Tensor, mask: Tensor) -> Tensor:
    """BatchNorm over x (B, C, T, ...) whose training statistics come from valid frames only.

    mask (B, T) marks the valid frames. In eval mode this is `norm(x)` (running statistics are
    per channel, so padding cannot leak); in training, padded frames are left out of the batch
    mean and variance so that the running statistics do not depend on how much padding a batch
    had. Padded frames of the result are zero in training.
    """
    if not norm.training:
        return norm(x)  # type: ignore[no-any-return]
    moved = x.movedim(2, 1)  # (B, T, C, ...)
    valid = moved[mask]  # (N, C, ...)
    normed: Tensor
    if isinstance(norm, nn.BatchNorm2d) and valid.dim() == 3:
        normed = norm(valid.unsqueeze(-1)).squeeze(-1)
    else:
        normed = norm(valid)
    out = normed.new_zeros(moved.shape)  # normed's dtype: BatchNorm runs in float32 under autocast
    out[mask] = normed
    return out.movedim(1, 2)


# ---------------------------------------------------------------------------------------------
# Streaming state shared by the networks' step functions (see harken.streaming).


@dataclass(frozen=True)
class TimeBuffer:
    """Frames waiting for a strided time convolution (the streaming state of one conv layer).

    `frames` (None before the first step) holds the layer's left context and the input frames
    not consumed yet along `dim`; `seen` counts input frames so far, `emitted` output frames.
    """

    frames: Tensor | None = None
    seen: int = 0
    emitted: int = 0

    def take(self, x: Tensor, dim: int, kernel: int, stride: int, left: int,
             final: bool) -> tuple[Tensor | None, "TimeBuffer"]:
        """Append x; return the input of every conv output now computable (k + (n - 1) * stride
        frames along `dim`, None when n = 0) and the new buffer. Outputs follow a conv padded
        with `left` zeros before the first frame and zeros after the last, giving
        ceil(frames / stride) outputs in total (`final` flushes the rest)."""
        frames = self.frames
        if frames is None:
            shape = list(x.shape)
            shape[dim] = left
            frames = x.new_zeros(shape)
        frames = torch.cat([frames, x], dim=dim)
        seen = self.seen + x.size(dim)
        if final:
            n = -(-seen // stride) - self.emitted
            missing = kernel + (n - 1) * stride - frames.size(dim)
            if n > 0 and missing > 0:
                pad = list(frames.shape)
                pad[dim] = missing
                frames = torch.cat([frames, frames.new_zeros(pad)], dim=dim)
        else:
            n = (frames.size(dim) - kernel) // stride + 1 if frames.size(dim) >= kernel else 0
        ready = frames.narrow(dim, 0, kernel + (n - 1) * stride) if n > 0 else None
        rest = frames.narrow(dim, n * stride, frames.size(dim) - n * stride)
        return ready, TimeBuffer(rest, seen, self.emitted + n)

"""Acoustic features: log-mel spectrograms (`LogMel`) and SpecAugment masking for training.

`LogMel(config)(audio (B, N), lengths (B,)) -> (features (B, T, n_mels), frame_lengths (B,))`.
The settings (`FeatureConfig`) and the mel filterbank (Slaney or HTK scale, same values as
`librosa.filters.mel`) live in `harken.features_np`, with the same features computed in numpy
for running exported models without PyTorch; their names are re-exported here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from harken.audio import SAMPLE_RATE  # noqa: F401 (re-exported)
from harken.errors import ConfigError
from harken.features_np import (  # noqa: F401 (re-exported)
    FEATURE_KINDS,
    FRAMES_PER_SECOND,
    HOP_LENGTH,
    HOP_MS,
    MEL_NORMS,
    MEL_SCALES,
    N_FFT,
    N_MELS,
    NORMALIZATIONS,
    STD_EPSILON,
    WIN_LENGTH,
    WINDOW_MS,
    FeatureConfig,
    checked_from_dict,
    hz_to_mel,
    mel_filters,
    mel_to_hz,
)


def mel_filterbank(config: FeatureConfig) -> torch.Tensor:
    """Triangular mel filters, shape (n_mels, n_fft // 2 + 1), float32 (`mel_filters` as a
    tensor; the same values as `librosa.filters.mel`)."""
    return torch.from_numpy(mel_filters(config))


# --- log-mel ---------------------------------------------------------------------------------

class LogMel(nn.Module):
    """Log-mel spectrogram of a padded batch of waveforms.

    `forward(audio (B, N) float, lengths (B,) int samples)` returns `features (B, T, n_mels)`
    and `frame_lengths (B,)`, with `T = num_frames(N)` (rounded up to a multiple of `pad_to`).
    Samples past a sequence's length are ignored: a batch gives the same features as each
    utterance alone. Always computed in float32, even under autocast.
    """

    mel_filters: torch.Tensor
    window: torch.Tensor
    global_mean: torch.Tensor
    global_std: torch.Tensor

    def __init__(self, config: FeatureConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or FeatureConfig()
        self.register_buffer("mel_filters", mel_filterbank(config), persistent=False)
        self.register_buffer("window", torch.hann_window(config.win_length,
                                                         periodic=config.window_periodic),
                             persistent=False)
        mean = config.global_mean or (0.0,) * config.n_mels
        std = config.global_std or (1.0,) * config.n_mels
        self.register_buffer("global_mean", torch.tensor(mean, dtype=torch.float32),
                             persistent=False)
        self.register_buffer("global_std", torch.tensor(std, dtype=torch.float32),
                             persistent=False)

    def num_frames(self, num_samples: int | torch.Tensor) -> int | torch.Tensor:
        """Frames for `num_samples` samples: `num_samples // hop_length + 1` (centred frames;
        one fewer with `drop_last_frame`)."""
        return num_samples // self.config.hop_length + (0 if self.config.drop_last_frame else 1)

    def forward(self, audio: torch.Tensor,
                lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, N) waveforms and (B,) lengths in samples -> (B, T, n_mels), (B,) frame counts."""
        lengths = _checked_lengths(audio, lengths)
        n_samples = audio.shape[1]
        cfg = self.config
        with torch.autocast(device_type=audio.device.type, enabled=False):
            x = audio.to(torch.float32)
            valid = torch.arange(n_samples, device=x.device)[None, :] < lengths[:, None]
            x = x * valid
            if self.training and cfg.dither > 0:
                x = x + cfg.dither * torch.randn_like(x)
            if cfg.preemphasis > 0:
                x = torch.cat([x[:, :1], x[:, 1:] - cfg.preemphasis * x[:, :-1]], dim=1)
            # Zeros past the end, exactly what pad_mode="constant" gives an utterance alone.
            x = x * valid
            spec = torch.stft(x, n_fft=cfg.n_fft, hop_length=cfg.hop_length,
                              win_length=cfg.win_length, window=self.window, center=True,
                              pad_mode="constant", return_complex=True)
            power = spec.real.square() + spec.imag.square()  # (B, n_freqs, T)
            mel = torch.matmul(self.mel_filters, power)  # (B, n_mels, T)
            features = torch.log(mel + cfg.log_guard).transpose(1, 2)  # (B, T, n_mels)
            frame_lengths = self.num_frames(lengths)
            assert isinstance(frame_lengths, torch.Tensor)
            frame_mask = _frame_mask(frame_lengths, features.shape[1])  # (B, T, 1)
            if cfg.normalize == "per_feature":
                features = _normalize_per_feature(features, frame_lengths, frame_mask, cfg)
            elif cfg.normalize == "global":
                features = (features - self.global_mean) / self.global_std
            features = features * frame_mask
            if cfg.pad_to > 0 and features.shape[1] % cfg.pad_to:
                extra = cfg.pad_to - features.shape[1] % cfg.pad_to
                features = nn.functional.pad(features, (0, 0, 0, extra))
        return features, frame_lengths


def _checked_lengths(audio: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """The (B,) int64 lengths of a (B, N) batch (all N when None); ValueError for bad shapes."""
    if audio.ndim != 2:
        raise ValueError(f"expected (batch, samples) audio, got shape {tuple(audio.shape)}")
    batch, n_samples = audio.shape
    if lengths is None:
        return torch.full((batch,), n_samples, dtype=torch.long, device=audio.device)
    if lengths.shape != (batch,):
        raise ValueError(f"expected lengths of shape ({batch},), got {tuple(lengths.shape)}")
    lengths = lengths.to(device=audio.device, dtype=torch.long)
    if bool((lengths > n_samples).any()) or bool((lengths < 0).any()):
        raise ValueError(f"lengths must be in [0, {n_samples}], got {lengths.tolist()}")
    return lengths


def _frame_mask(frame_lengths: torch.Tensor, n_frames: int) -> torch.Tensor:
    """(B, T, 1) float mask: 1 on a sequence's frames, 0 on padding."""
    frames = torch.arange(n_frames, device=frame_lengths.device)
    return (frames[None, :] < frame_lengths[:, None]).unsqueeze(-1).to(torch.float32)


def _normalize_per_feature(features: torch.Tensor, frame_lengths: torch.Tensor,
                           frame_mask: torch.Tensor,
                           cfg: FeatureConfig | None = None) -> torch.Tensor:
    cfg = cfg or FeatureConfig()
    count = frame_lengths.clamp(min=1).to(features.dtype)[:, None, None]
    mean = (features * frame_mask).sum(dim=1, keepdim=True) / count
    squares = (((features - mean) * frame_mask).square()).sum(dim=1, keepdim=True)
    var = squares / ((count - 1).clamp(min=1) if cfg.unbiased_std else count)
    std = (var + cfg.variance_epsilon).sqrt() + cfg.std_epsilon
    return (features - mean) / std


class Waveform(nn.Module):
    """Waveform "features" for networks that read samples (`FeatureConfig.kind="waveform"`).

    `forward(audio (B, N), lengths (B,))` -> `(samples (B, N, 1), lengths (B,))`, each
    utterance normalised to zero mean and unit variance over its own samples when
    `normalize="per_feature"` (Hugging Face's `do_normalize`); samples past a length are 0.
    """

    def __init__(self, config: FeatureConfig) -> None:
        super().__init__()
        if config.kind != "waveform":
            raise ConfigError(f"feature config: Waveform needs kind='waveform', got {config.kind!r}")
        if config.normalize == "global":
            raise ConfigError("feature config: waveform features support normalize="
                              "'per_feature' or 'none', not 'global'")
        self.config = config

    def num_frames(self, num_samples: int | torch.Tensor) -> int | torch.Tensor:
        """One frame per sample."""
        return num_samples

    def forward(self, audio: torch.Tensor,
                lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, N) waveforms and (B,) lengths in samples -> (B, N, 1), (B,)."""
        lengths = _checked_lengths(audio, lengths)
        n_samples = audio.shape[1]
        with torch.autocast(device_type=audio.device.type, enabled=False):
            x = audio.to(torch.float32)[:, :, None]
            mask = _frame_mask(lengths, n_samples)
            if self.config.normalize == "per_feature":
                x = _normalize_per_feature(x, lengths, mask, self.config)
            x = x * mask
        return x, lengths


def make_featurizer(config: FeatureConfig) -> nn.Module:
    """The feature extractor of `config.kind`: `LogMel` or `Waveform`."""
    return Waveform(config) if config.kind == "waveform" else LogMel(config)


def compute_global_stats(features: torch.Tensor,
                         lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard deviation per mel bin, (n_mels,) each, over all valid frames.

    `features` (B, T, n_mels) should come from a `LogMel` with `normalize="none"`. Use the
    result for `FeatureConfig(normalize="global", global_mean=tuple(mean.tolist()), ...)`.
    """
    if features.ndim != 3:
        raise ValueError(f"expected (batch, frames, mels) features, got {tuple(features.shape)}")
    mask = _frame_mask(lengths.to(features.device), features.shape[1]).to(torch.float64)
    x = features.to(torch.float64)
    count = mask.sum()
    if count == 0:
        raise ValueError("no valid frames: every length is 0")
    mean = (x * mask).sum(dim=(0, 1)) / count
    var = (((x - mean) * mask).square()).sum(dim=(0, 1)) / count
    return mean.to(torch.float32), (var.sqrt() + STD_EPSILON).to(torch.float32)


# --- SpecAugment -----------------------------------------------------------------------------

@dataclass(frozen=True)
class SpecAugmentConfig:
    """SpecAugment masks (Park et al. 2019), without time warping.

    `freq_masks` bands of up to `freq_width` mel bins and `time_masks` spans of up to
    `time_width` x the utterance's length in frames (or `time_width_frames` frames when set).
    Masked values become 0, the mean of normalised features.
    """

    freq_masks: int = 2
    freq_width: int = 27
    time_masks: int = 10
    time_width: float = 0.05
    time_width_frames: int | None = None

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise `ConfigError` naming the first invalid setting."""
        for key in ("freq_masks", "freq_width", "time_masks"):
            if getattr(self, key) < 0:
                value = getattr(self, key)
                raise ConfigError(f"specaugment config: {key} must be >= 0, got {value}")
        if not 0.0 <= self.time_width <= 1.0:
            raise ConfigError(f"specaugment config: time_width must be a fraction in [0, 1], "
                              f"got {self.time_width}")
        if self.time_width_frames is not None and self.time_width_frames < 0:
            raise ConfigError(f"specaugment config: time_width_frames must be None or >= 0, "
                              f"got {self.time_width_frames}")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict; `SpecAugmentConfig.from_dict` reads it back."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SpecAugmentConfig:
        """Build from a dict; unknown keys raise `ConfigError`."""
        return checked_from_dict(cls, d, "specaugment config")


class SpecAugment(nn.Module):
    """Frequency and time masking of (B, T, n_mels) features in training mode; identity in eval.

    Masks fall only inside each sequence's valid frames. Pass a seeded `torch.Generator` for
    reproducible masks.
    """

    def __init__(self, config: SpecAugmentConfig | None = None) -> None:
        super().__init__()
        self.config = config or SpecAugmentConfig()

    def forward(self, features: torch.Tensor, lengths: torch.Tensor,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """Return masked features (a new tensor); `lengths` (B,) are valid frame counts."""
        if not self.training:
            return features
        if features.ndim != 3:
            raise ValueError(
                f"expected (batch, frames, mels) features, got {tuple(features.shape)}")
        batch, n_frames, n_mels = features.shape
        cfg = self.config
        device = generator.device if generator is not None else features.device
        lengths = lengths.to(device=device, dtype=torch.long)

        def spans(n: int, max_width: torch.Tensor, limit: torch.Tensor, size: int) -> torch.Tensor:
            """(B, size) mask: `n` spans of width U{0..max_width}, inside [0, limit)."""
            max_width = torch.minimum(max_width, limit)
            width = (torch.rand(batch, n, generator=generator, device=device)
                     * (max_width[:, None] + 1)).floor().long()
            start = (torch.rand(batch, n, generator=generator, device=device)
                     * (limit[:, None] - width + 1)).floor().long()
            pos = torch.arange(size, device=device)[None, None, :]
            inside = (pos >= start[..., None]) & (pos < (start + width)[..., None])
            return inside.any(dim=1)

        mask = torch.zeros(batch, n_frames, n_mels, dtype=torch.bool, device=device)
        if cfg.freq_masks > 0 and cfg.freq_width > 0:
            all_bins = torch.full((batch,), n_mels, device=device)
            freq_width = torch.full_like(all_bins, cfg.freq_width)
            freq = spans(cfg.freq_masks, freq_width, all_bins, n_mels)
            mask |= freq[:, None, :]
        if cfg.time_masks > 0:
            if cfg.time_width_frames is not None:
                max_width = torch.full_like(lengths, cfg.time_width_frames)
            else:
                max_width = (lengths.to(torch.float64) * cfg.time_width).floor().long()
            mask |= spans(cfg.time_masks, max_width, lengths, n_frames)[:, :, None]
        valid = torch.arange(n_frames, device=device)[None, :] < lengths[:, None]
        mask &= valid[:, :, None]
        return features.masked_fill(mask.to(features.device), 0.0)


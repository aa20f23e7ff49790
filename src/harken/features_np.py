"""Feature settings (`FeatureConfig`) and harken's feature extraction in numpy, without PyTorch.

    from harken.features_np import FeatureConfig, make_numpy_featurizer

    featurizer = make_numpy_featurizer(FeatureConfig())
    features, frame_lengths = featurizer(audio (B, N) float32, lengths (B,))  # (B, T, F), (B,)

`NumpyLogMel`, `NumpyWaveform` and `NumpyStreamingLogMel` compute the same values as
`harken.features.LogMel`, `harken.features.Waveform` and `harken.streaming.StreamingLogMel`
(eval mode: no dither) for every `FeatureConfig` setting, within 1e-4 (tests/test_features_np.py).
They are what `harken.interop.onnx_runtime` runs exported models with; `harken.features` builds its
PyTorch modules on the settings and the mel filterbank defined here.

The STFT is numpy's `rfft` of frames cut from the padded signal with stride tricks (a view, no
copy). Only the window's `win_length` samples of each frame are transformed, zero-padded at the
end to `n_fft`: `torch.stft` centres a shorter window inside the `n_fft` frame instead, which
shifts every frame circularly and leaves the power spectrum unchanged.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, NoReturn, TypeVar

import numpy as np

from harken.audio import SAMPLE_RATE
from harken.errors import ConfigError

# With audio.SAMPLE_RATE (16 kHz), the numbers everything else is derived from.
WINDOW_MS = 25.0
HOP_MS = 10.0
N_MELS = 80

N_FFT = 512  # the next power of two above the 25 ms window (400 samples)
WIN_LENGTH = round(SAMPLE_RATE * WINDOW_MS / 1000)  # 400 samples
HOP_LENGTH = round(SAMPLE_RATE * HOP_MS / 1000)  # 160 samples
FRAMES_PER_SECOND = SAMPLE_RATE / HOP_LENGTH  # 100 frames per second

FEATURE_KINDS = ("log_mel", "waveform")
MEL_SCALES = ("slaney", "htk")
MEL_NORMS = ("slaney", None)
NORMALIZATIONS = ("per_feature", "global", "none")
# Added to the standard deviation when normalising, so silent or one-frame inputs stay finite.
STD_EPSILON = 1e-5

_Config = TypeVar("_Config")


@dataclass(frozen=True)
class FeatureConfig:
    """How audio becomes log-mel features. Saved with a model's weights (`to_dict`/`from_dict`).

    `normalize`: "per_feature" (each utterance, each mel bin: mean 0 and std 1 over its valid
    frames), "global" (fixed `global_mean`/`global_std`, one value per mel bin) or "none".
    `dither` is the standard deviation of noise added to the waveform in training mode only.
    `pad_to` > 0 pads the number of frames of a batch up to a multiple of it (with zeros).

    `kind="waveform"` (wav2vec2-style networks) skips the spectrogram: the features are the
    samples themselves, one per frame (`feature_dim` 1, `hop_length_ms` one sample), normalised
    per utterance when `normalize="per_feature"`; the mel settings are then unused.
    The normalisation divides by `sqrt(variance + variance_epsilon) + std_epsilon`, the
    variance over N - 1 frames when `unbiased_std` (NeMo), over N otherwise. `window_periodic`
    False gives the symmetric Hann window (NeMo). `drop_last_frame`: an utterance of L samples
    has L // hop frames instead of L // hop + 1 (NeMo zeroes the last centred frame).
    """

    sample_rate: int = SAMPLE_RATE
    n_fft: int = N_FFT
    win_length_ms: float = WINDOW_MS
    hop_length_ms: float = HOP_MS
    n_mels: int = N_MELS
    f_min: float = 0.0
    f_max: float | None = None
    preemphasis: float = 0.97
    mel_scale: str = "slaney"
    mel_norm: str | None = "slaney"
    log_guard: float = 2.0**-24
    normalize: str = "per_feature"
    global_mean: tuple[float, ...] | None = None
    global_std: tuple[float, ...] | None = None
    dither: float = 1e-5
    pad_to: int = 0
    kind: str = "log_mel"
    window_periodic: bool = True
    std_epsilon: float = STD_EPSILON
    variance_epsilon: float = 0.0
    unbiased_std: bool = False
    drop_last_frame: bool = False

    def __post_init__(self) -> None:
        # JSON gives lists; keep the dataclass hashable and immutable.
        for name in ("global_mean", "global_std"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, tuple):
                object.__setattr__(self, name, tuple(float(v) for v in value))
        self.validate()

    @property
    def feature_dim(self) -> int:
        """Size F of a feature frame: `n_mels`, or 1 for waveform features."""
        return 1 if self.kind == "waveform" else self.n_mels

    @property
    def win_length(self) -> int:
        """Window length in samples."""
        return round(self.sample_rate * self.win_length_ms / 1000)

    @property
    def hop_length(self) -> int:
        """Hop between frames in samples."""
        return round(self.sample_rate * self.hop_length_ms / 1000)

    @property
    def frame_seconds(self) -> float:
        """Seconds between two feature frames."""
        return self.hop_length / self.sample_rate

    @property
    def upper_frequency(self) -> float:
        """`f_max`, or the Nyquist frequency when it is None."""
        return self.sample_rate / 2 if self.f_max is None else float(self.f_max)

    def validate(self) -> None:
        """Raise `ConfigError` naming the first invalid setting."""
        def fail(key: str, expected: str) -> NoReturn:
            value = getattr(self, key)
            raise ConfigError(f"feature config: {key} must be {expected}, got {value!r}")

        if self.sample_rate <= 0:
            fail("sample_rate", "a positive number of samples per second")
        if self.kind not in FEATURE_KINDS:
            fail("kind", f"one of {FEATURE_KINDS}")
        if self.hop_length < 1:
            fail("hop_length_ms", "at least one sample long")
        if self.win_length < 1:
            fail("win_length_ms", "at least one sample long")
        if self.n_fft < self.win_length:
            raise ConfigError(f"feature config: n_fft ({self.n_fft}) must be at least the window "
                              f"length ({self.win_length} samples = {self.win_length_ms} ms)")
        if self.n_mels < 1:
            fail("n_mels", "a positive integer")
        if self.f_min < 0:
            fail("f_min", ">= 0 Hz")
        if not self.f_min < self.upper_frequency <= self.sample_rate / 2:
            fail("f_max", f"None or in (f_min={self.f_min}, {self.sample_rate / 2}] Hz")
        if not 0.0 <= self.preemphasis < 1.0:
            fail("preemphasis", "in [0, 1) (0 disables it)")
        if self.mel_scale not in MEL_SCALES:
            fail("mel_scale", f"one of {MEL_SCALES}")
        if self.mel_norm not in MEL_NORMS:
            fail("mel_norm", f"one of {MEL_NORMS}")
        if not self.log_guard > 0:
            fail("log_guard", "a positive number")
        if self.normalize not in NORMALIZATIONS:
            fail("normalize", f"one of {NORMALIZATIONS}")
        if self.normalize == "global":
            for key in ("global_mean", "global_std"):
                value = getattr(self, key)
                if value is None or len(value) != self.n_mels:
                    fail(key, f"{self.n_mels} values (one per mel bin) when normalize='global'")
            assert self.global_std is not None
            if min(self.global_std) <= 0:
                fail("global_std", "positive")
        if self.dither < 0:
            fail("dither", ">= 0")
        if self.pad_to < 0:
            fail("pad_to", ">= 0 (0 disables padding)")
        if self.std_epsilon < 0 or self.variance_epsilon < 0:
            fail("std_epsilon" if self.std_epsilon < 0 else "variance_epsilon", ">= 0")
        if self.normalize == "per_feature" and self.std_epsilon == self.variance_epsilon == 0:
            fail("std_epsilon", "positive when variance_epsilon is 0 (silence would divide by 0)")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict; `FeatureConfig.from_dict` reads it back."""
        d = asdict(self)
        for key in ("global_mean", "global_std"):
            if d[key] is not None:
                d[key] = list(d[key])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FeatureConfig:
        """Build from a dict (a model's config.json); unknown keys raise `ConfigError`."""
        return checked_from_dict(cls, d, "feature config")


def checked_from_dict(cls: type[_Config], d: dict[str, Any], what: str) -> _Config:
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ConfigError(f"{what}: unknown keys {unknown}; expected some of {sorted(known)}")
    try:
        return cls(**d)
    except TypeError as exc:
        raise ConfigError(f"{what}: {exc}") from exc


# --- mel filterbank --------------------------------------------------------------------------

def hz_to_mel(hz: np.ndarray, scale: str = "slaney") -> np.ndarray:
    """Hertz to mels: HTK (2595 log10(1 + f/700)) or Slaney (linear below 1 kHz, log above)."""
    hz = np.asarray(hz, dtype=np.float64)
    if scale == "htk":
        return 2595.0 * np.log10(1.0 + hz / 700.0)
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    linear = hz / f_sp
    log = min_log_mel + np.log(np.maximum(hz, min_log_hz) / min_log_hz) / logstep
    return np.where(hz >= min_log_hz, log, linear)


def mel_to_hz(mel: np.ndarray, scale: str = "slaney") -> np.ndarray:
    """Inverse of `hz_to_mel`."""
    mel = np.asarray(mel, dtype=np.float64)
    if scale == "htk":
        return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    linear = f_sp * mel
    log = min_log_hz * np.exp(logstep * (mel - min_log_mel))
    return np.where(mel >= min_log_mel, log, linear)


def mel_filters(config: FeatureConfig) -> np.ndarray:
    """Triangular mel filters, shape (n_mels, n_fft // 2 + 1), float32.

    Matches `librosa.filters.mel(sr, n_fft, n_mels, fmin, fmax, htk=mel_scale == "htk",
    norm=mel_norm)`.
    """
    n_mels, scale = config.n_mels, config.mel_scale
    fft_freqs = np.fft.rfftfreq(config.n_fft, d=1.0 / config.sample_rate)
    mel_edges = np.linspace(hz_to_mel(np.array(config.f_min), scale),
                            hz_to_mel(np.array(config.upper_frequency), scale), n_mels + 2)
    hz_edges = mel_to_hz(mel_edges, scale)
    widths = np.diff(hz_edges)  # (n_mels + 1,)
    ramps = hz_edges[:, None] - fft_freqs[None, :]  # (n_mels + 2, n_freqs)
    rising = -ramps[:-2] / widths[:-1, None]
    falling = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    if config.mel_norm == "slaney":  # equal area per filter
        weights *= (2.0 / (hz_edges[2:] - hz_edges[:-2]))[:, None]
    return weights.astype(np.float32)


# --- log-mel in numpy ------------------------------------------------------------------------

def hann_window(length: int, periodic: bool = True) -> np.ndarray:
    """The Hann window of `torch.hann_window(length, periodic=periodic)`, float32."""
    if length == 1:
        return np.ones(1, np.float32)
    period = length if periodic else length - 1
    n = np.arange(length, dtype=np.float64)
    return (0.5 - 0.5 * np.cos(2.0 * np.pi * n / period)).astype(np.float32)


def _window_offset(config: FeatureConfig) -> int:
    """Where `torch.stft` puts a `win_length` window inside its `n_fft` frame (centred)."""
    return (config.n_fft - config.win_length) // 2


class NumpyLogMel:
    """`harken.features.LogMel` in numpy (eval mode).

    `featurizer(audio (B, N), lengths (B,) | None) -> (features (B, T, n_mels) float32,
    frame_lengths (B,) int64)`, with `T = num_frames(N)` rounded up to a multiple of `pad_to`.
    Samples past a sequence's length are ignored.
    """

    def __init__(self, config: FeatureConfig | None = None) -> None:
        self.config = config = config or FeatureConfig()
        if config.kind != "log_mel":
            raise ConfigError(f"feature config: NumpyLogMel needs kind='log_mel', got "
                              f"{config.kind!r}")
        self.window = hann_window(config.win_length, config.window_periodic)
        self._window64 = self.window.astype(np.float64)  # rfft computes in float64 anyway
        self.mel_filters_t = np.ascontiguousarray(mel_filters(config).T)  # (n_freqs, n_mels)
        mean = config.global_mean or (0.0,) * config.n_mels
        std = config.global_std or (1.0,) * config.n_mels
        self.global_mean = np.asarray(mean, np.float32)
        self.global_std = np.asarray(std, np.float32)

    def num_frames(self, num_samples: Any) -> Any:
        """`num_samples // hop_length + 1` centred frames (one fewer with `drop_last_frame`)."""
        return num_samples // self.config.hop_length + (0 if self.config.drop_last_frame else 1)

    def __call__(self, audio: np.ndarray, lengths: np.ndarray | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
        """(B, N) waveforms and (B,) lengths in samples -> (B, T, n_mels), (B,) frame counts."""
        x, lengths = _checked_batch(audio, lengths)
        cfg = self.config
        valid = np.arange(x.shape[1])[None, :] < lengths[:, None]
        x = x * valid
        if cfg.preemphasis > 0:
            x[:, 1:] -= np.float32(cfg.preemphasis) * x[:, :-1].copy()
            x *= valid  # zeros past the end, as an utterance alone
        half = cfg.n_fft // 2
        padded = np.pad(x, ((0, 0), (half, half)))
        features = self.log_mel_frames(padded)  # (B, T, n_mels)
        frame_lengths = self.num_frames(lengths)
        mask = (np.arange(features.shape[1])[None, :] < frame_lengths[:, None])[..., None]
        if cfg.normalize == "per_feature":
            features = normalize_per_feature(features, frame_lengths, mask, cfg)
        elif cfg.normalize == "global":
            features = (features - self.global_mean) / self.global_std
        features = features * mask
        if cfg.pad_to > 0 and features.shape[1] % cfg.pad_to:
            extra = cfg.pad_to - features.shape[1] % cfg.pad_to
            features = np.pad(features, ((0, 0), (0, extra), (0, 0)))
        return features.astype(np.float32, copy=False), frame_lengths

    def log_mel_frames(self, padded: np.ndarray) -> np.ndarray:
        """Un-normalised log-mels of the frames of (B, M) padded (and pre-emphasised) audio
        starting every `hop_length` samples: (B, (M - n_fft) // hop + 1, n_mels) float32."""
        cfg = self.config
        start = _window_offset(cfg)
        usable = padded[:, start: padded.shape[1] - (cfg.n_fft - start - cfg.win_length)]
        frames = np.lib.stride_tricks.sliding_window_view(usable, cfg.win_length, axis=-1)
        frames = frames[:, :: cfg.hop_length]  # (B, T, win_length), a view
        # Windowing straight into a float64 array spares rfft a conversion of its input.
        spectrum = np.fft.rfft(frames * self._window64, n=cfg.n_fft, axis=-1)
        power = (np.square(spectrum.real) + np.square(spectrum.imag)).astype(np.float32)
        mel = power @ self.mel_filters_t  # (B, T, n_mels)
        return np.log(mel + np.float32(cfg.log_guard))

    def streaming(self) -> NumpyStreamingLogMel:
        """An incremental version of these features (`harken.streaming` calls this)."""
        return NumpyStreamingLogMel(self)


def normalize_per_feature(features: np.ndarray, frame_lengths: np.ndarray, mask: np.ndarray,
                          cfg: FeatureConfig) -> np.ndarray:
    """Mean 0 and std 1 per feature over each sequence's valid frames (as `LogMel`)."""
    count = np.maximum(frame_lengths, 1).astype(np.float32)[:, None, None]
    mean = (features * mask).sum(axis=1, keepdims=True) / count
    squares = np.square((features - mean) * mask).sum(axis=1, keepdims=True)
    var = squares / (np.maximum(count - 1, 1) if cfg.unbiased_std else count)
    std = np.sqrt(var + np.float32(cfg.variance_epsilon)) + np.float32(cfg.std_epsilon)
    return ((features - mean) / std).astype(np.float32, copy=False)


class NumpyWaveform:
    """`harken.features.Waveform` in numpy: (B, N) audio -> (B, N, 1) samples, each utterance
    normalised over its own samples when `normalize="per_feature"`."""

    def __init__(self, config: FeatureConfig) -> None:
        if config.kind != "waveform":
            raise ConfigError(f"feature config: NumpyWaveform needs kind='waveform', got "
                              f"{config.kind!r}")
        if config.normalize == "global":
            raise ConfigError("feature config: waveform features support normalize="
                              "'per_feature' or 'none', not 'global'")
        self.config = config

    def num_frames(self, num_samples: Any) -> Any:
        """One frame per sample."""
        return num_samples

    def __call__(self, audio: np.ndarray, lengths: np.ndarray | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
        """(B, N) waveforms and (B,) lengths in samples -> (B, N, 1), (B,)."""
        x, lengths = _checked_batch(audio, lengths)
        x = x[:, :, None]
        mask = (np.arange(x.shape[1])[None, :] < lengths[:, None])[..., None]
        if self.config.normalize == "per_feature":
            x = normalize_per_feature(x, lengths, mask, self.config)
        return (x * mask).astype(np.float32, copy=False), lengths


def make_numpy_featurizer(config: FeatureConfig) -> NumpyLogMel | NumpyWaveform:
    """The numpy feature extractor of `config.kind`: `NumpyLogMel` or `NumpyWaveform`."""
    return NumpyWaveform(config) if config.kind == "waveform" else NumpyLogMel(config)


def _checked_batch(audio: Any, lengths: Any) -> tuple[np.ndarray, np.ndarray]:
    """(B, N) float32 audio and (B,) int64 lengths (all N when None); ValueError when bad."""
    x = np.asarray(audio)
    if x.ndim != 2:
        raise ValueError(f"expected (batch, samples) audio, got shape {tuple(x.shape)}")
    batch, n_samples = x.shape
    if lengths is None:
        return x.astype(np.float32), np.full(batch, n_samples, np.int64)
    n = np.asarray(lengths)
    if n.shape != (batch,):
        raise ValueError(f"expected lengths of shape ({batch},), got {tuple(n.shape)}")
    if (n > n_samples).any() or (n < 0).any():
        raise ValueError(f"lengths must be in [0, {n_samples}], got {n.tolist()}")
    return x.astype(np.float32), n.astype(np.int64)


class NumpyStreamingLogMel:
    """`harken.streaming.StreamingLogMel` in numpy: the frames of a stream fed chunk by chunk.

    Frame t is computed once sample t * hop + n_fft / 2 has arrived; `finish` pads the end with
    zeros and returns the last frames (`num_samples // hop + 1` in all). "per_feature"
    normalisation uses running statistics of the frames so far, as `StreamingLogMel` does.
    """

    def __init__(self, featurizer: NumpyLogMel) -> None:
        self.featurizer = featurizer
        self.config: FeatureConfig = featurizer.config
        self.reset()

    def reset(self) -> None:
        cfg = self.config
        self._previous = np.zeros(1, np.float32)  # last sample (pre-emphasis)
        self._buffer = np.zeros(cfg.n_fft // 2, np.float32)  # starts at frame `_emitted`
        self._samples = 0
        self._emitted = 0
        self._sum = np.zeros(cfg.n_mels, np.float64)
        self._sum_squares = np.zeros_like(self._sum)

    @property
    def frames_emitted(self) -> int:
        return self._emitted

    def feed(self, samples: np.ndarray) -> np.ndarray:
        """1-D float32 samples -> (T_new, n_mels) frames that became complete."""
        x = np.asarray(samples, np.float32).reshape(-1)
        if len(x) == 0:
            return self._empty()
        cfg = self.config
        if cfg.preemphasis > 0:
            shifted = np.concatenate([self._previous, x[:-1]])
            self._previous = x[-1:].copy()
            x = x - np.float32(cfg.preemphasis) * shifted
        self._buffer = np.concatenate([self._buffer, x])
        self._samples += len(x)
        ready = (cfg.n_fft // 2 + self._samples - cfg.n_fft) // cfg.hop_length + 1
        return self._frames(ready - self._emitted)

    def finish(self) -> np.ndarray:
        """The remaining frames, with the end padded by zeros (as the offline features)."""
        cfg = self.config
        self._buffer = np.concatenate([self._buffer, np.zeros(cfg.n_fft // 2, np.float32)])
        return self._frames(self._samples // cfg.hop_length + 1 - self._emitted)

    def _empty(self) -> np.ndarray:
        return np.zeros((0, self.config.n_mels), np.float32)

    def _frames(self, count: int) -> np.ndarray:
        if count <= 0:
            return self._empty()
        cfg, fz = self.config, self.featurizer
        segment = self._buffer[: cfg.n_fft + (count - 1) * cfg.hop_length]
        features = fz.log_mel_frames(segment[None])[0]  # (count, n_mels)
        self._buffer = self._buffer[count * cfg.hop_length:]
        self._emitted += count
        if cfg.normalize == "global":
            features = (features - fz.global_mean) / fz.global_std
        elif cfg.normalize == "per_feature":
            features = self._running_normalize(features)
        return features

    def _running_normalize(self, features: np.ndarray) -> np.ndarray:
        """Mean 0 and std 1 per mel bin over the frames so far (each frame: itself and before)."""
        x = features.astype(np.float64)
        sums = self._sum + np.cumsum(x, axis=0)
        squares = self._sum_squares + np.cumsum(np.square(x), axis=0)
        self._sum, self._sum_squares = sums[-1], squares[-1]
        count = np.arange(self._emitted - len(x) + 1, self._emitted + 1, dtype=np.float64)[:, None]
        mean = sums / count
        std = np.sqrt(np.maximum(squares / count - np.square(mean), 0.0))
        return ((x - mean) / (std + STD_EPSILON)).astype(np.float32)


__all__ = ["FeatureConfig", "NumpyLogMel", "NumpyStreamingLogMel", "NumpyWaveform",
           "hann_window", "make_numpy_featurizer", "mel_filters"]

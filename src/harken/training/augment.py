"""Waveform augmentation for training: speed, tempo, reverberation, noise, band-limiting,
telephone, lossy codecs, gain and clipping.

    config = AugmentConfig.from_dict({"noise": {"prob": 0.5, "snr_db": [5, 30]}})
    augment = build_augmenter(config, noise_dirs=["noises/"], babble_source="train.jsonl")
    audio = augment(audio, np.random.default_rng(seed))

An augmenter takes float32 mono audio at `harken.audio.SAMPLE_RATE` and a `numpy.random.Generator`
and returns float32 mono audio at the same rate. Only speed and tempo change the length (by
1/factor); every other transform keeps it. The same generator state gives the same output, so a
training epoch can be replayed. Transforms run in the order of `AugmentConfig`'s fields, each with
its own probability; all are off by default except speed perturbation, coloured noise and
reverberation, which are cheap (1-2.5 ms per second of audio together, measured by
`benchmarks/augment_speed.py`) and address the gap between clean read or synthetic speech and
what a microphone hears. Babble and recorded noise need sources; tempo, band-limiting,
telephone, codecs, gain and clipping are for particular target conditions (docs/augmentation.md).
"""

from __future__ import annotations

import dataclasses
import io
import logging
import math
import os
import textwrap
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence, Union

import numpy as np
import soundfile as sf

from harken.errors import AudioError, ConfigError, require
from harken.audio import is_audio_file, load_audio, resample, SAMPLE_RATE
from harken.training.manifests import load_utterance, read_manifest

logger = logging.getLogger(__name__)
AudioLike = Union[np.ndarray, str, "os.PathLike[str]"]
Augmenter = Callable[[np.ndarray, np.random.Generator], np.ndarray]

NOISE_COLORS = {"white": 0.0, "pink": 1.0, "brown": 2.0}  # power spectrum ~ 1/f^exponent
CODECS = ("opus", "mp3")
# libsndfile 1.2 maps compression_level linearly onto these bitrates (kbit/s): Opus
# 256 (level 0) .. 6 (level 1); MP3 at constant bitrate 160 .. 8 (the MPEG-2 ladder at 16 kHz).
_CODEC_KBPS = {"opus": (256.0, 6.0), "mp3": (160.0, 8.0)}
_SPEED_OF_SOUND = 343.0  # m/s
# Coloured noise is flat below this frequency (brown noise would otherwise be mostly rumble).
_NOISE_FLOOR_HZ = 20.0
# Babble and noise clips used per augmenter (decoded once, kept in memory), and the seconds
# kept of each.
_CACHE_CLIPS = 64
_CACHE_SECONDS = 30.0


# ----------------------------------------------------------------------------------------------
# Configuration


@dataclass(frozen=True)
class SpeedConfig:
    """Speed perturbation (tempo and pitch together) by resampling: length / factor."""

    prob: float = 1.0
    factors: tuple[float, ...] = (0.9, 1.0, 1.1)


@dataclass(frozen=True)
class TempoConfig:
    """Tempo change keeping the pitch (WSOLA): length / factor, factor uniform in the range."""

    prob: float = 0.0
    factor: tuple[float, float] = (0.85, 1.15)


@dataclass(frozen=True)
class ReverbConfig:
    """Room reverberation: shoebox room (image sources up to `image_order`) plus an exponential
    tail reaching -60 dB at RT60; order 0 is a pure exponential-decay response."""

    prob: float = 0.3
    rt60: tuple[float, float] = (0.15, 0.8)
    room_size: tuple[float, float] = (3.0, 10.0)  # length and width, metres; height 2.4-4 m
    image_order: int = 2


@dataclass(frozen=True)
class NoiseConfig:
    """Generated coloured noise at an SNR (dB, over the whole utterance)."""

    prob: float = 0.5
    snr_db: tuple[float, float] = (8.0, 40.0)
    colors: tuple[str, ...] = ("white", "pink", "brown")


@dataclass(frozen=True)
class BabbleConfig:
    """A crowd of `speakers` other utterances, summed at equal level, at an SNR.

    Sources: `build_augmenter(babble_source=...)` or `manifest` (a manifest path)."""

    prob: float = 0.0
    snr_db: tuple[float, float] = (5.0, 25.0)
    speakers: tuple[int, int] = (3, 7)
    manifest: str | None = None


@dataclass(frozen=True)
class NoiseFilesConfig:
    """Recorded noise at an SNR: any audio file under `dirs` or `build_augmenter(noise_dirs=)`."""

    prob: float = 0.0
    snr_db: tuple[float, float] = (0.0, 25.0)
    dirs: tuple[str, ...] = ()


@dataclass(frozen=True)
class BandLimitConfig:
    """Band-pass between a random low cut and high cut (Hz): cheap microphones, old recordings."""

    prob: float = 0.0
    low_hz: tuple[float, float] = (50.0, 400.0)
    high_hz: tuple[float, float] = (3000.0, 7500.0)


@dataclass(frozen=True)
class TelephoneConfig:
    """Telephone channel: 300-3400 Hz, 8 kHz sampling, 8-bit mu-law (G.711), back to 16 kHz."""

    prob: float = 0.0


@dataclass(frozen=True)
class CodecConfig:
    """Lossy codec round trip in memory (libsndfile's Opus and MP3) at a bitrate in kbit/s."""

    prob: float = 0.0
    codecs: tuple[str, ...] = CODECS
    kbps: tuple[float, float] = (8.0, 32.0)


@dataclass(frozen=True)
class GainConfig:
    """Level change in dB."""

    prob: float = 0.0
    db: tuple[float, float] = (-6.0, 6.0)


@dataclass(frozen=True)
class ClippingConfig:
    """Clip the loudest `fraction` of samples (an overdriven input stage)."""

    prob: float = 0.0
    fraction: tuple[float, float] = (0.001, 0.05)


@dataclass(frozen=True)
class AugmentConfig:
    """Every transform's settings; transforms run in this field order."""

    speed: SpeedConfig = field(default_factory=SpeedConfig)
    tempo: TempoConfig = field(default_factory=TempoConfig)
    reverb: ReverbConfig = field(default_factory=ReverbConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    babble: BabbleConfig = field(default_factory=BabbleConfig)
    noise_files: NoiseFilesConfig = field(default_factory=NoiseFilesConfig)
    band_limit: BandLimitConfig = field(default_factory=BandLimitConfig)
    telephone: TelephoneConfig = field(default_factory=TelephoneConfig)
    codec: CodecConfig = field(default_factory=CodecConfig)
    gain: GainConfig = field(default_factory=GainConfig)
    clipping: ClippingConfig = field(default_factory=ClippingConfig)

    @classmethod
    def from_dict(cls, settings: dict[str, Any] | None) -> AugmentConfig:
        """Parse `{"noise": {"prob": 0.5, "snr_db": [5, 30]}, ...}` (a TOML [augment] table).

        Missing keys keep their defaults; `{"reverb": false}` turns a transform off and
        `{"noise": 0.3}` sets only its probability. Raises
        `ConfigError` naming unknown keys (with the known ones) and invalid values.
        """
        settings = settings or {}
        if not isinstance(settings, dict):
            raise ConfigError(f"augment: expected a table of transforms, got {settings!r}")
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(settings) - set(known))
        if unknown:
            raise ConfigError(
                f"augment: unknown key(s) {', '.join(unknown)}; known: {', '.join(known)}"
            )
        hints = typing.get_type_hints(cls)
        sections = {
            name: _section(hints[name], f"augment.{name}", value)
            for name, value in settings.items()
        }
        return cls(**sections)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _section(cls: type, where: str, value: Any) -> Any:
    if isinstance(value, bool):
        value = {"prob": float(value)}
    elif isinstance(value, (int, float)):  # `noise = 0.3`: the probability, default ranges
        value = {"prob": value}
    if not isinstance(value, dict):
        raise ConfigError(
            f"{where}: expected a table of settings, a probability or true/false, got {value!r}"
        )
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(value) - set(hints))
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(hints)}"
        )
    parsed = {key: _value(f"{where}.{key}", hints[key], item) for key, item in value.items()}
    config = cls(**parsed)
    _validate(config, where)
    return config


def _value(where: str, hint: Any, value: Any) -> Any:
    origin = typing.get_origin(hint)
    if origin is tuple:
        args = typing.get_args(hint)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if args[-1] is not Ellipsis and len(value) != len(args):
            raise ConfigError(f"{where}: expected {len(args)} values, got {list(value)!r}")
        return tuple(_value(where, args[0], v) for v in value)
    if hint is float:
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
        ):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if value is not None and not isinstance(value, str):
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    return value


def _validate(config: Any, where: str) -> None:
    if not 0.0 <= config.prob <= 1.0:
        raise ConfigError(f"{where}.prob: expected a probability in [0, 1], got {config.prob}")
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if f.name in ("prob", "factors", "colors", "codecs", "dirs") or not isinstance(
            value, tuple
        ):
            continue
        if value[0] > value[1]:
            raise ConfigError(
                f"{where}.{f.name}: expected [low, high] with low <= high, got {list(value)}"
            )
    checks: list[tuple[bool, str]] = []
    if isinstance(config, SpeedConfig):
        checks.append(
            (
                bool(config.factors) and all(0.5 <= f <= 2 for f in config.factors),
                f"factors: expected speed factors in [0.5, 2], got {list(config.factors)}",
            )
        )
    if isinstance(config, TempoConfig):
        checks.append(
            (
                0.5 <= config.factor[0] and config.factor[1] <= 2,
                f"factor: expected a range within [0.5, 2], got {list(config.factor)}",
            )
        )
    if isinstance(config, ReverbConfig):
        checks.append(
            (
                config.rt60[0] > 0 and config.rt60[1] <= 3,
                f"rt60: expected seconds in (0, 3], got {list(config.rt60)}",
            )
        )
        checks.append(
            (
                config.room_size[0] >= 1.5,
                f"room_size: expected metres >= 1.5, got {list(config.room_size)}",
            )
        )
        checks.append(
            (0 <= config.image_order <= 4, f"image_order: expected 0-4, got {config.image_order}")
        )
    if isinstance(config, NoiseConfig):
        bad = sorted(set(config.colors) - set(NOISE_COLORS))
        checks.append(
            (
                bool(config.colors) and not bad,
                f"colors: expected some of {', '.join(NOISE_COLORS)}, got {list(config.colors)}",
            )
        )
    if isinstance(config, BabbleConfig):
        checks.append(
            (config.speakers[0] >= 1, f"speakers: expected at least 1, got {list(config.speakers)}")
        )
    if isinstance(config, BandLimitConfig):
        checks.append(
            (
                0 <= config.low_hz[1] < config.high_hz[0] and config.high_hz[1] <= 8000,
                "low_hz/high_hz: expected low cuts below high cuts, within 0-8000 Hz; got "
                f"{list(config.low_hz)} and {list(config.high_hz)}",
            )
        )
    if isinstance(config, CodecConfig):
        bad = sorted(set(config.codecs) - set(CODECS))
        checks.append(
            (
                bool(config.codecs) and not bad,
                f"codecs: expected some of {', '.join(CODECS)}, got {list(config.codecs)}",
            )
        )
        checks.append(
            (
                6 <= config.kbps[0] and config.kbps[1] <= 160,
                f"kbps: expected 6-160, got {list(config.kbps)}",
            )
        )
    if isinstance(config, ClippingConfig):
        checks.append(
            (
                0 < config.fraction[0] and config.fraction[1] < 0.5,
                f"fraction: expected a share of samples in (0, 0.5), got {list(config.fraction)}",
            )
        )
    for ok, message in checks:
        if not ok:
            raise ConfigError(f"{where}.{message}")


# ----------------------------------------------------------------------------------------------
# The augmenter


class AudioPool:
    """Audio clips for babble or recorded noise: arrays, or paths decoded on first use and kept.

    Of more than `_CACHE_CLIPS` sources a fixed random subset of that many is used, so memory
    stays bounded (each clip is cut to `_CACHE_SECONDS`) and nothing is decoded twice. A file that
    cannot be decoded is logged once and counts as silence: the utterance being augmented is not
    at fault.
    """

    def __init__(self, sources: Sequence[AudioLike]) -> None:
        sources = list(sources)
        if len(sources) > _CACHE_CLIPS:
            chosen = np.random.default_rng(len(sources)).choice(
                len(sources), _CACHE_CLIPS, replace=False
            )
            sources = [sources[i] for i in sorted(chosen.tolist())]
        self.sources = sources
        self._decoded: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.sources)

    def clip(self, rng: np.random.Generator) -> np.ndarray:
        index = int(rng.integers(len(self.sources)))
        source = self.sources[index]
        if isinstance(source, np.ndarray):
            return source
        if index not in self._decoded:

            try:
                audio = load_audio(source)[: round(_CACHE_SECONDS * SAMPLE_RATE)].copy()
            except (AudioError, OSError) as exc:
                logger.warning("augmentation source skipped: %s", exc)
                audio = np.zeros(0, np.float32)
            self._decoded[index] = audio
        return self._decoded[index]


class Augment:
    """The augmenter `build_augmenter` returns: `augment(audio, rng) -> audio`."""

    def __init__(self, config: AugmentConfig, babble: AudioPool, noise_files: AudioPool) -> None:
        self.config = config
        self.babble = babble
        self.noise_files = noise_files

    def __call__(self, audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return self.apply(audio, rng)[0]

    def apply(self, audio: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, list[str]]:
        """The augmented audio and a description of each transform applied, in order."""
        audio = np.asarray(audio, dtype=np.float32)
        if audio.ndim != 1:
            raise ValueError(f"expected mono audio of shape (samples,), got shape {audio.shape}")
        applied: list[str] = []
        c = self.config
        if audio.size == 0:
            return audio, applied
        if rng.random() < c.speed.prob:
            factor = float(c.speed.factors[rng.integers(len(c.speed.factors))])
            if factor != 1.0:
                audio = change_speed(audio, factor)
                applied.append(f"speed x{factor:g}")
        if rng.random() < c.tempo.prob:
            factor = float(rng.uniform(*c.tempo.factor))
            audio = change_tempo(audio, factor)
            applied.append(f"tempo x{factor:.2f}")
        if rng.random() < c.reverb.prob:
            rt60 = float(rng.uniform(*c.reverb.rt60))
            audio = reverberate(
                audio, room_impulse_response(rng, rt60, c.reverb.room_size, c.reverb.image_order)
            )
            applied.append(f"reverb RT60 {rt60:.2f} s")
        if rng.random() < c.noise.prob:
            color = c.noise.colors[rng.integers(len(c.noise.colors))]
            snr = float(rng.uniform(*c.noise.snr_db))
            audio = add_noise(audio, colored_noise(len(audio), color, rng), snr)
            applied.append(f"{color} noise {snr:.0f} dB SNR")
        if len(self.babble) and rng.random() < c.babble.prob:
            speakers = int(rng.integers(c.babble.speakers[0], c.babble.speakers[1] + 1))
            snr = float(rng.uniform(*c.babble.snr_db))
            clips = [self.babble.clip(rng) for _ in range(speakers)]
            audio = add_noise(audio, babble(clips, len(audio), rng), snr)
            applied.append(f"babble of {speakers} at {snr:.0f} dB SNR")
        if len(self.noise_files) and rng.random() < c.noise_files.prob:
            snr = float(rng.uniform(*c.noise_files.snr_db))
            audio = add_noise(audio, _fit(self.noise_files.clip(rng), len(audio), rng), snr)
            applied.append(f"recorded noise {snr:.0f} dB SNR")
        if rng.random() < c.band_limit.prob:
            low, high = float(rng.uniform(*c.band_limit.low_hz)), float(
                rng.uniform(*c.band_limit.high_hz)
            )
            audio = band_limit(audio, low, high)
            applied.append(f"band {low:.0f}-{high:.0f} Hz")
        if rng.random() < c.telephone.prob:
            audio = telephone(audio)
            applied.append("telephone")
        if rng.random() < c.codec.prob:
            codec = c.codec.codecs[rng.integers(len(c.codec.codecs))]
            kbps = float(rng.uniform(*c.codec.kbps))
            audio = codec_round_trip(audio, codec, kbps)
            applied.append(f"{codec} {kbps:.0f} kbit/s")
        if rng.random() < c.gain.prob:
            db = float(rng.uniform(*c.gain.db))
            audio = audio * np.float32(10 ** (db / 20))
            applied.append(f"gain {db:+.1f} dB")
        if rng.random() < c.clipping.prob:
            fraction = float(rng.uniform(*c.clipping.fraction))
            audio = clip(audio, fraction)
            applied.append(f"clipping {100 * fraction:.1f}%")
        return audio.astype(np.float32, copy=False), applied


def build_augmenter(
    config: AugmentConfig | None = None,
    *,
    noise_dirs: Sequence[str | os.PathLike[str]] = (),
    babble_source: Sequence[AudioLike] | str | os.PathLike[str] | None = None,
) -> Augment:
    """An augmenter `(audio, rng) -> audio` for `config` (default: `AugmentConfig()`).

    `noise_dirs` (added to `config.noise_files.dirs`) are searched recursively for audio files.
    `babble_source` is a list of arrays (16 kHz float32) or audio paths, or a manifest path
    (default: `config.babble.manifest`). Files are decoded when first drawn. Raises
    `ConfigError` when a transform with a non-zero probability has no source.
    """
    config = config or AugmentConfig()
    dirs = [*config.noise_files.dirs, *noise_dirs]
    noise_files = AudioPool(_audio_files(dirs))
    if config.noise_files.prob > 0 and not len(noise_files):
        where = ", ".join(map(str, dirs)) or "no folder given (noise_files.dirs or noise_dirs)"
        raise ConfigError(
            f"augment.noise_files.prob is {config.noise_files.prob} "
            f"but no audio file was found: {where}"
        )
    source = babble_source if babble_source is not None else config.babble.manifest
    if isinstance(source, (str, os.PathLike)):

        source = [u.audio for u in read_manifest(source)]
    babble_pool = AudioPool(list(source or []))
    if config.babble.prob > 0 and not len(babble_pool):
        raise ConfigError(
            f"augment.babble.prob is {config.babble.prob} but there is no babble source "
            "(babble.manifest or babble_source)"
        )
    return Augment(config, babble_pool, noise_files)


def _audio_files(dirs: Sequence[str | os.PathLike[str]]) -> list[Path]:
    files: list[Path] = []
    for folder in dirs:
        if not Path(folder).is_dir():
            raise ConfigError(f"augment: noise folder {folder} does not exist")
        files.extend(p for p in sorted(Path(folder).rglob("*")) if p.is_file() and is_audio_file(p))
    return files


# ----------------------------------------------------------------------------------------------
# Transforms: plain functions on float32 16 kHz mono arrays


def change_speed(audio: np.ndarray, factor: float) -> np.ndarray:
    """Play `factor` times faster (pitch moves too): the length becomes len / factor."""

    return resample(audio, SAMPLE_RATE, round(SAMPLE_RATE / factor))


def change_tempo(
    audio: np.ndarray, factor: float, frame_s: float = 0.03, search_s: float = 0.008
) -> np.ndarray:
    """`factor` times faster at the same pitch (WSOLA): the length becomes len / factor.

    Frames of `frame_s` are overlap-added at half-frame hops; each is taken from within
    `search_s` of its nominal input position where it best continues the previous frame.
    """

    frame = round(frame_s * SAMPLE_RATE)
    hop = frame // 2
    tolerance = round(search_s * SAMPLE_RATE)
    target = round(len(audio) / factor)
    if len(audio) < 2 * frame or target < frame:
        return change_speed(audio, factor)  # too short for overlap-add
    window = np.hanning(frame).astype(np.float32)
    padded = np.concatenate(
        [np.zeros(tolerance, np.float32), audio, np.zeros(frame + tolerance + hop, np.float32)]
    )
    frames = math.ceil(target / hop) + 1
    out = np.zeros(frames * hop + frame, np.float32)
    norm = np.zeros_like(out)
    position = tolerance  # where the previous frame was taken from (in `padded`)
    for k in range(frames):
        nominal = tolerance + round(k * hop * factor)
        if k == 0:
            start = nominal
        else:
            natural = padded[position + hop : position + hop + frame]  # what would follow
            lo = nominal - tolerance
            region = padded[lo : lo + frame + 2 * tolerance]
            if len(region) < frame + 2 * tolerance or len(natural) < frame:
                break
            start = lo + int(np.argmax(np.correlate(region, natural, mode="valid")))
        out[k * hop : k * hop + frame] += padded[start : start + frame] * window
        norm[k * hop : k * hop + frame] += window
        position = start
    out = out[:target] / np.maximum(norm[:target], 1e-3)
    return np.concatenate([out, np.zeros(target - len(out), np.float32)])


def room_impulse_response(
    rng: np.random.Generator,
    rt60: float,
    room_size: tuple[float, float] = (3.0, 10.0),
    image_order: int = 2,
) -> np.ndarray:
    """A synthetic room impulse response at 16 kHz, direct path at sample 0 with amplitude 1.

    A random shoebox room (length and width in `room_size` metres, height 2.4-4 m) with a random
    source and microphone: image sources up to `image_order` reflections give the early part
    (wall reflection coefficient from Sabine's formula for `rt60`), and Gaussian noise decaying to
    -60 dB at `rt60` the late part, scaled to the diffuse-field energy of the room.
    """

    room = np.array([rng.uniform(*room_size), rng.uniform(*room_size), rng.uniform(2.4, 4.0)])
    margin = 0.4
    source = rng.uniform(margin, room - margin)
    mic = rng.uniform(margin, room - margin)
    volume = float(np.prod(room))
    surface = 2 * float(room[0] * room[1] + room[0] * room[2] + room[1] * room[2])
    absorption = float(np.clip(0.161 * volume / (surface * rt60), 0.02, 0.98))
    beta = math.sqrt(1 - absorption)
    direct = max(float(np.linalg.norm(source - mic)), 0.1)
    length = round(rt60 * SAMPLE_RATE)
    rir = np.zeros(length, np.float64)

    # Early part: image sources, per axis at (1 - 2q) * s + 2 n L with |n - q| + |n| reflections.
    n = np.arange(-image_order, image_order + 1)
    q = np.array([0, 1])
    nn, qq = np.meshgrid(n, q, indexing="ij")
    positions, reflections = [], []
    for axis in range(3):
        positions.append(((1 - 2 * qq) * source[axis] + 2 * nn * room[axis]).ravel())
        reflections.append((np.abs(nn - qq) + np.abs(nn)).ravel())
    px, py, pz = np.meshgrid(*positions, indexing="ij")
    rx, ry, rz = np.meshgrid(*reflections, indexing="ij")
    order = (rx + ry + rz).ravel()
    keep = order <= image_order
    distance = np.sqrt(
        (px.ravel() - mic[0]) ** 2 + (py.ravel() - mic[1]) ** 2 + (pz.ravel() - mic[2]) ** 2
    )[keep]
    delay = np.round((distance - direct) / _SPEED_OF_SOUND * SAMPLE_RATE).astype(int)
    gain = beta ** order[keep] * direct / np.maximum(distance, 0.1)
    inside = delay < length
    np.add.at(rir, delay[inside], gain[inside])

    # Late part: diffuse energy relative to the direct sound, 16 pi r^2 (1 - a) / (S a).
    reverberant = 16 * math.pi * direct**2 * (1 - absorption) / (surface * absorption)
    early_energy = float(np.sum(gain[inside][order[keep][inside] > 0] ** 2))
    tail_energy = max(reverberant - early_energy, 0.1 * reverberant)
    start = round(2 * direct / _SPEED_OF_SOUND * SAMPLE_RATE) + 1
    if start < length:
        t = np.arange(length - start) / SAMPLE_RATE
        tail = rng.standard_normal(len(t)) * np.exp(-6.9 * t / rt60)
        rir[start:] += tail * math.sqrt(tail_energy / max(float(np.sum(tail**2)), 1e-12))
    return rir.astype(np.float32)


def reverberate(audio: np.ndarray, rir: np.ndarray) -> np.ndarray:
    """Convolve with `rir` (FFT), keep the length and the RMS level of the input."""
    fft_size = _fast_length(len(audio) + len(rir) - 1)
    wet = np.fft.irfft(np.fft.rfft(audio, fft_size) * np.fft.rfft(rir, fft_size), fft_size)[
        : len(audio)
    ]
    dry_power = float(np.mean(np.square(audio, dtype=np.float64)))
    wet_power = float(np.mean(np.square(wet)))
    if wet_power > 0:
        wet *= math.sqrt(dry_power / wet_power)
    return wet.astype(np.float32)


def _fast_length(n: int) -> int:
    """The smallest 2^a 3^b 5^c >= n: sizes numpy's FFT handles fastest (often far below the
    next power of two)."""
    best = 1 << max(n - 1, 0).bit_length()
    power5 = 1
    while power5 < best:
        power35 = power5
        while power35 < best:
            size = power35
            while size < n:
                size *= 2
            best = min(best, size)
            power35 *= 3
        power5 *= 5
    return best


def colored_noise(length: int, color: str, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise with power spectrum ~ 1/f^k (white k=0, pink 1, brown 2), unit power."""

    exponent = NOISE_COLORS[color]
    white = rng.standard_normal(length)
    if exponent == 0:
        return white.astype(np.float32)
    size = _fast_length(length)
    if size != length:
        white = np.concatenate([white, rng.standard_normal(size - length)])
    freqs = np.maximum(np.fft.rfftfreq(size, 1 / SAMPLE_RATE), _NOISE_FLOOR_HZ)
    noise = np.fft.irfft(np.fft.rfft(white) * freqs ** (-exponent / 2), size)[:length]
    return (noise / max(float(np.std(noise)), 1e-12)).astype(np.float32)


def add_noise(audio: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """`audio` plus `noise` scaled so that the power ratio over the whole signal is `snr_db`.
    Silent audio or noise is returned unchanged."""
    signal_power = float(np.mean(np.square(audio, dtype=np.float64)))
    noise_power = float(np.mean(np.square(noise, dtype=np.float64)))
    if signal_power == 0 or noise_power == 0:
        return audio
    scale = math.sqrt(signal_power / (noise_power * 10 ** (snr_db / 10)))
    return (audio + noise * np.float32(scale)).astype(np.float32)


def babble(clips: Sequence[np.ndarray], length: int, rng: np.random.Generator) -> np.ndarray:
    """Other utterances at equal power, each from a random offset (looped to `length`), summed."""
    total = np.zeros(length, np.float32)
    for clip_audio in clips:
        part = _fit(clip_audio, length, rng)
        power = float(np.mean(np.square(part, dtype=np.float64)))
        if power > 0:
            total += part / np.float32(math.sqrt(power))
    return total


def _fit(clip_audio: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
    """`length` samples of `clip_audio` from a random offset, looped when it is shorter."""
    if len(clip_audio) == 0:
        return np.zeros(length, np.float32)
    start = int(rng.integers(len(clip_audio)))
    reps = math.ceil((start + length) / len(clip_audio))
    return np.tile(clip_audio, reps)[start : start + length]


def band_limit(
    audio: np.ndarray, low_hz: float, high_hz: float, transition: float = 0.15
) -> np.ndarray:
    """Band-pass `low_hz`-`high_hz` with raised-cosine edges `transition` octaves wide (FFT);
    `low_hz` 0 keeps the low end."""

    size = _fast_length(len(audio))
    spectrum = np.fft.rfft(audio, size)
    bin_hz = SAMPLE_RATE / size
    mask = np.ones(len(spectrum))
    for cut, rising in ((low_hz, True), (high_hz, False)):
        if cut <= 0:
            continue
        lo, hi = cut * 2 ** (-transition / 2), cut * 2 ** (transition / 2)
        first, last = min(int(lo / bin_hz), len(mask)), min(math.ceil(hi / bin_hz), len(mask) - 1)
        ramp = 0.5 - 0.5 * np.cos(
            np.pi * np.clip((np.arange(first, last + 1) * bin_hz - lo) / (hi - lo), 0, 1)
        )
        if rising:
            mask[:first] = 0
            mask[first : last + 1] *= ramp
        else:
            mask[last + 1 :] = 0
            mask[first : last + 1] *= 1 - ramp
    return np.fft.irfft(spectrum * mask, size)[: len(audio)].astype(np.float32)


def telephone(audio: np.ndarray) -> np.ndarray:
    """A G.711 telephone channel: 300-3400 Hz, 8 kHz sampling, 8-bit mu-law, back to 16 kHz."""

    narrow = resample(band_limit(audio, 300.0, 3400.0), SAMPLE_RATE, 8000)
    peak = float(np.max(np.abs(narrow))) or 1.0
    scale = max(peak, 1.0)  # mu-law codes [-1, 1]; louder input is scaled into range and back
    mu = 255.0
    x = np.clip(narrow / scale, -1, 1)
    code = np.round(np.sign(x) * np.log1p(mu * np.abs(x)) / math.log1p(mu) * 127) / 127
    decoded = np.sign(code) * np.expm1(np.abs(code) * math.log1p(mu)) / mu * scale
    wide = resample(decoded.astype(np.float32), 8000, SAMPLE_RATE)
    return _same_length(wide, len(audio))


def codec_round_trip(audio: np.ndarray, codec: str, kbps: float) -> np.ndarray:
    """Encode with `codec` ("opus" or "mp3") at about `kbps` kbit/s in memory and decode."""

    best, worst = _CODEC_KBPS[codec]
    level = float(np.clip((best - kbps) / (best - worst), 0.0, 0.99))
    buffer = io.BytesIO()
    peak = float(np.max(np.abs(audio))) or 1.0
    scale = max(peak, 0.99)  # keep the encoder's input in [-1, 1]
    if codec == "opus":
        sf.write(
            buffer,
            audio / scale,
            SAMPLE_RATE,
            format="OGG",
            subtype="OPUS",
            compression_level=level,
        )
    else:
        sf.write(
            buffer,
            audio / scale,
            SAMPLE_RATE,
            format="MP3",
            subtype="MPEG_LAYER_III",
            compression_level=level,
            bitrate_mode="CONSTANT",
        )
    buffer.seek(0)
    decoded, _ = sf.read(buffer, dtype="float32")
    return _same_length(_undo_delay(decoded, audio) * np.float32(scale), len(audio))


def _undo_delay(decoded: np.ndarray, reference: np.ndarray, max_lag: int = 2048) -> np.ndarray:
    """`decoded` shifted to line up with `reference`: libsndfile removes the codec delay for most
    bitrates, but not for MP3 below 32 kbit/s (LAME then writes no gapless header)."""
    size = _fast_length(len(decoded) + len(reference))
    corr = np.fft.irfft(np.fft.rfft(decoded, size) * np.conj(np.fft.rfft(reference, size)), size)
    lags = np.concatenate([np.arange(0, max_lag + 1), np.arange(-max_lag, 0)])
    lag = int(lags[np.argmax(np.abs(np.concatenate([corr[: max_lag + 1], corr[-max_lag:]])))])
    if lag > 0:
        return decoded[lag:]
    if lag < 0:
        return np.concatenate([np.zeros(-lag, decoded.dtype), decoded])
    return decoded


def clip(audio: np.ndarray, fraction: float) -> np.ndarray:
    """Clip at the level exceeded by the loudest `fraction` of samples."""
    magnitude = np.abs(audio)
    k = min(len(audio) - 1, max(0, round((1 - fraction) * len(audio))))
    threshold = float(np.partition(magnitude, k)[k])
    return np.clip(audio, -threshold, threshold)


def _same_length(audio: np.ndarray, length: int) -> np.ndarray:
    if len(audio) >= length:
        return audio[:length]
    return np.concatenate([audio, np.zeros(length - len(audio), audio.dtype)])


# ----------------------------------------------------------------------------------------------
# Preview


def preview(
    inputs: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    config: AugmentConfig | None = None,
    *,
    examples: int = 4,
    max_inputs: int = 3,
    noise_dirs: Sequence[str | os.PathLike[str]] = (),
    seed: int = 0,
) -> list[Path]:
    """Write `examples` augmented versions of up to `max_inputs` inputs (audio files, or the first
    utterances of manifests) as WAV, plus `spectrograms.png` (originals and versions, each titled
    with the transforms applied). Returns the paths written. Needs matplotlib (harken[train])."""

    plt = require("matplotlib.pyplot", "train")
    clips: list[tuple[str, np.ndarray]] = []
    for item in inputs:
        if len(clips) >= max_inputs:
            break
        if is_audio_file(item):
            clips.append((Path(item).stem, load_audio(item)))
        else:

            for u in read_manifest(item)[: max_inputs - len(clips)]:
                clips.append((u.id, load_utterance(u)))
    if not clips:
        raise ConfigError(f"preview: no audio in {', '.join(map(str, inputs))}")
    augment = build_augmenter(config, noise_dirs=noise_dirs, babble_source=[a for _, a in clips])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    figure, axes = plt.subplots(
        len(clips), examples + 1, figsize=(3.2 * (examples + 1), 2.4 * len(clips)), squeeze=False
    )
    for row, (name, audio) in enumerate(clips):
        versions = [(audio, "original")]
        for k in range(examples):
            augmented, applied = augment.apply(audio, np.random.default_rng([seed, row, k]))
            versions.append((augmented, ", ".join(applied) or "unchanged"))
        for col, (version, title) in enumerate(versions):
            path = out / (f"{name}.orig.wav" if col == 0 else f"{name}.aug{col}.wav")
            peak = float(np.max(np.abs(version))) if len(version) else 0.0
            sf.write(path, version / max(peak, 1.0), SAMPLE_RATE, subtype="PCM_16")
            written.append(path)
            ax = axes[row][col]
            if len(version) > 256:
                ax.specgram(
                    version, NFFT=400, Fs=SAMPLE_RATE, noverlap=240, cmap="magma", vmin=-130
                )
            ax.set_title(textwrap.fill(title, 48), fontsize=7)
            ax.tick_params(labelsize=6)
            ax.set_ylim(0, SAMPLE_RATE / 2)
    figure.tight_layout()
    png = out / "spectrograms.png"
    figure.savefig(png, dpi=110)
    plt.close(figure)
    written.append(png)
    return written

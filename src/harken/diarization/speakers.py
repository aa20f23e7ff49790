"""Speaker embeddings: a stretch of speech -> a unit vector, close for the same voice.

Two encoder families, sizes as data (`SpeakerConfig`):

- ``ge2e``: a 3-layer LSTM over 40 mel bands whose last state is projected and L2-normalised
  (the GE2E voice encoder of Wan et al. 2018; the bundled weights are Resemblyzer's, Apache-2.0,
  converted once to safetensors by `convert_resemblyzer`).
- ``xvector``: a small TDNN with statistics pooling (Snyder et al. 2018), trained with an
  additive angular margin softmax by `harken.training.speakers`.

Both read the same features: the mel power spectrogram of audio normalised to
`TARGET_DBFS` (25 ms windows every 10 ms), `mel_power` (B, T, 40); the x-vector takes its log
with the mean over time removed.

`SpeakerEncoder.embed_windows(audio, windows)` embeds many (start, end) sample ranges of one
waveform in batches -> (N, embedding_dim) unit vectors. A model is a folder of
``speaker.json`` (the config) and ``weights.safetensors``; `load_speaker_encoder()` without a
path loads the bundled GE2E encoder (its SHA-256 checked).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from harken.audio import SAMPLE_RATE
from harken.errors import ConfigError, ModelError
from harken.features_np import FeatureConfig, mel_filters
from harken.modelfile import ASSETS

ARCHITECTURES = ("ge2e", "xvector")
CONFIG_FILE = "speaker.json"
WEIGHTS_FILE = "weights.safetensors"
N_FFT = 400  # 25 ms at 16 kHz
HOP = 160  # 10 ms
N_MELS = 40
TARGET_DBFS = -30.0  # each window is brought up (never down) to this level
MIN_WINDOW_SAMPLES = N_FFT  # shorter windows have no frame to embed
BUNDLED_DIR = ASSETS / "speaker-ge2e"
BUNDLED_SHA256 = "a5d4776b403b69593e4a10212aeacf7d35b56e9d0a2022058c6d4f888202e069"
BATCH_WINDOWS = 64


@dataclass(frozen=True)
class SpeakerConfig:
    """One speaker encoder's shape. `hidden`: LSTM size (ge2e) or TDNN channels (xvector);
    `layers`: LSTM layers (ge2e, unused by xvector); `window_seconds`: the span one embedding
    is trained on and that diarization slides over audio."""

    architecture: str = "xvector"
    n_mels: int = N_MELS
    hidden: int = 256
    layers: int = 3
    embedding_dim: int = 192
    window_seconds: float = 1.6

    def __post_init__(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise ConfigError(f"speaker encoder architecture must be one of "
                              f"{', '.join(ARCHITECTURES)}, got {self.architecture!r}")
        for name in ("n_mels", "hidden", "layers", "embedding_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"speaker config: {name} must be a positive integer, "
                                  f"got {value!r}")
        if not 0.1 <= self.window_seconds <= 10:
            raise ConfigError(f"speaker config: window_seconds must be 0.1..10, "
                              f"got {self.window_seconds!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SpeakerConfig:
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"speaker config: unknown field(s) {', '.join(unknown)}")
        return cls(**d)


def ge2e_config() -> SpeakerConfig:
    """Resemblyzer's voice encoder: LSTM 3 x 256, 256-dim embeddings, 1.6 s windows."""
    return SpeakerConfig("ge2e", N_MELS, 256, 3, 256, 1.6)


def xvector_config(size: str = "small") -> SpeakerConfig:
    """x-vector sizes: "tiny" (tests, trains in seconds) and "small"."""
    sizes = {"tiny": SpeakerConfig("xvector", N_MELS, 32, 1, 16, 1.0),
             "small": SpeakerConfig("xvector", N_MELS, 256, 1, 192, 1.6)}
    if size not in sizes:
        raise ConfigError(f"x-vector size must be one of {', '.join(sizes)}, got {size!r}")
    return sizes[size]


# --- features ------------------------------------------------------------------------------------

class MelPower(nn.Module):
    """(B, N) audio at 16 kHz -> (B, N // HOP + 1, n_mels) mel power spectrogram, the same as
    `librosa.feature.melspectrogram(y, sr=16000, n_fft=400, hop_length=160, n_mels=n_mels)`."""

    def __init__(self, n_mels: int = N_MELS) -> None:
        super().__init__()
        config = FeatureConfig(n_fft=N_FFT, win_length_ms=N_FFT * 1000 / SAMPLE_RATE,
                               hop_length_ms=HOP * 1000 / SAMPLE_RATE, n_mels=n_mels)
        self.register_buffer("filters", torch.from_numpy(mel_filters(config)), persistent=False)
        self.register_buffer("window", torch.hann_window(N_FFT), persistent=False)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        spec = torch.stft(audio, N_FFT, HOP, window=self.window, center=True,
                          pad_mode="constant", return_complex=True)
        power = spec.real.square() + spec.imag.square()  # (B, F, T)
        return torch.matmul(self.filters, power).transpose(1, 2)


def normalize_volume(audio: np.ndarray, target_dbfs: float = TARGET_DBFS) -> np.ndarray:
    """Scale quiet audio up to `target_dbfs` RMS (louder audio is kept as it is)."""
    rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64)))) if len(audio) else 0.0
    if rms <= 1e-8:
        return audio
    gain = 10 ** ((target_dbfs - 20 * np.log10(rms)) / 20)
    return audio * np.float32(gain) if gain > 1 else audio


# --- networks ------------------------------------------------------------------------------------

class GE2E(nn.Module):
    """(B, T, n_mels) mel power -> (B, embedding_dim) unit vectors (ReLU, then L2)."""

    def __init__(self, config: SpeakerConfig) -> None:
        super().__init__()
        self.lstm = nn.LSTM(config.n_mels, config.hidden, config.layers, batch_first=True)
        self.linear = nn.Linear(config.hidden, config.embedding_dim)

    def forward(self, mels: torch.Tensor) -> torch.Tensor:
        _, (hidden, _) = self.lstm(mels)
        return nn.functional.normalize(torch.relu(self.linear(hidden[-1])), dim=1)


class XVector(nn.Module):
    """(B, T, n_mels) mel power -> (B, embedding_dim) embeddings (not normalised; the loss and
    `SpeakerEncoder` normalise). Five TDNN layers (contexts 5, 3 dil 2, 3 dil 3, 1, 1), mean and
    standard deviation pooling, one linear layer."""

    def __init__(self, config: SpeakerConfig) -> None:
        super().__init__()
        c = config.hidden
        specs = [(config.n_mels, c, 5, 1), (c, c, 3, 2), (c, c, 3, 3), (c, c, 1, 1),
                 (c, 3 * c, 1, 1)]
        layers: list[nn.Module] = []
        for cin, cout, k, d in specs:
            layers += [nn.Conv1d(cin, cout, k, dilation=d, padding=d * (k - 1) // 2),
                       nn.ReLU(), nn.BatchNorm1d(cout)]
        self.tdnn = nn.Sequential(*layers)
        self.embedding = nn.Linear(6 * c, config.embedding_dim)

    def forward(self, mels: torch.Tensor) -> torch.Tensor:
        x = torch.log(mels + 1e-6)
        x = (x - x.mean(dim=1, keepdim=True)).transpose(1, 2)  # (B, n_mels, T)
        h = self.tdnn(x)  # (B, 3c, T)
        stats = torch.cat([h.mean(dim=2), h.std(dim=2, unbiased=False)], dim=1)
        return self.embedding(stats)


def build_network(config: SpeakerConfig) -> nn.Module:
    return GE2E(config) if config.architecture == "ge2e" else XVector(config)


# --- the encoder ---------------------------------------------------------------------------------

class SpeakerEncoder:
    """A speaker embedding model: `embed(audio)` -> (embedding_dim,) unit vector;
    `embed_windows(audio, windows)` -> (N, embedding_dim) for (start, end) sample ranges."""

    def __init__(self, config: SpeakerConfig, network: nn.Module | None = None,
                 path: Path | None = None) -> None:
        self.config = config
        self.network = (network or build_network(config)).eval()
        self.features = MelPower(config.n_mels)
        self.path = path

    @property
    def window_samples(self) -> int:
        return round(self.config.window_seconds * SAMPLE_RATE)

    def embed_windows(self, audio: np.ndarray, windows: Sequence[tuple[int, int]],
                      batch_size: int = BATCH_WINDOWS) -> np.ndarray:
        """Embeddings of `audio[start:end]` for each (start, end) in samples: (N, dim) float32.

        Windows are cut to `window_seconds` at most, zero-padded to the longest of a batch of
        equal-length windows (GE2E reads the LSTM state at the last frame, so windows of one
        batch share a length). A window shorter than 25 ms raises ValueError."""
        audio = np.asarray(audio, np.float32)
        if audio.ndim != 1:
            raise ValueError(f"expected mono audio (a 1-D array), got shape {audio.shape}")
        spans = []
        for start, end in windows:
            start, end = max(0, int(start)), min(len(audio), int(end))
            if end - start < MIN_WINDOW_SAMPLES:
                raise ValueError(f"speaker window {start}..{end} is shorter than "
                                 f"{MIN_WINDOW_SAMPLES} samples")
            spans.append((start, min(end, start + self.window_samples)))
        out = np.zeros((len(spans), self.config.embedding_dim), np.float32)
        order = sorted(range(len(spans)), key=lambda i: spans[i][1] - spans[i][0])
        for first in range(0, len(order), batch_size):
            rows = order[first: first + batch_size]
            length = spans[rows[-1]][1] - spans[rows[-1]][0]
            batch = np.zeros((len(rows), length), np.float32)
            for r, i in enumerate(rows):
                piece = normalize_volume(audio[spans[i][0]: spans[i][1]])
                batch[r, : len(piece)] = piece
            out[rows] = self.embed_batch(torch.from_numpy(batch)).numpy()
        return out

    def embed_batch(self, audio: torch.Tensor) -> torch.Tensor:
        """(B, N) equal-length audio -> (B, embedding_dim) unit vectors."""
        with torch.inference_mode():
            emb = self.network(self.features(audio))
            return nn.functional.normalize(emb, dim=1)

    def embed(self, audio: np.ndarray, hop_seconds: float | None = None) -> np.ndarray:
        """One unit vector for all of `audio`: the normalised mean of its window embeddings
        (windows of `window_seconds` every `hop_seconds`, default half a window)."""
        audio = np.asarray(audio, np.float32)
        win = self.window_samples
        hop = round((hop_seconds or self.config.window_seconds / 2) * SAMPLE_RATE)
        starts = list(range(0, max(1, len(audio) - win + 1), max(1, hop)))
        windows = [(s, min(len(audio), s + win)) for s in starts]
        mean = self.embed_windows(audio, windows).mean(axis=0)
        return mean / max(float(np.linalg.norm(mean)), 1e-12)

    def save(self, folder: str | os.PathLike) -> Path:
        """Write ``speaker.json`` and ``weights.safetensors`` into `folder`."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous().cpu() for k, v in self.network.state_dict().items()}
        save_file(state, str(folder / WEIGHTS_FILE))
        (folder / CONFIG_FILE).write_text(json.dumps(self.config.to_dict(), indent=2) + "\n")
        return folder


def load_speaker_encoder(path: str | os.PathLike | None = None) -> SpeakerEncoder:
    """Load a speaker encoder folder (``speaker.json`` + ``weights.safetensors``); None: the
    bundled GE2E encoder, whose weights must match their recorded SHA-256."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(path) if path is not None else BUNDLED_DIR
    if not (folder / CONFIG_FILE).is_file() or not (folder / WEIGHTS_FILE).is_file():
        raise ModelError(f"{folder}: not a speaker encoder (expected {CONFIG_FILE} and "
                         f"{WEIGHTS_FILE})")
    if path is None:
        digest = hashlib.sha256((folder / WEIGHTS_FILE).read_bytes()).hexdigest()
        if digest != BUNDLED_SHA256:
            raise ModelError(f"{folder / WEIGHTS_FILE}: SHA-256 {digest} does not match the "
                             f"bundled speaker encoder ({BUNDLED_SHA256})")
    try:
        config = SpeakerConfig.from_dict(json.loads((folder / CONFIG_FILE).read_text()))
    except (ValueError, TypeError) as exc:
        raise ModelError(f"{folder / CONFIG_FILE}: {exc}") from exc
    network = build_network(config)
    try:
        state = load_file(str(folder / WEIGHTS_FILE))
        network.load_state_dict(state)
    except (SafetensorError, RuntimeError, OSError) as exc:
        raise ModelError(f"{folder / WEIGHTS_FILE}: weights do not fit a {config.architecture} "
                         f"speaker encoder: {exc}") from exc
    return SpeakerEncoder(config, network, folder)


def convert_resemblyzer(checkpoint: str | os.PathLike, folder: str | os.PathLike) -> Path:
    """Resemblyzer's ``pretrained.pt`` -> a GE2E speaker encoder folder.

    The checkpoint is read with `torch.load(weights_only=True)`, which refuses any pickled
    object other than tensors and plain containers (no code runs)."""
    try:
        state = torch.load(Path(checkpoint), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelError(f"{checkpoint}: not a weights-only torch checkpoint ({exc})") from exc
    weights = state.get("model_state", state) if isinstance(state, dict) else None
    if not isinstance(weights, dict):
        raise ModelError(f"{checkpoint}: no model_state in this checkpoint")
    weights = {k: v for k, v in weights.items() if k.startswith(("lstm.", "linear."))}
    config = ge2e_config()
    network = GE2E(config)
    try:
        network.load_state_dict(weights)
    except RuntimeError as exc:
        raise ModelError(f"{checkpoint}: not a Resemblyzer voice encoder: {exc}") from exc
    return SpeakerEncoder(config, network).save(folder)


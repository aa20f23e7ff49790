"""Voice activity detection: where the speech is, and when an utterance in a stream has ended.

    speech_segments(audio)                       # [(start, end), ...] in seconds
    speech_segments(audio, method="silero", min_silence_ms=500, padding_ms=200)
    endpointer = Endpointer(EndpointConfig(silence_ms=600))
    ends = endpointer.feed(samples)              # sample positions where utterances closed

Three detectors, each scoring fixed frames of 16 kHz audio:

- "webrtc" (default): the WebRTC VAD (`webrtcvad-wheels`), 30 ms frames, `aggressiveness` 0-3.
- "silero": the Silero VAD ONNX model shipped in the `silero-vad` wheel, run with onnxruntime
  directly (no torch.hub, no download), 32 ms frames, speech probability vs `threshold`.
- "energy": frame energy above an adaptive noise floor; no dependency, fooled by loud noise.

Frame decisions become segments the same way for all three: a segment opens on speech, closes
after `min_silence_ms` without speech, is dropped when shorter than `min_speech_ms`, gets
`padding_ms` on both sides (so word onsets and endings are not cut) and is split at its least
speech-like frame when longer than `max_segment_seconds`.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from harken.audio import SAMPLE_RATE, float_to_pcm16
from harken.errors import ConfigError, HarkenError

METHODS = ("webrtc", "silero", "energy")
DEFAULT_METHOD = "webrtc"
WEBRTC_FRAME_MS = 30
SILERO_FRAME_SAMPLES = 512  # at 16 kHz (32 ms), plus 64 samples of context
SILERO_CONTEXT_SAMPLES = 64
ENERGY_FRAME_MS = 20
# Energy detector: speech is this many dB above the noise floor, and above an absolute floor.
ENERGY_MARGIN_DB = 12.0
ENERGY_MIN_DBFS = -55.0
ENERGY_FLOOR_SECONDS = 5.0


class FrameDetector(Protocol):
    """Scores consecutive frames of `frame_samples` samples (state carries across calls)."""

    frame_samples: int
    threshold: float

    def __call__(self, frame: np.ndarray) -> float: ...

    def reset(self) -> None: ...


class WebRtcDetector:
    """WebRTC VAD: 1.0 for speech frames, 0.0 otherwise (30 ms frames)."""

    threshold = 0.5

    def __init__(self, aggressiveness: int = 2, sample_rate: int = SAMPLE_RATE) -> None:
        try:
            import webrtcvad
        except ImportError:
            raise HarkenError("the WebRTC VAD needs webrtcvad-wheels: pip install "
                              "webrtcvad-wheels (or use method='energy')") from None
        if aggressiveness not in (0, 1, 2, 3):
            raise ConfigError(f"aggressiveness must be 0, 1, 2 or 3, got {aggressiveness!r}")
        if sample_rate not in (8000, 16000, 32000, 48000):
            raise ConfigError(f"the WebRTC VAD takes 8, 16, 32 or 48 kHz audio, got {sample_rate}")
        self._vad = webrtcvad.Vad(aggressiveness)
        self.sample_rate = sample_rate
        self.frame_samples = sample_rate * WEBRTC_FRAME_MS // 1000

    def __call__(self, frame: np.ndarray) -> float:
        return float(self._vad.is_speech(float_to_pcm16(frame), self.sample_rate))

    def reset(self) -> None:
        pass


def silero_model_path() -> Path:
    """The Silero VAD ONNX file inside the installed `silero-vad` wheel."""
    try:
        import silero_vad
    except ImportError:
        raise HarkenError("the Silero VAD needs the silero-vad wheel (its ONNX model) and "
                          "onnxruntime: pip install silero-vad onnxruntime") from None
    path = Path(silero_vad.__file__).parent / "data" / "silero_vad.onnx"
    if not path.is_file():
        raise HarkenError(f"the silero-vad package has no ONNX model at {path}")
    return path


class SileroDetector:
    """Silero VAD (ONNX, onnxruntime): speech probability of each 32 ms frame at 16 kHz."""

    frame_samples = SILERO_FRAME_SAMPLES

    def __init__(self, threshold: float = 0.5) -> None:
        try:
            import onnxruntime
        except ImportError:
            raise HarkenError("the Silero VAD needs onnxruntime: pip install onnxruntime") from None
        if not 0.0 < threshold < 1.0:
            raise ConfigError(f"threshold must be in (0, 1), got {threshold!r}")
        self.threshold = threshold
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        self._session = onnxruntime.InferenceSession(
            str(silero_model_path()), options, providers=["CPUExecutionProvider"])
        self._sr = np.array(SAMPLE_RATE, dtype=np.int64)
        self.reset()

    def __call__(self, frame: np.ndarray) -> float:
        x = np.concatenate([self._context, frame.astype(np.float32)])[None]
        out, self._state = self._session.run(
            None, {"input": x, "state": self._state, "sr": self._sr})
        self._context = x[0, -SILERO_CONTEXT_SAMPLES:]
        return float(out[0, 0])

    def reset(self) -> None:
        self._state = np.zeros((2, 1, 128), np.float32)
        self._context = np.zeros(SILERO_CONTEXT_SAMPLES, np.float32)


class EnergyDetector:
    """Frame energy against a noise floor: the quietest frame of the last `ENERGY_FLOOR_SECONDS`.

    Scores are 1.0 when a frame is `ENERGY_MARGIN_DB` above the floor and above
    `ENERGY_MIN_DBFS`, else 0.0. Until that much audio has been seen, `initial_floor_db` (when
    given) also bounds the floor: offline callers pass a low percentile of the whole input, so
    that speech at the very start is found; a live stream learns the floor from its first
    frames (speech at the very start is found from its first pause on).
    """

    threshold = 0.5

    def __init__(self, sample_rate: int = SAMPLE_RATE, margin_db: float = ENERGY_MARGIN_DB,
                 min_dbfs: float = ENERGY_MIN_DBFS, initial_floor_db: float | None = None) -> None:
        self.frame_samples = sample_rate * ENERGY_FRAME_MS // 1000
        self.margin_db, self.min_dbfs = margin_db, min_dbfs
        self.initial_floor_db = initial_floor_db
        self._window = round(ENERGY_FLOOR_SECONDS * 1000 / ENERGY_FRAME_MS)
        self.reset()

    @staticmethod
    def frame_db(frame: np.ndarray) -> float:
        return 10.0 * math.log10(float(np.mean(np.square(frame, dtype=np.float64))) + 1e-10)

    def __call__(self, frame: np.ndarray) -> float:
        db = self.frame_db(frame)
        # Monotonic deque of (index, dB): the minimum of the window is at the front.
        while self._recent and self._recent[-1][1] >= db:
            self._recent.pop()
        self._recent.append((self._count, db))
        if self._recent[0][0] <= self._count - self._window:
            self._recent.popleft()
        floor = self._recent[0][1]
        if self.initial_floor_db is not None and self._count < self._window:
            floor = min(floor, self.initial_floor_db)
        self._count += 1
        return float(db > max(floor + self.margin_db, self.min_dbfs))

    def reset(self) -> None:
        self._recent: deque[tuple[int, float]] = deque()
        self._count = 0


def make_detector(method: str = DEFAULT_METHOD, sample_rate: int = SAMPLE_RATE,
                  aggressiveness: int = 2, threshold: float = 0.5) -> FrameDetector:
    """A frame detector by name: "webrtc", "silero" or "energy"."""
    if method == "webrtc":
        return WebRtcDetector(aggressiveness, sample_rate)
    if method == "silero":
        if sample_rate != SAMPLE_RATE:
            raise ConfigError(f"the Silero VAD runs at {SAMPLE_RATE} Hz, got {sample_rate}")
        return SileroDetector(threshold)
    if method == "energy":
        return EnergyDetector(sample_rate)
    raise ConfigError(f"unknown VAD method {method!r}; choose one of {', '.join(METHODS)}")


def frame_scores(audio: np.ndarray, detector: FrameDetector) -> np.ndarray:
    """Speech score of each whole frame of `audio` (a last partial frame is zero-padded)."""
    n = detector.frame_samples
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 1:
        raise ValueError(f"expected mono audio (a 1-D array), got shape {audio.shape}")
    frames = -(-len(audio) // n)
    padded = np.zeros(frames * n, np.float32)
    padded[: len(audio)] = audio
    detector.reset()
    return np.array([detector(padded[i * n: (i + 1) * n]) for i in range(frames)], np.float32)


def speech_segments(
    audio: np.ndarray,
    sample_rate: int = SAMPLE_RATE,
    *,
    method: str = DEFAULT_METHOD,
    aggressiveness: int = 2,
    threshold: float = 0.5,
    min_speech_ms: float = 250.0,
    min_silence_ms: float = 300.0,
    padding_ms: float = 200.0,
    max_segment_seconds: float | None = None,
    detector: FrameDetector | None = None,
) -> list[tuple[float, float]]:
    """The speech in `audio` (float32 mono) as sorted, non-overlapping (start, end) seconds.

    `method`: "webrtc" (`aggressiveness` 0-3), "silero" (`threshold` on its probability) or
    "energy"; or pass a ready `detector`. See the module docstring for the other settings.
    """
    for name, value in (("min_speech_ms", min_speech_ms), ("min_silence_ms", min_silence_ms),
                        ("padding_ms", padding_ms)):
        if not value >= 0:
            raise ConfigError(f"{name} must be >= 0, got {value!r}")
    if max_segment_seconds is not None and not max_segment_seconds > 0:
        raise ConfigError(f"max_segment_seconds must be > 0, got {max_segment_seconds!r}")
    if detector is None and method == "energy":
        probe = EnergyDetector(sample_rate)
        n = probe.frame_samples
        levels = [probe.frame_db(audio[i: i + n]) for i in range(0, len(audio) - n + 1, n)]
        detector = EnergyDetector(sample_rate, initial_floor_db=float(np.percentile(levels, 5))
                                  if levels else None)
    detector = detector or make_detector(method, sample_rate, aggressiveness, threshold)
    scores = frame_scores(audio, detector)
    frame_s = detector.frame_samples / sample_rate
    speech = scores >= detector.threshold
    min_silence = max(1, round(min_silence_ms / 1000 / frame_s))
    runs: list[list[int]] = []  # [first frame, end frame)
    silence = 0
    for i, is_speech in enumerate(speech):
        if is_speech:
            if runs and silence < min_silence and runs[-1][1] == i - silence:
                runs[-1][1] = i + 1  # a short pause inside the segment
            else:
                runs.append([i, i + 1])
            silence = 0
        else:
            silence += 1
    min_frames = min_speech_ms / 1000 / frame_s
    runs = [r for r in runs if r[1] - r[0] >= min_frames]
    if max_segment_seconds is not None:
        runs = [part for r in runs for part in _split_long(r, scores, max_segment_seconds / frame_s)]
    duration = len(audio) / sample_rate
    pad = padding_ms / 1000
    segments: list[tuple[float, float]] = []
    for first, end in runs:
        start, stop = max(0.0, first * frame_s - pad), min(duration, end * frame_s + pad)
        if segments and start <= segments[-1][1]:
            start = segments[-1][1]  # touching, never overlapping: split points stay exact
        segments.append((round(start, 3), round(stop, 3)))
    return segments


def _split_long(run: list[int], scores: np.ndarray, max_frames: float) -> list[list[int]]:
    """Split a run of frames longer than `max_frames` at its least speech-like frames."""
    first, end = run
    if end - first <= max_frames:
        return [run]
    lo, hi = first + int(max_frames) // 2, first + int(max_frames)
    cut = lo + int(np.argmin(scores[lo:hi]))
    return [[first, cut]] + _split_long([cut, end], scores, max_frames)


def split_speech(audio: np.ndarray, sample_rate: int = SAMPLE_RATE,
                 max_segment_seconds: float = 30.0, method: str = "auto",
                 padding_ms: float = 200.0) -> list[tuple[float, np.ndarray]]:
    """Long audio -> (offset in seconds, piece) for each speech segment, none longer than
    `max_segment_seconds` (for `Model.transcribe`). "auto" is "webrtc" when webrtcvad is
    installed, else "energy"."""
    if method == "auto":
        try:
            import webrtcvad  # noqa: F401

            method = "webrtc"
        except ImportError:
            method = "energy"
    segments = speech_segments(audio, sample_rate, method=method, padding_ms=padding_ms,
                               max_segment_seconds=max_segment_seconds - 2 * padding_ms / 1000)
    return [(start, audio[round(start * sample_rate): round(end * sample_rate)])
            for start, end in segments]


# --- endpointing --------------------------------------------------------------------------------

@dataclass(frozen=True)
class EndpointConfig:
    """When a stream's utterance ends: after `silence_ms` of non-speech following at least
    `min_speech_ms` of speech, or once it is `max_utterance_seconds` long."""

    silence_ms: float = 600.0
    min_speech_ms: float = 150.0
    max_utterance_seconds: float = 20.0
    method: str = DEFAULT_METHOD
    aggressiveness: int = 2
    threshold: float = 0.5

    def __post_init__(self) -> None:
        if not self.silence_ms > 0:
            raise ConfigError(f"silence_ms must be > 0, got {self.silence_ms!r}")
        if not self.min_speech_ms >= 0:
            raise ConfigError(f"min_speech_ms must be >= 0, got {self.min_speech_ms!r}")
        if not self.max_utterance_seconds > self.silence_ms / 1000:
            raise ConfigError(f"max_utterance_seconds must exceed silence_ms, got "
                              f"{self.max_utterance_seconds!r}")
        if self.method not in METHODS:
            raise ConfigError(f"unknown VAD method {self.method!r}; choose one of "
                              f"{', '.join(METHODS)}")


class Endpointer:
    """Finds utterance ends in a stream of samples, frame by frame.

    `feed(samples)` returns the absolute sample positions (counted from the first sample fed)
    where an utterance ended during this call: `silence_ms` into a silence after speech (the
    cut is that late, so the utterance keeps its trailing padding), or at the maximum length.
    """

    def __init__(self, config: EndpointConfig | None = None,
                 sample_rate: int = SAMPLE_RATE, detector: FrameDetector | None = None) -> None:
        self.config = config = config or EndpointConfig()
        self.sample_rate = sample_rate
        self.detector = detector or make_detector(config.method, sample_rate,
                                                  config.aggressiveness, config.threshold)
        n = self.detector.frame_samples
        self._silence_frames = max(1, math.ceil(config.silence_ms / 1000 * sample_rate / n))
        self._speech_frames = math.ceil(config.min_speech_ms / 1000 * sample_rate / n)
        self._max_frames = int(config.max_utterance_seconds * sample_rate / n)
        self.reset()

    def reset(self) -> None:
        self.detector.reset()
        self._pending = np.zeros(0, np.float32)
        self._position = 0  # samples scored so far
        self._speech = 0  # speech frames in the current utterance
        self._silence = 0  # trailing non-speech frames
        self._frames = 0  # frames in the current utterance

    @property
    def in_speech(self) -> bool:
        """Whether the current utterance has had enough speech to be closed by silence."""
        return self._speech >= max(self._speech_frames, 1)

    def feed(self, samples: np.ndarray) -> list[int]:
        n = self.detector.frame_samples
        audio = np.concatenate([self._pending, np.asarray(samples, np.float32)])
        whole = len(audio) - len(audio) % n
        ends = []
        for start in range(0, whole, n):
            is_speech = self.detector(audio[start: start + n]) >= self.detector.threshold
            self._position += n
            self._frames += 1
            self._speech += is_speech
            self._silence = 0 if is_speech else self._silence + 1
            if ((self.in_speech and self._silence >= self._silence_frames)
                    or self._frames >= self._max_frames):
                ends.append(self._position)
                self._speech = self._silence = self._frames = 0
        self._pending = audio[whole:]
        return ends


__all__ = ["EndpointConfig", "Endpointer", "EnergyDetector", "SileroDetector", "WebRtcDetector",
           "frame_scores", "make_detector", "silero_model_path", "speech_segments", "split_speech"]

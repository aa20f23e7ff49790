"""Real-time streaming: feed audio as it arrives, read partial results, finish with a `Transcript`.

    stream = model.stream()                     # decoding options as for `Model.transcribe`
    for chunk in chunks:                        # float32 / int16 arrays or PCM16 bytes, any size
        for utterance in stream.feed(chunk):    # utterances closed by endpointing (if enabled)
            print(utterance.text)
        print(stream.partial().text)            # stable prefix + unstable tail
    transcript = stream.finish()                # word times, as `Model.transcribe`
    stream.reset()                              # reuse for the next utterance

Two ways to run the network:

- Streaming-capable networks (unidirectional DeepSpeech2, chunked Conformer with causal
  convolutions) run step by step with explicit state (`net.initial_state()`,
  `net.stream_step(features, state)`): conv left context, GRU hidden states, row-convolution
  look-ahead, attention key/value caches of the visible left chunks. Features are computed
  incrementally too (`StreamingLogMel`), so the log-probabilities, and the transcript, equal
  offline decoding of the same audio, and each fed second costs the same however long the
  stream is.
- Other networks (bidirectional, full attention, Citrinet) run on overlapping windows of
  `window_seconds` with `context_seconds` of context on each side; frames are final once the
  next window's context has been seen (latency up to `window_seconds - context_seconds`), and
  `partial()` decodes the unfinished tail for display.

Feature normalisation: "none" and "global" stream exactly. "per_feature" needs the whole
utterance; streams then use running statistics (mean and variance of the frames so far), which
differ from offline features, mostly during the first second. Streaming models should be
trained with "global" (or "none") normalisation; see docs/streaming.md.
"""

from __future__ import annotations

import struct
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterator, Protocol

import numpy as np

from harken.audio import pcm16_to_float
from harken.decoding.greedy import path_transcript
from harken.decoding.types import Alternative, Transcript, Word
from harken.errors import HarkenError
from harken.features_np import STD_EPSILON, FeatureConfig
from harken.vad import EndpointConfig, Endpointer

if TYPE_CHECKING:  # torch is imported where used: exported models stream without it
    import torch

    from harken.decoding.ctc_beam import Decoder
    from harken.features import LogMel
    from harken.model import Model
    from harken.vad import Endpointer

# Overlapping windows for networks that cannot stream step by step.
WINDOW_SECONDS = 6.0
CONTEXT_SECONDS = 1.0
# With beam search, words ending this long before the decoded end count as stable.
BEAM_STABLE_SECONDS = 1.0
# Options of `Model.stream` that configure the stream rather than the decoder.
STREAM_OPTIONS = ("endpoint", "window_seconds", "context_seconds", "step")


@dataclass
class Partial:
    """An intermediate result: `stable` words are not expected to change, `unstable` may.
    `alternatives`: the beam's N-best list so far (decoding options with `nbest` > 1)."""

    stable: str
    unstable: str
    words: list[Word] = field(default_factory=list)
    stable_words: int = 0
    alternatives: list[Alternative] = field(default_factory=list)

    @property
    def text(self) -> str:
        return " ".join(t for t in (self.stable, self.unstable) if t)


# --- incremental features -----------------------------------------------------------------------

class StreamingLogMel:
    """`LogMel` computed chunk by chunk: the frames of a stream equal `LogMel` of all of it.

    Frame t (centred STFT, zero padding of n_fft / 2 at the start) is computed once sample
    t * hop + n_fft / 2 has arrived; `finish` pads the end with zeros as `torch.stft` does and
    returns the last frames (`num_samples // hop + 1` in all). Eval mode only (no dither).
    """

    def __init__(self, featurizer: LogMel) -> None:
        self.featurizer = featurizer
        self.config: FeatureConfig = featurizer.config
        self.reset()

    def reset(self) -> None:
        import torch

        cfg = self.config
        device = self.featurizer.window.device
        self._previous = torch.zeros(1, device=device)  # last sample (pre-emphasis)
        self._buffer = torch.zeros(cfg.n_fft // 2, device=device)  # starts at frame `_emitted`
        self._samples = 0
        self._emitted = 0
        self._sum = torch.zeros(cfg.n_mels, dtype=torch.float64, device=device)
        self._sum_squares = torch.zeros_like(self._sum)

    @property
    def frames_emitted(self) -> int:
        return self._emitted

    def feed(self, samples: torch.Tensor | np.ndarray) -> torch.Tensor:
        """1-D float32 samples -> (T_new, n_mels) frames that became complete."""
        import torch

        samples = torch.as_tensor(samples)
        if samples.numel() == 0:
            return self._empty()
        cfg = self.config
        x = samples.to(self._buffer.device, torch.float32)
        if cfg.preemphasis > 0:
            shifted = torch.cat([self._previous, x[:-1]])
            self._previous = x[-1:]
            x = x - cfg.preemphasis * shifted
        self._buffer = torch.cat([self._buffer, x])
        self._samples += len(x)
        ready = (cfg.n_fft // 2 + self._samples - cfg.n_fft) // cfg.hop_length + 1
        return self._frames(ready - self._emitted)

    def finish(self) -> torch.Tensor:
        """The remaining frames, with the end padded by zeros (as the offline features)."""
        import torch

        cfg = self.config
        self._buffer = torch.cat([self._buffer, self._buffer.new_zeros(cfg.n_fft // 2)])
        return self._frames(self._samples // cfg.hop_length + 1 - self._emitted)

    def _empty(self) -> torch.Tensor:
        return self._buffer.new_zeros(0, self.config.n_mels)

    def _frames(self, count: int) -> torch.Tensor:
        import torch

        if count <= 0:
            return self._empty()
        cfg, fz = self.config, self.featurizer
        segment = self._buffer[: cfg.n_fft + (count - 1) * cfg.hop_length]
        spec = torch.stft(segment[None], n_fft=cfg.n_fft, hop_length=cfg.hop_length,
                          win_length=cfg.win_length, window=fz.window, center=False,
                          return_complex=True)
        power = spec.real.square() + spec.imag.square()  # (1, n_freqs, T)
        mel = torch.matmul(fz.mel_filters, power)  # (1, n_mels, T)
        features = torch.log(mel + cfg.log_guard).transpose(1, 2)[0]  # (T, n_mels)
        self._buffer = self._buffer[count * cfg.hop_length:]
        self._emitted += count
        if cfg.normalize == "global":
            features = (features - fz.global_mean) / fz.global_std
        elif cfg.normalize == "per_feature":
            features = self._running_normalize(features)
        return features

    def _running_normalize(self, features: torch.Tensor) -> torch.Tensor:
        """Mean 0 and std 1 per mel bin over the frames so far (each frame: itself and before)."""
        import torch

        x = features.to(torch.float64)
        sums = self._sum + torch.cumsum(x, dim=0)
        squares = self._sum_squares + torch.cumsum(x.square(), dim=0)
        self._sum, self._sum_squares = sums[-1], squares[-1]
        count = torch.arange(self._emitted - len(x) + 1, self._emitted + 1,
                             device=x.device, dtype=torch.float64)[:, None]
        mean = sums / count
        std = (squares / count - mean.square()).clamp(min=0).sqrt()
        return ((x - mean) / (std + STD_EPSILON)).to(torch.float32)


# --- running the network ------------------------------------------------------------------------

class _Backend(Protocol):
    latency_seconds: float

    def reset(self) -> None: ...

    def feed(self, samples: np.ndarray) -> np.ndarray: ...

    def finish(self) -> np.ndarray: ...

    def tail(self) -> np.ndarray: ...


# A network step run for a stream: (features (1, T, F), state, final) -> (log-probabilities
# (1, T', V), new state); the network's own `stream_step` unless a stream is given another (the
# server batches the steps of many streams).
StepFunction = Callable[[Any, Any, bool], tuple[Any, Any]]


class Search(Protocol):
    """How a stream decodes its frames: greedy, CTC beam search, or a transducer search."""

    exact_prefix: bool

    def feed(self, frames: np.ndarray) -> None: ...

    def result(self, tail: np.ndarray | None = None) -> Transcript: ...

    def frames(self) -> int: ...


class _StepBackend:
    """A streaming-capable network run step by step on incremental features."""

    def __init__(self, model: Model, step: StepFunction | None = None) -> None:
        self.model = model
        self.network: Any = model.network
        self._run = step or self.network.stream_step
        # numpy featurizers (harken.interop.onnx_runtime) bring their own incremental version
        streaming = getattr(model.featurizer, "streaming", None)
        self.features: Any = streaming() if streaming else StreamingLogMel(model.featurizer)
        net, cfg = self.network, model.feature_config
        if model.is_transducer:  # the latency of its encoder
            net = net.encoder
        if hasattr(net, "lookahead_frames"):  # DeepSpeech2: its own block plus the row conv
            frames = net.subsampling + (net.lookahead_frames or 0)
        else:  # chunked Conformer: a whole chunk
            frames = net.subsampling * net.config.chunk_size
        # The STFT needs half a window past a frame's centre.
        self.latency_seconds = (frames * cfg.hop_length + cfg.n_fft // 2) / cfg.sample_rate
        self.reset()

    def reset(self) -> None:
        self.features.reset()
        self._state = self.network.initial_state()

    def feed(self, samples: np.ndarray) -> np.ndarray:
        features = self.features.feed(samples)
        if len(features) == 0:
            return self._empty()
        return self._step(features, final=False)

    def finish(self) -> np.ndarray:
        return self._step(self.features.finish(), final=True)

    def tail(self) -> np.ndarray:
        return self._empty()

    def _empty(self) -> np.ndarray:
        return np.zeros((0, self.network.vocab_size), np.float32)

    def _step(self, features: Any, final: bool) -> np.ndarray:
        if isinstance(features, np.ndarray):  # a network run without PyTorch
            log_probs, self._state = self._run(features[None], self._state, final)
            return np.asarray(log_probs[0])
        import torch

        with torch.inference_mode():
            log_probs, self._state = self._run(features[None], self._state, final)
        return log_probs[0].cpu().numpy()  # type: ignore[no-any-return]


class _WindowBackend:
    """Any network, run on overlapping windows of audio.

    A window of `window` samples gives the frames between its left and right context; the next
    window starts `context` before the first frame not yet final. Frames are final once their
    right context has been seen; `tail` gives the log-probabilities of the rest for display.
    """

    def __init__(self, model: Model, window_seconds: float, context_seconds: float) -> None:
        if not 0 <= 2 * context_seconds < window_seconds:
            raise ValueError(f"context_seconds ({context_seconds}) must be >= 0 and less than "
                             f"half of window_seconds ({window_seconds})")
        self.model = model
        cfg = model.feature_config
        self.frame_samples = cfg.hop_length * model.network.subsampling
        # Whole output frames, so that windows' frames line up with the offline frames.
        self.window = max(2, round(window_seconds * cfg.sample_rate / self.frame_samples))
        self.context = round(context_seconds * cfg.sample_rate / self.frame_samples)
        self.window *= self.frame_samples
        self.context *= self.frame_samples
        self.latency_seconds = (self.window - self.context) / cfg.sample_rate
        self.reset()

    def reset(self) -> None:
        self._audio = np.zeros(0, np.float32)  # samples from `_start` on
        self._start = 0  # absolute sample index of _audio[0], a multiple of frame_samples
        self._final = 0  # frames that are final (and were returned)
        self._tail: np.ndarray | None = None

    def feed(self, samples: np.ndarray) -> np.ndarray:
        self._audio = np.concatenate([self._audio, samples])
        self._tail = None
        out = []
        while len(self._audio) >= self.window:
            end = (self._start + self.window - self.context) // self.frame_samples
            out.append(self._run(self._audio[: self.window], end))
        return np.concatenate(out) if out else self._nothing()

    def finish(self) -> np.ndarray:
        return self._run(self._audio, None)

    def tail(self) -> np.ndarray:
        if self._tail is None:
            first = self._final - self._start // self.frame_samples
            self._tail = (self.model.log_probs([self._audio])[0][first:] if len(self._audio)
                          else self._nothing())
        return self._tail

    def _nothing(self) -> np.ndarray:
        return np.zeros((0, self.model.tokenizer.vocab_size), np.float32)

    def _run(self, audio: np.ndarray, end: int | None) -> np.ndarray:
        """Frames [_final, end) of the window `audio` (None: to its end); moves the window."""
        log_probs = self.model.log_probs([audio])[0]
        first_frame = self._start // self.frame_samples
        end = first_frame + len(log_probs) if end is None else end
        out = log_probs[self._final - first_frame: end - first_frame]
        self._final = end
        start = max(0, end * self.frame_samples - self.context)
        self._audio = self._audio[start - self._start:]
        self._start = start
        return out


# --- decoding -------------------------------------------------------------------------------------

class _Greedy:
    """Best path, frame by frame."""

    exact_prefix = True

    def __init__(self, model: Model, time_offset: float) -> None:
        self.model = model
        self.time_offset = time_offset
        self._path: list[np.ndarray] = []
        self._scores: list[np.ndarray] = []

    def feed(self, log_probs: np.ndarray) -> None:
        if len(log_probs):
            self._path.append(log_probs.argmax(axis=1))
            self._scores.append(log_probs.max(axis=1))

    def result(self, tail: np.ndarray | None = None) -> Transcript:
        parts = [*self._path, tail.argmax(axis=1)] if tail is not None else self._path
        scores = [*self._scores, tail.max(axis=1)] if tail is not None else self._scores
        path = np.concatenate(parts) if parts else np.zeros(0, np.int64)
        frame_scores = np.concatenate(scores) if scores else np.zeros(0, np.float32)
        return path_transcript(path, frame_scores, self.model.tokenizer, self.model.frame_seconds,
                               score=float(frame_scores.sum()), time_offset=self.time_offset)

    def frames(self) -> int:
        return sum(len(p) for p in self._path)


class _Beam:
    """The beam search decoder's own incremental search (`Decoder.stream`)."""

    exact_prefix = False

    def __init__(self, model: Model, decoder: Any, time_offset: float) -> None:
        self.model = model
        self._stream = decoder.stream(model.frame_seconds, time_offset)
        self._frames = 0

    def feed(self, log_probs: np.ndarray) -> None:
        if len(log_probs):
            self._stream.feed(log_probs)
            self._frames += len(log_probs)

    def result(self, tail: np.ndarray | None = None) -> Transcript:
        return self._stream.partial(self._stream.decoder.options.nbest)

    def finish(self) -> Transcript:
        return self._stream.finish()

    def frames(self) -> int:
        return self._frames


# --- the stream -----------------------------------------------------------------------------------

class Stream:
    """One audio stream being transcribed (from `Model.stream`); see the module docstring.

    `endpoint`: None (one utterance until `finish`), True (endpointing with the default
    `harken.vad.EndpointConfig`), an `EndpointConfig`, or an `Endpointer`. With endpointing,
    `feed` returns the utterances it closed (after enough trailing silence, or at the maximum
    utterance length); their times count from the start of the stream.
    """

    def __init__(self, model: Model, *, decoder: Decoder | None = None,
                 search: Callable[[float], Search] | None = None, endpoint: Any = None,
                 window_seconds: float = WINDOW_SECONDS, context_seconds: float = CONTEXT_SECONDS,
                 step: StepFunction | None = None) -> None:
        self.model = model
        self.sample_rate = model.sample_rate
        network = model.network
        self.backend: _Backend
        if getattr(network, "streamable", False):
            self.backend = _StepBackend(model, step)
        else:
            self.backend = _WindowBackend(model, window_seconds, context_seconds)
        if decoder is not None and search is not None:
            raise ValueError("give a decoder or a search factory, not both")
        self._decoder = decoder
        self._make_search = search
        self.endpointer = _endpointer(endpoint, self.sample_rate)
        self._odd_byte = b""
        self._samples = 0  # samples fed since the stream started or was reset
        self._utterance_start = 0
        self._new_decoder()

    @property
    def exact(self) -> bool:
        """Whether the network runs step by step: results then equal offline decoding, except
        that a model with "per_feature" normalisation streams with running statistics."""
        return isinstance(self.backend, _StepBackend)

    @property
    def latency_seconds(self) -> float:
        """How long after a sound is fed its frames are final (network look-ahead/windows)."""
        return self.backend.latency_seconds

    @property
    def seconds_fed(self) -> float:
        return self._samples / self.sample_rate

    def reset(self) -> None:
        """Forget everything fed: the stream starts again at time 0."""
        self.backend.reset()
        if self.endpointer is not None:
            self.endpointer.reset()
        self._odd_byte = b""
        self._samples = 0
        self._utterance_start = 0
        self._new_decoder()

    def feed(self, audio: Any) -> list[Transcript]:
        """Feed the next samples: a float array (16 kHz, mono), an int16 array or 16-bit
        little-endian PCM bytes (a sample may be split between two calls).

        Returns the utterances closed by endpointing during this call ([] without it).
        """
        samples = self._to_float(audio)
        if self.endpointer is None:
            self._feed(samples)
            return []
        finished = []
        position = self._samples
        for end in self.endpointer.feed(samples):
            self._feed(samples[: end - position])
            samples = samples[end - position:]
            position = end
            finished.append(self._close_utterance())
        self._feed(samples)
        return finished

    def partial(self) -> Partial:
        """The best transcript so far, split into a stable prefix and an unstable tail."""
        tail = self.backend.tail()
        transcript = self._search.result(tail if len(tail) else None)
        words = transcript.words
        decided = self._search.frames() * self.model.frame_seconds + self._offset
        if isinstance(self._search, _Greedy):
            # Greedy output of final frames never changes, except that the last word of the
            # final frames may go on; tail frames (windowed networks) may change.
            stable = [w for w in words if w.end <= decided][:-1]
        else:
            stable = [w for w in words if w.end <= decided - BEAM_STABLE_SECONDS]
        words, n = self._keep_promises(words, len(stable))
        return Partial(stable=" ".join(w.word for w in words[:n]),
                       unstable=" ".join(w.word for w in words[n:]) if words
                       else transcript.text, words=words, stable_words=n,
                       alternatives=transcript.alternatives)

    def _keep_promises(self, words: list[Word], stable: int) -> tuple[list[Word], int]:
        """Partials of one utterance never retract a stable word and, once they showed text,
        never go blank: the words shown as stable stay first (the search's later words after
        them), and an empty best hypothesis shows the previous partial again."""
        promised = self._stable
        if [w.word for w in words[:len(promised)]] == [w.word for w in promised]:
            if stable > len(promised):
                self._stable = promised = list(words[:stable])
            words = promised + words[len(promised):]
        else:  # the search changed its mind about a word it had called stable
            end = promised[-1].end
            words = promised + [w for w in words if w.start >= end]
        if not words and self._shown:
            words = self._shown
        self._shown = words
        return words, len(promised)

    def finish(self) -> Transcript:
        """Flush the audio fed so far and return the final transcript of the (last) utterance;
        the stream is then reset for reuse, its clock going on."""
        if self._odd_byte:
            raise ValueError("PCM bytes ended in the middle of a 16-bit sample")
        return self._close_utterance()

    # -- internals ----------------------------------------------------------------------------
    @property
    def _offset(self) -> float:
        return self._utterance_start / self.sample_rate

    def _new_decoder(self) -> None:
        self._stable: list[Word] = []  # words the partials of this utterance called stable
        self._shown: list[Word] = []  # the words of the last partial
        self._search: Search
        if self._make_search is not None:
            self._search = self._make_search(self._offset)
        elif self._decoder is None:
            self._search = _Greedy(self.model, self._offset)
        else:
            self._search = _Beam(self.model, self._decoder, self._offset)

    def _feed(self, samples: np.ndarray) -> None:
        if len(samples):
            self._samples += len(samples)
            self._search.feed(self.backend.feed(samples))

    def _close_utterance(self) -> Transcript:
        self._search.feed(self.backend.finish())
        if hasattr(self._search, "finish"):  # beam searches close their hypotheses
            transcript = self._search.finish()
        else:
            transcript = self._search.result()
        transcript.duration = round((self._samples - self._utterance_start) / self.sample_rate, 3)
        self.backend.reset()
        self._utterance_start = self._samples
        self._new_decoder()
        return transcript

    def _to_float(self, audio: Any) -> np.ndarray:
        if isinstance(audio, (bytes, bytearray, memoryview)):
            data = self._odd_byte + bytes(audio)
            whole = len(data) - len(data) % 2
            self._odd_byte = data[whole:]
            return pcm16_to_float(data[:whole])
        if hasattr(audio, "detach"):  # a torch tensor
            audio = audio.detach().cpu().numpy()
        array = np.asarray(audio)
        if array.ndim != 1:
            raise ValueError(f"expected mono audio (a 1-D array), got shape {array.shape}")
        if array.dtype == np.int16:
            return pcm16_to_float(array)
        if array.dtype.kind != "f":
            raise ValueError(f"expected float or int16 samples or PCM16 bytes, got {array.dtype}")
        return np.ascontiguousarray(array, dtype=np.float32)


# --- live input ---------------------------------------------------------------------------------

def live_chunks(source: str | None, sample_rate: int, chunk_ms: int = 100) -> Iterator[Any]:
    """Audio chunks from the microphone (`source` None) or stdin ("-"): PCM16 bytes from
    stdin (raw 16 kHz mono S16_LE, or a WAV stream whose header is checked and skipped), float32
    arrays from the microphone (needs sounddevice: pip install harken[mic])."""
    size = max(1, sample_rate * chunk_ms // 1000)
    if source == "-":
        return _stdin_chunks(2 * size, sample_rate)
    if source is not None:
        raise HarkenError(f"listen: expected '-' (stdin) or nothing (microphone), got {source!r}")
    return _microphone_chunks(size, sample_rate)


def _stdin_chunks(size: int, sample_rate: int) -> Iterator[bytes]:
    stdin = sys.stdin.buffer
    head = stdin.read(44)
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        channels, rate = struct.unpack("<HI", head[22:28])
        bits = struct.unpack("<H", head[34:36])[0]
        if (channels, rate, bits) != (1, sample_rate, 16):
            raise HarkenError(f"stdin: expected a {sample_rate} Hz mono 16-bit WAV stream, got "
                              f"{rate} Hz, {channels} channel(s), {bits} bits")
        head = b""  # (a WAV header with extra chunks would be read as a few samples of noise)
    if head:
        yield head
    while True:
        data = stdin.read(size)
        if not data:
            return
        yield data


def _microphone_chunks(size: int, sample_rate: int) -> Iterator[np.ndarray]:
    pipe = "or pipe audio in: arecord -f S16_LE -r 16000 -c 1 | harken listen -"
    try:
        import sounddevice
    except ImportError as exc:
        raise HarkenError(f"listening to the microphone needs sounddevice: pip install "
                          f"'harken[mic]' ({pipe}) ({exc})") from None
    except OSError as exc:  # sounddevice is installed; the PortAudio C library is not
        raise HarkenError(f"listening to the microphone needs the PortAudio library, which was "
                          f"not found ({exc}): install libportaudio2 (Debian/Ubuntu: sudo apt "
                          f"install libportaudio2; macOS: brew install portaudio), {pipe}"
                          ) from None
    with sounddevice.InputStream(samplerate=sample_rate, channels=1, dtype="float32",
                                 blocksize=size) as microphone:
        while True:
            block, _ = microphone.read(size)
            yield block[:, 0].copy()


def _endpointer(endpoint: Any, sample_rate: int) -> Endpointer | None:
    if endpoint is None or endpoint is False:
        return None

    if isinstance(endpoint, Endpointer):
        return endpoint
    if endpoint is True:
        return Endpointer(EndpointConfig(), sample_rate)
    if isinstance(endpoint, EndpointConfig):
        return Endpointer(endpoint, sample_rate)
    raise ValueError(f"endpoint must be None, True, an EndpointConfig or an Endpointer, "
                     f"got {endpoint!r}")


__all__ = ["Partial", "Stream", "StreamingLogMel", "live_chunks"]

"""Mozilla DeepSpeech's Python API on harken models: switch by changing one import.

    from harken.compat.deepspeech import Model      # was: from deepspeech import Model

    ds = Model("en-small")                          # a harken model name, folder or file
    ds.enableExternalScorer("lm.arpa")              # a harken LM (ARPA or KenLM binary)
    text = ds.stt(np.frombuffer(pcm16, np.int16))
    stream = ds.createStream()
    stream.feedAudioContent(chunk)
    print(stream.intermediateDecode()); print(stream.finishStream())

The names, arguments and return values are DeepSpeech 0.9's (`deepspeech.Model`,
`Stream`, `Metadata`, `CandidateTranscript`, `TokenMetadata`), and so are its errors:
`RuntimeError("<Function> failed with '<message>' (0x<code>)")` with DeepSpeech's codes, status
ints from `setBeamWidth`/`setScorerAlphaBeta`, hot-words only with a scorer enabled, and
"Stream object is not valid" after `finishStream`/`freeStream`. Underneath, decoding is
harken's (`DecodeOptions`: beam width, LM as the scorer with alpha = `lm_weight` and beta =
`word_score`, hot-words as `hotwords`) and streaming is `Model.stream`. What differs is
written in docs/deepspeech-migration.md: the scorer is a harken LM, not a `.scorer` package;
token timings come from harken's word alignment; confidences are harken's decoder scores.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np

from harken.decoding.options import DEFAULT_BEAM_WIDTH, DecodeOptions
from harken.decoding.types import Transcript
from harken.errors import HarkenError
from harken.version import __version__
from harken.decoding.ctc_beam import get_decoder
from harken.model import load_model
from harken.modelfile import bundled_models

# DeepSpeech's time step: token timesteps count units of 20 ms.
TIMESTEP_SECONDS = 0.02
# Streams keep this many candidates for `*WithMetadata(num_results)`.
STREAM_CANDIDATES = 16

# DeepSpeech's error codes (native_client/deepspeech_errors) and their messages.
ERR_NO_MODEL = 0x1000
ERR_INVALID_SCORER = 0x2002
ERR_SCORER_NOT_ENABLED = 0x2004
ERR_SCORER_UNREADABLE = 0x2005
ERR_FAIL_READ_PROTOBUF = 0x3005
ERR_FAIL_INSERT_HOTWORD = 0x3008
ERR_FAIL_CLEAR_HOTWORD = 0x3009
ERR_FAIL_ERASE_HOTWORD = 0x3010
_MESSAGES = {
    ERR_NO_MODEL: "Missing model information.",
    ERR_INVALID_SCORER: "Invalid scorer file.",
    ERR_SCORER_NOT_ENABLED: "External scorer is not enabled.",
    ERR_SCORER_UNREADABLE: "Could not read scorer file.",
    ERR_FAIL_READ_PROTOBUF: "Error reading the proto buffer model file.",
    ERR_FAIL_INSERT_HOTWORD: "Could not insert hot-word.",
    ERR_FAIL_CLEAR_HOTWORD: "Could not clear hot-words.",
    ERR_FAIL_ERASE_HOTWORD: "Could not erase hot-word.",
}
# What DeepSpeech's Stream methods raise once the stream is finished or freed.
_INVALID_STREAM = "Stream object is not valid. Trying to {} an already finished stream?"


def _error(function: str, code: int, detail: str = "") -> RuntimeError:
    message = f"{function} failed with '{_MESSAGES[code]}' (0x{code:04X})"
    return RuntimeError(f"{message}: {detail}" if detail else message)


class TokenMetadata:
    """One character of a transcript: `text`, `timestep` (20 ms units), `start_time` (s)."""

    def __init__(self, text: str, timestep: int, start_time: float) -> None:
        self.text = text
        self.timestep = timestep
        self.start_time = start_time

    def __repr__(self) -> str:
        return f"TokenMetadata({self.text!r}, timestep={self.timestep}, start_time={self.start_time})"


class CandidateTranscript:
    """One hypothesis: `tokens` (a tuple of `TokenMetadata`) and its `confidence` (score)."""

    def __init__(self, tokens: tuple[TokenMetadata, ...], confidence: float) -> None:
        self.tokens = tokens
        self.confidence = confidence

    def __repr__(self) -> str:
        text = "".join(t.text for t in self.tokens)
        return f"CandidateTranscript({text!r}, confidence={self.confidence})"


class Metadata:
    """`transcripts`: a tuple of `CandidateTranscript`, best first."""

    def __init__(self, transcripts: tuple[CandidateTranscript, ...]) -> None:
        self.transcripts = transcripts

    def __repr__(self) -> str:
        return f"Metadata({list(self.transcripts)!r})"


class Model:
    """A harken model behind DeepSpeech's `Model` API.

    `model_path` is anything `harken.load_model` takes: a model folder, a `.harken` file or a
    bundled model's name. A DeepSpeech `.pbmm`/`.tflite` graph cannot be loaded (RuntimeError
    0x3005, as DeepSpeech raises for a file it cannot read).
    """

    def __init__(self, model_path: str | os.PathLike[str]) -> None:
        if not os.path.exists(model_path) and not _is_bundled(str(model_path)):
            raise _error("CreateModel", ERR_NO_MODEL, f"{model_path} does not exist")
        try:
            self._model = load_model(model_path)
        except HarkenError as exc:
            raise _error("CreateModel", ERR_FAIL_READ_PROTOBUF, str(exc)) from exc
        defaults = self._model.decode_options()
        self._beam_width = defaults.beam_width if defaults is not None else DEFAULT_BEAM_WIDTH
        self._scorer: str | None = None
        self._alpha: float | None = None
        self._beta: float | None = None
        self._hotwords: dict[str, float] = {}

    @property
    def harken_model(self) -> Any:
        """The underlying `harken.Model`."""
        return self._model

    # -- settings ------------------------------------------------------------------------------
    def sampleRate(self) -> int:
        """The sample rate the model expects (16000)."""
        return int(self._model.sample_rate)

    def beamWidth(self) -> int:
        """The beam width used by `stt` and streams."""
        return self._beam_width

    def setBeamWidth(self, beam_width: int) -> int:
        """Set the beam width; returns 0 (DS_ERR_OK), or 0x2001 for a width below 1."""
        if not isinstance(beam_width, (int, np.integer)) or beam_width < 1:
            return 0x2001  # DS_ERR_INVALID_SHAPE
        self._beam_width = int(beam_width)
        return 0

    def enableExternalScorer(self, scorer_path: str | os.PathLike[str]) -> None:
        """Use a harken n-gram LM (ARPA or KenLM binary) as the scorer; RuntimeError when it
        cannot be read (0x2005) or used with this model's tokens (0x2002)."""
        path = os.fspath(scorer_path)
        if not os.path.isfile(path):
            raise _error("EnableExternalScorer", ERR_SCORER_UNREADABLE, path)
        try:
            self._check_decoder(dataclasses.replace(self._options(1), lm=path))
        except (HarkenError, ValueError, OSError, RuntimeError) as exc:
            raise _error("EnableExternalScorer", ERR_INVALID_SCORER, str(exc)) from exc
        self._scorer = path

    def disableExternalScorer(self) -> int:
        """Decode without the scorer (hot-words are kept but unused); returns 0, or 0x2004
        (DeepSpeech's DS_ERR_SCORER_NOT_ENABLED) when no scorer was enabled."""
        if self._scorer is None:
            return ERR_SCORER_NOT_ENABLED
        self._scorer = None
        return 0

    def setScorerAlphaBeta(self, alpha: float, beta: float) -> int:
        """LM weight (alpha) and word insertion bonus (beta); 0, or 0x2004 without a scorer."""
        if self._scorer is None:
            return ERR_SCORER_NOT_ENABLED
        self._alpha, self._beta = float(alpha), float(beta)
        return 0

    def addHotWord(self, word: str, boost: float) -> None:
        """Boost `word` (natural-log score added when it is recognised); needs a scorer."""
        if self._scorer is None:
            raise _error("AddHotWord", ERR_SCORER_NOT_ENABLED)
        if word in self._hotwords:
            raise _error("AddHotWord", ERR_FAIL_INSERT_HOTWORD)  # (DeepSpeech: a duplicate)
        self._hotwords[word] = float(boost)

    def eraseHotWord(self, word: str) -> None:
        """Remove a hot-word; RuntimeError when it was not added."""
        if self._scorer is None:
            raise _error("EraseHotWord", ERR_SCORER_NOT_ENABLED)
        if self._hotwords.pop(word, None) is None:
            raise _error("EraseHotWord", ERR_FAIL_ERASE_HOTWORD)

    def clearHotWords(self) -> None:
        """Remove every hot-word."""
        if self._scorer is None:
            raise _error("ClearHotWords", ERR_SCORER_NOT_ENABLED)
        self._hotwords.clear()

    # -- recognition ---------------------------------------------------------------------------
    def stt(self, audio_buffer: np.ndarray) -> str:
        """Transcribe 16-bit mono samples at `sampleRate()` (a numpy int16 array)."""
        return self._transcribe(audio_buffer, 1).text

    def sttWithMetadata(self, audio_buffer: np.ndarray, num_results: int = 1) -> Metadata:
        """Transcribe and return up to `num_results` candidates with per-character timings."""
        return self._metadata(self._transcribe(audio_buffer, num_results), num_results)

    def createStream(self) -> Stream:
        """A new streaming recognition (`feedAudioContent` ... `finishStream`)."""
        return Stream(self)

    # -- internals -----------------------------------------------------------------------------
    def _options(self, num_results: int) -> DecodeOptions:
        hotwords = self._hotwords if self._scorer is not None else {}
        return DecodeOptions(beam_width=self._beam_width, lm=self._scorer,
                             lm_weight=self._alpha if self._scorer else None,
                             word_score=self._beta if self._scorer else None,
                             hotwords=dict(hotwords), nbest=max(1, int(num_results)))

    def _check_decoder(self, options: DecodeOptions) -> None:
        get_decoder(self._model.tokenizer, options)

    def _transcribe(self, audio_buffer: np.ndarray, num_results: int) -> Transcript:
        audio = _pcm16(audio_buffer)
        # DeepSpeech gives the recognised (normalised) text, never written text
        raw = {"written": False} if getattr(self._model, "punctuator", None) is not None else {}
        return self._model.transcribe(audio, self._options(num_results), vad=None, **raw)

    def _metadata(self, transcript: Transcript, num_results: int) -> Metadata:
        candidates = [_candidate(transcript.text, transcript.words, transcript.score)]
        for alternative in transcript.alternatives[1:num_results]:
            candidates.append(_candidate(alternative.text, alternative.words, alternative.score))
        return Metadata(tuple(candidates))


class Stream:
    """A streaming recognition (DeepSpeech's `Stream`); made by `Model.createStream`."""

    def __init__(self, model: Model) -> None:
        self._owner = model
        # With the beam's whole N-best list, so that the metadata calls can return up to
        # `num_results` candidates (`STREAM_CANDIDATES` at most).
        self._stream: Any = model.harken_model.stream(
            model._options(min(model._beam_width, STREAM_CANDIDATES)))

    def feedAudioContent(self, audio_buffer: np.ndarray) -> None:
        """Feed 16-bit mono samples at the model's sample rate."""
        self._valid("feed").feed(_pcm16(audio_buffer))

    def intermediateDecode(self) -> str:
        """The transcript of the audio fed so far (the stream goes on)."""
        return str(self._valid("decode").partial().text)

    def intermediateDecodeWithMetadata(self, num_results: int = 1) -> Metadata:
        """The transcript so far with character timings: up to `num_results` candidates (the
        shown partial first, then the beam's other hypotheses, each with its own timings)."""
        partial = self._valid("decode").partial()
        candidates = [_candidate(partial.text, partial.words, 0.0)]
        seen = {partial.text}
        for alternative in partial.alternatives:
            if len(candidates) >= max(1, int(num_results)):
                break
            if alternative.text not in seen:
                seen.add(alternative.text)
                candidates.append(_candidate(alternative.text, alternative.words,
                                             alternative.score))
        if partial.alternatives:
            candidates[0].confidence = float(partial.alternatives[0].score)
        return Metadata(tuple(candidates))

    def finishStream(self) -> str:
        """The final transcript; the stream cannot be used afterwards."""
        return self._finish("finish").text

    def finishStreamWithMetadata(self, num_results: int = 1) -> Metadata:
        """The final transcript with character timings; the stream cannot be used afterwards."""
        return self._owner._metadata(self._finish("finish"), num_results)

    def freeStream(self) -> None:
        """Discard the stream without decoding."""
        self._valid("free")
        self._stream = None

    def _finish(self, action: str) -> Transcript:
        transcript: Transcript = self._valid(action).finish()
        self._stream = None
        return transcript

    def _valid(self, action: str) -> Any:
        if self._stream is None:
            raise RuntimeError(_INVALID_STREAM.format(action))
        return self._stream


def _candidate(text: str, words: list[Any], score: float) -> CandidateTranscript:
    """Characters of `text` with times from its `words`: a word's characters spread evenly
    over the word, a space at the time of the character before it."""
    tokens: list[TokenMetadata] = []
    for index, word in enumerate(text.split(" ") if text else []):
        timing = words[min(index, len(words) - 1)] if words else None
        start = timing.start if timing else 0.0
        end = max(timing.end if timing else 0.0, start)
        if index:
            tokens.append(_token(" ", tokens[-1].start_time if tokens else start))
        for i, char in enumerate(word):
            tokens.append(_token(char, start + (end - start) * i / max(len(word), 1)))
    return CandidateTranscript(tuple(tokens), float(score))


def _token(text: str, seconds: float) -> TokenMetadata:
    timestep = int(round(seconds / TIMESTEP_SECONDS))
    return TokenMetadata(text, timestep, round(timestep * TIMESTEP_SECONDS, 2))


def _pcm16(audio_buffer: Any) -> np.ndarray:
    """int16 samples (DeepSpeech's input) -> float32 in [-1, 1)."""
    samples = np.asarray(audio_buffer)
    if samples.dtype != np.int16:
        raise TypeError(f"expected a numpy int16 array of samples, got {samples.dtype} "
                        "(convert with np.frombuffer(pcm_bytes, np.int16))")
    return samples.reshape(-1).astype(np.float32) / 32768.0


def _is_bundled(name: str) -> bool:
    return name in bundled_models()


def version() -> str:
    """harken's version (DeepSpeech's `deepspeech.version()`)."""

    return __version__


__all__ = ["CandidateTranscript", "Metadata", "Model", "Stream", "TokenMetadata", "version"]

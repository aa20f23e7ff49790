"""Voice activity detection on generated speech: segment boundaries, padding, endpointing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import have_espeak, speak
from harken.audio import load_audio
from harken.errors import ConfigError
from harken.vad import EndpointConfig, Endpointer, speech_segments

SR = 16000
TOLERANCE = 0.15  # seconds
PHRASES = ("hello world this is a test", "stop now and go left")


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """1 s silence, phrase, 1.5 s silence, phrase, 1 s silence, with light noise; and where the
    phrases' sound is (first/last sample above -40 dBFS)."""
    if not have_espeak():
        pytest.skip("espeak-ng is not installed")
    folder = tmp_path_factory.mktemp("vad")
    phrases = [load_audio(speak(t, Path(folder) / f"{i}.wav")) for i, t in enumerate(PHRASES)]
    parts, truth, position = [], [], 0
    for gap, phrase in zip((1.0, 1.5), phrases):
        parts += [np.zeros(int(gap * SR), np.float32), phrase]
        loud = np.flatnonzero(np.abs(phrase) > 0.01)
        position += int(gap * SR)
        truth.append(((position + loud[0]) / SR, (position + loud[-1]) / SR))
        position += len(phrase)
    parts.append(np.zeros(SR, np.float32))
    audio = np.concatenate(parts)
    audio += 0.003 * np.random.default_rng(0).standard_normal(len(audio)).astype(np.float32)
    return audio, truth


@pytest.mark.parametrize("method", ["webrtc", "silero", "energy"])
def test_segments_match_the_speech(speech, method: str) -> None:
    audio, truth = speech
    segments = speech_segments(audio, method=method, padding_ms=0)
    assert len(segments) == len(truth)
    for (start, end), (true_start, true_end) in zip(segments, truth):
        assert abs(start - true_start) < TOLERANCE, (segments, truth)
        assert abs(end - true_end) < TOLERANCE, (segments, truth)


def test_padding_and_merging(speech) -> None:
    audio, truth = speech
    plain = speech_segments(audio, method="energy", padding_ms=0)
    padded = speech_segments(audio, method="energy", padding_ms=300)
    for (s0, e0), (s1, e1) in zip(plain, padded):
        assert s1 == pytest.approx(max(0.0, s0 - 0.3)) and e1 == pytest.approx(e0 + 0.3)
    # A pause shorter than min_silence_ms does not split: one segment for both phrases.
    merged = speech_segments(audio, method="energy", min_silence_ms=2500)
    assert len(merged) == 1


def test_long_segments_are_split(speech) -> None:
    audio, _ = speech
    segments = speech_segments(audio, method="webrtc", padding_ms=0, max_segment_seconds=0.8)
    assert len(segments) > 2
    assert all(end - start <= 0.8 + 1e-6 for start, end in segments)


def test_silence_and_noise_have_no_speech() -> None:
    quiet = 0.003 * np.random.default_rng(1).standard_normal(3 * SR).astype(np.float32)
    for method in ("webrtc", "silero", "energy"):
        assert speech_segments(quiet, method=method) == []
    assert speech_segments(np.zeros(0, np.float32)) == []


def test_endpointer_closes_after_trailing_silence(speech) -> None:
    audio, truth = speech
    endpointer = Endpointer(EndpointConfig(silence_ms=500))
    ends = [e for i in range(0, len(audio), 1234) for e in endpointer.feed(audio[i: i + 1234])]
    assert len(ends) == 2
    for end, (_, true_end) in zip(ends, truth):
        assert 0.5 - TOLERANCE < end / SR - true_end < 0.5 + TOLERANCE


def test_endpointer_closes_at_the_maximum_length() -> None:
    noise = 0.2 * np.random.default_rng(2).standard_normal(5 * SR).astype(np.float32)
    endpointer = Endpointer(EndpointConfig(method="energy", max_utterance_seconds=2.0))
    assert endpointer.feed(noise) == [2 * SR, 4 * SR]


def test_bad_settings_are_reported() -> None:
    with pytest.raises(ConfigError, match="unknown VAD method"):
        speech_segments(np.zeros(SR, np.float32), method="magic")
    with pytest.raises(ConfigError, match="aggressiveness"):
        speech_segments(np.zeros(SR, np.float32), aggressiveness=7)
    with pytest.raises(ConfigError, match="silence_ms"):
        EndpointConfig(silence_ms=0)


def test_long_audio_is_split_into_speech_segments(speech) -> None:
    import torch

    from harken.model import new_model
    from harken.vad import split_speech

    audio, truth = speech
    # Longer than one 30 s window: VAD splitting applies. Same light noise as the speech's pauses.
    gap = 0.003 * np.random.default_rng(3).standard_normal(30 * SR).astype(np.float32)
    long = np.concatenate([audio, gap, audio])
    shift = (len(audio) + len(gap)) / SR
    expected = truth + [(s + shift, e + shift) for s, e in truth]
    pieces = split_speech(long, SR, max_segment_seconds=30.0, method="webrtc")
    assert len(pieces) == len(expected)
    for (offset, piece), (start, end) in zip(pieces, expected):
        assert abs(offset + 0.2 - start) < TOLERANCE  # 200 ms padding before the speech
        assert abs(offset + len(piece) / SR - 0.2 - end) < TOLERANCE
    torch.manual_seed(0)
    model = new_model("deepspeech2", "tiny")
    transcript = model.transcribe(long)
    assert transcript.duration == pytest.approx(len(long) / SR)
    for word in transcript.words:  # times are absolute and inside the speech segments
        assert any(o - 1e-3 <= word.start and word.end <= o + len(p) / SR + 0.03
                   for o, p in pieces), word


def test_iter_segments_yields_the_transcript_lazily(speech) -> None:
    import types

    from harken.model import load_model

    audio, _ = speech
    gap = 0.003 * np.random.default_rng(4).standard_normal(30 * SR).astype(np.float32)
    long = np.concatenate([audio, gap, audio, gap, audio])
    model = load_model()  # the bundled model: it hears words in the phrases
    whole = model.transcribe(long)
    lazy = model.iter_segments(long, batch_seconds=2.0)  # one speech segment per batch
    assert isinstance(lazy, types.GeneratorType)
    segments = list(lazy)
    assert whole.words, "the bundled model should hear something in espeak speech"
    assert [(w.word, w.start, w.end) for s in segments for w in s.words] == [
        (w.word, w.start, w.end) for w in whole.words]
    assert all(a.end <= b.start for a, b in zip(segments, segments[1:]))

"""Streaming: incremental features and network steps equal offline, any chunk size; the Stream API."""

from __future__ import annotations

import importlib.util
import time

import numpy as np
import pytest
import torch

from harken.audio import float_to_pcm16
from harken.features import LogMel
from harken.model import Model, new_model
from harken.streaming import Partial, StreamingLogMel

torch.set_num_threads(1)

CHUNK_SIZES = (1, 160, 999, 16000)
N_MELS = 80
STREAMING = {
    "deepspeech2": {"bidirectional": False, "lookahead": 2},
    "conformer": {"causal_conv": True, "chunk_size": 4, "left_chunks": 2},
}


def _features(normalize: str = "global") -> dict:
    rng = np.random.default_rng(1)
    return {"normalize": normalize, "n_mels": N_MELS,
            "global_mean": tuple(rng.uniform(-12, -6, N_MELS).tolist()),
            "global_std": tuple(rng.uniform(1.5, 3.0, N_MELS).tolist())}


def _model(architecture: str, normalize: str = "global", **overrides) -> Model:
    torch.manual_seed(0)
    model = new_model(architecture, "tiny", features=_features(normalize), **overrides)
    for module in model.network.modules():  # non-trivial eval-mode batch norms
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    return model.eval()


@pytest.fixture(scope="module", params=sorted(STREAMING))
def streaming_model(request: pytest.FixtureRequest) -> Model:
    return _model(request.param, **STREAMING[request.param])


def _audio(seconds: float, seed: int = 0) -> np.ndarray:
    """Noise with a few louder tone bursts: varied frames, so random networks emit tokens."""
    rng = np.random.default_rng(seed)
    n = int(seconds * 16000)
    t = np.arange(n) / 16000
    bursts = (np.sin(2 * np.pi * 1.3 * t) > 0.3) * np.sin(2 * np.pi * 440 * t * (1 + t % 1))
    return (0.05 * rng.standard_normal(n) + 0.3 * bursts).astype(np.float32)


def _chunks(audio, size: int):
    return [audio[i: i + size] for i in range(0, len(audio), size)]


def _streamed_log_probs(model: Model, audio: np.ndarray, chunk: int) -> np.ndarray:
    features = StreamingLogMel(model.featurizer)
    net = model.network
    state = net.initial_state()
    out = []
    for piece in _chunks(audio, chunk):
        frames = features.feed(torch.from_numpy(piece))
        log_probs, state = net.stream_step(frames[None], state)
        out.append(log_probs[0])
    log_probs, state = net.stream_step(features.finish()[None], state, final=True)
    out.append(log_probs[0])
    return torch.cat(out).numpy()


@pytest.mark.parametrize("normalize", ["none", "global"])
@pytest.mark.parametrize("chunk", CHUNK_SIZES)
def test_streaming_features_equal_offline(normalize: str, chunk: int) -> None:
    model = _model("deepspeech2", normalize, **STREAMING["deepspeech2"])
    audio = _audio(0.4 if chunk == 1 else 1.37)
    offline, _ = LogMel(model.feature_config).eval()(torch.from_numpy(audio)[None])
    features = StreamingLogMel(model.featurizer)
    streamed = torch.cat([features.feed(torch.from_numpy(c)) for c in _chunks(audio, chunk)]
                         + [features.finish()])
    assert streamed.shape == offline[0].shape
    assert torch.allclose(streamed, offline[0], atol=1e-4, rtol=0)


def test_per_feature_normalisation_streams_with_running_statistics() -> None:
    model = _model("deepspeech2", "per_feature", **STREAMING["deepspeech2"])
    audio = _audio(2.0)
    features = StreamingLogMel(model.featurizer)
    streamed = torch.cat([features.feed(torch.from_numpy(audio)), features.finish()])
    raw = LogMel(_model("deepspeech2", "none").feature_config)(torch.from_numpy(audio)[None])[0][0]
    t = 150  # frame t is normalised with the statistics of frames 0..t
    head = raw[: t + 1].double()
    expected = (raw[t] - head.mean(0)) / (head.std(0, unbiased=False) + 1e-5)
    assert torch.allclose(streamed[t].double(), expected, atol=1e-3)


@pytest.mark.parametrize("chunk", CHUNK_SIZES)
def test_streamed_log_probs_equal_offline(streaming_model: Model, chunk: int) -> None:
    audio = _audio(0.3 if chunk == 1 else 2.2)
    offline = streaming_model.log_probs([audio])[0]
    streamed = _streamed_log_probs(streaming_model, audio, chunk)
    assert streamed.shape == offline.shape
    assert np.abs(streamed - offline).max() < 1e-4
    assert (streamed.argmax(1) == offline.argmax(1)).all()


@pytest.mark.parametrize("chunk", [160, 999, 16000])
def test_stream_transcript_equals_offline(streaming_model: Model, chunk: int) -> None:
    audio = _audio(3.0)
    offline = streaming_model.transcribe(audio)
    stream = streaming_model.stream()
    assert stream.exact
    for piece in _chunks(audio, chunk):
        assert stream.feed(piece) == []
    final = stream.finish()
    assert offline.text  # the random network does emit tokens
    assert final.text == offline.text
    assert final.words == offline.words
    assert final.duration == pytest.approx(offline.duration, abs=0.02)


def test_stream_accepts_int16_and_split_pcm_bytes(streaming_model: Model) -> None:
    audio = _audio(1.5)
    pcm = float_to_pcm16(audio)
    as_int16 = np.frombuffer(pcm, "<i2")
    expected = streaming_model.transcribe(as_int16.astype(np.float32) / 32768).text
    stream = streaming_model.stream()
    for i in range(0, len(pcm), 1001):  # odd sizes: samples split between calls
        stream.feed(pcm[i: i + 1001])
    assert stream.finish().text == expected
    for piece in _chunks(as_int16, 777):
        stream.feed(piece)
    stream.reset()  # forgets the audio fed above
    for piece in _chunks(as_int16, 4000):
        stream.feed(piece)
    assert stream.finish().text == expected
    with pytest.raises(ValueError, match="mono"):
        stream.feed(np.zeros((2, 10), np.float32))


def test_partial_has_a_stable_prefix_of_the_final_text(streaming_model: Model) -> None:
    audio = _audio(3.0)
    stream = streaming_model.stream()
    partials: list[Partial] = []
    for piece in _chunks(audio, 1600):
        stream.feed(piece)
        partials.append(stream.partial())
    final = stream.finish()
    assert partials[-1].text == final.text or final.text.startswith(partials[-1].stable)
    for partial in partials:
        assert final.text.startswith(partial.stable)
        assert partial.text == " ".join(w.word for w in partial.words) or not partial.words
    if len(final.words) > 1:  # all words but the last were final before the end
        assert partials[-1].stable_words == len(final.words) - 1


def test_feeding_cost_per_second_stays_constant(streaming_model: Model) -> None:
    """The 100th second costs what an early one does. A stream 90 s in and a young one (reset
    every 5 s) are fed one second each, alternately, so a slow phase of the machine slows both;
    one thread (idle-spinning workers would be noise) and the cheapest of ten seconds each. A
    cost that grew with the stream's length would still show at once."""
    second = _audio(1.0, seed=3)

    def feed(stream) -> float:
        start = time.process_time()
        for piece in _chunks(second, 1600):
            stream.feed(piece)
        return time.process_time() - start

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        old, young = streaming_model.stream(), streaming_model.stream()
        for _ in range(90):
            feed(old)
        old_times, young_times = [], []
        for i in range(10):
            if i % 5 == 0:
                young.reset()
                feed(young)  # its first second (warm-up), untimed
            pair = (old, young) if i % 2 else (young, old)
            for stream in pair:
                (old_times if stream is old else young_times).append(feed(stream))
    finally:
        torch.set_num_threads(threads)
    old.finish()
    assert min(old_times) <= 1.5 * min(young_times), (min(young_times), min(old_times))


@pytest.mark.skipif(importlib.util.find_spec("flashlight") is None,
                    reason="beam search needs flashlight-text")
def test_stream_with_beam_search_equals_offline(streaming_model: Model) -> None:
    audio = _audio(3.0)
    offline = streaming_model.transcribe(audio, beam_width=8)
    stream = streaming_model.stream(beam_width=8)
    for piece in _chunks(audio, 999):
        stream.feed(piece)
    assert stream.finish().text == offline.text


def test_non_streaming_models_use_overlapping_windows() -> None:
    model = _model("deepspeech2")  # bidirectional
    assert not model.network.streamable
    short = _audio(2.0)
    stream = model.stream(window_seconds=4.0, context_seconds=1.0)
    assert not stream.exact and stream.latency_seconds == pytest.approx(3.0)
    for piece in _chunks(short, 999):
        stream.feed(piece)
    assert stream.partial().text == model.transcribe(short).text  # the tail, decoded for display
    assert stream.finish().text == model.transcribe(short).text  # one window: as offline
    stream.reset()  # the clock starts again at 0
    long = _audio(11.0)
    for piece in _chunks(long, 1600):
        stream.feed(piece)
    final = stream.finish()
    offline = model.log_probs([long])[0]
    assert final.duration == pytest.approx(11.0, abs=0.01)
    assert final.words and final.words[-1].end <= len(offline) * model.frame_seconds + 1e-6


def test_endpointing_closes_utterances_with_absolute_times() -> None:
    from harken.vad import EndpointConfig

    model = _model("deepspeech2", **STREAMING["deepspeech2"])
    rng = np.random.default_rng(0)
    speech = (0.2 * rng.standard_normal(16000)).astype(np.float32)
    silence = np.zeros(16000, np.float32)
    audio = np.concatenate([silence[:8000], speech, silence, speech, silence[:4000]])
    stream = model.stream(endpoint=EndpointConfig(method="energy", silence_ms=500))
    finals = [t for piece in _chunks(audio, 800) for t in stream.feed(piece)]
    assert len(finals) == 1
    first = finals[0]
    assert 1.95 <= first.duration <= 2.1  # silence, speech, then 500 ms of silence (+ a frame)
    last = stream.finish()
    assert last.words and last.words[0].start >= first.duration
    assert last.text == model.transcribe(audio[int(first.duration * 16000):]).text

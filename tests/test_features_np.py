"""The numpy feature extraction (harken.features_np) equals the PyTorch one for every setting."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from harken.errors import ConfigError
from harken.features import FeatureConfig, LogMel, Waveform, mel_filterbank
from harken.features_np import (
    NumpyLogMel,
    NumpyStreamingLogMel,
    NumpyWaveform,
    hann_window,
    make_numpy_featurizer,
)
from harken.interop.import_nemo import preprocessor_features
from harken.streaming import StreamingLogMel

torch.set_num_threads(1)

TOLERANCE = 1e-4
NEMO = FeatureConfig.from_dict(preprocessor_features({}))  # NeMo's default preprocessor
CONFIGS = {
    "harken default": FeatureConfig(),
    "nemo": NEMO,
    "nemo pad_to 16, biased std": dataclasses.replace(NEMO, pad_to=16, unbiased_std=False),
    "htk, no mel norm, no pre-emphasis": FeatureConfig(mel_scale="htk", mel_norm=None,
                                                       preemphasis=0.0, f_max=7600.0),
    "none, symmetric window, 20 ms": FeatureConfig(normalize="none", window_periodic=False,
                                                   win_length_ms=20.0, n_mels=40),
    "global": FeatureConfig(normalize="global", global_mean=tuple(np.linspace(-9, -3, 80)),
                            global_std=tuple(np.linspace(1.5, 3.0, 80)), log_guard=1e-5),
    "variance epsilon, drop last frame, 8 kHz": FeatureConfig(
        sample_rate=8000, n_fft=256, n_mels=64, variance_epsilon=1e-3, std_epsilon=0.0,
        drop_last_frame=True),
}
WAVEFORM = {
    "wav2vec2": FeatureConfig(kind="waveform", hop_length_ms=1000 / 16000, n_mels=1,
                              normalize="per_feature", std_epsilon=0.0, variance_epsilon=1e-7,
                              dither=0.0, preemphasis=0.0),
    "waveform, not normalised": FeatureConfig(kind="waveform", hop_length_ms=1000 / 16000,
                                              n_mels=1, normalize="none"),
}


def random_batch(seed: int, lengths: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Noise, tones and silence at different levels, zero-padded to the longest length, with
    loud garbage past each length (which must be ignored)."""
    rng = np.random.default_rng(seed)
    audio = rng.uniform(-1, 1, (len(lengths), max(lengths))).astype(np.float32)
    for row, n in enumerate(lengths):
        t = np.arange(n) / 16000
        level = 10.0 ** rng.uniform(-2, 0)
        signal = level * (0.5 * np.sin(2 * np.pi * rng.uniform(100, 4000) * t)
                          + 0.2 * rng.standard_normal(n))
        signal[: n // 5] = 0.0  # leading silence: log guard territory
        audio[row, :n] = signal
    return audio, np.asarray(lengths, np.int64)


def torch_features(config: FeatureConfig, audio: np.ndarray, lengths: np.ndarray):
    module = (Waveform if config.kind == "waveform" else LogMel)(config).eval()
    with torch.inference_mode():
        features, frames = module(torch.from_numpy(audio), torch.from_numpy(lengths))
    return features.numpy(), frames.numpy()


@pytest.mark.parametrize("name", [*CONFIGS, *WAVEFORM])
@pytest.mark.parametrize("seed", [0, 1])
def test_numpy_features_equal_torch(name, seed):
    config = {**CONFIGS, **WAVEFORM}[name]
    lengths = [23_456, 16_000, 161, 0] if seed == 0 else [8_000, 7_999, 12_345]
    audio, n = random_batch(seed, lengths)
    expected, expected_frames = torch_features(config, audio, n)
    got, frames = make_numpy_featurizer(config)(audio, n)
    assert got.dtype == np.float32 and frames.dtype == np.int64
    assert got.shape == expected.shape
    np.testing.assert_array_equal(frames, expected_frames)
    assert np.abs(got - expected).max() < TOLERANCE
    # one utterance alone, no lengths: the same rows
    alone, _ = make_numpy_featurizer(config)(audio[:1, : lengths[0]])
    assert np.abs(alone[0] - got[0, : alone.shape[1]]).max() < TOLERANCE


def test_window_and_filterbank_equal_torch():
    for length in (400, 320, 1):
        for periodic in (True, False):
            np.testing.assert_allclose(hann_window(length, periodic),
                                       torch.hann_window(length, periodic=periodic).numpy(),
                                       atol=3e-7)
    config = CONFIGS["htk, no mel norm, no pre-emphasis"]
    np.testing.assert_array_equal(NumpyLogMel(config).mel_filters_t.T,
                                  mel_filterbank(config).numpy())


@pytest.mark.parametrize("name", ["harken default", "global", "none, symmetric window, 20 ms",
                                  "nemo"])
def test_numpy_streaming_equals_torch_streaming(name):
    """Incremental frames, fed in uneven chunks, equal `StreamingLogMel`'s (and the offline
    features where normalisation does not need the whole utterance)."""
    config = CONFIGS[name]
    audio, _ = random_batch(3, [20_011])
    audio = audio[0]
    reference = StreamingLogMel(LogMel(config).eval())
    streaming = NumpyLogMel(config).streaming()
    assert isinstance(streaming, NumpyStreamingLogMel)
    rng = np.random.default_rng(0)
    got, expected, start = [], [], 0
    while start < len(audio):
        size = int(rng.integers(0, 700))
        chunk = audio[start: start + size]
        start += size
        got.append(streaming.feed(chunk))
        expected.append(reference.feed(torch.from_numpy(chunk)).numpy())
        assert len(got[-1]) == len(expected[-1]) and streaming.frames_emitted == reference.frames_emitted
    got.append(streaming.finish())
    expected.append(reference.finish().numpy())
    got_all, expected_all = np.concatenate(got), np.concatenate(expected)
    assert got_all.shape == (len(audio) // config.hop_length + 1, config.n_mels)
    assert np.abs(got_all - expected_all).max() < TOLERANCE
    if config.normalize != "per_feature":
        offline, _ = NumpyLogMel(config)(audio[None])
        assert np.abs(got_all - offline[0]).max() < TOLERANCE
    streaming.reset()
    assert len(streaming.feed(audio[:100])) == 0 and streaming.frames_emitted == 0


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match=r"expected \(batch, samples\) audio, got shape \(5,\)"):
        NumpyLogMel()(np.zeros(5, np.float32))
    with pytest.raises(ValueError, match=r"lengths must be in \[0, 5\], got \[6\]"):
        NumpyLogMel()(np.zeros((1, 5), np.float32), np.array([6]))
    with pytest.raises(ValueError, match=r"expected lengths of shape \(1,\), got \(2,\)"):
        NumpyLogMel()(np.zeros((1, 5), np.float32), np.array([1, 2]))
    with pytest.raises(ConfigError, match="NumpyLogMel needs kind='log_mel', got 'waveform'"):
        NumpyLogMel(WAVEFORM["wav2vec2"])
    with pytest.raises(ConfigError, match="not 'global'"):
        NumpyWaveform(dataclasses.replace(WAVEFORM["wav2vec2"], normalize="global",
                                          global_mean=(0.0,), global_std=(1.0,)))


def test_numpy_is_closer_than_float32_torch_to_a_float64_stft():
    """The remaining differences are torch.stft's float32 rounding: numpy's rfft is float64."""
    config = dataclasses.replace(CONFIGS["htk, no mel norm, no pre-emphasis"], normalize="none")
    audio, n = random_batch(0, [23_456])
    torch32, _ = torch_features(config, audio, n)
    ours, _ = NumpyLogMel(config)(audio, n)
    x = torch.from_numpy(audio).double()
    window = torch.hann_window(config.win_length, dtype=torch.float64)
    spec = torch.stft(x, config.n_fft, config.hop_length, config.win_length, window,
                      center=True, pad_mode="constant", return_complex=True)
    mel = mel_filterbank(config).double() @ spec.abs().square()
    truth = torch.log(mel + config.log_guard).transpose(1, 2).numpy()
    ours_error, torch_error = np.abs(ours - truth).max(), np.abs(torch32 - truth).max()
    assert ours_error < 1e-5 and ours_error < torch_error / 2, (ours_error, torch_error)

"""LogMel against librosa, batching, normalisation, SpecAugment and the feature configs."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from harken.errors import ConfigError
from harken.features import (
    FRAMES_PER_SECOND,
    HOP_LENGTH,
    SAMPLE_RATE,
    WIN_LENGTH,
    FeatureConfig,
    LogMel,
    SpecAugment,
    SpecAugmentConfig,
    compute_global_stats,
    mel_filterbank,
)

torch.set_num_threads(1)

PLAIN = FeatureConfig(normalize="none", preemphasis=0.0, dither=0.0)


def signal(num_samples: int, seed: int = 0) -> np.ndarray:
    """Two tones, a chirp and noise: energy spread over the whole spectrum."""
    rng = np.random.default_rng(seed)
    t = np.arange(num_samples) / SAMPLE_RATE
    x = (0.3 * np.sin(2 * np.pi * 440 * t) + 0.1 * np.sin(2 * np.pi * 3000 * t)
         + 0.1 * np.sin(2 * np.pi * (200 + 3000 * t) * t) + 0.05 * rng.standard_normal(num_samples))
    return x.astype(np.float32)


def features_of(config: FeatureConfig, x: np.ndarray) -> np.ndarray:
    out, lengths = LogMel(config).eval()(torch.from_numpy(x)[None], torch.tensor([len(x)]))
    assert lengths.tolist() == [out.shape[1]]
    return out[0].numpy()


def librosa_log_mel(config: FeatureConfig, x: np.ndarray) -> np.ndarray:
    librosa = pytest.importorskip("librosa")
    mel = librosa.feature.melspectrogram(
        y=x, sr=config.sample_rate, n_fft=config.n_fft, hop_length=config.hop_length,
        win_length=config.win_length, window="hann", center=True, pad_mode="constant",
        power=2.0, n_mels=config.n_mels, fmin=config.f_min, fmax=config.f_max,
        htk=config.mel_scale == "htk", norm=config.mel_norm)
    return mel.T  # (frames, mels), power


def test_constants_are_derived() -> None:
    config = FeatureConfig()
    assert (config.win_length, config.hop_length) == (WIN_LENGTH, HOP_LENGTH) == (400, 160)
    assert config.frame_seconds == pytest.approx(0.01)
    assert FRAMES_PER_SECOND == 100
    assert FeatureConfig(sample_rate=8000).hop_length == 80


@pytest.mark.parametrize("mel_scale", ["slaney", "htk"])
@pytest.mark.parametrize("mel_norm", ["slaney", None])
@pytest.mark.parametrize("f_min,f_max", [(0.0, None), (20.0, 7600.0)])
def test_mel_filters_match_librosa(mel_scale: str, mel_norm: str | None, f_min: float,
                                   f_max: float | None) -> None:
    librosa = pytest.importorskip("librosa")
    config = FeatureConfig(mel_scale=mel_scale, mel_norm=mel_norm, f_min=f_min, f_max=f_max)
    ours = mel_filterbank(config).numpy()
    reference = librosa.filters.mel(sr=16000, n_fft=512, n_mels=80, fmin=f_min, fmax=f_max,
                                    htk=mel_scale == "htk", norm=mel_norm)
    assert ours.shape == reference.shape == (80, 257)
    np.testing.assert_allclose(ours, reference, rtol=0, atol=1e-6)


@pytest.mark.parametrize("mel_scale", ["slaney", "htk"])
def test_log_mel_matches_librosa(mel_scale: str) -> None:
    # Tolerance: 1e-3 in the natural-log domain (0.1 % in power), on the bins whose power is
    # above the log guard (2**-24); below it the guard dominates both sides anyway.
    config = dataclasses.replace(PLAIN, mel_scale=mel_scale)
    x = signal(SAMPLE_RATE + 1234)
    ours = features_of(config, x)
    power = librosa_log_mel(config, x)
    assert ours.shape == power.shape == (len(x) // HOP_LENGTH + 1, 80)
    above_guard = power > config.log_guard
    assert above_guard.mean() > 0.99
    difference = np.abs(ours - np.log(power + config.log_guard))[above_guard]
    assert difference.max() < 1e-3


def test_preemphasis_is_applied_before_the_spectrum() -> None:
    x = signal(8000, seed=1)
    config = dataclasses.replace(PLAIN, preemphasis=0.97)
    emphasised = np.concatenate([x[:1], x[1:] - 0.97 * x[:-1]]).astype(np.float32)
    np.testing.assert_allclose(features_of(config, x), features_of(PLAIN, emphasised), atol=1e-4)


@pytest.mark.parametrize("normalize", ["per_feature", "none"])
def test_batched_equals_unbatched(normalize: str) -> None:
    config = FeatureConfig(normalize=normalize)
    lengths = [16000, 9000, 4321, 161]
    batch = torch.randn(len(lengths), max(lengths)) * 5  # loud garbage in the padding
    for row, n in enumerate(lengths):
        batch[row, :n] = torch.from_numpy(signal(n, seed=row))
    log_mel = LogMel(config).eval()
    features, frame_lengths = log_mel(batch, torch.tensor(lengths))
    assert frame_lengths.tolist() == [n // HOP_LENGTH + 1 for n in lengths]
    for row, n in enumerate(lengths):
        alone, alone_lengths = log_mel(batch[row:row + 1, :n], torch.tensor([n]))
        t = int(alone_lengths[0])
        torch.testing.assert_close(features[row, :t], alone[0], atol=2e-4, rtol=0)
        assert torch.all(features[row, t:] == 0)


@pytest.mark.parametrize("num_samples", [1, 159, 160, 161, 400, 16000, 16001])
def test_frame_counts(num_samples: int) -> None:
    log_mel = LogMel(PLAIN)
    features, frame_lengths = log_mel(torch.zeros(1, num_samples), torch.tensor([num_samples]))
    assert features.shape[1] == frame_lengths[0] == log_mel.num_frames(num_samples)
    assert log_mel.num_frames(num_samples) == num_samples // 160 + 1


def test_pad_to_rounds_frames_up_without_changing_lengths() -> None:
    log_mel = LogMel(dataclasses.replace(PLAIN, pad_to=8))
    features, frame_lengths = log_mel(torch.ones(2, 1000), torch.tensor([1000, 500]))
    assert features.shape[1] == 8 and frame_lengths.tolist() == [7, 4]
    assert torch.all(features[0, 7:] == 0) and torch.all(features[1, 4:] == 0)


def test_per_feature_normalisation_over_valid_frames() -> None:
    lengths = torch.tensor([16000, 7000])
    audio = torch.zeros(2, 16000)
    audio[0] = torch.from_numpy(signal(16000, seed=3))
    audio[1, :7000] = torch.from_numpy(signal(7000, seed=4))
    features, frame_lengths = LogMel(FeatureConfig()).eval()(audio, lengths)
    for row, t in enumerate(frame_lengths.tolist()):
        valid = features[row, :t].double()
        assert valid.mean(dim=0).abs().max() < 1e-4
        assert (valid.std(dim=0, unbiased=False) - 1).abs().max() < 1e-3


def test_global_normalisation_with_computed_stats() -> None:
    lengths = torch.tensor([12000, 5000])
    audio = torch.zeros(2, 12000)
    audio[0] = torch.from_numpy(signal(12000, seed=5))
    audio[1, :5000] = torch.from_numpy(signal(5000, seed=6)) * 0.1
    raw, frame_lengths = LogMel(dataclasses.replace(PLAIN, preemphasis=0.97)).eval()(audio, lengths)
    mean, std = compute_global_stats(raw, frame_lengths)
    assert mean.shape == std.shape == (80,)
    config = dataclasses.replace(PLAIN, preemphasis=0.97, normalize="global",
                                 global_mean=tuple(mean.tolist()), global_std=tuple(std.tolist()))
    features, _ = LogMel(config).eval()(audio, lengths)
    valid = torch.cat([features[0, :frame_lengths[0]], features[1, :frame_lengths[1]]]).double()
    assert valid.mean(dim=0).abs().max() < 1e-4
    assert (valid.std(dim=0, unbiased=False) - 1).abs().max() < 1e-3


def test_dither_only_in_training_mode() -> None:
    log_mel = LogMel(FeatureConfig(dither=1e-3))
    audio, lengths = torch.from_numpy(signal(4000))[None], torch.tensor([4000])
    log_mel.eval()
    first, _ = log_mel(audio, lengths)
    second, _ = log_mel(audio, lengths)
    assert torch.equal(first, second)
    log_mel.train()
    dithered, _ = log_mel(audio, lengths)
    assert not torch.equal(first, dithered)


def test_float32_under_autocast_and_no_grad() -> None:
    log_mel = LogMel(FeatureConfig()).eval()
    audio = torch.from_numpy(signal(8000))[None]
    reference, _ = log_mel(audio, torch.tensor([8000]))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        features, _ = log_mel(audio.to(torch.bfloat16).float(), torch.tensor([8000]))
        half_input, _ = log_mel(audio.double(), torch.tensor([8000]))
    assert features.dtype == half_input.dtype == torch.float32
    torch.testing.assert_close(half_input, reference)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu() -> None:
    log_mel = LogMel(FeatureConfig()).eval()
    audio, lengths = torch.from_numpy(signal(16000))[None], torch.tensor([16000])
    cpu, _ = log_mel(audio, lengths)
    with torch.autocast("cuda", dtype=torch.float16):
        gpu, gpu_lengths = log_mel.cuda()(audio.cuda(), lengths.cuda())
    assert gpu.dtype == torch.float32 and gpu_lengths.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-3, rtol=1e-3)


def test_bad_inputs_are_reported() -> None:
    log_mel = LogMel(FeatureConfig())
    with pytest.raises(ValueError, match=r"\(batch, samples\)"):
        log_mel(torch.zeros(100), torch.tensor([100]))
    with pytest.raises(ValueError, match="lengths must be in"):
        log_mel(torch.zeros(1, 100), torch.tensor([101]))
    with pytest.raises(ValueError, match="lengths of shape"):
        log_mel(torch.zeros(2, 100), torch.tensor([100]))


def test_feature_config_round_trip_and_errors() -> None:
    config = FeatureConfig(normalize="global", global_mean=(0.5,) * 80, global_std=(2.0,) * 80,
                           mel_scale="htk", mel_norm=None, f_max=7600.0)
    assert FeatureConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ConfigError, match=r"unknown keys \['hop', 'n_mel'\]"):
        FeatureConfig.from_dict({**FeatureConfig().to_dict(), "n_mel": 80, "hop": 1})
    with pytest.raises(ConfigError, match="n_fft .256. must be at least the window length .400"):
        FeatureConfig(n_fft=256)
    with pytest.raises(ConfigError, match="global_mean must be 80 values"):
        FeatureConfig(normalize="global")
    with pytest.raises(ConfigError, match="mel_scale must be one of"):
        FeatureConfig(mel_scale="mel")
    with pytest.raises(ConfigError, match="f_max must be None or in"):
        FeatureConfig(f_max=9000.0)
    with pytest.raises(ConfigError, match="normalize must be one of"):
        FeatureConfig.from_dict({"normalize": "batch"})


# --- SpecAugment -----------------------------------------------------------------------------

LENGTHS = torch.tensor([200, 120, 37, 0])


def augment(config: SpecAugmentConfig, seed: int = 0, fill: float = 1.0) -> torch.Tensor:
    features = torch.full((len(LENGTHS), 200, 80), fill)
    return SpecAugment(config).train()(features, LENGTHS, torch.Generator().manual_seed(seed))


def test_spec_augment_masks_only_valid_frames() -> None:
    out = augment(SpecAugmentConfig())
    for row, t in enumerate(LENGTHS.tolist()):
        assert torch.all(out[row, t:] == 1), "padding frames must not be masked"
        if t:
            assert (out[row, :t] == 0).any()
    assert set(out.unique().tolist()) <= {0.0, 1.0}


def test_spec_augment_mask_sizes() -> None:
    freq = augment(SpecAugmentConfig(time_masks=0), seed=1)
    for row, t in enumerate(LENGTHS.tolist()[:3]):
        masked_bins = freq[row, :t] == 0  # (t, 80): a frequency mask spans all valid frames
        assert torch.equal(masked_bins, masked_bins[:1].expand_as(masked_bins))
        assert masked_bins[0].sum() <= 2 * 27
    time = augment(SpecAugmentConfig(freq_masks=0, time_masks=3), seed=2)
    for row, t in enumerate(LENGTHS.tolist()):
        masked_frames = (time[row] == 0).all(dim=1)
        assert masked_frames.sum() <= 3 * int(0.05 * t)
        assert torch.equal(masked_frames, (time[row] == 0).any(dim=1))
    fixed = augment(SpecAugmentConfig(freq_masks=0, time_masks=1, time_width_frames=3), seed=3)
    assert ((fixed == 0).all(dim=2).sum(dim=1) <= 3).all()


def test_spec_augment_is_deterministic_with_a_generator() -> None:
    config = SpecAugmentConfig()
    assert torch.equal(augment(config, seed=7), augment(config, seed=7))
    assert not torch.equal(augment(config, seed=7), augment(config, seed=8))


def test_spec_augment_is_identity_in_eval() -> None:
    features = torch.randn(2, 50, 80)
    assert SpecAugment().eval()(features, torch.tensor([50, 20])) is features


def test_spec_augment_config_round_trip_and_errors() -> None:
    config = SpecAugmentConfig(time_masks=4, time_width_frames=20)
    assert SpecAugmentConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ConfigError, match=r"unknown keys \['time_mask'\]"):
        SpecAugmentConfig.from_dict({"time_mask": 2})
    with pytest.raises(ConfigError, match="time_width must be a fraction"):
        SpecAugmentConfig(time_width=5.0)

"""Augmentation: every transform keeps the rate/length contract and changes the signal by the
amount it was asked for (SNR, speed, band, codec, RT60); configuration errors name the key."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import soundfile as sf

from harken.training.augment import (
    AugmentConfig,
    add_noise,
    band_limit,
    build_augmenter,
    change_speed,
    change_tempo,
    clip,
    codec_round_trip,
    colored_noise,
    reverberate,
    room_impulse_response,
    telephone,
)
from harken.errors import ConfigError

RATE = 16000
LENGTH_PRESERVING = [
    "reverb",
    "noise",
    "babble",
    "noise_files",
    "band_limit",
    "telephone",
    "codec",
    "gain",
    "clipping",
]


def _speech_like(seconds: float = 1.5, seed: int = 0) -> np.ndarray:
    """Harmonics of a gliding 120 Hz voice, switched on and off like syllables."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * RATE)) / RATE
    phase = 2 * np.pi * np.cumsum(120 + 20 * np.sin(2 * np.pi * t)) / RATE
    voice = sum(np.sin(k * phase) / k for k in range(1, 40))
    syllables = (np.sin(2 * np.pi * 3 * t + rng.uniform(0, 6)) > -0.4).astype(float)
    return (0.1 * voice * syllables + 1e-3 * rng.standard_normal(len(t))).astype(np.float32)


def _only(name: str, **settings) -> AugmentConfig:
    """All transforms off but `name`, which always runs."""
    table = {f.name: False for f in dataclasses.fields(AugmentConfig)}
    table[name] = {"prob": 1.0, **settings}
    return AugmentConfig.from_dict(table)


def _snr_db(clean: np.ndarray, noisy: np.ndarray) -> float:
    noise = noisy.astype(np.float64) - clean
    return 10 * np.log10(np.mean(clean.astype(np.float64) ** 2) / np.mean(noise**2))


def _band_energy(audio: np.ndarray, low: float, high: float) -> float:
    spectrum = np.abs(np.fft.rfft(audio)) ** 2
    freqs = np.fft.rfftfreq(len(audio), 1 / RATE)
    return float(spectrum[(freqs >= low) & (freqs < high)].sum())


def _dominant_hz(audio: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    return float(np.fft.rfftfreq(len(audio), 1 / RATE)[np.argmax(spectrum)])


@pytest.fixture()
def noise_dir(tmp_path):
    folder = tmp_path / "noises"
    folder.mkdir()
    sf.write(folder / "hum.wav", 0.1 * np.sin(2 * np.pi * 50 * np.arange(RATE) / RATE), RATE)
    sf.write(folder / "hiss.flac", 0.05 * np.random.default_rng(1).standard_normal(RATE // 2), RATE)
    return folder


@pytest.mark.parametrize("name", LENGTH_PRESERVING)
def test_transform_keeps_length_and_is_seeded(name, noise_dir):
    audio = _speech_like()
    augment = build_augmenter(
        _only(name), noise_dirs=[noise_dir], babble_source=[_speech_like(2.0, 5)]
    )
    out = augment(audio, np.random.default_rng(3))
    assert out.dtype == np.float32 and out.shape == audio.shape
    assert np.isfinite(out).all()
    assert np.array_equal(out, augment(audio, np.random.default_rng(3)))
    change = np.sqrt(np.mean((out - audio) ** 2) / np.mean(audio**2))
    assert change > 1e-3, f"{name} left the audio unchanged"


@pytest.mark.parametrize("color", ["white", "pink", "brown"])
def test_colored_noise_snr_and_spectrum(color):
    audio = _speech_like()
    augment = build_augmenter(_only("noise", snr_db=[12.0, 12.0], colors=[color]))
    out = augment(audio, np.random.default_rng(0))
    assert _snr_db(audio, out) == pytest.approx(12.0, abs=0.5)
    noise = colored_noise(RATE * 4, color, np.random.default_rng(0))
    low, high = _band_energy(noise, 100, 1000), _band_energy(noise, 1000, 8000)
    # Power density ~ 1/f^k: band energies are the integrals over 0.1-1 kHz and 1-8 kHz.
    expected = {
        "white": 900 / 7000,
        "pink": np.log(10) / np.log(8),
        "brown": (1 / 100 - 1 / 1000) / (1 / 1000 - 1 / 8000),
    }
    assert low / high == pytest.approx(expected[color], rel=0.1)


def test_babble_and_noise_files_snr(noise_dir):
    audio = _speech_like()
    others = [_speech_like(1.0, seed) for seed in range(1, 6)]
    augment = build_augmenter(_only("babble", snr_db=[7.0, 7.0]), babble_source=others)
    assert _snr_db(audio, augment(audio, np.random.default_rng(0))) == pytest.approx(7.0, abs=0.5)
    augment = build_augmenter(_only("noise_files", snr_db=[3.0, 3.0]), noise_dirs=[noise_dir])
    for seed in range(4):  # both files, looped and cut to length
        assert _snr_db(audio, augment(audio, np.random.default_rng(seed))) == pytest.approx(
            3.0, abs=0.5
        )


def test_babble_from_a_manifest(tmp_path):
    for k in range(3):
        sf.write(tmp_path / f"u{k}.wav", _speech_like(1.0, k + 1), RATE)
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(
        "".join(
            json.dumps({"audio": f"u{k}.wav", "text": "x", "duration": 1.0}) + "\n"
            for k in range(3)
        )
    )
    config = AugmentConfig.from_dict(
        {
            "babble": {"prob": 1.0, "snr_db": [10, 10], "manifest": str(manifest)},
            "speed": False,
            "reverb": False,
            "noise": False,
        }
    )
    audio = _speech_like()
    assert _snr_db(
        audio, build_augmenter(config)(audio, np.random.default_rng(0))
    ) == pytest.approx(10.0, abs=0.5)


def test_add_noise_leaves_silence_alone():
    silence = np.zeros(1000, np.float32)
    assert np.array_equal(add_noise(silence, np.ones(1000, np.float32), 10.0), silence)


@pytest.mark.parametrize("factor", [0.9, 1.1])
def test_speed_changes_length_and_pitch(factor):
    tone = np.sin(2 * np.pi * 440 * np.arange(2 * RATE) / RATE).astype(np.float32)
    out = change_speed(tone, factor)
    assert len(out) == pytest.approx(len(tone) / factor, rel=0.01)
    assert _dominant_hz(out) == pytest.approx(440 * factor, rel=0.01)
    augment = build_augmenter(_only("speed", factors=[factor]))
    assert len(augment(_speech_like(), np.random.default_rng(0))) == pytest.approx(
        len(_speech_like()) / factor, rel=0.01
    )


@pytest.mark.parametrize("factor", [0.85, 1.1, 1.15])
def test_tempo_changes_length_not_pitch(factor):
    tone = np.sin(2 * np.pi * 220 * np.arange(2 * RATE) / RATE).astype(np.float32)
    out = change_tempo(tone, factor)
    assert len(out) == pytest.approx(len(tone) / factor, rel=0.01)
    assert _dominant_hz(out) == pytest.approx(220, rel=0.01)
    # Overlap-add of well-aligned frames keeps the tone's level (no cancellation or doubling).
    assert np.sqrt(np.mean(out[1000:-1000] ** 2)) == pytest.approx(np.sqrt(0.5), rel=0.05)


def test_telephone_removes_energy_above_4khz_and_below_300hz():
    noise = colored_noise(RATE * 2, "white", np.random.default_rng(0))
    out = telephone(noise * 0.1)
    assert out.shape == noise.shape
    inside = _band_energy(out, 500, 3000) / 2500
    assert _band_energy(out, 4000, 8000) / 4000 < inside * 1e-4  # > 40 dB down per Hz
    assert _band_energy(out, 20, 150) / 130 < inside * 1e-2
    # mu-law: 8-bit quantisation noise stays ~35-40 dB below a full-band signal.
    reference = band_limit(noise * 0.1, 300, 3400)
    assert 25 < _snr_db(reference[500:-500], out[500:-500]) < 50


def test_band_limit_attenuates_outside_the_band():
    noise = colored_noise(RATE * 2, "white", np.random.default_rng(0))
    out = band_limit(noise, 400.0, 3000.0)
    inside = _band_energy(out, 600, 2500) / 1900
    assert _band_energy(out, 3600, 8000) / 4400 < inside * 1e-4
    assert _band_energy(out, 0, 300) / 300 < inside * 1e-4
    assert _band_energy(out, 600, 2500) == pytest.approx(_band_energy(noise, 600, 2500), rel=0.01)


@pytest.mark.parametrize("codec", ["opus", "mp3"])
def test_codec_round_trip_is_close_but_lossy(codec):
    audio = _speech_like(2.0)
    out = codec_round_trip(audio, codec, kbps=16)
    assert out.shape == audio.shape and out.dtype == np.float32
    correlation = np.corrcoef(audio, out)[0, 1]
    assert 0.9 < correlation < 0.9999  # aligned (no codec delay left) and not identical
    # Lower bitrates lose more.
    assert np.corrcoef(audio, codec_round_trip(audio, codec, kbps=8))[0, 1] < correlation + 1e-3


@pytest.mark.parametrize("rt60", [0.3, 0.7])
def test_room_impulse_response_decays_at_rt60(rt60):
    rir = room_impulse_response(np.random.default_rng(0), rt60)
    assert rir[0] == pytest.approx(1.0) and np.abs(rir[1:]).max() < 1.0 + 1e-6
    # Schroeder backward integration; T20 (the -5 to -25 dB slope) extrapolated to 60 dB.
    energy = np.cumsum(rir[::-1].astype(np.float64) ** 2)[::-1]
    decay_db = 10 * np.log10(energy / energy[0])
    t5, t25 = np.argmax(decay_db < -5), np.argmax(decay_db < -25)
    assert 3 * (t25 - t5) / RATE == pytest.approx(rt60, rel=0.25)


def test_reverb_keeps_level_and_smears_in_time():
    audio = np.zeros(RATE, np.float32)
    audio[1000] = 1.0
    out = reverberate(audio, room_impulse_response(np.random.default_rng(1), 0.5))
    assert out.shape == audio.shape
    assert np.sqrt(np.mean(out**2)) == pytest.approx(np.sqrt(np.mean(audio**2)), rel=1e-3)
    assert np.argmax(np.abs(out)) == 1000  # the direct sound stays where it was
    assert np.abs(out[:1000]).max() < 1e-4 and np.abs(out[3000:5000]).max() > 1e-3


def test_clipping_and_gain():
    audio = _speech_like()
    out = clip(audio, 0.02)
    threshold = np.abs(out).max()
    assert np.mean(np.abs(audio) >= threshold) == pytest.approx(0.02, abs=0.002)
    gained = build_augmenter(_only("gain", db=[-6.0, -6.0]))(audio, np.random.default_rng(0))
    assert 20 * np.log10(np.abs(gained).max() / np.abs(audio).max()) == pytest.approx(
        -6.0, abs=1e-3
    )


def test_default_chain_is_seeded_and_keeps_rate():
    augment = build_augmenter()
    audio = _speech_like()
    lengths = set()
    for seed in range(30):
        out = augment(audio, np.random.default_rng(seed))
        assert np.array_equal(out, augment(audio, np.random.default_rng(seed)))
        assert out.dtype == np.float32 and out.ndim == 1
        lengths.add(len(out))
    # speed perturbation 0.9 / 1.0 / 1.1: three lengths
    assert len(lengths) == 3
    for length, factor in zip(sorted(lengths), (1.1, 1.0, 0.9)):
        assert length == pytest.approx(len(audio) / factor, abs=2)


def test_apply_reports_what_was_done():
    augment = build_augmenter(_only("noise", snr_db=[20, 20], colors=["pink"]))
    _, applied = augment.apply(_speech_like(), np.random.default_rng(0))
    assert applied == ["pink noise 20 dB SNR"]


def test_config_round_trip_and_switches():
    config = AugmentConfig.from_dict(
        {
            "noise": {"prob": 0.2, "snr_db": [0, 10]},
            "reverb": False,
            "codec": True,
            "telephone": 0.05,
        }
    )
    assert config.noise.snr_db == (0.0, 10.0) and config.noise.prob == 0.2
    assert config.reverb.prob == 0.0 and config.codec.prob == 1.0 and config.telephone.prob == 0.05
    assert config.speed == AugmentConfig().speed  # untouched sections keep their defaults
    assert AugmentConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert AugmentConfig.from_dict(None) == AugmentConfig()


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"nosie": {}}, r"unknown key\(s\) nosie; known: speed, tempo"),
        (
            {"noise": {"snr": [1, 2]}},
            r"augment.noise: unknown key\(s\) snr; known: prob, snr_db, colors",
        ),
        ({"noise": {"prob": 1.5}}, r"augment.noise.prob: expected a probability"),
        ({"noise": {"snr_db": [30, 10]}}, r"augment.noise.snr_db: expected \[low, high\]"),
        ({"noise": {"snr_db": 10}}, r"augment.noise.snr_db: expected a list"),
        ({"noise": {"colors": ["purple"]}}, r"augment.noise.colors"),
        ({"speed": {"factors": [0.9, 3.0]}}, r"augment.speed.factors"),
        ({"codec": {"codecs": ["aac"]}}, r"augment.codec.codecs"),
        ({"reverb": {"image_order": "two"}}, r"augment.reverb.image_order: expected an integer"),
        ({"gain": 3}, r"augment.gain.prob: expected a probability in \[0, 1\], got 3"),
        ({"gain": "loud"}, r"augment.gain: expected a table of settings, a probability"),
    ],
)
def test_config_errors_name_the_key(settings, message):
    with pytest.raises(ConfigError, match=message):
        AugmentConfig.from_dict(settings)


def test_missing_sources_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="babble.prob is 0.5 but there is no babble source"):
        build_augmenter(AugmentConfig.from_dict({"babble": {"prob": 0.5}}))
    with pytest.raises(ConfigError, match="noise folder .*nowhere does not exist"):
        build_augmenter(
            AugmentConfig.from_dict(
                {"noise_files": {"prob": 0.5, "dirs": [str(tmp_path / "nowhere")]}}
            )
        )
    with pytest.raises(ConfigError, match="noise_files.prob is 0.5 but no audio file was found"):
        build_augmenter(
            AugmentConfig.from_dict({"noise_files": {"prob": 0.5, "dirs": [str(tmp_path)]}})
        )


def test_preview_writes_examples_and_spectrograms(tmp_path):
    pytest.importorskip("matplotlib")
    from harken.training.augment import preview

    sf.write(tmp_path / "a.wav", _speech_like(1.0), RATE)
    written = preview([tmp_path / "a.wav"], tmp_path / "out", AugmentConfig(), examples=2)
    names = sorted(p.name for p in written)
    assert names == ["a.aug1.wav", "a.aug2.wav", "a.orig.wav", "spectrograms.png"]
    assert (tmp_path / "out" / "spectrograms.png").read_bytes()[:4] == b"\x89PNG"
    assert sf.info(str(tmp_path / "out" / "a.aug1.wav")).samplerate == RATE

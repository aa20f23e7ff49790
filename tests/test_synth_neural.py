"""The neural TTS engines of `harken data synth` (Kokoro, Piper) on tiny fake runtimes: voice
packs and blends found and recorded in the manifest, the speaking-rate range, resumable and
parallel runs equal to serial ones, and errors that name the input. A last test renders with the
real Kokoro model when it is installed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import harken.training.synth_neural as neural
from harken.training.voices import Job, SynthesisError, Voice
from harken.training.synth import discover_voices, render, synthesize

SENTENCES = [
    "the quick brown fox jumps over the lazy dog",
    "she sells sea shells by the sea shore",
    "a journey of a thousand miles begins with a single step",
    "pack my box with five dozen liquor jugs",
]
PACKS = ("af_one", "am_two", "bf_three", "bm_four", "ja_other")


class FakeKokoro:
    """Speaks a tone whose pitch is the style's mean and whose length follows words / speed."""

    calls: list[tuple[str, float, str, float]] = []

    def create(self, text, voice, speed, lang):
        assert voice.shape == neural.KOKORO_PACK_SHAPE and voice.dtype == np.float32
        FakeKokoro.calls.append((text, speed, lang, float(voice.mean())))
        seconds = 0.3 * len(text.split()) / speed
        t = np.arange(int(24000 * seconds)) / 24000
        return 0.5 * np.sin(2 * np.pi * (150 + 50 * float(voice.mean())) * t), 24000


@pytest.fixture
def kokoro(tmp_path, monkeypatch):
    """A Kokoro folder with five packs (one not English) and the fake runtime."""
    folder = tmp_path / "kokoro"
    (folder / "voices").mkdir(parents=True)
    (folder / "model.onnx").write_bytes(b"not used by the fake")
    for i, name in enumerate(PACKS):
        np.full(neural.KOKORO_PACK_SHAPE, i, np.float32).tofile(folder / "voices" / f"{name}.bin")
    monkeypatch.setenv(neural.KOKORO_ENV, str(folder))
    monkeypatch.delenv(neural.KOKORO_EXCLUDE_ENV, raising=False)
    packs = neural.read_kokoro_packs(folder)
    monkeypatch.setattr(neural, "_kokoro_runtime", lambda _folder: (FakeKokoro(), packs))
    monkeypatch.setattr(neural.KokoroEngine, "available", lambda self: True)
    FakeKokoro.calls = []
    return folder


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "sentences.txt"
    path.write_text("\n".join(SENTENCES) + "\n")
    return path


def _manifest(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_blend_names_round_trip_and_weights_sum_to_one():
    weights = neural.parse_blend("af_one=0.6+am_two=0.3+bf_three=0.1")
    assert weights == pytest.approx({"af_one": 0.6, "am_two": 0.3, "bf_three": 0.1})
    assert neural.blend_name(weights) == "af_one=0.60+am_two=0.30+bf_three=0.10"
    assert neural.parse_blend("af_one") == {"af_one": 1.0}
    with pytest.raises(SynthesisError, match="'x' is not a number"):
        neural.parse_blend("af_one=x+am_two=0.5")


def test_kokoro_voices_are_the_english_packs_and_seeded_blends(kokoro):
    voices = discover_voices(["kokoro"])["kokoro"]
    names = [v.name for v in voices]
    assert names[:4] == ["af_one", "am_two", "bf_three", "bm_four"]  # ja_other is not English
    blends = [neural.parse_blend(n) for n in names[4:]]
    assert len(blends) == neural.BLENDS and len(set(names)) == len(names)
    assert all(2 <= len(b) <= 3 and sum(b.values()) == pytest.approx(1, abs=0.02) for b in blends)
    assert all(set(b) <= set(PACKS[:4]) for b in blends)
    assert names == [v.name for v in discover_voices(["kokoro"])["kokoro"]]  # the same every time


def test_held_out_packs_never_appear(kokoro, monkeypatch):
    monkeypatch.setenv(neural.KOKORO_EXCLUDE_ENV, "am_two, bm_four")
    voices = discover_voices(["kokoro"])["kokoro"]
    used = set().union(*(neural.parse_blend(v.name) for v in voices))
    assert used == {"af_one", "bf_three"}


def test_a_blend_speaks_with_the_weighted_style_and_its_heaviest_packs_accent(kokoro):
    job = Job(0, SENTENCES[0], Voice("kokoro", "af_one=0.25+bf_three=0.75"), 1.1, 1.0, -6.0, 0.1, 0.1)
    audio = render(job)
    text, speed, lang, style = FakeKokoro.calls[-1]
    assert (text, speed, lang) == (SENTENCES[0], 1.1, "en-gb")
    assert style == pytest.approx(0.25 * 0 + 0.75 * 2)  # pack values are their index
    assert audio.dtype == np.float32 and np.abs(audio).max() == pytest.approx(10 ** (-6 / 20), rel=1e-3)
    render(Job(0, SENTENCES[0], Voice("kokoro", "af_one=0.75+bf_three=0.25"), 1.0, 1.0, -6, 0, 0))
    assert FakeKokoro.calls[-1][2] == "en-us"


def test_synth_with_kokoro_records_blends_and_rates_resumes_and_runs_in_parallel(kokoro, text_file,
                                                                                tmp_path):
    serial = synthesize(text_file, tmp_path / "a", count=8, engines=["kokoro"], progress=False)
    assert serial.failures == [] and serial.rendered == 8
    entries = _manifest(serial.manifest)
    for entry in entries:
        assert entry["engine"] == "kokoro" and entry["speaker"] == f"kokoro:{entry['voice']}"
        assert entry["blend"] == pytest.approx(neural.parse_blend(entry["voice"]))
        assert neural.NEURAL_RATE_RANGE[0] <= entry["rate"] <= neural.NEURAL_RATE_RANGE[1]
        assert entry["pitch"] == 1.0  # no pitch control: the voice's own
        audio, rate = sf.read(tmp_path / "a" / entry["audio"])
        assert rate == 16000 and entry["duration"] == pytest.approx(len(audio) / rate, abs=1e-3)
    again = synthesize(text_file, tmp_path / "a", count=8, engines=["kokoro"], progress=False)
    assert again.reused == 8 and again.rendered == 0 and _manifest(again.manifest) == entries
    parallel = synthesize(text_file, tmp_path / "b", count=8, engines=["kokoro"], jobs=2,
                          progress=False)
    assert _manifest(parallel.manifest) == entries


def test_a_damaged_voice_pack_is_named(kokoro):
    (kokoro / "voices" / "af_bad.bin").write_bytes(b"\0" * 12)
    with pytest.raises(SynthesisError, match=r"af_bad\.bin: 3 floats, expected a \[510, 1, 256\]"):
        neural.read_kokoro_packs(kokoro)


def test_a_missing_pack_fails_that_utterance_only(kokoro, text_file, tmp_path):
    voices = {"kokoro": [Voice("kokoro", "af_one"), Voice("kokoro", "af_gone=0.5+am_two=0.5")]}
    report = synthesize(text_file, tmp_path / "out", count=6, voices=voices, progress=False)
    assert report.utterances + len(report.failures) == 6 and report.failures
    assert all("af_gone not in" in f for f in report.failures)


def test_no_kokoro_folder_means_not_installed(tmp_path, monkeypatch):
    monkeypatch.setenv(neural.KOKORO_ENV, str(tmp_path / "nowhere"))
    assert neural.kokoro_dir() is None
    assert neural.KokoroEngine().available() is False
    assert discover_voices(["kokoro"]) == {"kokoro": []}


class FakePiperVoice:
    configs: list[float] = []

    def synthesize(self, text, syn_config):
        FakePiperVoice.configs.append(syn_config.length_scale)
        chunk = type("Chunk", (), {"audio_float_array": 0.3 * np.sin(np.arange(22050) / 9.0),
                                   "sample_rate": 22050})
        return [chunk] * len(text.split())


def test_piper_speaks_at_the_jobs_rate(monkeypatch, text_file, tmp_path):
    pytest.importorskip("piper")
    monkeypatch.setattr(neural, "_piper_models", lambda: {"fake-voice": ("m.onnx", "m.onnx.json")})
    monkeypatch.setattr(neural, "_piper_voice", lambda model, config: FakePiperVoice())
    FakePiperVoice.configs = []
    assert [v.name for v in neural.PiperEngine().voices()] == ["fake-voice"]
    report = synthesize(text_file, tmp_path / "out", count=3,
                        voices={"piper": [Voice("piper", "fake-voice")]}, progress=False)
    rates = [e["rate"] for e in _manifest(report.manifest)]
    assert report.rendered == 3 and FakePiperVoice.configs == pytest.approx(
        [1 / r for r in rates], rel=1e-2)


def test_the_real_kokoro_says_the_words(tmp_path):
    """With the assembled model (recipes/en-small/assemble_kokoro.py) and kokoro-onnx installed:
    one blend renders a sentence of plausible length."""
    pytest.importorskip("kokoro_onnx")
    if neural.kokoro_dir() is None:
        pytest.skip("no Kokoro model folder (run recipes/en-small/assemble_kokoro.py)")
    job = Job(0, SENTENCES[0], Voice("kokoro", "af_bella=0.5+bm_george=0.5"), 1.0, 1.0, -3, 0, 0)
    audio = render(job)
    assert 1.5 < len(audio) / 16000 < 5.0

"""Synthetic speech: every installed engine renders plausible audio with a correct manifest;
runs are deterministic for a seed and resumable; the text selection covers words and skips
near-duplicates."""

from __future__ import annotations

import gzip
import itertools
import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from harken.errors import ConfigError
from harken.training.synth import ENGINES, discover_voices, plan_jobs, render, select_sentences, synthesize
from harken.training.voices import Job, Voice

SENTENCES = [
    "the quick brown fox jumps over the lazy dog",
    "she sells sea shells by the sea shore",
    "a journey of a thousand miles begins with a single step",
    "pack my box with five dozen liquor jugs",
    "how vexingly quick daft zebras jump",
    "we will meet at the station after lunch",
]
FIELDS = {"audio", "text", "duration", "speaker", "id", "engine", "voice"}


@pytest.fixture(scope="module")
def voices() -> dict[str, list[Voice]]:
    return discover_voices()


@pytest.fixture()
def text_file(tmp_path: Path) -> Path:
    path = tmp_path / "sentences.txt"
    path.write_text("\n".join(SENTENCES) + "\n")
    return path


def _few_voices(voices: dict[str, list[Voice]], per_engine: int = 3) -> dict[str, list[Voice]]:
    """A small fixed subset, so tests stay fast (festival takes ~0.4 s an utterance)."""
    return {e: v[:: max(1, len(v) // per_engine)][:per_engine] for e, v in voices.items() if v}


def _manifest(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("engine", ENGINES)
def test_each_engine_renders_plausible_speech(engine, voices, text_file, tmp_path):
    if not voices.get(engine):
        pytest.skip(f"{engine} is not installed (or has no English voice)")
    from harken.training.manifests import read_manifest

    out = tmp_path / "out"
    report = synthesize(
        text_file, out, count=2, voices={engine: voices[engine][:2]}, progress=False
    )
    assert report.failures == [] and report.utterances == 2 and report.rendered == 2
    entries = _manifest(out / "manifest.jsonl")
    assert len(entries) == 2
    for entry in entries:
        assert FIELDS <= entry.keys()
        assert entry["engine"] == engine and entry["speaker"] == f"{engine}:{entry['voice']}"
        assert entry["text"] in SENTENCES
        audio, rate = sf.read(out / entry["audio"], dtype="float32")
        assert rate == 16000 and audio.ndim == 1
        assert entry["duration"] == pytest.approx(len(audio) / rate, abs=1e-3)
        words = len(entry["text"].split())
        # Natural speech runs at 1.5-5 words a second; the padding adds at most 0.8 s.
        assert words / 5 < entry["duration"] < words / 1.5 + 0.8
        assert 0.05 < np.abs(audio).max() <= 1.0
    utterances = read_manifest(out / "manifest.jsonl")
    assert [u.id for u in utterances] == [e["id"] for e in entries]
    assert all(u.audio.is_file() and u.speaker for u in utterances)


def test_same_seed_same_plan_and_audio(voices, text_file, tmp_path):
    few = _few_voices({e: voices[e] for e in ("espeak-ng", "flite") if voices.get(e)})
    if not few:
        pytest.skip("neither espeak-ng nor flite is installed")
    first = synthesize(text_file, tmp_path / "a", count=6, seed=7, voices=few, progress=False)
    second = synthesize(
        text_file, tmp_path / "b", count=6, seed=7, voices=few, jobs=2, progress=False
    )
    other = synthesize(text_file, tmp_path / "c", count=6, seed=8, voices=few, progress=False)
    assert first.failures == second.failures == []
    a, b = _manifest(first.manifest), _manifest(second.manifest)
    assert a == b
    assert a != _manifest(other.manifest)
    for entry in a:  # both engines are deterministic: the files are byte-identical
        assert (tmp_path / "a" / entry["audio"]).read_bytes() == (
            tmp_path / "b" / entry["audio"]
        ).read_bytes()


def test_resume_keeps_files_and_extends(voices, text_file, tmp_path):
    few = _few_voices({e: voices[e] for e in ("espeak-ng", "flite") if voices.get(e)})
    if not few:
        pytest.skip("neither espeak-ng nor flite is installed")
    out = tmp_path / "out"
    synthesize(text_file, out, count=3, voices=few, progress=False)
    entries = _manifest(out / "manifest.jsonl")
    stamps = {e["audio"]: os.stat(out / e["audio"]).st_mtime_ns for e in entries}
    (out / entries[1]["audio"]).write_bytes(b"")  # an interrupted write leaves a damaged file

    report = synthesize(text_file, out, count=5, voices=few, progress=False)
    assert (report.reused, report.rendered) == (2, 3)
    extended = _manifest(out / "manifest.jsonl")
    assert len(extended) == 5 and extended[:3] == entries
    assert os.stat(out / entries[0]["audio"]).st_mtime_ns == stamps[entries[0]["audio"]]
    assert sf.info(str(out / entries[1]["audio"])).frames > 0


def test_hours_stops_once_enough_audio(voices, text_file, tmp_path):
    if not voices.get("espeak-ng"):
        pytest.skip("espeak-ng is not installed")
    few = _few_voices({"espeak-ng": voices["espeak-ng"]})
    # With the progress bar: the last utterance overshoots the target.
    report = synthesize(text_file, tmp_path, hours=10 / 3600, voices=few, progress=True)
    durations = [e["duration"] for e in _manifest(report.manifest)]
    assert sum(durations) >= 10 > sum(durations[:-1])


def test_numbers_spelled_gzip_text_opus_output(voices, tmp_path):
    if not voices.get("espeak-ng"):
        pytest.skip("espeak-ng is not installed")
    text = tmp_path / "numbers.txt.gz"
    with gzip.open(text, "wt") as handle:
        handle.write("I bought 3 apples and 25 pears.\n")
    report = synthesize(
        text,
        tmp_path / "out",
        count=1,
        voices={"espeak-ng": voices["espeak-ng"][:1]},
        audio_format="opus",
        progress=False,
    )
    entry = _manifest(report.manifest)[0]
    assert entry["text"] == "i bought three apples and twenty five pears"
    assert entry["audio"].endswith(".ogg")
    info = sf.info(str(tmp_path / "out" / entry["audio"]))
    assert (info.samplerate, info.subtype) == (16000, "OPUS")


def test_selection_covers_words_and_skips_near_duplicates():
    sentences = [
        "the cat sat on the mat",
        "the cat sat on the mat again",  # a near-duplicate of the first
        "the cat sat on the mat",
        "zebras quietly explore jungle valleys",
        "the dog sat on the mat",
    ]
    order = list(select_sentences(sentences, seed=0))
    assert order[0] == 3  # the most new words and letters per word
    assert len({sentences[i] for i in order}) == len(order)
    assert not {0, 1} <= set(order)  # at most one of the near-duplicate pair
    assert order == list(select_sentences(sentences, seed=0))
    # A prefix of the order does not depend on how many are taken.
    assert list(itertools.islice(select_sentences(sentences, seed=0), 2)) == order[:2]


def test_plan_is_seeded_per_index_and_cycles():
    voices = {"espeak-ng": [Voice("espeak-ng", "en-us")], "flite": [Voice("flite", "slt")]}
    jobs = list(itertools.islice(plan_jobs(SENTENCES[:2], voices, seed=3), 5))
    again = list(itertools.islice(plan_jobs(SENTENCES[:2], voices, seed=3), 3))
    assert jobs[:3] == again
    assert [j.index for j in jobs] == [0, 1, 2, 3, 4]
    assert {j.text for j in jobs} == set(SENTENCES[:2])  # the text ran out and was reused
    assert len({j.id for j in jobs}) == 5
    for job in jobs:
        assert 0.85 <= job.rate <= 1.2 and 0.8 <= job.pitch <= 1.25


def test_render_levels_and_pads(voices):
    if not voices.get("flite"):
        pytest.skip("flite is not installed")
    job = Job(0, SENTENCES[0], Voice("flite", voices["flite"][0].name), 1.0, 1.0, -6.0, 0.25, 0.1)
    audio = render(job)
    assert audio.dtype == np.float32
    assert 20 * np.log10(np.abs(audio).max()) == pytest.approx(-6.0, abs=0.01)
    assert not audio[:4000].any() and not audio[-1600:].any()
    assert audio[4000:4400].any()  # speech starts right after the 0.25 s lead


def test_config_errors(text_file, tmp_path):
    with pytest.raises(ConfigError, match="exactly one of hours or count"):
        synthesize(text_file, tmp_path, hours=1, count=3)
    with pytest.raises(ConfigError, match="unknown TTS engine.*nope"):
        synthesize(text_file, tmp_path, count=1, engines=["nope"])
    with pytest.raises(ConfigError, match="no TTS engine"):
        synthesize(text_file, tmp_path, count=1, voices={"flite": []})
    with pytest.raises(ConfigError, match="audio format"):
        synthesize(
            text_file,
            tmp_path,
            count=1,
            voices={"flite": [Voice("flite", "slt")]},
            audio_format="mp4",
        )
    empty = tmp_path / "empty.txt"
    empty.write_text("hi\n")
    with pytest.raises(ConfigError, match="no line of 3-30 words"):
        synthesize(empty, tmp_path, count=1)


@pytest.mark.slow
def test_a_tiny_model_learns_synthesized_speech(voices, tmp_path):
    """Speech rendered by `synthesize` is learnable: a tiny model trained on it transcribes it."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from conftest import PHRASES
    from test_engine import tiny_config

    from harken.model import load_model
    from harken.training.loop import train

    slt = [v for v in voices.get("flite", []) if v.name == "slt"]
    if not slt:
        pytest.skip("flite's slt voice is not installed")
    text = tmp_path / "phrases.txt"
    text.write_text("\n".join(PHRASES) + "\n")
    synthesize(text, tmp_path / "synth", count=4, voices={"flite": slt}, seed=0, progress=False)
    manifest = tmp_path / "synth" / "manifest.jsonl"
    rows = _manifest(manifest)
    assert len(rows) == 4 and {r["text"] for r in rows} <= set(PHRASES)
    model = load_model(train(tiny_config(manifest, tmp_path / "run", "deepspeech2", 400)))
    results = model.transcribe_batch([manifest.parent / r["audio"] for r in rows])
    assert [r.text for r in results] == [row["text"] for row in rows]

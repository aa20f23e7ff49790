"""The synthetic-clip filter: clips whose words an independent recogniser finds are kept, the
others dropped; numbers compare as words; transcripts are cached so a re-run hears only new
clips; one failing clip never stops the run."""

from __future__ import annotations

import json

import pytest

from harken.training.clip_filter import filter_by_recogniser
from harken.errors import ConfigError

ROWS = [
    {"audio": "audio/a.flac", "text": "the quick brown fox jumps over the lazy dog", "duration": 3.0},
    {"audio": "audio/b.flac", "text": "in eighteen twenty the ship sailed", "duration": 2.0},
    {"audio": "audio/c.flac", "text": "she sells sea shells by the sea shore", "duration": 2.5},
    {"audio": "audio/d.flac", "text": "a journey of a thousand miles", "duration": 2.0},
]
HEARD = {
    "a.flac": "The quick brown fox jumps over the lazy dog.",  # exact
    "b.flac": "In 1820, the ship sailed!",  # numbers as digits, punctuation
    "c.flac": "she sells sea shells",  # half the words missing: WER 0.5
    "d.flac": None,  # the recogniser fails on this one
}


@pytest.fixture
def manifest(tmp_path):
    path = tmp_path / "manifest.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    return path


def fake(calls):
    def recognise(audio: str) -> str:
        calls.append(audio)
        heard = HEARD[audio.rsplit("/", 1)[-1]]
        if heard is None:
            raise RuntimeError("cannot decode")
        return heard
    return recognise


def test_keeps_the_clips_whose_words_are_found(manifest, tmp_path):
    calls: list[str] = []
    out = tmp_path / "kept.jsonl"
    report = filter_by_recogniser(manifest, out, fake(calls), max_wer=0.2)
    kept = [json.loads(line) for line in out.read_text().splitlines()]
    assert [k["text"] for k in kept] == [ROWS[0]["text"], ROWS[1]["text"]]
    assert kept[1]["filter_text"] == "in eighteen twenty the ship sailed"
    assert kept[0]["filter_wer"] == 0.0 and kept[0]["audio"] == str(tmp_path / "audio" / "a.flac")
    assert (report.kept, report.dropped, report.kept_seconds, report.dropped_seconds) == (2, 1, 5.0, 2.5)
    assert len(report.failed) == 1 and "d.flac: cannot decode" in report.failed[0]
    # A looser threshold keeps the half-heard clip; the cache answers without the recogniser,
    # except for the clip that failed before.
    again: list[str] = []
    report = filter_by_recogniser(manifest, out, fake(again), max_wer=0.5)
    assert report.kept == 3 and [a.rsplit("/", 1)[-1] for a in again] == ["d.flac"]


def test_bad_inputs_are_named(manifest, tmp_path):
    with pytest.raises(ConfigError, match="max_wer must be within"):
        filter_by_recogniser(manifest, tmp_path / "o.jsonl", fake([]), max_wer=1.5)
    with pytest.raises(ConfigError, match="no such manifest"):
        filter_by_recogniser(tmp_path / "missing.jsonl", tmp_path / "o.jsonl", fake([]))
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"audio": "audio/a.flac"}\n' + json.dumps(ROWS[0]) + "\n")
    report = filter_by_recogniser(broken, tmp_path / "o.jsonl", fake([]))
    assert report.kept == 1 and "broken.jsonl:1: not a manifest row" in report.failed[0]

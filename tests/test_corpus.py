"""Corpus tools: combine (paths and ids), filter (duration, alphabet, fields), split by speaker
(disjoint, proportional), summary figures, and the `harken data` commands."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from harken.training.corpus import (
    combine,
    filter_utterances,
    read_manifests,
    split_by_speaker,
    summarize,
    write_manifest,
)
from harken.errors import ConfigError

SHARED = Path(__file__).resolve().parents[2] / "shared" / "corpora"


def _corpus(folder: Path, rows: list[tuple[str, str, float, str]], **extra) -> Path:
    """A manifest with short silent WAVs: rows of (id, text, seconds, speaker)."""
    (folder / "audio").mkdir(parents=True, exist_ok=True)
    lines = []
    for uid, text, seconds, speaker in rows:
        sf.write(
            folder / "audio" / f"{uid}.wav", np.zeros(round(seconds * 16000), np.float32), 16000
        )
        lines.append(
            json.dumps(
                {
                    "audio": f"audio/{uid}.wav",
                    "text": text,
                    "duration": seconds,
                    "speaker": speaker,
                    "id": uid,
                    **extra,
                }
            )
        )
    path = folder / "manifest.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture()
def two_corpora(tmp_path):
    a = _corpus(
        tmp_path / "a",
        [
            ("u1", "hello world", 1.0, "s1"),
            ("u2", "good morning", 2.0, "s1"),
            ("u3", "ten past two", 3.0, "s2"),
        ],
        source="a",
    )
    b = _corpus(
        tmp_path / "b",
        [
            ("u1", "hello again", 4.0, "s3"),
            ("v2", "Caps And 42", 0.5, "s4"),
            ("v3", "a very long one", 25.0, "s5"),
        ],
        source="b",
    )
    return a, b


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_combine_rewrites_paths_and_keeps_ids_unique(two_corpora, tmp_path):
    out = tmp_path / "out" / "all.jsonl"
    count = write_manifest(combine(read_manifests(two_corpora)), out)
    lines = _lines(out)
    assert count == len(lines) == 6
    assert [line["id"] for line in lines] == ["u1", "u2", "u3", "u1-2", "v2", "v3"]
    assert [line["source"] for line in lines] == ["a"] * 3 + ["b"] * 3  # other keys are kept
    for line, utterance in zip(lines, read_manifests([out])):
        assert Path(line["audio"]).is_absolute()  # the audio is not under out/
        assert utterance.audio.is_file()
    # Audio under the manifest's folder is written relative to it.
    inside = two_corpora[0].parent / "copy.jsonl"
    write_manifest(read_manifests([two_corpora[0]]), inside)
    assert [line["audio"] for line in _lines(inside)] == [
        "audio/u1.wav",
        "audio/u2.wav",
        "audio/u3.wav",
    ]


def test_filter_by_duration_alphabet_and_fields(two_corpora):
    utterances = read_manifests(two_corpora)
    result = filter_utterances(utterances, min_duration=0.8, max_duration=20.0)
    assert [u.id for u in result.kept] == ["u1", "u2", "u3", "u1"]
    assert result.dropped == {"characters outside the alphabet": 1, "longer than 20.0 s": 1}
    assert [u.id for u in filter_utterances(utterances, alphabet=None, max_duration=1.0).kept] == [
        "u1",
        "v2",
    ]
    picked = filter_utterances(utterances, where={"source": {"b"}, "speaker": {"s3", "s5"}})
    assert [u.text for u in picked.kept] == ["hello again", "a very long one"]
    fast = filter_utterances(utterances, max_chars_per_second=5.0)
    assert "a very long one" in [u.text for u in fast.kept] and "hello world" not in [
        u.text for u in fast.kept
    ]


def test_split_by_speaker_is_disjoint_and_proportional(tmp_path):
    rng = np.random.default_rng(0)
    rows = [(f"u{i}", "some words", float(rng.uniform(1, 3)), f"spk{i % 40}") for i in range(400)]
    utterances = read_manifests([_corpus(tmp_path, rows)])
    parts = split_by_speaker(utterances, {"train": 0.8, "dev": 0.1, "test": 0.1}, seed=1)
    speakers = {name: {u.speaker for u in part} for name, part in parts.items()}
    assert not speakers["train"] & speakers["dev"] and not speakers["train"] & speakers["test"]
    assert not speakers["dev"] & speakers["test"]
    assert sum(len(p) for p in parts.values()) == 400
    total = sum(u.duration for u in utterances)
    for name, share in (("train", 0.8), ("dev", 0.1), ("test", 0.1)):
        assert sum(u.duration for u in parts[name]) / total == pytest.approx(share, abs=0.03)
    again = split_by_speaker(utterances, {"train": 0.8, "dev": 0.1, "test": 0.1}, seed=1)
    assert {n: [u.id for u in p] for n, p in again.items()} == {
        n: [u.id for u in p] for n, p in parts.items()
    }
    # Every part gets a speaker even when speakers are few.
    few = split_by_speaker(utterances[:3], {"train": 0.98, "dev": 0.01, "test": 0.01})
    assert all(len(p) == 1 for p in few.values())
    with pytest.raises(ConfigError, match="cannot fill 3 parts"):
        split_by_speaker(utterances[:1], {"train": 0.8, "dev": 0.1, "test": 0.1})
    with pytest.raises(ConfigError, match="fractions must be > 0"):
        split_by_speaker(utterances, {"train": 1.0, "dev": 0.0})


def test_summary_figures(two_corpora):
    summary = summarize(read_manifests(two_corpora))
    assert summary.utterances == 6
    assert summary.hours == pytest.approx(35.5 / 3600)
    assert summary.speakers == 5
    assert summary.words == 16 and summary.vocabulary == 15  # "hello" twice
    assert (summary.min_duration, summary.max_duration) == (0.5, 25.0)
    assert summary.mean_duration == pytest.approx(35.5 / 6)
    # bins 0-1, 1-2, 2-3, 3-5, 5-10, 10-15, 15-20, 20-30, >=30
    assert [n for _, _, n in summary.histogram] == [1, 1, 1, 2, 0, 0, 0, 1, 0]
    assert summary.top_speakers[0] == ("s5", pytest.approx(25 / 3600))
    assert summary.characters["l"] == 6
    assert "hours       0.01" in summary.to_text()


def test_data_commands(two_corpora, tmp_path, capsys):
    from harken.cli import main

    combined = tmp_path / "c.jsonl"
    assert main(["data", "combine", *map(str, two_corpora), "--out", str(combined)]) == 0
    assert len(_lines(combined)) == 6
    kept = tmp_path / "f.jsonl"
    assert (
        main(
            [
                "data",
                "filter",
                str(combined),
                "--out",
                str(kept),
                "--max-duration",
                "10",
                "--where",
                "source=a",
            ]
        )
        == 0
    )
    assert [line["id"] for line in _lines(kept)] == ["u1", "u2", "u3"]
    assert (
        main(
            [
                "data",
                "split",
                str(combined),
                "--out",
                str(tmp_path / "split"),
                "--parts",
                "train=0.5",
                "test=0.5",
            ]
        )
        == 0
    )
    train, test = _lines(tmp_path / "split" / "train.jsonl"), _lines(
        tmp_path / "split" / "test.jsonl"
    )
    assert len(train) + len(test) == 6 and not {r["speaker"] for r in train} & {
        r["speaker"] for r in test
    }
    capsys.readouterr()
    assert main(["data", "summary", str(combined), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["utterances"] == 6 and record["speakers"] == 5
    assert main(["data", "filter", str(combined), "--out", str(kept), "--where", "nonsense"]) != 0


@pytest.mark.skipif(
    not (SHARED / "an4" / "manifest.jsonl").exists(), reason="../shared/corpora/an4 is absent"
)
def test_reads_the_shared_corpora_as_they_are():
    utterances = read_manifests([SHARED / "an4" / "manifest.jsonl"])
    summary = summarize(utterances)
    assert (summary.utterances, summary.speakers) == (1078, 84)
    assert summary.hours == pytest.approx(0.8, abs=0.06)
    assert utterances[0].audio.is_file()
    assert not filter_utterances(utterances).dropped  # normalised transcripts: a-z ' space

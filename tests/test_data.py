"""Manifests, dataset mixing, the speech dataset, collation and length-bucketed batching."""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from torch.utils.data import DataLoader

from harken.training.data import Batch, BucketBatchSampler, DatasetSpec, SpeechDataset, collate, mix_datasets
from harken.training.manifests import Utterance, load_utterance, read_manifest, utterance_duration
from harken.errors import ConfigError, ManifestError

SR = 16000
ALPHABET = " abcdefghijklmnopqrstuvwxyz'"
SHARED_AN4 = Path(__file__).resolve().parents[1].parent / "shared" / "corpora" / "an4"


def encode(text: str) -> list[int]:
    """Character tokenizer for the tests: blank is 0, so letters start at 1."""
    return [ALPHABET.index(char) + 1 for char in text]  # ValueError on other characters


def normalize(text: str) -> str:
    return text.lower().strip()


def write_wav(path: Path, seconds: float) -> Path:
    """A ramp, so slices can be checked sample by sample (float WAV keeps the values exact)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    n = round(seconds * SR)
    sf.write(path, (np.arange(n) / n).astype(np.float32), SR, subtype="FLOAT")
    return path


def write_lines(path: Path, lines: list[str | dict | bytes]) -> Path:
    def as_bytes(line: str | dict | bytes) -> bytes:
        if isinstance(line, dict):
            line = json.dumps(line)
        return line if isinstance(line, bytes) else line.encode()

    data = b"".join(as_bytes(line) + b"\n" for line in lines)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def utterances_with_durations(durations: list[float]) -> list[Utterance]:
    return [Utterance(Path(f"/x/{i}.wav"), "a", d, str(i)) for i, d in enumerate(durations)]


# ---------------------------------------------------------------- manifests


def test_jsonl_relative_paths_ids_and_extra_keys(tmp_path: Path) -> None:
    manifest = write_lines(
        tmp_path / "corpus" / "train.jsonl",
        [
            {"audio": "audio/s1/a.ogg", "text": "yes", "duration": 1.0, "speaker": "s1", "id": "u1",
             "text_raw": "YES", "split": "train"},
            "",
            {"audio": "/abs/b.wav", "text": "no", "speaker": 7},
        ],
    )
    first, second = read_manifest(manifest)
    assert first == Utterance(
        audio=tmp_path / "corpus" / "audio" / "s1" / "a.ogg", text="yes", duration=1.0, id="u1",
        speaker="s1", extra={"text_raw": "YES", "split": "train"},
    )
    assert first.audio.is_absolute() and not first.segment
    assert (second.audio, second.id, second.speaker) == (Path("/abs/b.wav"), "b", "7")
    assert second.duration is None


def test_nemo_jsonl_offsets_make_segments_with_distinct_ids(tmp_path: Path) -> None:
    manifest = write_lines(
        tmp_path / "nemo.json",
        [
            {"audio_filepath": "talk.wav", "text": "hello", "offset": 12.5, "duration": 3.25},
            {"audio_filepath": "talk.wav", "text": "there", "offset": 0, "duration": 2.0},
            {"audio_filepath": "short.wav", "text": "hi", "duration": 0.8},
        ],
    )
    a, b, c = read_manifest(manifest)
    assert (a.audio, a.offset, a.duration) == (tmp_path / "talk.wav", 12.5, 3.25)
    assert (a.id, a.segment) == ("talk-0012500", True)
    assert (b.offset, b.id) == (0.0, "talk-0000000")
    assert (c.offset, c.id, c.segment) == (0.0, "short", True)


def test_deepspeech_csv_by_suffix_and_by_header(tmp_path: Path) -> None:
    header = "wav_filename,wav_filesize,transcript"
    rows = ["clips/a.wav,32044,hello world", '/d/b.wav,100,"one, two"']
    for name, first in (("train.csv", header), ("train.txt", "\ufeff" + header)):  # BOM as Excel
        a, b = read_manifest(write_lines(tmp_path / name, [first, *rows]))
        assert (a.audio, a.text, a.id, a.duration, a.extra) == (
            tmp_path / "clips" / "a.wav", "hello world", "a", None, {"wav_filesize": 32044}
        )
        assert (b.audio, b.text) == (Path("/d/b.wav"), "one, two")


BAD_LINES = [
    (b'{"audio": "a.wav", "text": ', "not valid JSON"),
    (b'{"audio": "a.wav"}', 'missing "text"'),
    (b'{"text": "hi", "duration": 1}', "missing the audio path"),
    (b'{"audio": "a.wav", "text": "hi", "duration": -1.5}', 'negative "duration" -1.5'),
    (b'{"audio": "a.wav", "text": "caf\xe9"}', "not UTF-8"),
    (b'["a.wav", "hi"]', "expected a JSON object"),
    (b'{"audio": "a.wav", "text": "hi", "duration": "long"}', '"duration" must be a number'),
]


@pytest.mark.parametrize(("bad", "problem"), BAD_LINES)
def test_malformed_jsonl_line_names_file_line_and_problem(
    tmp_path: Path, bad: bytes, problem: str
) -> None:
    good = {"audio": "a.wav", "text": "hi"}
    manifest = write_lines(tmp_path / "m.jsonl", [good, good, bad, good])
    with pytest.raises(ManifestError) as caught:
        read_manifest(manifest)
    assert f"{manifest}, line 3: " in str(caught.value)
    assert problem in str(caught.value)


def test_malformed_csv_line_and_header(tmp_path: Path) -> None:
    rows = ["wav_filename,wav_filesize,transcript", "a.wav,1,hi", "b.wav,hi"]
    manifest = write_lines(tmp_path / "m.csv", rows)
    with pytest.raises(ManifestError, match=r"m\.csv, line 3: expected 3 columns"):
        read_manifest(manifest)
    headless = write_lines(tmp_path / "h.csv", ["file,text", "a.wav,hi"])
    with pytest.raises(ManifestError, match=r"h\.csv, line 1: .*missing wav_filename, transcript"):
        read_manifest(headless, on_error="skip")  # no header: nothing can be read, even skipping


def test_skip_mode_reports_and_skips_bad_lines(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    lines = [{"audio": "a.wav", "text": "one"}, b"{oops", {"audio": "b.wav", "text": "two"}]
    manifest = write_lines(tmp_path / "m.jsonl", [*lines, b'{"audio": "c.wav"}'])
    with caplog.at_level(logging.WARNING, logger="harken.training.data"):
        with pytest.warns(UserWarning, match="skipped 2"):
            utterances = read_manifest(manifest, on_error="skip")
    assert [u.text for u in utterances] == ["one", "two"]
    assert "line 2: not valid JSON" in caplog.text and 'line 4: missing "text"' in caplog.text


def test_empty_or_unusable_manifest_is_an_error_naming_the_file(tmp_path: Path) -> None:
    for name, lines in (("empty.jsonl", []), ("blank.jsonl", ["", "  "])):
        path = write_lines(tmp_path / name, lines)
        with pytest.raises(ManifestError, match=f"{name}: the manifest holds no utterances"):
            read_manifest(path)
    bad = write_lines(tmp_path / "bad.jsonl", [b"{"])
    with pytest.warns(UserWarning), pytest.raises(ManifestError, match=r"bad\.jsonl: .*1 malf"):
        read_manifest(bad, on_error="skip")
    with pytest.raises(ManifestError, match="missing.jsonl: cannot read manifest"):
        read_manifest(tmp_path / "missing.jsonl")


@pytest.mark.skipif(not SHARED_AN4.is_dir(), reason="../shared/corpora/an4 is not present")
def test_shared_corpus_manifest_reads_with_existing_audio() -> None:
    utterances = read_manifest(SHARED_AN4 / "test.jsonl")
    assert len(utterances) == 130
    assert all(u.audio.is_file() and u.duration and u.speaker for u in utterances[:20])
    item = SpeechDataset(utterances[:1], encode, normalize)[0]
    assert item is not None
    assert abs(len(item["audio"]) / SR - utterances[0].duration) < 0.1


# ---------------------------------------------------------------- mixing


def write_corpus(path: Path, n: int, prefix: str) -> str:
    lines = [{"audio": f"{prefix}{i}.wav", "text": "a", "duration": 1.0 + i / 10} for i in range(n)]
    return str(write_lines(path, lines))


def test_mix_weights_repeat_and_sample(tmp_path: Path) -> None:
    a = write_corpus(tmp_path / "a.jsonl", 100, "a")
    b = write_corpus(tmp_path / "b.jsonl", 100, "b")
    specs = [DatasetSpec(a, weight=2), DatasetSpec(b, weight=0.5)]
    mixed = mix_datasets(specs, epoch=3, seed=7)
    per_spec = Counter(spec for _, spec in mixed)
    assert per_spec == {0: 200, 1: 50}
    assert set(Counter(u.id for u, spec in mixed if spec == 0).values()) == {2}
    assert set(Counter(u.id for u, spec in mixed if spec == 1).values()) == {1}
    assert all(u.id.startswith("ab"[spec]) for u, spec in mixed)
    assert mixed == mix_datasets(specs, epoch=3, seed=7)
    subset = {u.id for u, spec in mixed if spec == 1}
    assert subset != {u.id for u, spec in mix_datasets(specs, epoch=4, seed=7) if spec == 1}
    assert subset != {u.id for u, spec in mix_datasets(specs, epoch=3, seed=8) if spec == 1}
    assert len(mix_datasets([DatasetSpec(a, weight=0.3)], epoch=0, seed=0)) == 30


def test_mix_fractional_count_is_rounded_at_random_with_exact_mean(tmp_path: Path) -> None:
    spec = DatasetSpec(write_corpus(tmp_path / "a.jsonl", 10, "a"), weight=0.25)  # 2.5 per epoch
    counts = [len(mix_datasets([spec], epoch=e, seed=0)) for e in range(200)]
    assert set(counts) == {2, 3}
    assert abs(np.mean(counts) - 2.5) < 0.15


def test_mix_duration_limits_and_spec_validation(tmp_path: Path) -> None:
    path = write_corpus(tmp_path / "a.jsonl", 100, "a")  # 1.0 .. 10.9 s
    mixed = mix_datasets([DatasetSpec(path, min_duration=2.0, max_duration=5.0)], epoch=0, seed=0)
    assert len(mixed) == 31 and all(2.0 <= u.duration <= 5.0 for u, _ in mixed)
    with pytest.raises(ConfigError, match="weight"):
        DatasetSpec(path, weight=-1)
    with pytest.raises(ConfigError, match="min_duration 5 is above max_duration 2"):
        DatasetSpec(path, min_duration=5, max_duration=2)
    with pytest.raises(ManifestError, match="nope.jsonl"):
        mix_datasets([DatasetSpec(str(tmp_path / "nope.jsonl"))], epoch=0)


# ---------------------------------------------------------------- sampler


@pytest.fixture
def varied() -> list[Utterance]:
    durations = np.random.default_rng(0).uniform(0.5, 9.0, 300).round(1)
    return utterances_with_durations(durations.tolist())


def test_sampler_covers_every_index_once_within_the_budget(varied: list[Utterance]) -> None:
    sampler = BucketBatchSampler(varied, max_batch_seconds=40, max_batch_size=12)
    for epoch in (0, 1):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert len(batches) == len(sampler)
        assert sorted(i for batch in batches for i in batch) == list(range(len(varied)))
        for batch in batches:
            assert len(batch) <= 12
            assert max(varied[i].duration for i in batch) * len(batch) <= 40


def test_sampler_groups_similar_lengths(varied: list[Utterance]) -> None:
    spread = [
        np.ptp([varied[i].duration for i in batch])
        for batch in BucketBatchSampler(varied, max_batch_seconds=40)
    ]
    assert np.mean(spread) < 0.5  # random batches of 300 values in 0.5-9 s would spread ~6 s


def test_sampler_sortagrad_then_shuffled_reproducible_orders(varied: list[Utterance]) -> None:
    sampler = BucketBatchSampler(varied, max_batch_seconds=40, sortagrad=True, seed=3)
    longest = [max(varied[i].duration for i in batch) for batch in sampler]
    assert longest == sorted(longest)
    epochs = []
    for epoch in (1, 2):
        sampler.set_epoch(epoch)
        epochs.append(list(sampler))
    assert epochs[0] != epochs[1]
    again = BucketBatchSampler(varied, max_batch_seconds=40, sortagrad=True, seed=3)
    again.set_epoch(1)
    assert list(again) == epochs[0]
    other_seed = BucketBatchSampler(varied, max_batch_seconds=40, seed=4)
    other_seed.set_epoch(1)
    assert list(other_seed) != epochs[0]


@pytest.mark.parametrize("drop_last", [False, True])
def test_sampler_distributed_ranks_are_equal_disjoint_and_covering(
    varied: list[Utterance], drop_last: bool
) -> None:
    whole = BucketBatchSampler(varied, max_batch_seconds=40, seed=1)
    whole.set_epoch(5)
    full = list(whole)
    ranks = []
    for rank in range(3):
        sampler = BucketBatchSampler(
            varied, max_batch_seconds=40, seed=1, num_replicas=3, rank=rank, drop_last=drop_last
        )
        sampler.set_epoch(5)
        ranks.append(list(sampler))
        assert len(ranks[-1]) == len(sampler)
    assert len({len(batches) for batches in ranks}) == 1
    interleaved = [batch for step in zip(*ranks) for batch in step]
    assert len(full) % 3 != 0  # the remainder case is exercised
    if drop_last:
        assert interleaved == full[: len(full) // 3 * 3]  # disjoint, the remainder dropped
    else:
        assert interleaved == full + full[: len(interleaved) - len(full)]  # padded from the start
        assert {i for batch in interleaved for i in batch} == set(range(len(varied)))


def test_sampler_start_batch_resumes_with_the_tail_of_the_epoch(varied: list[Utterance]) -> None:
    sampler = BucketBatchSampler(varied, max_batch_seconds=40, seed=2, num_replicas=2, rank=1)
    sampler.set_epoch(4)
    full = list(sampler)
    sampler.set_epoch(4, start_batch=5)
    assert list(sampler) == full[5:] and len(sampler) == len(full) - 5
    for epoch in (4, None):  # the skip binds to `epoch`, or else to the first set_epoch
        resumed = BucketBatchSampler(
            varied, max_batch_seconds=40, seed=2, num_replicas=2, rank=1, epoch=epoch, start_batch=5
        )
        resumed.set_epoch(4)  # what a training loop does at the start of each epoch
        assert list(resumed) == full[5:] and len(resumed) == len(full) - 5
        resumed.set_epoch(5)
        assert len(resumed) == len(list(resumed)) == len(full)  # the next epoch is whole
    durations = BucketBatchSampler([u.duration for u in varied], 40, seed=2, num_replicas=2, rank=1)
    durations.set_epoch(4)
    assert list(durations) == full  # plain seconds work as well as utterances


def test_sampler_measures_missing_durations_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import harken.training.manifests as manifests  # where durations are measured

    paths = [write_wav(tmp_path / f"{i}.wav", s) for i, s in enumerate([0.5, 0.25, 1.0])]
    utterances = [Utterance(p, "a", None, p.stem) for p in paths] * 2
    calls: list[Path] = []
    measure = manifests.audio_duration
    monkeypatch.setattr(
        manifests, "audio_duration", lambda path: calls.append(path) or measure(path)
    )
    sampler = BucketBatchSampler(utterances, max_batch_seconds=1.0)
    BucketBatchSampler(utterances, max_batch_seconds=1.0)
    assert sorted(calls) == sorted(paths)
    assert sampler.durations.tolist() == pytest.approx([0.5, 0.25, 1.0] * 2)
    in_order = BucketBatchSampler(utterances, 1.0, shuffle=False)
    assert [sorted(batch) for batch in in_order] == [[1, 4], [0, 3], [2], [5]]
    segment = Utterance(paths[2], "a", None, "x", offset=0.25, segment=True)
    assert utterance_duration(segment) == pytest.approx(0.75)


def test_sampler_gives_an_overlong_utterance_its_own_batch() -> None:
    utterances = utterances_with_durations([1.0, 1.0, 30.0])
    batches = BucketBatchSampler(utterances, max_batch_seconds=10)
    assert sorted(map(sorted, batches)) == [[0, 1], [2]]


# ---------------------------------------------------------------- dataset and collate


@pytest.fixture
def clips(tmp_path: Path) -> list[Utterance]:
    good = [write_wav(tmp_path / f"good{i}.wav", s) for i, s in enumerate([0.3, 0.5, 0.2])]
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x00 this is not audio")
    texts = ["yes", "no", "go ahead", "stop"]
    return [Utterance(path, text, None, path.stem) for path, text in zip([*good, corrupt], texts)]


def test_dataset_item_shapes_and_types(clips: list[Utterance]) -> None:
    item = SpeechDataset(clips, encode, normalize)[2]
    assert item is not None
    assert item["audio"].dtype == torch.float32 and item["audio"].shape == (round(0.2 * SR),)
    assert item["tokens"].dtype == torch.int64 and item["tokens"].tolist() == encode("go ahead")
    assert item["id"] == "good2"


def test_corrupt_audio_gives_none_once_logged_and_collate_drops_it(
    clips: list[Utterance], caplog: pytest.LogCaptureFixture
) -> None:
    dataset = SpeechDataset(clips, encode, normalize)
    with caplog.at_level(logging.WARNING, logger="harken.training.data"):
        items = [dataset[i] for i in range(len(dataset))] + [dataset[3]]
    assert items[3] is None and items[4] is None
    assert caplog.text.count("corrupt.wav") == 1
    assert list(dataset.failures) == [clips[3].audio]
    batch = collate(items)
    assert isinstance(batch, Batch) and batch.ids == ["good0", "good1", "good2"]
    assert batch.audio.shape == (3, round(0.5 * SR)) and batch.audio.dtype == torch.float32
    assert batch.audio_lengths.tolist() == [round(0.3 * SR), round(0.5 * SR), round(0.2 * SR)]
    assert torch.all(batch.audio[0, round(0.3 * SR):] == 0)
    padded = [encode("yes") + [0] * 5, encode("no") + [0] * 6, encode("go ahead")]
    assert batch.tokens.tolist() == padded
    assert batch.token_lengths.tolist() == [3, 2, 8] and batch.token_lengths.dtype == torch.int64
    moved = batch.to("cpu")
    assert torch.equal(moved.audio, batch.audio) and moved.ids == batch.ids and len(moved) == 3
    assert collate([None, None]) is None


def test_unencodable_or_empty_transcripts(clips: list[Utterance]) -> None:
    odd = [Utterance(clips[0].audio, text, None, "x") for text in ("naïve", "!!", "")]
    dataset = SpeechDataset(odd, encode, lambda text: text.replace("!", ""))
    assert dataset[0] is None and "cannot encode" in dataset.failures[clips[0].audio]
    assert dataset[1] is None  # normalises to nothing: not a silence label
    assert dataset[2] is not None and dataset[2]["tokens"].numel() == 0  # an intended silence


def test_segments_are_sliced_and_whole_files_are_not(tmp_path: Path) -> None:
    path = write_wav(tmp_path / "talk.wav", 1.0)
    ramp = sf.read(path, dtype="float32")[0]
    manifest = write_lines(
        tmp_path / "m.jsonl",
        [
            {"audio_filepath": "talk.wav", "text": "a", "offset": 0.25, "duration": 0.5},
            {"audio_filepath": "talk.wav", "text": "b", "offset": 0.75},
            {"audio": "talk.wav", "text": "c", "duration": 0.9},  # rounded whole-file duration
            {"audio_filepath": "talk.wav", "text": "d", "offset": 2.0, "duration": 1.0},
        ],
    )
    dataset = SpeechDataset(read_manifest(manifest), encode, normalize)
    assert np.array_equal(dataset[0]["audio"].numpy(), ramp[4000:12000])
    assert np.array_equal(dataset[1]["audio"].numpy(), ramp[12000:])
    assert len(dataset[2]["audio"]) == SR
    assert dataset[3] is None and "no audio from 2.0 s" in dataset.failures[path]
    assert np.array_equal(load_utterance(dataset.items[0][0]), ramp[4000:12000])


def add_noise(audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return audio + rng.normal(0, 0.01, audio.shape).astype(np.float32)


def test_augmentation_is_seeded_by_seed_epoch_and_index(clips: list[Utterance]) -> None:
    items = [(clips[0], 0), (clips[0], 0), (clips[0], 1)]
    def make() -> SpeechDataset:
        return SpeechDataset(items, encode, normalize, augmenters=[add_noise, None], seed=5)

    dataset = make()
    clean = sf.read(clips[0].audio, dtype="float32")[0]
    first = dataset[0]["audio"]
    assert not np.array_equal(first.numpy(), clean)
    assert torch.equal(first, make()[0]["audio"])  # e.g. in another worker, or after a resume
    assert not torch.equal(first, dataset[1]["audio"])  # the repeat of an utterance differs
    assert np.array_equal(dataset[2]["audio"].numpy(), clean)  # spec 1 has no augmenter
    dataset.set_epoch(1)
    assert not torch.equal(first, dataset[0]["audio"])
    with pytest.raises(ConfigError, match=r"spec\(s\) \[1\]"):
        SpeechDataset(items, encode, normalize, augmenters=[add_noise])


def test_dataloader_with_workers_and_bucket_batches(clips: list[Utterance]) -> None:
    dataset = SpeechDataset(clips * 3, encode, normalize, augmenters=[add_noise], seed=1)
    sampler = BucketBatchSampler(dataset.utterances, max_batch_seconds=1.0, seed=1)
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, num_workers=2)
    ids = [i for batch in loader if batch is not None for i in batch.ids]
    assert sorted(ids) == sorted(["good0", "good1", "good2"] * 3)
    batches = [batch for batch in loader if batch is not None]
    assert batches and all(len(batch.audio) == len(batch.ids) for batch in batches)

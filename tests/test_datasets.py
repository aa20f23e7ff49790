"""Dataset importers on tiny fake copies of each corpus layout, in the corpora's own file formats."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from harken.cli import main as cli_main
from harken.training.manifests import read_manifest
from harken.training.prepare import PrepareOptions, prepare
from harken.errors import AudioError, ConfigError, ManifestError
from harken.training.sphere import read_sphere, read_sphere_header, write_sphere

RATE = 16000


def tone(seconds: float, freq: float = 220.0, rate: int = RATE) -> np.ndarray:
    """A smooth int16 signal (speech-like for byte-order detection) of exactly `seconds`."""
    t = np.arange(round(seconds * rate)) / rate
    return (np.sin(2 * np.pi * freq * t) * 8000 * (0.6 + 0.4 * np.sin(3 * t))).astype(np.int16)


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode(encoding))
    return path


def audio(path: Path, seconds: float, fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), tone(seconds), RATE, format=fmt)
    return path


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


TIMIT_FIELDS = {"database_id": "TIMIT", "database_version": "1.0"}


def timit_wav(path: Path, seconds: float, utterance: str) -> Path:
    """A .WAV as TIMIT ships it: NIST SPHERE, TIMIT's header fields, 16-bit little-endian."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_sphere(path, tone(seconds), RATE, fields={**TIMIT_FIELDS, "utterance_id": utterance})
    return path


# --- SPHERE ------------------------------------------------------------------------------------

@pytest.mark.parametrize("byte_order", ["little", "big"])
def test_sphere_reader_matches_libsndfile(tmp_path, byte_order):
    path = tmp_path / "a.sph"
    samples = tone(0.3)
    write_sphere(path, samples, RATE, byte_order=byte_order, fields={"database_id": "TIMIT"})
    header = read_sphere_header(path)
    assert (header.sample_rate, header.channels, header.sample_count) == (RATE, 1, len(samples))
    assert header.byte_order == byte_order and header.fields["database_id"] == "TIMIT"
    ours, rate = read_sphere(path)
    theirs, their_rate = sf.read(str(path), dtype="float32", always_2d=True)
    assert rate == their_rate == RATE
    np.testing.assert_array_equal(ours, theirs)
    np.testing.assert_array_equal(ours[:, 0], samples / np.float32(32768))


def test_sphere_reader_decodes_ulaw_like_libsndfile(tmp_path):
    path = tmp_path / "u.sph"
    sf.write(str(path), tone(0.2) / 32768, 8000, format="NIST", subtype="ULAW")
    assert read_sphere_header(path).coding == "ulaw"
    np.testing.assert_allclose(read_sphere(path)[0], sf.read(str(path), always_2d=True)[0],
                               atol=1e-6)


def test_compressed_and_truncated_sphere_are_refused(tmp_path):
    path = tmp_path / "s.sph"
    write_sphere(path, tone(0.1), RATE, fields={"sample_coding": "pcm,embedded-shorten-v2.00"})
    assert read_sphere_header(path).compressed
    with pytest.raises(AudioError, match="compressed.*sph2pipe"):
        read_sphere(path)
    cut = tmp_path / "cut.sph"
    write_sphere(cut, tone(0.1), RATE)
    cut.write_bytes(cut.read_bytes()[:-100])
    with pytest.raises(AudioError, match="truncated SPHERE data: 1550 of 1600"):
        read_sphere(cut)
    with pytest.raises(AudioError, match="not a NIST SPHERE file"):
        read_sphere_header(audio(tmp_path / "x.wav", 0.1))


# --- LibriSpeech -------------------------------------------------------------------------------

LIBRISPEECH = {"train-clean-100": {("19", "198"): ["NORTHANGER ABBEY", "CHAPTER ONE"],
                                   ("26", "495"): ["IT WAS A BRIGHT DAY"]},
               "test-clean": {("1089", "134686"): ["HE HOPED THERE WOULD BE STEW FOR DINNER"]}}


def librispeech(root: Path, layout: dict = LIBRISPEECH) -> Path:
    """A LibriSpeech folder: {split: {(speaker, chapter): [transcripts]}} as FLAC + trans.txt."""
    corpus = root / "LibriSpeech"
    for split, chapters in layout.items():
        for (speaker, chapter), texts in chapters.items():
            folder = corpus / split / speaker / chapter
            lines = []
            for i, text in enumerate(texts):
                uid = f"{speaker}-{chapter}-{i:04d}"
                audio(folder / f"{uid}.flac", 0.5 + 0.25 * i)
                lines.append(f"{uid} {text}\n")
            write(folder / f"{speaker}-{chapter}.trans.txt", "".join(lines))
    return corpus


def test_librispeech_splits_speakers_and_durations(tmp_path):
    corpus = librispeech(tmp_path)
    written = prepare("librispeech", corpus, tmp_path / "out")
    assert list(written) == ["train-clean-100", "test-clean"]  # official order
    train = rows(written["train-clean-100"])
    assert [(r["id"], r["text"], r["speaker"], r["duration"]) for r in train] == [
        ("19-198-0000", "NORTHANGER ABBEY", "19", 0.5),
        ("19-198-0001", "CHAPTER ONE", "19", 0.75),
        ("26-495-0000", "IT WAS A BRIGHT DAY", "26", 0.5)]
    assert train[0]["chapter"] == "198"
    first = read_manifest(written["train-clean-100"])[0]
    assert first.audio == corpus / "train-clean-100/19/198/19-198-0000.flac"
    assert rows(written["test-clean"])[0]["text"] == "HE HOPED THERE WOULD BE STEW FOR DINNER"


def test_librispeech_one_split_folder_and_malformed_line(tmp_path):
    corpus = librispeech(tmp_path)
    assert list(prepare("librispeech", corpus / "test-clean", tmp_path / "a")) == ["test-clean"]
    bad = corpus / "train-clean-100/19/198/19-198.trans.txt"
    write(bad, "19-198-0000 NORTHANGER ABBEY\n19-198-0001\n")
    with pytest.raises(ManifestError, match=r"19-198.trans.txt, line 2: expected '19-198-NNNN"):
        prepare("librispeech", corpus, tmp_path / "b")
    written = prepare("librispeech", corpus, tmp_path / "c", PrepareOptions(on_error="skip"))
    assert [r["id"] for r in rows(written["train-clean-100"])] == ["19-198-0000", "26-495-0000"]


def test_missing_audio_is_left_out_not_fatal(tmp_path, caplog):
    corpus = librispeech(tmp_path)
    (corpus / "train-clean-100/26/495/26-495-0000.flac").unlink()
    written = prepare("librispeech", corpus, tmp_path / "out")
    assert [r["id"] for r in rows(written["train-clean-100"])] == ["19-198-0000", "19-198-0001"]
    assert "26-495-0000.flac" in caplog.text


# --- Common Voice ------------------------------------------------------------------------------

CV_HEADER = "client_id\tpath\tsentence_id\tsentence\tsentence_domain\tup_votes\tdown_votes\tage\tgender\taccents\tvariant\tlocale\tsegment\n"


def commonvoice(root: Path, durations: bool = True) -> Path:
    lang = root / "cv-corpus-17.0" / "es"
    clips = {"train": [("c1", "common_voice_es_1.mp3", 'El niño dijo "sí".'),
                       ("c1", "common_voice_es_2.mp3", "Mañana, también.")],
             "dev": [("c2", "common_voice_es_3.mp3", "¿Qué hora es?")],
             "test": [("c3", "common_voice_es_4.mp3", "Adiós, canción.")]}
    lines = ["clip\tduration[ms]\n"]
    for split, entries in clips.items():
        table = [CV_HEADER]
        for client, clip, sentence in entries:
            audio(lang / "clips" / clip, 1.0, fmt="MP3")
            table.append(f"{client}\t{clip}\tsid\t{sentence}\t\t2\t0\ttwenties\tfemale_feminine\t\t\tes\t\n")
            lines.append(f"{clip}\t1250\n")
        write(lang / f"{split}.tsv", "".join(table))
    if durations:
        write(lang / "clip_durations.tsv", "".join(lines))
    return lang


def test_commonvoice_official_splits_with_stated_durations(tmp_path):
    lang = commonvoice(tmp_path)
    written = prepare("commonvoice", lang, tmp_path / "out")
    assert list(written) == ["train", "dev", "test"]
    train = rows(written["train"])
    assert [(r["id"], r["text"], r["speaker"], r["duration"]) for r in train] == [
        ("common_voice_es_1", 'El niño dijo "sí".', "c1", 1.25),
        ("common_voice_es_2", "Mañana, también.", "c1", 1.25)]
    assert train[0]["gender"] == "female_feminine" and train[0]["locale"] == "es"
    assert rows(written["dev"])[0]["text"] == "¿Qué hora es?"


def test_commonvoice_measures_mp3_and_reports_bad_rows(tmp_path):
    lang = commonvoice(tmp_path, durations=False)
    written = prepare("commonvoice", lang, tmp_path / "out", PrepareOptions(splits=("test",)))
    assert list(written) == ["test"]
    assert rows(written["test"])[0]["duration"] == pytest.approx(1.0, abs=0.06)
    with (lang / "dev.tsv").open("a") as table:
        table.write("c9\tcommon_voice_es_9.mp3\ttoo few columns\tx\ty\tz\tw\tv\tu\tt\ts\tr\tq\tp\n")
    with pytest.raises(ManifestError, match=r"dev.tsv, line 3: expected 13 tab-separated columns, got 14"):
        prepare("commonvoice", lang, tmp_path / "again")
    with pytest.raises(ConfigError, match=r"nope.tsv: missing"):
        prepare("commonvoice", lang, tmp_path / "x", PrepareOptions(splits=("nope",)))


# --- VCTK, LJ Speech, folders ------------------------------------------------------------------

def test_vctk_092_mic_selection_speaker_info(tmp_path, caplog):
    corpus = tmp_path / "VCTK-Corpus-0.92"
    write(corpus / "speaker-info.txt", "ID  AGE  GENDER  ACCENTS  REGION COMMENTS \n"
          "p225  23  F    English    Southern  England\np226  22  M    English    Surrey\n")
    for speaker, uid, text in [("p225", "p225_001", "Please call Stella."),
                               ("p226", "p226_002", "Ask her to bring these things.")]:
        write(corpus / "txt" / speaker / f"{uid}.txt", text + "\n")
        for mic, seconds in (("mic1", 0.5), ("mic2", 0.75)):
            audio(corpus / "wav48_silence_trimmed" / speaker / f"{uid}_{mic}.flac", seconds)
    write(corpus / "txt/p226/p226_003.txt", "No audio for this one.\n")
    written = prepare("vctk", corpus, tmp_path / "out", PrepareOptions(vctk_mic="mic2"))
    manifest = rows(written["all"])
    assert [(r["id"], r["text"], r["speaker"], r["duration"], r["gender"]) for r in manifest] == [
        ("p225_001", "Please call Stella.", "p225", 0.75, "F"),
        ("p226_002", "Ask her to bring these things.", "p226", 0.75, "M")]
    assert manifest[0]["audio"].endswith("p225_001_mic2.flac")
    assert "p226_003" in caplog.text


def test_vctk_080_wav_layout_and_numeric_speaker_info(tmp_path):
    corpus = tmp_path / "VCTK-Corpus"
    write(corpus / "speaker-info.txt", "ID  AGE  GENDER  ACCENTS  REGION\n225  23  F    English    "
          "Southern  England\n")
    write(corpus / "txt/p225/p225_001.txt", "Please call Stella.\n")
    audio(corpus / "wav48/p225/p225_001.wav", 0.5)
    manifest = rows(prepare("vctk", corpus, tmp_path / "out")["all"])
    assert [(r["id"], r["speaker"], r["gender"], r["accent"], r["duration"]) for r in manifest] == [
        ("p225_001", "p225", "F", "English", 0.5)]
    assert manifest[0]["audio"].endswith("wav48/p225/p225_001.wav")


def test_ljspeech_uses_the_normalised_column(tmp_path):
    corpus = tmp_path / "LJSpeech-1.1"
    write(corpus / "metadata.csv", "LJ001-0001|Printing, in 1450,|Printing, in fourteen fifty,\n"
          "LJ001-0002|in being comparatively modern.|in being comparatively modern.\n")
    for uid in ("LJ001-0001", "LJ001-0002"):
        audio(corpus / "wavs" / f"{uid}.wav", 0.5)
    manifest = rows(prepare("ljspeech", corpus, tmp_path / "out")["all"])
    assert manifest[0]["text"] == "Printing, in fourteen fifty,"
    assert manifest[0]["text_raw"] == "Printing, in 1450,"
    assert {r["speaker"] for r in manifest} == {"LJ"}
    write(corpus / "metadata.csv", "LJ001-0001|Printing\nLJ001-0002\n")
    with pytest.raises(ManifestError, match=r"metadata.csv, line 2: expected 'ID\|TEXT"):
        prepare("ljspeech", corpus, tmp_path / "bad")


def test_folder_of_pairs_speakers_from_subfolders(tmp_path):
    corpus = tmp_path / "mine"
    audio(corpus / "top.wav", 0.5)
    write(corpus / "top.txt", "Hola  mundo\n")
    audio(corpus / "ana" / "a1.flac", 0.25)
    write(corpus / "ana" / "a1.txt", "buenos\ndías\n")
    audio(corpus / "ana" / "no_text.wav", 0.25)
    write(corpus / "luis" / "l1.txt", "")
    audio(corpus / "luis" / "l1.wav", 0.25)
    with pytest.raises(ManifestError, match=r"l1.txt, line 1: empty transcript"):
        prepare("folder", corpus, tmp_path / "out")
    (corpus / "luis" / "l1.txt").unlink()
    manifest = rows(prepare("folder", corpus, tmp_path / "out")["all"])
    assert [(r["id"], r["text"], r.get("speaker")) for r in manifest] == [
        ("ana/a1", "buenos días", "ana"), ("top", "Hola mundo", None)]


# --- TIMIT and AN4 (NIST SPHERE, headerless raw) -------------------------------------------------

def timit(root: Path) -> Path:
    corpus = root / "TIMIT"
    speakers = {"TRAIN/DR1/FCJF0": ["SA1", "SI1027"], "TEST/DR1/MDAB0": ["SI1039"],
                "TEST/DR2/FAKS0": ["SX13"], "TEST/DR3/MZZZ0": ["SI500"]}
    for folder, sentences in speakers.items():
        for sentence in sentences:
            base = corpus / folder / sentence
            timit_wav(base.with_suffix(".WAV"), 0.5, f"{folder[-5:].lower()}_{sentence.lower()}")
            write(base.with_suffix(".TXT"), f"0 8000 Sentence {sentence} here.\n")
            write(base.with_suffix(".WRD"), f"100 2000 sentence\n2000 4000 {sentence.lower()}\n")
            write(base.with_suffix(".PHN"), "0 100 h#\n")
    return corpus


def test_timit_splits_core_test_dev_and_sphere_in_place(tmp_path):
    corpus = timit(tmp_path)
    (corpus / "TEST/DR3/MZZZ0/SI500.TXT").unlink()  # falls back to the .WRD words
    written = prepare("timit", tmp_path, tmp_path / "out")
    assert list(written) == ["train", "dev", "test", "test-complete"]
    train = rows(written["train"])
    assert [(r["id"], r["text"], r["speaker"], r["duration"], r["dialect"]) for r in train] == [
        ("fcjf0_si1027", "Sentence SI1027 here.", "fcjf0", 0.5, "dr1")]
    assert train[0]["audio"] == str(corpus / "TRAIN/DR1/FCJF0/SI1027.WAV")  # no conversion
    assert [r["id"] for r in rows(written["test"])] == ["mdab0_si1039"]
    assert [r["id"] for r in rows(written["dev"])] == ["faks0_sx13"]
    complete = rows(written["test-complete"])
    assert [r["text"] for r in complete] == ["Sentence SI1039 here.", "Sentence SX13 here.",
                                             "sentence si500"]
    with_sa = prepare("timit", corpus, tmp_path / "sa", PrepareOptions(timit_sa=True))
    assert [r["id"] for r in rows(with_sa["train"])] == ["fcjf0_sa1", "fcjf0_si1027"]


def test_timit_compressed_sphere_is_reported_and_left_out(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr("shutil.which", lambda name: None)  # as without sph2pipe
    corpus = timit(tmp_path)
    write_sphere(corpus / "TRAIN/DR1/FCJF0/SI1027.WAV", tone(0.5), RATE,
                 fields={"sample_coding": "pcm,embedded-shorten-v2.00"})
    written = prepare("timit", corpus, tmp_path / "out")
    assert "train" not in written  # its only utterance is unreadable
    assert "shorten-compressed SPHERE files left out (install sph2pipe): 1" in caplog.text
    write(corpus / "TEST/DR1/MDAB0/SI1039.TXT", "Sentence without times\n")
    with pytest.raises(ManifestError, match=r"SI1039.TXT, line 1: expected 'START END SENTENCE'"):
        prepare("timit", corpus, tmp_path / "bad")


def an4(root: Path, raw_order: str = ">i2") -> tuple[Path, np.ndarray]:
    corpus = root / "an4"
    samples = tone(0.5)
    raw = corpus / "wav/an4_clstk/fash/an251-fash-b.raw"
    raw.parent.mkdir(parents=True)
    raw.write_bytes(samples.astype(raw_order).tobytes())
    sph = corpus / "wav/an4test_clstk/fcaw/cen1-fcaw-b.sph"
    sph.parent.mkdir(parents=True)
    write_sphere(sph, tone(0.75), RATE, byte_order="big")
    write(corpus / "etc/an4_train.transcription", "<s> YES </s> (an251-fash-b)\n")
    write(corpus / "etc/an4_train.fileids", "an4_clstk/fash/an251-fash-b\n")
    write(corpus / "etc/an4_test.transcription", "<s> ENTER SIX TWO </s> (cen1-fcaw-b)\n")
    return corpus, samples


@pytest.mark.parametrize("order", [">i2", "<i2"])
def test_an4_raw_converted_with_detected_byte_order_sph_in_place(tmp_path, order):
    corpus, samples = an4(tmp_path, order)
    out = tmp_path / "out"
    written = prepare("an4", tmp_path, out)
    train, test = rows(written["train"]), rows(written["test"])
    assert [(r["id"], r["text"], r["speaker"], r["duration"]) for r in train] == [
        ("an251-fash-b", "YES", "fash", 0.5)]
    assert train[0]["audio"] == "audio/an4_clstk/fash/an251-fash-b.wav"  # converted, relative
    converted, rate = sf.read(str(out / train[0]["audio"]), dtype="int16")
    assert rate == RATE
    np.testing.assert_array_equal(converted, samples)
    assert [(r["text"], r["speaker"], r["duration"]) for r in test] == [("ENTER SIX TWO", "fcaw", 0.75)]
    assert test[0]["audio"] == str(corpus / "wav/an4test_clstk/fcaw/cen1-fcaw-b.sph")


def test_an4_unknown_file_id_names_the_line(tmp_path):
    corpus, _ = an4(tmp_path)
    write(corpus / "etc/an4_test.transcription", "<s> ENTER </s> (cen1-fcaw-b)\n<s> NO </s> (zz-x)\n")
    with pytest.raises(ManifestError, match=r"an4_test.transcription, line 2: no audio file zz-x"):
        prepare("an4", corpus, tmp_path / "out")


# --- DeepSpeech CSV, NeMo JSONL, Kaldi -------------------------------------------------------------

def test_deepspeech_csv_folder_one_split_per_file(tmp_path):
    folder = tmp_path / "ds"
    for split in ("train", "dev"):
        wav = audio(folder / "clips" / f"{split}.wav", 0.5)
        write(folder / f"{split}.csv", "wav_filename,wav_filesize,transcript\n"
              f"{wav},{wav.stat().st_size},hello {split}\n")
    written = prepare("deepspeech", folder, tmp_path / "out")
    assert sorted(written) == ["dev", "train"]
    assert [(r["text"], r["duration"], r["wav_filesize"]) for r in rows(written["dev"])] == [
        ("hello dev", 0.5, (folder / "clips/dev.wav").stat().st_size)]
    write(folder / "dev.csv", "wav_filename,wav_filesize,transcript\nonly,two\n")
    with pytest.raises(ManifestError, match=r"dev.csv, line 2: expected 3 columns"):
        prepare("deepspeech", folder, tmp_path / "bad")


def test_nemo_segments_keep_their_offsets(tmp_path):
    wav = audio(tmp_path / "talk.wav", 3.0)
    manifest = write(tmp_path / "train_manifest.json", "".join(json.dumps(line) + "\n" for line in [
        {"audio_filepath": str(wav), "text": "first part", "offset": 0.5, "duration": 1.0},
        {"audio_filepath": "talk.wav", "text": "whole", "duration": 3.0}]))
    written = prepare("nemo", manifest, tmp_path / "out")
    again = read_manifest(written["train_manifest"])
    assert [(u.text, u.offset, u.duration, u.segment) for u in again] == [
        ("first part", 0.5, 1.0, True), ("whole", 0.0, 3.0, True)]


def kaldi(root: Path) -> Path:
    recipe = root / "s5"
    for name, seconds in (("r1.wav", 2.0), ("r2.flac", 1.0)):
        audio(recipe / "wav" / name, seconds)
    write_sphere(recipe / "wav/r3.sph", tone(1.5), RATE)
    train = recipe / "data/train"
    write(train / "wav.scp", "r1 wav/r1.wav\n"
          "r2 flac -c -d -s wav/r2.flac |\n"
          "r3 sph2pipe -f wav -p -c 1 wav/r3.sph |\n")
    write(train / "segments", "u1 r1 0.00 1.20\nu2 r1 1.20 2.00\nu3 r2 0.1 0.9\nu4 r3 0 1.5\n")
    write(train / "text", "u1 buenos días\nu2 gracias\nu3 de nada\nu4 hasta luego\n")
    write(train / "utt2spk", "u1 ana\nu2 ana\nu3 luis\nu4 luis\n")
    test = recipe / "data/test"
    write(test / "wav.scp", f"t1 {recipe / 'wav/r2.flac'}\n")
    write(test / "text", "t1 adiós\n")
    write(test / "utt2spk", "t1 eva\n")
    return recipe / "data"


def test_kaldi_data_folders_segments_and_safe_pipes(tmp_path):
    data = kaldi(tmp_path)
    written = prepare("kaldi", data, tmp_path / "out")
    assert sorted(written) == ["test", "train"]
    train = read_manifest(written["train"])
    assert [(u.id, u.text, u.speaker, u.offset, u.duration, u.audio.name) for u in train] == [
        ("u1", "buenos días", "ana", 0.0, 1.2, "r1.wav"),
        ("u2", "gracias", "ana", 1.2, 0.8, "r1.wav"),
        ("u3", "de nada", "luis", 0.1, 0.8, "r2.flac"),
        ("u4", "hasta luego", "luis", 0.0, 1.5, "r3.sph")]
    assert all(u.segment for u in train)
    test = read_manifest(written["test"])
    assert [(u.id, u.speaker, u.duration, u.segment) for u in test] == [("t1", "eva", 1.0, False)]


@pytest.mark.parametrize("entry, reason", [
    ("r1 sox wav/r1.wav -t wav - speed 1.1 |", "harken runs no wav.scp commands"),
    ("r1 cat wav/r1.wav; rm -rf x |", "harken runs no wav.scp commands"),
    ("r1 wav/all.ark:1234", "archive offsets"),
])
def test_kaldi_unsafe_wav_scp_entries_are_refused(tmp_path, entry, reason):
    data = kaldi(tmp_path)
    scp = data / "train/wav.scp"
    scp.write_text(scp.read_text().replace("r1 wav/r1.wav", entry))
    with pytest.raises(ManifestError, match=rf"wav.scp, line 1: .*{reason}"):
        prepare("kaldi", data / "train", tmp_path / "out")
    written = prepare("kaldi", data / "train", tmp_path / "skip", PrepareOptions(on_error="skip"))
    assert [u.id for u in read_manifest(written["train"])] == ["u3", "u4"]  # r1's segments left out


# --- CLI -----------------------------------------------------------------------------------------

def test_cli_prepare_and_errors(tmp_path, capsys):
    corpus = librispeech(tmp_path)
    out = tmp_path / "out"
    assert cli_main(["data", "prepare", "librispeech", str(corpus), "--out", str(out),
                     "--splits", "test-clean"]) == 0
    assert capsys.readouterr().out.strip() == f"test-clean: {out / 'test-clean.jsonl'}"
    assert cli_main(["data", "prepare", "timit", str(corpus), "--out", str(out)]) == 1
    assert "no TIMIT layout" in capsys.readouterr().err

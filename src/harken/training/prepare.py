"""Dataset importers: a speech corpus in its own layout -> harken manifests.

`prepare(format, source, out)` reads the corpus where it lies and writes `OUT/<split>.jsonl` per
official split (a corpus without splits gives `all.jsonl`; `harken data split` cuts one by
speaker). Lines carry the transcript as the corpus writes it (normalisation happens at training
and scoring), the speaker, the duration and the utterance id. Audio is referenced in place;
only audio harken cannot read (headerless AN4 .raw, shorten-compressed SPHERE) is converted,
into `OUT/audio/`.

A malformed transcript line raises `ManifestError` naming the file and the line (or, with
`on_error="skip"`, is logged and counted). An audio file that is missing or unreadable is
reported and left out, never the end of a long import.

`register_prepare_command(data_subparsers)` adds `harken data prepare`.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import shutil
import subprocess
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from harken.training.manifests import OnError, Utterance, read_manifest
from harken.errors import AudioError, ConfigError, ManifestError
from harken.audio import audio_duration, is_audio_file
from harken.training.corpus import combine, write_manifest
from harken.training.sphere import is_sphere, read_sphere, read_sphere_header

log = logging.getLogger(__name__)

AUDIO_DIR = "audio"  # under the output folder: converted audio
NO_SPLIT = "all"  # the manifest of a corpus without official splits
LIBRISPEECH_SPLITS = ("train-clean-100", "train-clean-360", "train-other-500", "dev-clean",
                      "dev-other", "test-clean", "test-other")
COMMONVOICE_SPLITS = ("train", "dev", "test")  # also: validated, other, invalidated (--splits)
COMMONVOICE_EXTRA = ("gender", "age", "accents", "locale")
# TIMIT's core test set (24 speakers) and the 50-speaker development set cut from the rest of
# its test speakers, as Kaldi's egs/timit recipe and most papers use them.
TIMIT_CORE_TEST = frozenset(
    "mdab0 mwbt0 felc0 mtas1 mwew0 fpas0 mjmp0 mlnt0 fpkt0 mlll0 mtls0 fjlm0 mbpm0 mklt0 fnlp0 "
    "mcmj0 mjdh0 fmgd0 mgrt0 mnjm0 fdhc0 mjln0 mpam0 fmld0".split())
TIMIT_DEV = frozenset(
    "faks0 fdac1 fjem0 mgwt0 mjar0 mmdb1 mmdm2 mpdf0 fcmh0 fkms0 mbdg0 mbwm0 mcsh0 fadg0 fdms0 "
    "fedw0 mgjf0 mglb0 mrtk0 mtaa0 mtdt0 mthc0 mwjg0 fnmr0 frew0 fsem0 mbns0 mmjr0 mdls0 mdlf0 "
    "mdvc0 mers0 fmah0 fdrw0 mrcs0 mrjm4 fcal1 mmwh0 fjsj0 majc0 mjsw0 mreb0 fgjd0 fjmg0 mroa0 "
    "mteb0 mjfc0 mrjr0 fmml0 mrws1".split())
AN4_RATE = 16000  # AN4's .raw files: headerless 16-bit mono at 16 kHz
# Programs of Kaldi wav.scp pipes that only decode one file, with the options that keep the
# audio as it is (format and output selection); harken reads the file itself instead.
_PIPE_PROGRAMS: dict[str, frozenset[str]] = {
    "sph2pipe": frozenset({"-f", "wav", "-p", "-c", "1"}),
    "flac": frozenset({"-c", "-d", "-s", "--decode", "--stdout", "--silent"}),
    "sox": frozenset({"-t", "wav", "-", "-b", "16", "-e", "signed-integer", "-c", "1", "-r",
                      "16000", "-q"}),
    "cat": frozenset(),
}


@dataclass(frozen=True)
class PrepareOptions:
    """Settings of an import; every field has a default that suits the corpus as distributed."""

    on_error: OnError = "raise"  # a malformed transcript line: "raise" or "skip" (logged)
    splits: tuple[str, ...] = ()  # keep only these splits (default: the importer's own)
    jobs: int = 8  # threads that read audio headers
    vctk_mic: str = "mic1"  # VCTK 0.92: which microphone's recordings
    timit_sa: bool = False  # TIMIT: keep the two dialect sentences every speaker reads
    raw_byte_order: str = "auto"  # AN4 .raw: "big", "little" or "auto" (detected per file)


@dataclass
class _Import:
    """One import in progress: where converted audio goes and how problems are handled."""

    out: Path
    options: PrepareOptions
    problems: int = 0
    notes: Counter[str] = field(default_factory=Counter)

    def problem(self, path: Path, lineno: int | None, reason: str) -> None:
        where = f"{path}, line {lineno}" if lineno is not None else str(path)
        if self.options.on_error == "raise":
            raise ManifestError(f"{where}: {reason}")
        log.warning("skipped %s: %s", where, reason)
        self.problems += 1

    def lines(self, path: Path, encoding: str = "utf-8") -> Iterator[tuple[int, str]]:
        """(line number, stripped line) of a text file; blank lines skipped."""
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ManifestError(f"{path}: cannot read ({exc.strerror or exc})") from exc
        for lineno, raw in enumerate(data.splitlines(), 1):
            try:
                line = raw.decode(encoding).lstrip("\ufeff").strip()
            except UnicodeDecodeError as exc:
                self.problem(path, lineno, f"not {encoding} text (byte 0x{raw[exc.start]:02x} "
                             f"at column {exc.start + 1})")
                continue
            if line:
                yield lineno, line

    def converted(self, source: Path, root: Path, suffix: str = ".wav") -> Path:
        """Where a converted copy of `source` (a file under `root`) goes."""
        relative = source.relative_to(root).with_suffix(suffix)
        target = self.out / AUDIO_DIR / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        return target


Importer = Callable[[Path, _Import], dict[str, list[Utterance]]]


# ---------------------------------------------------------------------------------------------
# Public entry point


def prepare(
    format: str, source: str | os.PathLike[str], out: str | os.PathLike[str],
    options: PrepareOptions = PrepareOptions(),
) -> dict[str, Path]:
    """Import the corpus at `source` (layout `format`, one of `FORMATS`) into `out`.

    Writes one harken JSONL manifest per split and returns {split: manifest path}. Durations are
    read from the audio headers (in `options.jobs` threads) unless the corpus states them.
    Raises `ConfigError` for an unknown format or a source that does not look like one,
    `ManifestError` for a malformed transcript line (file and line named).
    """

    if format not in FORMATS:
        raise ConfigError(f"unknown dataset format {format!r}; expected one of {', '.join(FORMATS)}")
    source, out = Path(source), Path(out)
    if not source.exists():
        raise ConfigError(f"{source}: no such file or folder")
    job = _Import(out=out, options=options)
    splits = FORMATS[format](source, job)
    if options.splits:
        unknown = sorted(set(options.splits) - set(splits))
        if unknown:
            raise ConfigError(f"{format} at {source}: no split(s) {unknown}; found {sorted(splits)}")
        splits = {name: splits[name] for name in options.splits}
    if not any(splits.values()):
        raise ConfigError(f"{source}: no utterances found for format {format!r}")
    written: dict[str, Path] = {}
    for name, utterances in splits.items():
        kept = _with_durations(utterances, job)
        unique = combine(kept)
        renamed = sum(a.id != b.id for a, b in zip(kept, unique))
        if renamed:
            log.warning("%s: %d repeated utterance id(s) made unique with a suffix", name, renamed)
        if not unique:
            log.warning("%s: no usable utterance, no manifest written", name)
            continue
        path = out / f"{name}.jsonl"
        write_manifest(unique, path)
        written[name] = path
        hours = sum(u.duration or 0.0 for u in unique) / 3600
        speakers = len({u.speaker for u in unique if u.speaker is not None})
        log.info("%s: %d utterances, %.2f h, %d speakers", path, len(unique), hours, speakers)
    for note, count in job.notes.items():
        log.warning("%s: %d", note, count)
    return written


def _with_durations(utterances: list[Utterance], job: _Import) -> list[Utterance]:
    """The utterances whose audio is readable, with durations; the others are reported."""

    def measure(u: Utterance) -> float | str:
        if u.duration is not None:
            return u.duration if u.audio.is_file() else "no such file"
        try:
            return audio_duration(u.audio)
        except AudioError as exc:
            return exc.reason

    with ThreadPoolExecutor(max(1, job.options.jobs)) as pool:
        results = list(pool.map(measure, utterances))
    kept = []
    for u, result in zip(utterances, results):
        if isinstance(result, str):
            log.warning("left out %s (id %s): %s", u.audio, u.id, result)
            job.notes["audio files missing or unreadable, left out"] += 1
        else:
            kept.append(u if u.duration is not None else replace(u, duration=result))
    return kept


# ---------------------------------------------------------------------------------------------
# Corpora with official splits


def _librispeech(source: Path, job: _Import) -> dict[str, list[Utterance]]:
    """LibriSpeech/<split>/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt + <id>.flac."""
    folders = sorted(d for d in source.iterdir() if d.is_dir() and _has(d, "*/*/*.trans.txt"))
    if not folders and _has(source, "*/*/*.trans.txt"):
        folders = [source]  # one split folder given
    if not folders:
        raise ConfigError(f"{source}: no LibriSpeech split folder (<split>/<speaker>/<chapter>/"
                          "<speaker>-<chapter>.trans.txt) found")
    splits: dict[str, list[Utterance]] = {}
    for folder in folders:
        rows = splits.setdefault(folder.name, [])
        for transcript in sorted(folder.glob("*/*/*.trans.txt")):
            for lineno, line in job.lines(transcript):
                uid, _, text = line.partition(" ")
                speaker, chapter = transcript.parent.parent.name, transcript.parent.name
                if not text.strip() or not uid.startswith(f"{speaker}-{chapter}-"):
                    job.problem(transcript, lineno, f"expected '{speaker}-{chapter}-NNNN "
                                "TRANSCRIPT'")
                    continue
                rows.append(Utterance(transcript.parent / f"{uid}.flac", text.strip(), None, uid,
                                      speaker, extra={"chapter": chapter}))
    return dict(sorted(splits.items(), key=lambda kv: _order(kv[0], LIBRISPEECH_SPLITS)))


def _commonvoice(source: Path, job: _Import) -> dict[str, list[Utterance]]:
    """cv-corpus-*/<lang>/{train,dev,test,validated,...}.tsv + clips/*.mp3."""
    if not (source / "clips").is_dir():
        raise ConfigError(f"{source}: not a Common Voice language folder (no clips/ folder)")
    durations = _commonvoice_durations(source / "clip_durations.tsv", job)
    wanted = job.options.splits or COMMONVOICE_SPLITS
    splits: dict[str, list[Utterance]] = {}
    for name in wanted:
        table = source / f"{name}.tsv"
        if not table.is_file():
            if name in COMMONVOICE_SPLITS or name in job.options.splits:
                raise ConfigError(f"{table}: missing (Common Voice splits: {', '.join(wanted)})")
            continue
        splits[name] = []
        header: list[str] | None = None
        for lineno, line in job.lines(table):
            values = line.split("\t")
            if header is None:
                header = values
                missing = [c for c in ("path", "sentence") if c not in header]
                if missing:
                    raise ManifestError(f"{table}, line {lineno}: expected a header with path "
                                        f"and sentence columns, got {header}")
                continue
            if len(values) < len(header):
                values += [""] * (len(header) - len(values))  # trailing empty columns
            if len(values) != len(header):
                job.problem(table, lineno, f"expected {len(header)} tab-separated columns, got "
                            f"{len(values)}")
                continue
            row = dict(zip(header, values))
            if not row["path"] or not row["sentence"].strip():
                job.problem(table, lineno, "empty path or sentence")
                continue
            clip = row["path"] if "." in row["path"] else row["path"] + ".mp3"
            extra = {key: row[key] for key in COMMONVOICE_EXTRA if row.get(key)}
            splits[name].append(Utterance(
                source / "clips" / clip, row["sentence"].strip(), durations.get(clip),
                Path(clip).stem, row.get("client_id") or None, extra=extra))
    return splits


def _commonvoice_durations(table: Path, job: _Import) -> dict[str, float]:
    """clip_durations.tsv (newer releases): clip -> seconds."""
    durations: dict[str, float] = {}
    if not table.is_file():
        return durations
    for lineno, line in job.lines(table):
        clip, _, value = line.partition("\t")
        if lineno == 1 and not value.strip().isdigit():
            continue  # the header
        try:
            durations[clip] = int(value) / 1000
        except ValueError:
            job.problem(table, lineno, f"expected 'clip<TAB>milliseconds', got {line!r}")
    return durations


def _timit(source: Path, job: _Import) -> dict[str, list[Utterance]]:
    """TIMIT/{TRAIN,TEST}/DR*/<speaker>/<sentence>.{WAV,TXT,WRD} (either case).

    Splits: train; dev (50 speakers) and test (the 24-speaker core test set) from TEST, as in
    Kaldi; test-complete (all 168 TEST speakers). The SA sentences are left out unless
    `timit_sa`. `.WAV` files are NIST SPHERE, read in place.
    """
    root = next((r for r in (source, *_children(source)) if _child(r, "train") and _child(r, "test")),
                None)
    if root is None:
        raise ConfigError(f"{source}: no TIMIT layout (TRAIN/ and TEST/ folders) found")
    splits: dict[str, list[Utterance]] = {"train": [], "dev": [], "test": [], "test-complete": []}
    for part in ("train", "test"):
        folder = _child(root, part)
        assert folder is not None
        for audio in sorted(p for p in folder.glob("*/*/*") if p.suffix.lower() == ".wav"
                            and "." not in p.stem):
            sentence = audio.stem.lower()
            if sentence.startswith("sa") and not job.options.timit_sa:
                continue
            speaker, dialect = audio.parent.name.lower(), audio.parent.parent.name.lower()
            text = _timit_text(audio, job)
            readable = _sphere_audio(audio, folder, job)
            if text is None or readable is None:
                continue
            u = Utterance(readable, text, None, f"{speaker}_{sentence}", speaker,
                          extra={"dialect": dialect})
            if part == "train":
                splits["train"].append(u)
                continue
            splits["test-complete"].append(u)
            if speaker in TIMIT_DEV:
                splits["dev"].append(u)
            elif speaker in TIMIT_CORE_TEST:
                splits["test"].append(u)
    return splits


def _timit_text(audio: Path, job: _Import) -> str | None:
    """The sentence of a TIMIT utterance: its .TXT ("start end text"), or its .WRD words."""
    for suffix in (".TXT", ".txt"):
        path = audio.with_suffix(suffix)
        if path.is_file():
            for lineno, line in job.lines(path, encoding="latin-1"):
                parts = line.split(None, 2)
                if len(parts) < 3 or not (parts[0].isdigit() and parts[1].isdigit()):
                    job.problem(path, lineno, "expected 'START END SENTENCE'")
                    return None
                return parts[2]
    for suffix in (".WRD", ".wrd"):
        path = audio.with_suffix(suffix)
        if path.is_file():
            words = []
            for lineno, line in job.lines(path, encoding="latin-1"):
                parts = line.split()
                if len(parts) != 3:
                    job.problem(path, lineno, "expected 'START END WORD'")
                    return None
                words.append(parts[2])
            return " ".join(words)
    job.problem(audio, None, "no .TXT or .WRD transcript beside it")
    return None


def _an4(source: Path, job: _Import) -> dict[str, list[Utterance]]:
    """an4/etc/an4_{train,test}.transcription (+ .fileids) and an4/wav/**/*.{sph,raw}.

    Transcription lines read "<s> TEXT </s> (an251-fash-b)"; the speaker is the folder of the
    file (`fash`). `.sph` files are read in place; headerless `.raw` ones (16-bit, 16 kHz, big-
    or little-endian by download) are converted to WAV.
    """
    root = next((r for r in (source, *_children(source)) if (r / "etc").is_dir()
                 and (r / "wav").is_dir()), None)
    if root is None:
        raise ConfigError(f"{source}: no AN4 layout (etc/ and wav/ folders) found")
    audio_files = {p.stem: p for p in sorted((root / "wav").rglob("*"))
                   if p.suffix.lower() in (".sph", ".raw", ".wav", ".flac")}
    pattern = re.compile(r"^(?:<s>\s*)?(.*?)\s*(?:</s>)?\s*\(([^()\s]+)\)$")
    splits: dict[str, list[Utterance]] = {}
    for name in ("train", "test"):
        table = root / "etc" / f"an4_{name}.transcription"
        if not table.is_file():
            continue
        splits[name] = []
        for lineno, line in job.lines(table):
            match = pattern.match(line)
            if not match or not match[1]:
                job.problem(table, lineno, "expected '<s> TRANSCRIPT </s> (FILE-ID)'")
                continue
            text, uid = match[1], match[2]
            audio = audio_files.get(uid)
            if audio is None:
                job.problem(table, lineno, f"no audio file {uid}.sph or {uid}.raw under "
                            f"{root / 'wav'}")
                continue
            speaker = audio.parent.name
            if audio.suffix.lower() == ".raw":
                audio = _convert_raw(audio, root / "wav", job)
            elif audio.suffix.lower() == ".sph":
                audio = _sphere_audio(audio, root / "wav", job)
            if audio is not None:
                splits[name].append(Utterance(audio, text, None, uid, speaker))
    if not splits:
        raise ConfigError(f"{root / 'etc'}: no an4_train.transcription or an4_test.transcription")
    return splits


# ---------------------------------------------------------------------------------------------
# Corpora without splits (one manifest: all.jsonl)


def _vctk(source: Path, job: _Import) -> dict[str, list[Utterance]]:
    """VCTK: txt/<speaker>/<id>.txt with wav48_silence_trimmed/<speaker>/<id>_<mic>.flac
    (0.92) or wav48/<speaker>/<id>.wav (0.80); speaker-info.txt adds gender and accent."""
    if not (source / "txt").is_dir():
        raise ConfigError(f"{source}: not a VCTK folder (no txt/ folder)")
    info = _vctk_speakers(source / "speaker-info.txt", job)
    rows = []
    for transcript in sorted((source / "txt").glob("*/*.txt")):
        speaker, uid = transcript.parent.name, transcript.stem
        text = " ".join(line for _, line in job.lines(transcript))
        if not text:
            job.problem(transcript, 1, "empty transcript")
            continue
        candidates = [source / "wav48_silence_trimmed" / speaker / f"{uid}_{job.options.vctk_mic}.flac",
                      source / "wav48" / speaker / f"{uid}.wav"]
        audio = next((c for c in candidates if c.is_file()), candidates[0])
        rows.append(Utterance(audio, text, None, uid, speaker, extra=info.get(speaker, {})))
    return {NO_SPLIT: rows}


def _vctk_speakers(table: Path, job: _Import) -> dict[str, dict[str, str]]:
    speakers: dict[str, dict[str, str]] = {}
    if table.is_file():
        for lineno, line in job.lines(table, encoding="latin-1"):
            parts = line.split()
            if lineno == 1 or len(parts) < 4 or not parts[1].isdigit():
                continue  # the header and comment lines
            name = parts[0] if parts[0][0].isalpha() else "p" + parts[0]  # 0.80 writes "225"
            speakers[name] = {"gender": parts[2], "accent": parts[3]}
    return speakers


def _ljspeech(source: Path, job: _Import) -> dict[str, list[Utterance]]:
    """LJSpeech-1.1/metadata.csv ("id|raw text|normalised text") + wavs/<id>.wav; the
    normalised text (numbers spelled out) is the transcript, the raw one `text_raw`."""
    table = source / "metadata.csv"
    if not table.is_file():
        raise ConfigError(f"{source}: not an LJ Speech folder (no metadata.csv)")
    rows = []
    for lineno, line in job.lines(table):
        parts = line.split("|")
        if len(parts) not in (2, 3) or not parts[0] or not parts[-1].strip():
            job.problem(table, lineno, f"expected 'ID|TEXT|NORMALISED TEXT', got {len(parts)} "
                        "field(s)")
            continue
        uid, raw, text = parts[0], parts[1], parts[-1]
        rows.append(Utterance(source / "wavs" / f"{uid}.wav", text.strip(), None, uid, "LJ",
                              extra={"text_raw": raw.strip()}))
    return {NO_SPLIT: rows}


def _folder(source: Path, job: _Import) -> dict[str, list[Utterance]]:
    """Any folder tree of name.<audio> + name.txt pairs; the speaker is the first folder under
    `source` (none for files at its top)."""

    if not source.is_dir():
        raise ConfigError(f"{source}: not a folder")
    rows = []
    for audio in sorted(p for p in source.rglob("*") if p.is_file() and is_audio_file(p)):
        transcript = audio.with_suffix(".txt")
        if not transcript.is_file():
            job.notes["audio files without a .txt transcript, left out"] += 1
            continue
        text = " ".join(" ".join(line for _, line in job.lines(transcript)).split())
        if not text:
            job.problem(transcript, 1, "empty transcript")
            continue
        relative = audio.relative_to(source)
        speaker = relative.parts[0] if len(relative.parts) > 1 else None
        rows.append(Utterance(audio, text, None, relative.with_suffix("").as_posix(), speaker))
    return {NO_SPLIT: rows}


# ---------------------------------------------------------------------------------------------
# Other toolkits' manifests and data folders


def _manifests(source: Path, job: _Import, suffixes: tuple[str, ...]) -> dict[str, list[Utterance]]:
    files = [source] if source.is_file() else sorted(
        p for p in source.iterdir() if p.suffix.lower() in suffixes)
    if not files:
        raise ConfigError(f"{source}: no {' or '.join(suffixes)} manifest found")
    return {path.stem: read_manifest(path, on_error=job.options.on_error) for path in files}


def _deepspeech(source: Path, job: _Import) -> dict[str, list[Utterance]]:
    """DeepSpeech CSV (wav_filename,wav_filesize,transcript): a file, or a folder of them
    (train.csv, dev.csv, test.csv); each file is a split."""
    return _manifests(source, job, (".csv",))


def _nemo(source: Path, job: _Import) -> dict[str, list[Utterance]]:
    """NeMo JSONL (audio_filepath, text, duration, offset): a file or a folder of them."""
    return _manifests(source, job, (".json", ".jsonl"))


def _kaldi(source: Path, job: _Import) -> dict[str, list[Utterance]]:
    """A Kaldi data folder (wav.scp, text, utt2spk, optional segments and utt2dur), or a folder
    of them (data/train, data/dev, ...): each folder is a split.

    wav.scp entries are file paths; a pipe that only decodes one file ("sph2pipe -f wav -p
    f.sph |", "flac -c -d -s f.flac |") is read as that file. harken never runs wav.scp
    commands: any other command, and archive offsets (f.ark:123), are reported.
    """
    folders = [source] if (source / "wav.scp").is_file() else sorted(
        d for d in source.iterdir() if (d / "wav.scp").is_file())
    if not folders:
        raise ConfigError(f"{source}: no Kaldi data folder (with wav.scp) found")
    return {folder.name: _kaldi_folder(folder, job) for folder in folders}


def _kaldi_table(path: Path, job: _Import, required: bool = True) -> dict[str, tuple[int, str]]:
    """A Kaldi table file: key -> (line number, rest of the line)."""
    if not path.is_file():
        if required:
            raise ConfigError(f"{path}: missing (a Kaldi data folder needs wav.scp and text)")
        return {}
    table: dict[str, tuple[int, str]] = {}
    for lineno, line in job.lines(path):
        key, _, value = line.partition(" ")
        if key in table:
            job.problem(path, lineno, f"{key} repeats line {table[key][0]}")
            continue
        table[key] = (lineno, value.strip())
    return table


def _kaldi_folder(folder: Path, job: _Import) -> list[Utterance]:
    recordings = {}
    for key, (lineno, value) in _kaldi_table(folder / "wav.scp", job).items():
        audio = _kaldi_audio(value, folder, lineno, job)
        if audio is not None:
            recordings[key] = audio
    texts = _kaldi_table(folder / "text", job)
    speakers = {k: v for k, (_, v) in _kaldi_table(folder / "utt2spk", job, False).items()}
    durations = _kaldi_table(folder / "utt2dur", job, False)
    segments = _kaldi_table(folder / "segments", job, False)
    rows = []
    for uid, (lineno, text) in texts.items():
        if segments:
            if uid not in segments:
                job.problem(folder / "text", lineno, f"{uid} has no line in segments")
                continue
            seg_line, value = segments[uid]
            parts = value.split()
            try:
                recording, start, end = parts[0], float(parts[1]), float(parts[2])
            except (IndexError, ValueError):
                job.problem(folder / "segments", seg_line, "expected 'UTT RECORDING START END'")
                continue
            if not 0 <= start < end:
                job.problem(folder / "segments", seg_line, f"bad times {start} to {end}")
                continue
        else:
            recording, start, end = uid, 0.0, -1.0
        if recording not in recordings:
            where = (folder / "segments", segments[uid][0]) if segments else (folder / "text", lineno)
            job.problem(*where, f"recording {recording} has no usable line in wav.scp")
            continue
        duration = end - start if segments else _kaldi_duration(durations.get(uid))
        rows.append(Utterance(recordings[recording], text, duration, uid, speakers.get(uid),
                              offset=start, segment=bool(segments)))
    return rows


def _kaldi_duration(entry: tuple[int, str] | None) -> float | None:
    try:
        return float(entry[1]) if entry else None
    except ValueError:
        return None


def _kaldi_audio(value: str, folder: Path, lineno: int, job: _Import) -> Path | None:
    """The audio file of a wav.scp entry, or None (reported) when harken cannot read it safely."""
    scp = folder / "wav.scp"
    if not value.endswith("|"):
        if re.search(r"\.ark:\d+$", value):
            job.problem(scp, lineno, "archive offsets (file.ark:N) are not supported; write the "
                        "audio as files (Kaldi: wav-copy scp:wav.scp ark,scp:...) first")
            return None
        return _resolve(value, folder)
    try:
        words = shlex.split(value[:-1])
    except ValueError as exc:
        job.problem(scp, lineno, f"cannot parse the command ({exc})")
        return None
    program = Path(words[0]).name if words else ""
    files = [w for w in words[1:] if w not in _PIPE_PROGRAMS.get(program, ())]
    unsafe = set("|;&<>$`") & set(value[:-1])
    if program not in _PIPE_PROGRAMS or len(files) != 1 or unsafe:
        job.problem(scp, lineno, f"piped command {value!r}: harken runs no wav.scp commands; it "
                    "reads the file of a plain sph2pipe/flac/sox/cat pipe. Convert the audio to "
                    "files and list their paths")
        return None
    path = _resolve(files[0], folder)
    if program == "sph2pipe" and "-c" in words:

        if is_sphere(path) and read_sphere_header(path).channels > 1:
            job.problem(scp, lineno, f"{path} has several channels and the pipe selects one; "
                        "harken mixes channels: split them into files first")
            return None
    return path


def _resolve(value: str, folder: Path) -> Path:
    """Kaldi paths are relative to the recipe folder (the parent of data/), or absolute."""
    path = Path(value)
    if path.is_absolute():
        return path
    for base in (folder.parent.parent, folder.parent, folder, Path.cwd()):
        if (base / path).exists():
            return (base / path).resolve()
    return (folder.parent.parent / path).resolve()


# ---------------------------------------------------------------------------------------------
# Audio that needs a look or a conversion


def _sphere_audio(path: Path, root: Path, job: _Import) -> Path | None:
    """A SPHERE file as it is when libsndfile reads it; else a WAV copy (compressed files need
    sph2pipe, uncompressed ones are decoded by `harken.training.sphere`); None (counted) when neither."""
    import soundfile

    if not is_sphere(path):
        return path  # e.g. a TIMIT copy already converted to RIFF WAV
    header = read_sphere_header(path)
    if not header.compressed:
        try:
            soundfile.info(str(path))
            return path
        except (RuntimeError, soundfile.LibsndfileError):
            pass
    target = job.converted(path, root)
    if target.is_file():
        return target
    if header.compressed:
        sph2pipe = shutil.which("sph2pipe")
        if sph2pipe is None:
            job.notes["shorten-compressed SPHERE files left out (install sph2pipe)"] += 1
            log.warning("left out %s: compressed SPHERE (%s) and no sph2pipe", path, header.coding)
            return None
        subprocess.run([sph2pipe, "-f", "wav", str(path), str(target)], check=True,
                       capture_output=True)
        return target
    samples, rate = read_sphere(path)
    _write_wav(target, samples, rate)
    return target


def _convert_raw(path: Path, root: Path, job: _Import) -> Path:
    """AN4 .raw (headerless 16-bit, 16 kHz) -> WAV under the output folder."""
    target = job.converted(path, root)
    if target.is_file():
        return target
    data = path.read_bytes()
    order = job.options.raw_byte_order
    if order == "auto":
        order = _guess_byte_order(data)
    samples = np.frombuffer(data[: len(data) // 2 * 2], dtype=">i2" if order == "big" else "<i2")
    _write_wav(target, samples.astype(np.float32) / 32768, AN4_RATE)
    return target


def _guess_byte_order(data: bytes) -> str:
    """Speech is smooth: read in the right byte order, neighbouring samples differ far less than
    the samples themselves; in the wrong order the signal looks like white noise."""
    def roughness(dtype: str) -> float:
        x = np.frombuffer(data[: len(data) // 2 * 2], dtype=dtype).astype(np.float64)
        return float(np.abs(np.diff(x)).mean() / (np.abs(x).mean() + 1e-9)) if len(x) > 1 else 0.0

    return "big" if roughness(">i2") <= roughness("<i2") else "little"


def _write_wav(path: Path, samples: np.ndarray, rate: int) -> None:
    import soundfile

    partial = path.with_name(f".{path.name}.partial")
    soundfile.write(str(partial), np.asarray(samples, dtype=np.float32), rate, subtype="PCM_16",
                    format="WAV")
    os.replace(partial, path)


# ---------------------------------------------------------------------------------------------
# Helpers


def _has(folder: Path, pattern: str) -> bool:
    return next(folder.glob(pattern), None) is not None


def _children(folder: Path) -> list[Path]:
    return sorted(d for d in folder.iterdir() if d.is_dir()) if folder.is_dir() else []


def _child(folder: Path, name: str) -> Path | None:
    """The subfolder `name` of `folder`, in any letter case."""
    return next((d for d in _children(folder) if d.name.lower() == name), None)


def _order(name: str, known: tuple[str, ...]) -> tuple[int, str]:
    return (known.index(name) if name in known else len(known), name)


FORMATS: dict[str, Importer] = {
    "librispeech": _librispeech,
    "commonvoice": _commonvoice,
    "vctk": _vctk,
    "ljspeech": _ljspeech,
    "timit": _timit,
    "an4": _an4,
    "deepspeech": _deepspeech,
    "nemo": _nemo,
    "kaldi": _kaldi,
    "folder": _folder,
}


# ---------------------------------------------------------------------------------------------
# `harken data prepare`






__all__ = ["FORMATS", "PrepareOptions", "prepare", "register_prepare_command"]

"""Transcribing files: expanding inputs, output formats (txt, json, srt, vtt), bad-file handling."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

from harken.decoding.types import Segment, Transcript
from harken.errors import HarkenError
from harken.audio import is_audio_file, load_audio
from harken.training.manifests import MANIFEST_SUFFIXES, read_audio_list
from harken.diarization.diarize import assign_speakers, diarize, speaker_turn_text, transcript_turns

FORMATS = ("txt", "json", "srt", "vtt")
SPEAKER_FORMATS = ("rttm",)  # speaker turns: only for diarized transcripts
ALL_FORMATS = FORMATS + SPEAKER_FORMATS
# Subtitle cues: at most this many lines of at most this many characters (broadcast guidelines
# use 37-42 characters and two lines), cut at word boundaries.
SUBTITLE_LINE_CHARS = 42
SUBTITLE_LINES = 2


@dataclass
class FileResult:
    """The outcome for one input file: a transcript or the error that stopped it."""

    path: Path
    transcript: Transcript | None = None
    error: str | None = None


def expand_inputs(inputs: Iterable[str | os.PathLike]) -> list[Path]:
    """Paths of the audio files named: files as given, directories walked for audio files,
    manifests (.jsonl, .csv, .txt/.lst lists: `harken.training.manifests.read_audio_list`) read for theirs."""

    paths: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            paths.extend(sorted(p for p in path.rglob("*") if p.is_file() and is_audio_file(p)))
        elif is_manifest(path):

            paths.extend(read_audio_list(path))
        else:
            paths.append(path)
    return paths


def is_manifest(path: Path) -> bool:
    """Whether `path` is a list of audio files: a manifest suffix (.jsonl, .csv, .txt, .lst)
    on a file whose start is UTF-8 text (a WAV file named ``x.txt`` is audio)."""

    if path.suffix.lower() not in MANIFEST_SUFFIXES or is_audio_file(path) or not path.is_file():
        return False
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError:
        return True  # reading it as a list reports why it cannot be read
    if b"\0" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:  # a character cut at the end of the block is still text
        return exc.start >= len(head) - 3 and len(head) == 4096
    return True


def transcribe_files(model: Any, paths: Iterable[Path], options: Any = None,
                     group_size: int = 8, vad: str | None = "auto",
                     diarize: Any = None, written: bool | None = None) -> Iterator[FileResult]:
    """Transcribe files in groups (batched network); a file that fails is reported, not fatal.

    When a group fails as a whole, its files are run one by one so only the bad one is lost.

    `vad` cuts long files into speech segments (see `Model.transcribe`); None keeps all audio.
    `diarize` (a `harken.diarization.DiarizeOptions`) labels words and segments with speakers;
    `written` as in `Model.transcribe` (None: written text when the model has a punctuator)."""

    paths = list(paths)
    for start in range(0, len(paths), group_size):
        group = paths[start: start + group_size]
        loaded: list[tuple[Path, Any]] = []
        results: dict[Path, FileResult] = {}
        for path in group:
            try:
                loaded.append((path, load_audio(path, model.sample_rate)))
            except HarkenError as exc:
                results[path] = FileResult(path, error=str(exc))
        if loaded:
            try:
                transcripts = model.transcribe_batch([w for _, w in loaded], options, vad=vad,
                                                     **_written(written))
                for (path, _), transcript in zip(loaded, transcripts):
                    results[path] = FileResult(path, transcript=transcript)
            except Exception:  # noqa: BLE001 - find the file that failed, keep the others
                for path, wave in loaded:
                    results[path] = _transcribe_alone(model, path, wave, options, vad, written)
        if diarize is not None:
            for path, wave in loaded:
                if results[path].transcript is not None:
                    results[path] = _diarized(results[path], wave, diarize)
        for path in group:
            yield results[path]


def _diarized(result: FileResult, wave: Any, options: Any) -> FileResult:
    """Speakers for a transcribed file; a failure is that file's error."""

    try:
        assign_speakers(result.transcript, diarize(wave, options))
        return result
    except Exception as exc:  # noqa: BLE001 - one bad file must not end a long job
        message = str(exc) if isinstance(exc, HarkenError) else f"{type(exc).__name__}: {exc}"
        return FileResult(result.path, error=f"{result.path}: diarization: {message}")


def _written(written: bool | None) -> dict[str, Any]:
    """The `written` keyword only when one is asked for (models without it keep working)."""
    return {} if written is None else {"written": written}


def _transcribe_alone(model: Any, path: Path, wave: Any, options: Any,
                      vad: str | None, written: bool | None = None) -> FileResult:
    """One file on its own, any failure reported as its error (naming the file)."""
    try:
        return FileResult(path, transcript=model.transcribe_batch([wave], options, vad=vad,
                                                                  **_written(written))[0])
    except Exception as exc:  # noqa: BLE001 - one bad file must not end a long job
        message = str(exc) if isinstance(exc, HarkenError) else f"{type(exc).__name__}: {exc}"
        return FileResult(path, error=message if str(path) in message else f"{path}: {message}")


def format_transcript(transcript: Transcript, fmt: str, file_id: str = "audio") -> str:
    """Render a transcript as plain text, JSON, SubRip (srt), WebVTT (vtt) or RTTM.

    A diarized transcript (segments with speakers) prints one ``[S1] ...`` line per speaker
    turn as txt, ``[S1]`` before each srt cue and a ``<v S1>`` voice tag in vtt; RTTM (speaker
    turns, `file_id` naming the recording) needs one."""
    diarized = any(s.speaker is not None for s in transcript.segments)
    if fmt == "txt":
        if diarized:

            return speaker_turn_text(transcript) + "\n"
        return transcript.text + "\n"
    if fmt == "json":
        return json.dumps(transcript.to_dict(), indent=2) + "\n"
    if fmt == "srt":
        return "".join(f"{i}\n{_timestamp(start, ',')} --> {_timestamp(end, ',')}\n"
                       f"{f'[{who}] ' if who else ''}{text}\n\n"
                       for i, (start, end, text, who) in enumerate(speaker_cues(transcript), 1))
    if fmt == "vtt":
        return "WEBVTT\n\n" + "".join(
            f"{_timestamp(start, '.')} --> {_timestamp(end, '.')}\n"
            f"{f'<v {who}>' if who else ''}{text}\n\n"
            for start, end, text, who in speaker_cues(transcript))
    if fmt == "rttm":
        if not diarized:
            raise ValueError("the rttm format needs speakers: transcribe with diarization "
                             "(--diarize)")

        return transcript_turns(transcript).to_rttm(file_id)
    raise ValueError(f"unknown output format {fmt!r}; choose one of {', '.join(ALL_FORMATS)}")


def subtitle_cues(transcript: Transcript, line_chars: int = SUBTITLE_LINE_CHARS,
                  lines: int = SUBTITLE_LINES) -> list[tuple[float, float, str]]:
    """(start, end, text) subtitle cues: each segment cut into cues of at most `lines` lines of
    at most `line_chars` characters (a longer single word gets a line of its own), timed by
    their words. Text without word times is spread over its segment by character count.

    Written transcripts show each word's written form; a cue that must be cut ends at its last
    sentence end where it has one, and a sentence end closes a cue that already fills a
    line."""
    return [cue[:3] for cue in speaker_cues(transcript, line_chars, lines)]


def speaker_cues(transcript: Transcript, line_chars: int = SUBTITLE_LINE_CHARS,
                 lines: int = SUBTITLE_LINES) -> list[tuple[float, float, str, str | None]]:
    """`subtitle_cues` with the speaker of each cue's segment (None when not diarized)."""
    cues: list[tuple[float, float, str, str | None]] = []
    for segment in transcript_segments(transcript):
        timed = _timed_words(segment.words)
        if not timed:  # spread the segment's time over its words by their length
            words = segment.text.split()
            total = max(1, sum(len(w) + 1 for w in words))
            step = (segment.end - segment.start) / total
            position = segment.start
            for word in words:
                timed.append((word, position, position + step * len(word)))
                position += step * (len(word) + 1)
        current: list[tuple[str, float, float]] = []
        for item in timed:
            if current and len(_wrap([w for w, _, _ in current + [item]], line_chars)) > lines:
                cut = _sentence_cut(current)
                cues.append((*_cue(current[:cut], line_chars), segment.speaker))
                current = current[cut:]
            current.append(item)
            if item[0].endswith(SENTENCE_ENDS) and len(" ".join(w for w, _, _ in current)) \
                    >= line_chars:
                cues.append((*_cue(current, line_chars), segment.speaker))
                current = []
        if current:
            cues.append((*_cue(current, line_chars), segment.speaker))
    return cues


SENTENCE_ENDS = (".", "?", "!")


def _timed_words(words: list[Any]) -> list[tuple[str, float, float]]:
    """(text, start, end) per shown word: the written form when there is one; a word folded
    into the one before it ("one" of "$21") extends that word's end."""
    timed: list[tuple[str, float, float]] = []
    for w in words:
        written = getattr(w, "written", None)
        if written == "" and timed:
            text, start, _ = timed[-1]
            timed[-1] = (text, start, w.end)
        elif written != "":
            timed.append((w.word if written is None else written, w.start, w.end))
    return timed


def _sentence_cut(words: list[tuple[str, float, float]]) -> int:
    """Where to end a full cue: after its last sentence end, else after all its words."""
    for k in range(len(words) - 1, -1, -1):
        if words[k][0].endswith(SENTENCE_ENDS):
            return k + 1
    return len(words)


def _wrap(words: list[str], line_chars: int) -> list[str]:
    """Greedy line filling at word boundaries."""
    wrapped: list[str] = []
    for word in words:
        if wrapped and len(wrapped[-1]) + 1 + len(word) <= line_chars:
            wrapped[-1] += " " + word
        else:
            wrapped.append(word)
    return wrapped


def _cue(words: list[tuple[str, float, float]], line_chars: int) -> tuple[float, float, str]:
    return words[0][1], words[-1][2], "\n".join(_wrap([w for w, _, _ in words], line_chars))


def transcript_segments(transcript: Transcript) -> list[Segment]:
    if transcript.segments or not transcript.text:
        return transcript.segments
    return [Segment(text=transcript.text, start=0.0, end=transcript.duration)]


def _timestamp(seconds: float, separator: str) -> str:
    millis = int(round(max(0.0, seconds) * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def write_result(result: FileResult, fmt: str, output_dir: Path | None) -> Path | None:
    """Write a transcript next to `output_dir/<stem>.<fmt>` atomically; returns the path."""
    if output_dir is None or result.transcript is None:
        return None
    target = output_dir / f"{result.path.stem}.{fmt}"
    atomic_write_text(target, format_transcript(result.transcript, fmt, result.path.stem))
    return target


def atomic_write_text(target: Path, text: str) -> None:
    """Write `text` to `target` so that a crash leaves the old file or the new one, never part.

    The text goes to a temporary file in the same folder, is flushed to disk (fsync) and then
    renamed over `target`; the folder is synced so the rename itself survives a power cut.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    sync_folder(target.parent)


def sync_folder(folder: Path) -> None:
    """fsync a folder so renames and new names in it are on disk (a no-op where unsupported)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)

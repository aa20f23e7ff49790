"""Transcribing files: expanding inputs, output formats (txt, json, srt, vtt), bad-file handling."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

from harken.decoding import Segment, Transcript
from harken.errors import HarkenError

FORMATS = ("txt", "json", "srt", "vtt")


@dataclass
class FileResult:
    """The outcome for one input file: a transcript or the error that stopped it."""

    path: Path
    transcript: Transcript | None = None
    error: str | None = None


def expand_inputs(inputs: Iterable[str | os.PathLike]) -> list[Path]:
    """Paths of the audio files named: files as given, directories walked for audio files."""
    from harken.audio import is_audio_file

    paths: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            paths.extend(sorted(p for p in path.rglob("*") if p.is_file() and is_audio_file(p)))
        else:
            paths.append(path)
    return paths


def transcribe_files(model: Any, paths: Iterable[Path], options: Any = None,
                     group_size: int = 8, vad: str | None = "auto") -> Iterator[FileResult]:
    """Transcribe files in groups (batched network); a file that fails is reported, not fatal.

    `vad` cuts long files into speech segments (see `Model.transcribe`); None keeps all audio."""
    from harken.audio import load_audio

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
                transcripts = model.transcribe_batch([w for _, w in loaded], options, vad=vad)
                for (path, _), transcript in zip(loaded, transcripts):
                    results[path] = FileResult(path, transcript=transcript)
            except HarkenError as exc:
                for path, _ in loaded:
                    results[path] = FileResult(path, error=str(exc))
        for path in group:
            yield results[path]


def format_transcript(transcript: Transcript, fmt: str) -> str:
    """Render a transcript as plain text, JSON, SubRip (srt) or WebVTT (vtt)."""
    if fmt == "txt":
        return transcript.text + "\n"
    if fmt == "json":
        return json.dumps(transcript.to_dict(), indent=2) + "\n"
    if fmt == "srt":
        return "".join(f"{i}\n{_timestamp(s.start, ',')} --> {_timestamp(s.end, ',')}\n{s.text}\n\n"
                       for i, s in enumerate(_segments(transcript), start=1))
    if fmt == "vtt":
        return "WEBVTT\n\n" + "".join(
            f"{_timestamp(s.start, '.')} --> {_timestamp(s.end, '.')}\n{s.text}\n\n"
            for s in _segments(transcript))
    raise ValueError(f"unknown output format {fmt!r}; choose one of {', '.join(FORMATS)}")


def _segments(transcript: Transcript) -> list[Segment]:
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
    output_dir.mkdir(parents=True, exist_ok=True)
    target = output_dir / f"{result.path.stem}.{fmt}"
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(format_transcript(result.transcript, fmt), encoding="utf-8")
    os.replace(tmp, target)
    return target

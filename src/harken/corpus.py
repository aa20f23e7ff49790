"""Corpus handling: combine, filter, split by speaker and summarise manifests; `harken data`.

Manifests are read with `harken.data.read_manifest` (harken or NeMo JSONL, DeepSpeech CSV) and
written as harken JSONL: `{"audio", "text", "duration", "speaker", "id", ...}` plus every other
key the input line had (`text_raw`, `engine`, ...). Audio paths are written relative to the new
manifest's folder when the audio lies under it, absolute otherwise, so a written manifest works
from anywhere.

`register_data_commands(subparsers)` adds `harken data synth|combine|filter|split|summary|preview`
and `harken data prepare` (dataset importers, `harken.datasets`).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import numpy as np

from harken.errors import ConfigError

if TYPE_CHECKING:
    from harken.data import Utterance

# Transcripts are normalised to these characters (see harken.text.normalize_text).
DEFAULT_ALPHABET = "abcdefghijklmnopqrstuvwxyz' "
# Edges of the summary's duration histogram, in seconds.
HISTOGRAM_EDGES = (0, 1, 2, 3, 5, 10, 15, 20, 30, math.inf)


def read_manifests(paths: Sequence[str | os.PathLike[str]]) -> list[Utterance]:
    """The utterances of several manifests, in order. Raises `ManifestError` (file, line)."""
    from harken.data import read_manifest

    return [u for path in paths for u in read_manifest(path)]


def write_manifest(utterances: Iterable[Utterance], path: str | os.PathLike[str]) -> int:
    """Write harken JSONL atomically; returns the number of lines. Durations missing from the
    input are measured from the files. Audio under the manifest's folder is written relative."""
    from harken.data import utterance_duration

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
    from harken.data import utterance_duration

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
    from harken.data import utterance_duration

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
    from harken.data import utterance_duration

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


def register_data_commands(subparsers: Any) -> None:
    """Add `harken data synth|combine|filter|split|summary|preview` to an argparse subparsers
    object; each command sets `func(args) -> int` (the exit status)."""
    data = subparsers.add_parser(
        "data", help="training data: synthesise, combine, filter, split, summarise"
    )
    sub = data.add_subparsers(dest="data_command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("synth", help="render sentences with every offline TTS voice installed")
    p.add_argument(
        "--text", required=True, help="sentences, one a line (plain or .gz), or a manifest"
    )
    p.add_argument("--out", required=True, help="output folder (audio/ and manifest.jsonl)")
    size = p.add_mutually_exclusive_group(required=True)
    size.add_argument("--hours", type=float, help="render at least this much speech")
    size.add_argument("--count", type=int, help="render this many utterances")
    p.add_argument(
        "--engines",
        nargs="+",
        default=None,
        metavar="ENGINE",
        help="engines to use (default: all installed of espeak-ng flite festival pico2wave; "
        "also kokoro, piper: harken.synth_neural)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--jobs",
        type=int,
        default=os.cpu_count() or 1,
        help="worker processes (default: all cores)",
    )
    p.add_argument("--format", dest="audio_format", choices=("flac", "opus"), default="flac")
    p.set_defaults(func=_run_synth)

    p = sub.add_parser("combine", help="join manifests into one (paths rewritten, ids kept unique)")
    p.add_argument("manifests", nargs="+")
    p.add_argument("--out", required=True)
    p.set_defaults(func=_run_combine)

    p = sub.add_parser("filter", help="keep utterances by duration, alphabet and field values")
    p.add_argument("manifests", nargs="+")
    p.add_argument("--out", required=True)
    p.add_argument("--min-duration", type=float, default=None, help="seconds")
    p.add_argument("--max-duration", type=float, default=None, help="seconds")
    p.add_argument(
        "--alphabet",
        default=DEFAULT_ALPHABET,
        help="characters a transcript may use (default: a-z, apostrophe, space)",
    )
    p.add_argument("--any-characters", action="store_true", help="do not check the alphabet")
    p.add_argument(
        "--max-chars-per-second",
        type=float,
        default=None,
        help="drop transcripts too long for their audio (e.g. 25)",
    )
    p.add_argument(
        "--where",
        action="append",
        default=[],
        metavar="FIELD=V1,V2",
        help="keep lines whose FIELD is one of the values (repeatable), e.g. engine=flite,festival",
    )
    p.set_defaults(func=_run_filter)

    p = sub.add_parser("split", help="split by speaker into parts with no speaker in common")
    p.add_argument("manifests", nargs="+")
    p.add_argument("--out", required=True, help="folder for <part>.jsonl")
    p.add_argument(
        "--parts",
        nargs="+",
        default=["train=0.9", "dev=0.05", "test=0.05"],
        metavar="NAME=FRACTION",
        help="share of audio time per part (default: train=0.9 dev=0.05 test=0.05)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_run_split)

    p = sub.add_parser("summary", help="hours, speakers, vocabulary, duration histogram")
    p.add_argument("manifests", nargs="+")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=_run_summary)

    p = sub.add_parser("preview", help="write augmented examples (WAV) and a spectrogram PNG")
    p.add_argument("inputs", nargs="+", help="audio files or manifests (the first few utterances)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument(
        "--augment",
        default=None,
        help="augmentation settings: a TOML or JSON file (or a JSON string); default: the defaults",
    )
    p.add_argument("--examples", type=int, default=4, help="augmented versions of each input")
    p.add_argument("--max-inputs", type=int, default=3)
    p.add_argument("--noise-dir", action="append", default=[], help="folder of noise recordings")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_run_preview)

    from harken.datasets import register_prepare_command

    register_prepare_command(sub)


def _run_synth(args: argparse.Namespace) -> int:
    from harken.synth import describe_voices, discover_voices, synthesize

    voices = discover_voices(args.engines)
    print(describe_voices(voices), file=sys.stderr)
    report = synthesize(
        args.text,
        args.out,
        hours=args.hours,
        count=args.count,
        seed=args.seed,
        jobs=args.jobs,
        audio_format=args.audio_format,
        voices=voices,
    )
    print(
        f"{report.manifest}: {report.utterances} utterances, {report.seconds / 3600:.2f} h "
        f"({report.rendered} rendered, {report.reused} kept from before, "
        f"{len(report.failures)} failed)",
        file=sys.stderr,
    )
    for failure in report.failures[:10]:
        print(f"  failed: {failure}", file=sys.stderr)
    return 0 if report.utterances else 1


def _run_combine(args: argparse.Namespace) -> int:
    count = write_manifest(combine(read_manifests(args.manifests)), args.out)
    print(f"{args.out}: {count} utterances", file=sys.stderr)
    return 0


def _run_filter(args: argparse.Namespace) -> int:
    where: dict[str, set[str]] = {}
    for item in args.where:
        key, sep, values = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--where expects FIELD=VALUE[,VALUE...], got {item!r}")
        where.setdefault(key, set()).update(values.split(","))
    result = filter_utterances(
        read_manifests(args.manifests),
        min_duration=args.min_duration,
        max_duration=args.max_duration,
        alphabet=None if args.any_characters else args.alphabet,
        max_chars_per_second=args.max_chars_per_second,
        where=where or None,
    )
    write_manifest(result.kept, args.out)
    dropped = ", ".join(f"{n} {reason}" for reason, n in result.dropped.most_common()) or "none"
    print(f"{args.out}: kept {len(result.kept)}; dropped: {dropped}", file=sys.stderr)
    return 0


def _run_split(args: argparse.Namespace) -> int:
    fractions: dict[str, float] = {}
    for item in args.parts:
        name, sep, value = item.partition("=")
        try:
            fractions[name] = float(value)
        except ValueError:
            raise ConfigError(f"--parts expects NAME=FRACTION, got {item!r}") from None
        if not sep or not name:
            raise ConfigError(f"--parts expects NAME=FRACTION, got {item!r}")
    parts = split_by_speaker(read_manifests(args.manifests), fractions, seed=args.seed)
    for name, utterances in parts.items():
        path = Path(args.out) / f"{name}.jsonl"
        write_manifest(utterances, path)
        summary = summarize(utterances)
        print(
            f"{path}: {summary.utterances} utterances, {summary.hours:.2f} h, "
            f"{summary.speakers} speakers",
            file=sys.stderr,
        )
    return 0


def _run_summary(args: argparse.Namespace) -> int:
    summary = summarize(read_manifests(args.manifests))
    if args.json:
        from dataclasses import asdict

        record = asdict(summary)
        record["histogram"] = [
            [lo, hi if math.isfinite(hi) else None, n] for lo, hi, n in summary.histogram
        ]
        print(json.dumps(record, indent=2, ensure_ascii=False))
    else:
        print(summary.to_text())
    return 0


def _run_preview(args: argparse.Namespace) -> int:
    from harken.augment import AugmentConfig, preview

    settings: dict[str, Any] = {}
    if args.augment:
        settings = _read_settings(args.augment)
    config = AugmentConfig.from_dict(settings)
    written = preview(
        args.inputs,
        args.out,
        config,
        examples=args.examples,
        max_inputs=args.max_inputs,
        noise_dirs=args.noise_dir,
        seed=args.seed,
    )
    for path in written:
        print(path)
    return 0


def _read_settings(value: str) -> dict[str, Any]:
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
        from harken.errors import tomllib

        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: {exc}") from exc
        return data.get("augment", data)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc})") from exc

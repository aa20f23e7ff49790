"""`harken data synth|combine|filter|split|summary|preview|prepare`: training data."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

from harken.errors import ConfigError, HarkenError

import logging
import subprocess

from harken.training.corpus import (
    DEFAULT_ALPHABET,
    read_augment_settings,
    combine,
    filter_utterances,
    read_manifests,
    split_by_speaker,
    summarize,
    write_manifest,
)
from harken.training.prepare import FORMATS, PrepareOptions, prepare
from harken.training.augment import AugmentConfig, preview
from harken.training.synth import describe_voices, discover_voices, synthesize


def register(subparsers: Any) -> None:
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
        "also kokoro, piper: harken.training.synth_neural)",
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

    register_prepare(sub)


def _run_synth(args: argparse.Namespace) -> int:
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
    settings: dict[str, Any] = {}
    if args.augment:
        settings = read_augment_settings(args.augment)
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




def register_prepare(subparsers: Any) -> None:
    """Add `prepare` to the `harken data` subcommands."""
    p = subparsers.add_parser(
        "prepare", help="import a speech corpus in its own layout into manifests",
        description="Read a corpus where it lies and write OUT/<split>.jsonl per official split "
                    "(all.jsonl when it has none). Formats: " + ", ".join(FORMATS) + ".")
    p.add_argument("format", choices=sorted(FORMATS), metavar="FORMAT",
                   help=", ".join(FORMATS))
    p.add_argument("source", help="the corpus folder (or manifest file for deepspeech/nemo)")
    p.add_argument("--out", required=True, help="output folder for <split>.jsonl")
    p.add_argument("--splits", nargs="+", default=[], metavar="SPLIT",
                   help="keep only these splits (Common Voice: also validated, other, ...)")
    p.add_argument("--skip-errors", action="store_true",
                   help="log and skip malformed transcript lines instead of stopping")
    p.add_argument("--jobs", type=int, default=8, help="threads reading audio headers")
    p.add_argument("--vctk-mic", default="mic1", choices=("mic1", "mic2"),
                   help="VCTK 0.92 microphone (default mic1)")
    p.add_argument("--timit-sa", action="store_true",
                   help="TIMIT: keep the SA dialect sentences (left out by default)")
    p.add_argument("--raw-byte-order", default="auto", choices=("auto", "big", "little"),
                   help="AN4 .raw byte order (default: detected per file)")
    p.set_defaults(func=_run_prepare)


def _run_prepare(args: argparse.Namespace) -> int:
    logging.getLogger("harken").setLevel(logging.INFO)
    options = PrepareOptions(on_error="skip" if args.skip_errors else "raise",
                             splits=tuple(args.splits), jobs=args.jobs, vctk_mic=args.vctk_mic,
                             timit_sa=args.timit_sa, raw_byte_order=args.raw_byte_order)
    try:
        written = prepare(args.format, args.source, args.out, options)
    except subprocess.CalledProcessError as exc:
        raise HarkenError(f"{exc.cmd[0]} failed: {exc.stderr.decode(errors='replace')}") from exc
    for name, path in written.items():
        print(f"{name}: {path}", file=sys.stdout)
    return 0

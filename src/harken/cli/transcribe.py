"""`harken transcribe`: files, folders and manifests to txt/json/srt/vtt."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from harken.errors import ConfigError, HarkenError, ModelError, UsageError
from harken.serving.batch_jobs import (FILES_PER_TASK, SUMMARY_FILE, BatchSettings, format_clock,
                                       collect_inputs, read_summary, run_batch)
from harken.cli.common import add_decode_args, add_model_args, decode_overrides, load_checked, resolve_backend

from harken.diarization.diarize import DEFAULT_MAX_SPEAKERS, DiarizeOptions
from harken.transcribe import ALL_FORMATS, FORMATS, expand_inputs, format_transcript, transcribe_files

# A transcript with no words from less audio than this gets a note saying why it is empty.
MIN_SPEECH_SECONDS = 0.25
# Formats whose output holds one input only: several inputs on stdout are refused.
SINGLE_FILE_FORMATS = ("srt", "vtt")


def register(sub: Any) -> None:
    p = sub.add_parser("transcribe", help="transcribe audio files, folders or manifests",
                       description="Transcribe audio files (any format/rate), every audio file "
                                   "under a folder, or the files a manifest lists. With "
                                   "--output-dir the job is resumable (docs/scaling.md).")
    p.add_argument("inputs", nargs="+", help="audio files, folders or manifests (.jsonl/.csv/.txt)")
    p.epilog = ("Without --output-dir the results go to stdout. Several inputs: txt prints "
                "'FILE: text' lines, json prints JSON Lines (one object per file with its "
                "\"file\", or \"file\" and \"error\"); srt and vtt need --output-dir.")
    add_model_args(p)
    add_decode_args(p)
    p.add_argument("--format", "-f", type=output_formats, default="txt",
                   help="txt, json, srt, vtt or rttm (speaker turns, with --diarize); with "
                        "--output-dir a comma-separated list or all")
    p.add_argument("--output-dir", "-o", type=Path, default=None,
                   help="write <name>.<format> files here instead of printing")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar or progress lines on stderr")
    p.add_argument("--vad", choices=("auto", "webrtc", "silero", "energy", "none"),
                   default="auto", help="voice activity detector that cuts long audio into "
                   "speech segments (none: keep all audio; default: auto)")
    p.add_argument("--raw", action="store_true",
                   help="normalised text as recognised (lowercase, no punctuation, numbers in "
                        "words) instead of written text from the model's punctuator")
    add_diarize_args(p)
    add_batch_args(p)
    p.set_defaults(func=_run_transcribe)


def _run_transcribe(args: argparse.Namespace) -> int:
    if args.output_dir is not None:
        return run_batch_command(args)
    if "," in args.format or args.workers != 1 or args.ray:
        raise UsageError("several formats, --workers and --ray need --output-dir")
    paths = expand_inputs(args.inputs)
    if not paths:
        raise HarkenError(f"no audio files found in {', '.join(args.inputs)}")
    if len(paths) > 1 and args.format in SINGLE_FILE_FORMATS:
        raise UsageError(f"-f {args.format} holds one file's subtitles: {len(paths)} inputs "
                         f"need --output-dir (one .{args.format} file each)")
    model, options = load_checked(args)
    return _print_transcripts(model, options, paths, args, diarize_options_from_args(args))


def _print_transcripts(model: Any, options: Any, paths: list[Path], args: argparse.Namespace,
                       diarize: Any = None) -> int:
    """Transcribe `paths` to stdout: one input as it is formatted; several as 'FILE: text'
    lines (txt) or JSON Lines with the file in each object (json). Returns the exit status."""
    bar = None
    if len(paths) > 1 and not args.no_progress and sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=len(paths), unit="file", desc="transcribe")
    several = len(paths) > 1
    failures = 0
    vad = None if args.vad == "none" else args.vad
    for result in transcribe_files(model, paths, options, vad=vad, diarize=diarize,
                                   written=False if args.raw else None):
        if bar is not None:
            bar.update(1)
        if result.error is not None:
            failures += 1
            print(f"harken: error: {result.error}", file=sys.stderr)
            if several and args.format == "json":
                sys.stdout.write(json.dumps({"file": str(result.path), "error": result.error})
                                 + "\n")
            continue
        transcript = result.transcript
        if not transcript.text:
            print(f"harken: note: {result.path}: {_empty_reason(transcript.duration)}",
                  file=sys.stderr)
        if several and args.format == "json":
            text = json.dumps({"file": str(result.path), **transcript.to_dict()}) + "\n"
        else:
            text = format_transcript(transcript, args.format, result.path.stem)
            if several:
                text = f"{result.path}: {text}"
        sys.stdout.write(text)
        sys.stdout.flush()
    if bar is not None:
        bar.close()
    if failures:
        print(f"harken: {failures} of {len(paths)} files failed", file=sys.stderr)
    return 1 if failures else 0


def _empty_reason(duration: float) -> str:
    if duration < MIN_SPEECH_SECONDS:
        return (f"no words: {duration:.2f} s of audio is too short to hold speech (less than "
                f"{MIN_SPEECH_SECONDS} s)")
    return f"no words recognised in {duration:.2f} s of audio (silence, noise or another language?)"


def output_formats(value: str) -> str:
    """argparse type of --format: one format or a comma-separated list ("all": every
    transcript format; rttm, speaker turns, only when named)."""
    names = tuple(dict.fromkeys(n for v in value.split(",") if v.strip()
                                for n in (FORMATS if v.strip() == "all" else (v.strip(),))))
    unknown = [n for n in names if n not in ALL_FORMATS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown format {', '.join(unknown) or repr(value)}; choose from "
            f"{', '.join(ALL_FORMATS)}, a comma-separated list or 'all'")
    return ",".join(names)


def add_batch_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "batch jobs (with --output-dir)",
        "Outputs and summary.jsonl go to --output-dir; a job run again skips finished files.")
    group.add_argument("--workers", "-j", type=int, default=1,
                       help="worker processes, each with its own model (or Ray actors)")
    group.add_argument("--threads", type=int, default=None,
                       help="torch threads per worker (default: CPU cores / workers; "
                            "without --output-dir: 1 for models under 10 M parameters, else "
                            "torch's default)")
    group.add_argument("--ray", default=None, metavar="ADDRESS",
                       help="run on a Ray cluster: its address, 'auto' or 'local' "
                            "(pip install 'harken[ray]')")
    group.add_argument("--files-per-task", type=int, default=FILES_PER_TASK,
                       help=f"files a worker batches together (default: {FILES_PER_TASK})")
    group.add_argument("--retry-failed", action="store_true",
                       help="redo files the summary records as failed")
    group.add_argument("--summary", type=Path, default=None,
                       help=f"summary JSONL (default: OUTPUT_DIR/{SUMMARY_FILE})")


def run_batch_command(args: argparse.Namespace) -> int:
    """`harken transcribe ... --output-dir OUT` (the command line's options in `args`)."""
    if args.workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {args.workers}")
    inputs = collect_inputs(args.inputs)
    if not inputs:
        raise HarkenError(f"no audio files found in {', '.join(args.inputs)}")
    threads = args.threads
    if threads is None and (args.workers > 1 or args.ray):
        threads = max(1, (os.cpu_count() or 1) // args.workers) if not args.ray else 1
    model = args.model
    if model is not None and Path(model).exists():
        model = str(Path(model).resolve())  # workers may run elsewhere (Ray)
    settings = BatchSettings(model=model, device=args.device,
                             backend=resolve_backend(model, args.backend),
                             decode=decode_overrides(args),
                             vad=None if args.vad == "none" else args.vad,
                             formats=tuple(args.format.split(",")), threads=threads,
                             diarize=diarize_options_from_args(args),
                             written=False if getattr(args, "raw", False) else None)
    try:
        report = run_batch(inputs, args.output_dir, settings, workers=args.workers,
                           ray_address=args.ray, files_per_task=args.files_per_task,
                           retry_failed=args.retry_failed, summary_path=args.summary,
                           progress=not args.no_progress)
    except (ModelError, ConfigError) as exc:  # the model, LM or an option: before any file
        raise UsageError(str(exc)) from exc
    wanted = {str(entry.path) for entry in inputs}
    rows = [row for row in read_summary(report.summary) if row["path"] in wanted]
    failed = [row for row in rows if row.get("status") == "error"]
    for row in failed:
        print(f"harken: error: {row['error']}", file=sys.stderr)
    print(f"harken: {len(rows) - len(failed)} of {report.total} files transcribed "
          f"({report.skipped} done before), {len(failed)} failed; this run: "
          f"{report.audio_seconds / 3600:.2f} h audio in {format_clock(report.seconds)} "
          f"(RTF {report.rtf:.3f}); summary: {report.summary}", file=sys.stderr)
    return 1 if failed else 0


def speaker_count(value: str) -> int:
    """argparse type for --speakers/--min-speakers/--max-speakers: a whole number >= 1."""
    import argparse

    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1 or str(number) != value.strip():
        raise argparse.ArgumentTypeError(f"expected a whole number of speakers >= 1, got {value!r}")
    return number


def add_diarize_args(parser: Any) -> None:
    """--diarize and its settings, for `harken transcribe`."""
    group = parser.add_argument_group("speakers", "who spoke when (docs/diarization.md)")
    group.add_argument("--diarize", action="store_true",
                       help="label words and segments with speakers (S1, S2, ...); "
                            "txt prints one [S1] line per turn; enables --format rttm")
    group.add_argument("--speakers", type=speaker_count, default=None, metavar="N",
                       help="the number of speakers, when known (default: estimated)")
    group.add_argument("--min-speakers", type=speaker_count, default=1, metavar="N")
    group.add_argument("--max-speakers", type=speaker_count, default=DEFAULT_MAX_SPEAKERS,
                       metavar="N")
    group.add_argument("--speaker-model", default=None, metavar="DIR",
                       help="a speaker encoder folder (default: the bundled GE2E encoder)")


def diarize_options_from_args(args: Any) -> DiarizeOptions | None:
    """The `DiarizeOptions` the command line asks for (None without --diarize); speaker
    settings without --diarize, or rttm output without it, are usage errors."""
    formats = str(getattr(args, "format", "") or "").split(",")
    if not args.diarize:
        given = [flag for flag, value, default in (
            ("--speakers", args.speakers, None), ("--min-speakers", args.min_speakers, 1),
            ("--max-speakers", args.max_speakers, DEFAULT_MAX_SPEAKERS),
            ("--speaker-model", args.speaker_model, None)) if value != default]
        if given:
            raise ConfigError(f"{', '.join(given)} need --diarize")
        if "rttm" in formats:
            raise ConfigError("--format rttm needs --diarize")
        return None
    return DiarizeOptions(speakers=args.speakers, min_speakers=args.min_speakers,
                          max_speakers=max(args.max_speakers, args.speakers or 1),
                          encoder=args.speaker_model,
                          vad="auto" if getattr(args, "vad", "auto") == "none" else args.vad)

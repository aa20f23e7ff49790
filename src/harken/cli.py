"""The `harken` command line."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any, Sequence

from harken.errors import HarkenError


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _write_undecodable_names()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except HarkenError as exc:
        print(f"harken: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # a file named on the command line is missing or unreadable
        print(f"harken: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("harken: interrupted", file=sys.stderr)
        return 130


def _write_undecodable_names() -> None:
    """File names that are not valid UTF-8 reach Python with surrogates in place of the bad
    bytes; print them as those bytes instead of failing on a strict UTF-8 stdout."""
    for stream in (sys.stdout, sys.stderr):
        encoding = str(getattr(stream, "encoding", "")).lower().replace("-", "")
        if encoding == "utf8" and hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="surrogateescape")


def build_parser() -> argparse.ArgumentParser:
    from harken import __version__

    parser = argparse.ArgumentParser(prog="harken", description="Private, local, trainable speech recognition.")
    parser.add_argument("--version", action="version", version=f"harken {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")
    _add_transcribe(sub)
    _add_evaluate(sub)
    _add_train(sub)
    _add_tokenizer(sub)
    _add_info(sub)
    _add_listen(sub)
    _add_optional_commands(sub)
    return parser


def _add_optional_commands(sub: Any) -> None:
    """Commands whose modules register themselves (language models, data tools, ...)."""
    import importlib

    for module, function in (("harken.lm", "register_lm_commands"),
                             ("harken.corpus", "register_data_commands"),
                             ("harken.export", "register_export_command"),
                             ("harken.importers", "register_import_command"),
                             ("harken.hub", "register_hub_commands"),
                             ("harken.punctuator", "register_punctuator_commands"),
                             ("harken.server", "register_serve_command")):
        try:
            register = getattr(importlib.import_module(module), function)
        except (ImportError, AttributeError):
            continue
        register(sub)


# -- shared options --------------------------------------------------------------------------

def add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", "-m", default=None,
                        help="model folder, .harken file or bundled model name (default: en-small)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    parser.add_argument("--backend", default="torch",
                        choices=("torch", "onnx", "onnx-fp32", "onnx-int8"),
                        help="torch, or onnx for a folder made by `harken export` (default: torch)")


def add_decode_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("decoding")
    group.add_argument("--beam-width", type=int, default=None, help="beam width (1 = greedy)")
    group.add_argument("--lm", default=None, help="n-gram language model (ARPA or KenLM binary)")
    group.add_argument("--no-lm", action="store_true", help="do not use the model's default LM")
    group.add_argument("--alpha", "--lm-weight", dest="lm_weight", type=float, default=None,
                       help="language model weight")
    group.add_argument("--beta", "--word-score", dest="word_score", type=float, default=None,
                       help="word insertion bonus")
    group.add_argument("--hotword", action="append", default=[], metavar="WORD:BOOST",
                       help="boost a word or phrase (repeatable), e.g. --hotword 'harken:8'")
    group.add_argument("--greedy", action="store_true", help="greedy decoding, no beam search")


def decode_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Decoding options given on the command line, as keyword overrides for the model's defaults."""
    overrides: dict[str, Any] = {}
    if args.greedy:
        overrides["greedy"] = True
    if args.beam_width is not None:
        overrides["beam_width"] = args.beam_width
    if args.no_lm:
        overrides["lm"] = None
    elif args.lm:
        overrides["lm"] = args.lm
    if args.lm_weight is not None:
        overrides["lm_weight"] = args.lm_weight
    if args.word_score is not None:
        overrides["word_score"] = args.word_score
    if args.hotword:
        hotwords: dict[str, float] = {}
        for item in args.hotword:
            word, _, boost = item.rpartition(":")
            if not word:
                word, boost = item, "10"
            try:
                hotwords[word] = float(boost)
            except ValueError:
                raise HarkenError(f"--hotword {item!r}: expected WORD:BOOST with a number") from None
        overrides["hotwords"] = hotwords
    return overrides


def _load(args: argparse.Namespace):
    from harken.model import load_model

    return load_model(args.model, device=args.device, backend=args.backend)


def _options(model: Any, args: argparse.Namespace) -> Any:
    """Decoding options from the command line over the model's stored defaults (None: greedy)."""
    from harken.decoding import GREEDY

    overrides = decode_overrides(args)
    if overrides.pop("greedy", False):
        return GREEDY
    return model.decode_options(**overrides) if overrides else None


# -- transcribe ------------------------------------------------------------------------------

def _add_transcribe(sub: Any) -> None:
    from harken.batch import add_batch_args, output_formats

    p = sub.add_parser("transcribe", help="transcribe audio files, folders or manifests",
                       description="Transcribe audio files (any format/rate), every audio file "
                                   "under a folder, or the files a manifest lists. With "
                                   "--output-dir the job is resumable (docs/scaling.md).")
    p.add_argument("inputs", nargs="+", help="audio files, folders or manifests (.jsonl/.csv/.txt)")
    add_model_args(p)
    add_decode_args(p)
    p.add_argument("--format", "-f", type=output_formats, default="txt",
                   help="txt, json, srt or vtt; with --output-dir a comma-separated list or all")
    p.add_argument("--output-dir", "-o", type=Path, default=None,
                   help="write <name>.<format> files here instead of printing")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--vad", choices=("auto", "webrtc", "silero", "energy", "none"),
                   default="auto", help="voice activity detector that cuts long audio into "
                   "speech segments (none: keep all audio; default: auto)")
    p.add_argument("--raw", action="store_true",
                   help="normalised text as recognised (lowercase, no punctuation, numbers in "
                        "words) instead of written text from the model's punctuator")
    add_batch_args(p)
    p.set_defaults(func=_run_transcribe)


def _run_transcribe(args: argparse.Namespace) -> int:
    from harken.transcribe import expand_inputs, format_transcript, transcribe_files, write_result

    if args.output_dir is not None:
        from harken.batch import run_batch_command

        return run_batch_command(args)
    if "," in args.format or args.workers != 1 or args.ray:
        raise HarkenError("several formats, --workers and --ray need --output-dir")
    paths = expand_inputs(args.inputs)
    if not paths:
        raise HarkenError(f"no audio files found in {', '.join(args.inputs)}")
    model = _load(args)
    options = _options(model, args)
    bar = None
    if len(paths) > 1 and not args.no_progress and sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=len(paths), unit="file", desc="transcribe")
    failures = 0
    vad = None if args.vad == "none" else args.vad
    for result in transcribe_files(model, paths, options, vad=vad,
                                   written=False if args.raw else None):
        if bar is not None:
            bar.update(1)
        if result.error is not None:
            failures += 1
            print(f"harken: error: {result.error}", file=sys.stderr)
            continue
        written = write_result(result, args.format, args.output_dir)
        if written is None:
            text = format_transcript(result.transcript, args.format)
            if len(paths) > 1 and args.format == "txt":
                text = f"{result.path}: {text}"
            sys.stdout.write(text)
            sys.stdout.flush()
    if bar is not None:
        bar.close()
    if failures:
        print(f"harken: {failures} of {len(paths)} files failed", file=sys.stderr)
    return 1 if failures else 0


# -- evaluate --------------------------------------------------------------------------------

def _add_evaluate(sub: Any) -> None:
    p = sub.add_parser("evaluate", help="WER/CER and real-time factor on manifests")
    p.add_argument("manifests", nargs="+", help="JSONL or DeepSpeech CSV manifests")
    add_model_args(p)
    add_decode_args(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--hyps", type=Path, default=None, help="write hypotheses as JSONL")
    p.add_argument("--limit", type=int, default=None, help="first N utterances only")
    p.set_defaults(func=_run_evaluate)


def _run_evaluate(args: argparse.Namespace) -> int:
    from harken.evaluate import evaluate_manifests

    model = _load(args)
    result = evaluate_manifests(model, args.manifests, _options(model, args), limit=args.limit,
                                hyps_out=args.hyps, progress=not args.json and sys.stderr.isatty())
    if args.json:
        print(json.dumps(result.to_dict()))
    else:
        print(result.summary())
        for failure in result.failed:
            print(f"failed: {failure['audio']}: {failure['error']}", file=sys.stderr)
    return 0


# -- train -----------------------------------------------------------------------------------

def _add_train(sub: Any) -> None:
    p = sub.add_parser("train", help="train a CTC model",
                       description="Train a CTC model from a TOML config; --set overrides keys "
                                   "(e.g. --set optim.lr=3e-4 --set run.out_dir=runs/a).")
    p.add_argument("config", nargs="?", type=Path, help="TOML training config")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (overrides run.device)")
    p.set_defaults(func=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    from harken.train import load_config, train

    overrides = list(args.overrides)
    if args.device:
        overrides.append(f"run.device={json.dumps(args.device)}")
    logging.getLogger("harken").setLevel(logging.INFO)
    config = load_config(args.config, overrides)
    final = train(config, resume=args.resume)
    print(f"model written to {final}")
    return 0


# -- tokenizer -------------------------------------------------------------------------------

def _add_tokenizer(sub: Any) -> None:
    p = sub.add_parser("tokenizer", help="tokenizer tools")
    tsub = p.add_subparsers(title="tokenizer commands", metavar="COMMAND")
    t = tsub.add_parser("train", help="train a SentencePiece tokenizer on text files or manifests")
    t.add_argument("sources", nargs="+", help="text files (one sentence a line, .gz ok) or JSONL manifests")
    t.add_argument("--vocab-size", type=int, default=128)
    t.add_argument("--model-type", choices=("unigram", "bpe"), default="unigram")
    t.add_argument("--language", default="en",
                   help="transcript normaliser: en, or any code for the default one (es, ru, ...)")
    t.add_argument("--out", type=Path, required=True, help="output tokenizer.model")
    t.set_defaults(func=_run_tokenizer_train)


def _run_tokenizer_train(args: argparse.Namespace) -> int:
    from harken.text import read_texts, train_sentencepiece

    texts = (t for s in args.sources for t in read_texts(s))
    tokenizer = train_sentencepiece(texts, args.vocab_size, model_type=args.model_type,
                                    language=args.language)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(tokenizer.serialized())
    print(f"{args.out}: {tokenizer.vocab_size} tokens (blank included)")
    return 0


# -- info ------------------------------------------------------------------------------------

def _add_info(sub: Any) -> None:
    p = sub.add_parser("info", help="describe a model")
    add_model_args(p)
    p.set_defaults(func=_run_info)


def _run_info(args: argparse.Namespace) -> int:
    from harken.models import count_parameters

    model = _load(args)
    c = model.config
    print(json.dumps({"path": str(model.path), "architecture": c.architecture, "size": c.size,
                      "parameters": count_parameters(model.network),
                      "vocab_size": model.tokenizer.vocab_size, "tokenizer": c.tokenizer.get("kind"),
                      "frame_seconds": model.frame_seconds, "decoding": c.decoding,
                      "training": {k: v for k, v in c.training.items() if k != "config"},
                      "punctuator": _punctuator_info(model)}, indent=2))
    return 0


def _punctuator_info(model: Any) -> dict[str, Any] | None:
    """What `harken info` says of the model's punctuator (None: transcripts stay raw)."""
    punctuator = getattr(model, "punctuator", None)
    if punctuator is None:
        return None
    return {"path": str(punctuator.path) if punctuator.path else None,
            "language": punctuator.config.language, "vocab_size": punctuator.config.vocab_size}


# -- listen ----------------------------------------------------------------------------------

def _add_listen(sub: Any) -> None:
    p = sub.add_parser("listen", help="transcribe the microphone (or stdin) live",
                       description="Transcribe live audio: the microphone (needs sounddevice: "
                                   "pip install harken[mic]) or, with '-', raw 16 kHz mono "
                                   "S16_LE PCM or a WAV stream on stdin, e.g. "
                                   "'arecord -f S16_LE -r 16000 | harken listen -'. Partials are "
                                   "rewritten in place, finished utterances printed on new lines.")
    p.add_argument("source", nargs="?", default=None, help="'-' for stdin (default: microphone)")
    add_model_args(p)
    add_decode_args(p)
    p.add_argument("--vad", choices=("webrtc", "silero", "energy"), default="webrtc",
                   help="detector for endpointing (default: webrtc)")
    p.add_argument("--silence-ms", type=float, default=600.0,
                   help="trailing silence that ends an utterance (default: 600)")
    p.add_argument("--chunk-ms", type=int, default=100, help="audio per read (default: 100)")
    p.add_argument("--raw", action="store_true",
                   help="finished utterances as recognised, not as written text")
    p.set_defaults(func=_run_listen)


def _run_listen(args: argparse.Namespace) -> int:
    from harken.streaming import live_chunks
    from harken.vad import EndpointConfig

    model = _load(args)
    overrides = decode_overrides(args)
    endpoint = EndpointConfig(silence_ms=args.silence_ms, method=args.vad)
    stream = model.stream(endpoint=endpoint, **overrides)
    chunks = live_chunks(args.source, model.sample_rate, args.chunk_ms)
    interactive = sys.stdout.isatty()
    shown = ""
    finals = (lambda t: t) if args.raw else model.write  # partials stay as recognised

    def show(text: str, final: bool) -> None:
        nonlocal shown
        if interactive:
            sys.stdout.write("\r\033[K" + text + ("\n" if final else ""))
        elif final and text:
            sys.stdout.write(text + "\n")
        sys.stdout.flush()
        shown = "" if final else text

    try:
        for chunk in chunks:
            for utterance in stream.feed(chunk):
                show(finals(utterance).text, final=True)
            partial = stream.partial().text
            if partial != shown:
                show(partial, final=False)
    except KeyboardInterrupt:
        pass
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
    show(finals(stream.finish()).text, final=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

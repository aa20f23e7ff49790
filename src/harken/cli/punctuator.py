"""`harken punctuator train|calibrate|attach|apply`: punctuation and casing models."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harken.written.punctuator import PunctuatorConfig, load_punctuator
from harken.training.punctuator import TrainOptions, calibrate_file, train_punctuator
from harken.model import load_model


def register(sub: Any) -> None:
    """`harken punctuator train|calibrate|apply|attach`."""
    parser = sub.add_parser("punctuator", help="train or apply a punctuation and casing model")
    commands = parser.add_subparsers(title="punctuator commands", metavar="COMMAND")
    t = commands.add_parser("train", help="train a punctuator on written text",
                            description="Train a punctuator on cased, punctuated text: one "
                                        "sentence a line, or group<TAB>sentence (groups are held "
                                        "out for dev/test by a hash of their name).")
    t.add_argument("texts", nargs="+", type=Path, help="text files (.gz ok)")
    t.add_argument("--out", type=Path, required=True, help="output punctuator file (.safetensors)")
    t.add_argument("--language", default="en", help="the normaliser's language (default: en)")
    t.add_argument("--max-minutes", type=float, default=TrainOptions.max_minutes)
    t.add_argument("--max-steps", type=int, default=TrainOptions.max_steps)
    t.add_argument("--threads", type=int, default=TrainOptions.threads)
    t.add_argument("--vocab-size", type=int, default=PunctuatorConfig.vocab_size)
    t.add_argument("--resume", action="store_true", help="continue from the latest checkpoint")
    t.set_defaults(func=_run_train)
    a = commands.add_parser("apply", help="punctuate normalised text read from stdin or --text")
    a.add_argument("punctuator", type=Path, help="punctuator file")
    a.add_argument("--text", default=None, help="text to punctuate (default: stdin lines)")
    a.set_defaults(func=_run_apply)
    s = commands.add_parser("attach", help="write a copy of a model that ships a punctuator",
                            description="Write MODEL with PUNCTUATOR inside it: its transcripts "
                                        "are then written text by default (--raw for raw).")
    s.add_argument("model", help="model folder, .harken file or bundled model name")
    s.add_argument("punctuator", type=Path, help="punctuator file")
    s.add_argument("--out", type=Path, required=True, help="output model (folder or .harken)")
    s.set_defaults(func=_run_attach)
    c = commands.add_parser("calibrate", help="tune a punctuator's mark biases on dev text",
                            description="Choose the biases of 'no mark' and of the comma that "
                                        "maximise the marks' F1 on the dev groups of TEXT "
                                        "(training does this at its end).")
    c.add_argument("punctuator", type=Path, help="punctuator file")
    c.add_argument("texts", nargs="+", type=Path, help="text files (.gz ok)")
    c.add_argument("--out", type=Path, default=None, help="output file (default: in place)")
    c.set_defaults(func=_run_calibrate)
    parser.set_defaults(func=lambda args: parser.print_help() or 2)


def _run_train(args: Any) -> int:
    config = PunctuatorConfig(language=args.language, vocab_size=args.vocab_size)
    options = TrainOptions(max_minutes=args.max_minutes, max_steps=args.max_steps,
                           threads=args.threads)
    path = train_punctuator(args.texts, args.out, config, options, resume=args.resume)
    print(f"wrote {path}")
    return 0


def _run_calibrate(args: Any) -> int:
    path = calibrate_file(args.punctuator, args.texts, args.out)
    print(f"wrote {path} (punctuation biases {load_punctuator(path).config.punct_bias[:2]})")
    return 0


def _run_attach(args: Any) -> int:
    model = load_model(args.model)
    model.punctuator = load_punctuator(args.punctuator)
    print(f"wrote {model.save(args.out)}")
    return 0


def _run_apply(args: Any) -> int:
    import sys

    punctuator = load_punctuator(args.punctuator)
    lines = [args.text] if args.text is not None else sys.stdin
    for line in lines:
        print(punctuator(line.strip()))
    return 0

"""The `harken` parser and entry point: one sub-command per module of `harken.cli`."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

from harken.version import __version__
from harken.cli import (data, evaluate, export, hub, importing, info, listen, lm, punctuator, serve,
                        tokenizer, train, transcribe)
from harken.errors import HarkenError, UsageError


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
    except UsageError as exc:  # an option that cannot be used: reported before any input
        print(f"harken: error: {exc}", file=sys.stderr)
        return 2
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


COMMANDS = (transcribe, evaluate, train, tokenizer, info, listen, lm, data, export, importing, hub, serve,
            punctuator)


def build_parser() -> argparse.ArgumentParser:
    """The `harken` parser with every command (each module in `harken.cli` registers its own)."""
    parser = argparse.ArgumentParser(prog="harken", description="Private, local, trainable speech recognition.")
    parser.add_argument("--version", action="version", version=f"harken {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")
    for command in COMMANDS:
        command.register(sub)
    return parser













# -- evaluate --------------------------------------------------------------------------------





# -- tokenizer -------------------------------------------------------------------------------





# -- listen ----------------------------------------------------------------------------------

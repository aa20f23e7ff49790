"""The `harken` command line: `main.py` builds the parser from one module per command
(transcribe, evaluate, train, tokenizer, info, listen, lm, data, export, import, models/download,
serve); `common.py` holds the options several commands share."""

from harken.cli.main import build_parser, main

__all__ = ["build_parser", "main"]

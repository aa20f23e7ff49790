"""`harken info`: describe a model."""

from __future__ import annotations

import argparse
import json
from typing import Any

from harken.cli.common import add_model_args, load_model_args


def register(sub: Any) -> None:
    p = sub.add_parser("info", help="describe a model")
    add_model_args(p)
    p.set_defaults(func=_run_info)


def _run_info(args: argparse.Namespace) -> int:
    # imported when the command runs: it loads torch, `harken --help` does not
    from harken.models.registry import count_parameters

    model = load_model_args(args)
    c = model.config
    print(json.dumps({"path": str(model.path), "architecture": c.architecture, "size": c.size,
                      "parameters": count_parameters(model.network),
                      "vocab_size": model.tokenizer.vocab_size, "tokenizer": c.tokenizer.get("kind"),
                      "frame_seconds": model.frame_seconds, "decoding": c.decoding,
                      "training": {k: v for k, v in c.training.items() if k != "config"}}, indent=2))
    return 0

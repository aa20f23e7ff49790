"""`harken evaluate`: WER/CER and real-time factor on manifests."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from harken.cli.common import add_decode_args, add_model_args, decode_options, load_model_args
from harken.training.evaluate import evaluate_manifests


def register(sub: Any) -> None:
    p = sub.add_parser("evaluate", help="WER/CER and real-time factor on manifests")
    p.add_argument("manifests", nargs="+", help="JSONL or DeepSpeech CSV manifests")
    add_model_args(p)
    add_decode_args(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--hyps", type=Path, default=None, help="write hypotheses as JSONL")
    p.add_argument("--limit", type=int, default=None, help="first N utterances only")
    p.set_defaults(func=_run_evaluate)


def _run_evaluate(args: argparse.Namespace) -> int:
    model = load_model_args(args)
    result = evaluate_manifests(model, args.manifests, decode_options(model, args), limit=args.limit,
                                hyps_out=args.hyps, progress=not args.json and sys.stderr.isatty())
    if args.json:
        print(json.dumps(result.to_dict()))
    else:
        print(result.summary())
        for failure in result.failed:
            print(f"failed: {failure['audio']}: {failure['error']}", file=sys.stderr)
    return 0

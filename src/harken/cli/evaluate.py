"""`harken evaluate`: WER/CER and real-time factor on manifests."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from harken.cli.common import add_decode_args, add_model_args, load_checked
from harken.training.evaluate import evaluate_manifests


def register(sub: Any) -> None:
    p = sub.add_parser("evaluate", help="WER/CER and real-time factor on manifests")
    p.add_argument("manifests", nargs="+", help="JSONL or DeepSpeech CSV manifests")
    add_model_args(p)
    add_decode_args(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--hyps", type=Path, default=None, help="write hypotheses as JSONL")
    p.add_argument("--limit", type=int, default=None, help="first N utterances only")
    p.add_argument("--allow-failures", action="store_true",
                   help="exit 0 even when some utterances cannot be read (they are left out of "
                        "the scores; default: exit 1)")
    p.set_defaults(func=_run_evaluate)


def _run_evaluate(args: argparse.Namespace) -> int:
    """Scores on stdout; utterances that failed on stderr, one line each, and exit status 1
    unless --allow-failures."""
    model, options = load_checked(args)
    result = evaluate_manifests(model, args.manifests, options, limit=args.limit,
                                hyps_out=args.hyps, progress=not args.json and sys.stderr.isatty())
    if args.json:
        print(json.dumps(result.to_dict()))
    else:
        print(result.summary())
    for failure in result.failed:
        error = failure["error"]  # errors about a file name it already
        if failure["audio"] not in error:
            error = f"{failure['audio']}: {error}"
        print(f"harken: failed: {error}", file=sys.stderr)
    if result.failed and not args.allow_failures:
        print(f"harken: {len(result.failed)} utterances failed (left out of the scores; "
              "--allow-failures exits 0)", file=sys.stderr)
        return 1
    return 0

"""`harken models` and `harken download`: the model catalogue."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from harken.interop.hub import download, load_catalogue, model_status
from harken.modelfile import downloaded_model_path, models_dir


def register(sub: Any) -> None:
    """Add `harken models` and `harken download` to the CLI's subcommands."""
    m = sub.add_parser("models", help="list known public checkpoints harken can download",
                       description="List public CTC checkpoints that `harken download` can "
                                   "fetch and import, with licences and published WERs.")
    m.add_argument("--dir", type=Path, default=None,
                   help="models folder (default: $HARKEN_CACHE/models or ~/.cache/harken/models)")
    m.add_argument("--catalogue", type=Path, default=None, help=argparse.SUPPRESS)
    m.add_argument("--json", action="store_true", help="print the catalogue entries as JSON")
    m.set_defaults(func=_run_models)
    d = sub.add_parser("download", help="download a listed checkpoint and import it",
                       description="Download a checkpoint listed by `harken models`, verify its "
                                   "SHA-256 and convert it into a harken model that "
                                   "`--model NAME` then finds.")
    d.add_argument("name", help="a name from `harken models`")
    d.add_argument("--dir", type=Path, default=None,
                   help="models folder (default: $HARKEN_CACHE/models or ~/.cache/harken/models)")
    d.add_argument("--sha256", default=None, help="the expected SHA-256 of the file (nemo)")
    d.add_argument("--allow-http", action="store_true",
                   help="allow plain http URLs and redirects (default: https only)")
    d.add_argument("--force", action="store_true", help="download again even if present")
    d.add_argument("--keep-source", action="store_true",
                   help="keep the downloaded .nemo / Hugging Face files after the import")
    d.add_argument("--catalogue", type=Path, default=None, help=argparse.SUPPRESS)
    d.set_defaults(func=_run_download)


def _run_models(args: argparse.Namespace) -> int:
    entries = load_catalogue(args.catalogue)
    folder = args.dir if args.dir is not None else models_dir()
    if args.json:
        print(json.dumps([{**entry.__dict__, "files": [list(f) for f in entry.files],
                           "status": model_status(entry.name, folder)}
                          for entry in entries.values()], indent=2))
        return 0
    rows = [("NAME", "KIND", "PARAMS", "SIZE", "LICENCE", "WER clean/other", "STATUS")]
    for e in entries.values():
        size = f"{e.size_mb:.0f} MB" if e.size_mb else "-"
        wer = "/".join("-" if e.wer.get(k) is None else f"{e.wer[k]:g}"
                       for k in ("test-clean", "test-other"))
        rows.append((e.name, e.kind, e.params or "-", size, e.license,
                     "-" if wer == "-/-" else wer, model_status(e.name, folder) or "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
        entry = entries.get(row[0])
        if entry is not None:
            print(f"    {entry.url}")
    print(f"\nWER: LibriSpeech test-clean/test-other (%), as published by each model's authors "
          f"(sources: harken models --json); not measured by harken.\nModels folder: {folder}")
    return 0


def _run_download(args: argparse.Namespace) -> int:
    folder = args.dir if args.dir is not None else models_dir()
    path = download(args.name, folder, catalogue=args.catalogue, sha256=args.sha256,
                    allow_http=args.allow_http, force=args.force,
                    keep_source=args.keep_source, progress=_ProgressLine())
    print(f"{args.name}: ready at {path}")
    if downloaded_model_path(args.name) == path:
        print(f"use it with: harken transcribe --model {args.name} AUDIO")
    else:
        print(f"use it with: harken transcribe --model {path} AUDIO")
    return 0


class _ProgressLine:
    """Download progress on stderr, at most a few times a second."""

    def __init__(self) -> None:
        self.last = 0.0

    def __call__(self, file: str, done: int, total: int | None) -> None:
        now = time.monotonic()
        finished = total is not None and done >= total
        if now - self.last < 0.25 and not finished:
            return
        self.last = now
        of = f" / {total / 1e6:.1f} MB ({100 * done / total:.0f}%)" if total else " MB"
        end = "\n" if finished else ""
        print(f"\r{file}: {done / 1e6:.1f}{of}", end=end, file=sys.stderr, flush=True)

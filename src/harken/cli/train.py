"""`harken train`: training from a TOML config."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any



def register(sub: Any) -> None:
    p = sub.add_parser("train", help="train a CTC model",
                       description="Train a CTC model from a TOML config; --set overrides keys "
                                   "(e.g. --set optim.lr=3e-4 --set run.out_dir=runs/a).")
    p.add_argument("config", nargs="?", type=Path, help="TOML training config")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (overrides run.device)")
    p.set_defaults(func=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    # imported when the command runs: it loads torch, `harken --help` does not
    from harken.training.config import load_config
    from harken.training.loop import train

    overrides = list(args.overrides)
    if args.device:
        overrides.append(f"run.device={json.dumps(args.device)}")
    logging.getLogger("harken").setLevel(logging.INFO)
    config = load_config(args.config, overrides)
    final = train(config, resume=args.resume)
    print(f"model written to {final}")
    return 0

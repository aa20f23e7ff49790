#!/usr/bin/env python
"""Fuzz harken's input parsers with a large budget: the property tests of
tests/test_properties.py (audio decoding of arbitrary and mutated bytes, manifest parsing,
normalisation and tokenizer round trips), run with thousands of examples each.

    python scripts/fuzz.py                 # 2000 examples per property
    python scripts/fuzz.py -n 20000 -k audio

A failure prints the smallest input found and the command to replay it; hypothesis keeps it in
.hypothesis/ so the next run tries it first.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--examples", type=int, default=2000, help="examples per property")
    parser.add_argument("-k", default=None, help="only properties whose name matches (pytest -k)")
    parser.add_argument("--seed", default=None, help="hypothesis seed (default: random)")
    args = parser.parse_args()
    env = {**os.environ, "HARKEN_FUZZ_EXAMPLES": str(args.examples), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "pytest", str(ROOT / "tests" / "test_properties.py"),
               "-q", "-p", "no:cacheprovider", "--hypothesis-show-statistics"]
    if args.k:
        command += ["-k", args.k]
    if args.seed is not None:
        command += ["--hypothesis-seed", args.seed]
    return subprocess.call(command, cwd=ROOT, env=env)


if __name__ == "__main__":
    sys.exit(main())

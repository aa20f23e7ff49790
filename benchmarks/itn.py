"""Inverse text normalisation on numbers from real written text, against NeMo when available.

Tokens written with digits in the books of the training text (the inverse normaliser learns
nothing from them, so every book is used), with one word of context on each side (plain ASCII
words, so that only the number can differ), at most --per-kind of each kind, are spelled out with harken's normaliser (`normalize_english`) and inverted again.
An item is right when the inverted text equals the written one (ignoring case, and a final
period after an abbreviation such as "p.m."); "digits right" asks only that the same numbers
come back (the digit strings, in order), which does not penalise a different house style
("3:30 p.m." vs "03:30 p.m.", "50 %"). Items are grouped by kind (money, time, year, ...).

With --nemo-python (the python of a venv with nemo_text_processing installed), NeMo's English
inverse normaliser runs on the same spoken items in the same run, as the peer.

Usage: python benchmarks/itn.py [--text FILE] [--per-kind N] [--nemo-python PATH]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import time
from collections import Counter, defaultdict

from harken.written.itn import inverse_normalize
from harken.written.punctuator import read_groups
from harken.text import normalize_english

DEFAULT_TEXT = "../shared/text/punctuated.txt.gz"
_EDGE = re.compile(r"^[^\w$£€¥]+|[^\w%]+$")
_DIGITS = re.compile(r"\d+")
_NUMBER_TOKEN = re.compile(r"^[$£€¥]?\d[\d,.:]*(st|nd|rd|th|s|%)?$")
KINDS = (("money", re.compile(r"[$£€¥]\d")), ("percent", re.compile(r"\d\s?%")),
         ("time", re.compile(r"\d:\d\d")), ("ordinal", re.compile(r"\d(st|nd|rd|th)\b")),
         ("decade", re.compile(r"\d0s\b")), ("decimal", re.compile(r"\d\.\d")),
         ("year", re.compile(r"(?<![\d,])1[1-9]\d\d(?![\d,])|(?<![\d,])20\d\d(?![\d,])")),
         ("cardinal", re.compile(r"\d")))
NEMO_SCRIPT = """
import json, sys, time
from nemo_text_processing.inverse_text_normalization.inverse_normalize import InverseNormalizer
built = time.perf_counter()
itn = InverseNormalizer(lang="en", cache_dir=sys.argv[1])
ready = time.perf_counter()
items = json.load(sys.stdin)
out = [itn.inverse_normalize(s, verbose=False) for s in items]
json.dump({"out": out, "build_s": ready - built, "run_s": time.perf_counter() - ready},
          sys.stdout)
"""


def items_from(path: str, per_kind: int) -> list[tuple[str, str]]:
    """(kind, written phrase) for digit tokens of the books, with a word each side."""
    found: list[tuple[str, str]] = []
    counts: Counter = Counter()
    for _, sentence in read_groups([path]):
        if not any(c.isdigit() for c in sentence):
            continue
        tokens = sentence.split()
        for i, token in enumerate(tokens):
            if _NUMBER_TOKEN.match(_EDGE.sub("", token)):
                context = [_EDGE.sub("", t) for t in tokens[max(0, i - 1): i + 2]]
                if not all(t.isascii() and (t.isalpha() or t == _EDGE.sub("", token))
                           for t in context):  # plain words around the number only
                    continue
                phrase = " ".join(" ".join(context).split())
                kind = next(k for k, rx in KINDS if rx.search(token))
                if normalize_english(phrase) and counts[kind] < per_kind:
                    counts[kind] += 1
                    found.append((kind, phrase))
    return found


def same(written: str, hypothesis: str) -> bool:
    def canon(text: str) -> str:
        return " ".join(_EDGE.sub("", t) for t in text.lower().replace("p.m", "pm")
                        .replace("a.m", "am").split())
    return canon(written) == canon(hypothesis)


def report(name: str, items: list[tuple[str, str]], outputs: list[str]) -> dict[str, float]:
    right, digits = Counter(), Counter()
    total = Counter(kind for kind, _ in items)
    for (kind, written), out in zip(items, outputs):
        right[kind] += same(written, out)
        digits[kind] += _DIGITS.findall(written) == _DIGITS.findall(out)
    print(f"\n{name}")
    print("| kind | items | exact % | digits right % |")
    print("|---|---:|---:|---:|")
    for kind, _ in KINDS:
        if total[kind]:
            print(f"| {kind} | {total[kind]} | {100 * right[kind] / total[kind]:.1f} | "
                  f"{100 * digits[kind] / total[kind]:.1f} |")
    n = len(items)
    exact, digit = sum(right.values()) / n, sum(digits.values()) / n
    print(f"| all | {n} | {100 * exact:.1f} | {100 * digit:.1f} |")
    return {"exact": exact, "digits": digit}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--text", default=DEFAULT_TEXT)
    parser.add_argument("--per-kind", type=int, default=500)
    parser.add_argument("--nemo-python", default=None)
    parser.add_argument("--nemo-cache", default="exp/nemo_cache")
    parser.add_argument("--show-errors", type=int, default=0)
    args = parser.parse_args()
    items = items_from(args.text, args.per_kind)
    spoken = [normalize_english(phrase) for _, phrase in items]
    began = time.perf_counter()
    ours = [inverse_normalize(s) for s in spoken]
    seconds = time.perf_counter() - began
    print(f"{len(items)} items from the books; kinds: "
          + ", ".join(f"{k} {c}" for k, c in Counter(k for k, _ in items).most_common()))
    harken = report("harken.written.itn", items, ours)
    print(f"harken.written.itn: {len(items) / seconds:.0f} items/s")
    errors = defaultdict(list)
    for (kind, written), s, out in zip(items, spoken, ours):
        if not same(written, out):
            errors[kind].append((written, s, out))
    for kind, rows in errors.items():
        for written, s, out in rows[: args.show_errors]:
            print(f"  {kind}: {written!r} <- {s!r} -> {out!r}")
    if args.nemo_python:
        run = subprocess.run([args.nemo_python, "-c", NEMO_SCRIPT, args.nemo_cache],
                             input=json.dumps(spoken), capture_output=True, text=True, check=True)
        nemo = json.loads(run.stdout.strip().splitlines()[-1])
        peer = report("NeMo inverse normaliser (nemo_text_processing)", items, nemo["out"])
        rate = len(items) / nemo["run_s"]
        print(f"NeMo: {rate:.1f} items/s after {nemo['build_s']:.1f} s loading its grammars")
        print(f"\nratios harken/NeMo: exact {harken['exact'] / max(peer['exact'], 1e-9):.2f}, "
              f"digits {harken['digits'] / max(peer['digits'], 1e-9):.2f}, "
              f"speed {len(items) / seconds / rate:.0f}x")


if __name__ == "__main__":
    main()

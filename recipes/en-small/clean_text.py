"""Drop from a text corpus every line that shares a word 6-gram (or, for short lines, the whole
line) with a dev or test transcript, so neither TTS prompts nor the LM have seen test speech.

Usage: python recipes/en-small/clean_text.py CORPUS.txt.gz HELDOUT.txt OUT.txt.gz
"""

from __future__ import annotations

import argparse
import gzip
from pathlib import Path

from harken.text import normalize_text, read_texts

N = 6


def shingles(words: list[str]) -> set[tuple[str, ...]]:
    if len(words) < N:
        return {tuple(words)}
    return {tuple(words[i:i + N]) for i in range(len(words) - N + 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", type=Path)
    parser.add_argument("heldout", type=Path)
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    held_lines = {normalize_text(t) for t in args.heldout.read_text().splitlines() if t.strip()}
    held = set().union(*(shingles(t.split()) for t in held_lines))
    kept = dropped = 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    partial = args.out.with_name(args.out.name + ".partial")
    with gzip.open(partial, "wt", encoding="utf-8") as handle:
        for line in read_texts(args.corpus):
            words = line.split()
            grams = shingles(words)
            if line in held_lines or grams & held:
                dropped += 1
                continue
            handle.write(line + "\n")
            kept += 1
    partial.replace(args.out)
    print(f"{args.out}: kept {kept} lines, dropped {dropped} that overlap a dev or test transcript")


if __name__ == "__main__":
    main()

"""Case- and punctuation-sensitive WER of written transcripts, before and after the punctuator.

Transcribes a manifest whose utterances carry the written reference (`text_raw`, as LJ
Speech's do) with a model (default: the bundled one) once, then scores the same recognised
words written four ways against `text_raw`, counting case and punctuation marks (each of
. , ? ! ; : is a token of its own): as recognised (lowercase, no marks), the rule baseline
(first word capitalised, final period), the punctuator without number writing, and the
punctuator with inverse text normalisation (what harken outputs). The same is done for the
normalised reference transcripts (`text`), which shows the writing alone, without recognition
errors. The usual WER (both sides normalised) is printed too: writing does not change it.

Usage: python benchmarks/written_wer.py MANIFEST [--model M] [--punctuator FILE] [--hyps FILE]
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

import torch

from harken.training.data import read_manifest
from harken.training.evaluate import error_rates
from harken.model import load_model
from harken.written.punctuator import load_punctuator, rule_baseline, written_forms
from harken.text import normalize_text
from harken.written import written_words

_DROP = re.compile(r"[\"\u201c\u201d()\[\]]|--+|\u2014|(?<!\w)'|'(?!\w)")
_TOKENS = re.compile(r"[^\s.,?!;:]+(?:[.,:][^\s.,?!;:]+)*|[.,?!;:]")


def written_tokens(text: str) -> str:
    """Words and marks as separate tokens, case kept ("Volume 2." -> "Volume 2 .")."""
    return " ".join(_TOKENS.findall(_DROP.sub(" ", text)))


def wer(references: list[str], hypotheses: list[str]) -> float:
    return 100 * float(error_rates(references, hypotheses)["wer"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("manifest")
    parser.add_argument("--model", default=None)
    parser.add_argument("--punctuator", default=None, help="default: the model's own")
    parser.add_argument("--hyps", type=Path, default=None,
                        help="JSON cache of the recognised text (made when missing)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    utterances = read_manifest(args.manifest)
    raw_refs = [u.extra.get("text_raw") for u in utterances]
    if not all(raw_refs):
        raise SystemExit(f"{args.manifest}: every utterance needs a written text_raw")
    model = load_model(args.model)
    punctuator = load_punctuator(args.punctuator) if args.punctuator else model.punctuator
    if punctuator is None:
        raise SystemExit("the model ships no punctuator; pass --punctuator")
    if args.hyps is not None and args.hyps.is_file():
        recognised = json.loads(args.hyps.read_text())
    else:
        began = time.perf_counter()
        recognised = [t.text for t in model.transcribe_batch([u.audio for u in utterances],
                                                             written=False)]
        print(f"recognised {len(utterances)} utterances in {time.perf_counter() - began:.0f} s")
        if args.hyps is not None:
            args.hyps.write_text(json.dumps(recognised))
    references = [written_tokens(r) for r in raw_refs]
    print(f"{len(utterances)} utterances of {args.manifest}; usual WER (normalised both sides): "
          f"{wer([normalize_text(r) for r in raw_refs], recognised):.2f}%")
    print("\n| words | as recognised | rule baseline | punctuator | punctuator + numbers |")
    print("|---|---:|---:|---:|---:|")
    for name, texts in (("recognised", recognised),
                        ("reference transcripts (`text`)", [u.text for u in utterances])):
        spoken = [t.split() for t in texts]
        baseline = [" ".join(written_forms(w, rule_baseline(w))) for w in spoken]
        punctuated = [" ".join(punctuator.restore(w)) if w else "" for w in spoken]
        began = time.perf_counter()
        full = [" ".join(f for f in written_words(w, punctuator) if f) for w in spoken]
        seconds = time.perf_counter() - began
        scores = [wer(references, [written_tokens(t) for t in texts])
                  for texts in (texts, baseline, punctuated, full)]
        print(f"| {name} | " + " | ".join(f"{s:.2f}%" for s in scores) + " |")
    words = sum(len(w) for w in spoken)
    print(f"\nwriting speed: {words / seconds:.0f} words/s on one thread")
    for ref, hyp in list(zip(raw_refs, full))[:5]:
        print(f"  ref: {ref}\n  out: {hyp}")


if __name__ == "__main__":
    main()

"""Punctuation and casing restoration on held-out books: a punctuator against the rule baseline.

Both systems read the same passages of 1-3 consecutive sentences from the test books of the
training text (the groups `harken.written.punctuator.split_of` holds out), normalised as a recogniser
outputs them. The rule baseline capitalises the first word and ends the passage with a period.
Prints per-class precision, recall and F1, casing accuracy and the F1 of "starts with a
capital", on all passages and on the quoted speech among them (sentences that end with a
closing quotation mark: dialogue inside the books, where questions and exclamations are far
more common), and the punctuator's speed in words per second. The punctuator is scored with
the rules it is used with (a capital after each sentence end, a sentence end at the end).

Usage: python benchmarks/punctuation.py [--text FILE] [--punctuator FILE] [--passages N]
"""

from __future__ import annotations

import argparse
import time

import torch

from harken.written.punctuator import PUNCTUATION, load_punctuator, rule_baseline, read_groups, split_of, label_sentence
from harken.training.punctuator import TagScores, evaluate_stream, load_training_text, passages, LabelledText
from harken.text import TextNormalizer

DEFAULT_TEXT = "../shared/text/punctuated.txt.gz"
QUOTES = ('"', "\u201d")
SPOKEN_WORDS_PER_SECOND = 2.5  # conversational speech: about 150 words a minute


def quoted_speech(path: str, normalize, limit: int) -> LabelledText:
    """Test-book sentences that end with a closing quotation mark, one passage each."""
    stream = LabelledText()
    for group, sentence in read_groups([path]):
        if split_of(group) == "test" and sentence.rstrip().endswith(QUOTES):
            stream.add(label_sentence(sentence, normalize))
            if len(stream.starts) >= limit:
                break
    stream.freeze()
    return stream


def table(name: str, scores: dict[str, TagScores]) -> None:
    print(f"\n{name}")
    print(f"| mark | support | " + " | ".join(f"{s} P / R / F1" for s in scores) + " |")
    print("|---|---:|" + "---|" * len(scores))
    first = next(iter(scores.values()))
    for mark in PUNCTUATION[1:]:
        support = first.punctuation()[mark]["support"]
        cells = []
        for s in scores.values():
            row = s.punctuation()[mark]
            cells.append(f"{row['precision']:.3f} / {row['recall']:.3f} / {row['f1']:.3f}")
        print(f"| `{mark}` | {support} | " + " | ".join(cells) + " |")
    print("| casing accuracy | | " + " | ".join(f"{s.casing_accuracy():.4f}"
                                              for s in scores.values()) + " |")
    print("| capitalised F1 | | " + " | ".join(f"{s.capitalised_f1():.4f}"
                                             for s in scores.values()) + " |")
    print(f"({first.words} words)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--text", default=DEFAULT_TEXT)
    parser.add_argument("--punctuator", default=None,
                        help="punctuator file (default: the bundled model's)")
    parser.add_argument("--passages", type=int, default=3000)
    parser.add_argument("--quotes", type=int, default=2000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.punctuator:
        punctuator = load_punctuator(args.punctuator)
    else:
        from harken.model import load_model

        punctuator = load_model().punctuator
    normalize = TextNormalizer(punctuator.config.language)
    test = load_training_text([args.text], normalize, ("test",))["test"]
    spans = passages(test, args.passages, seed=1)
    began = time.perf_counter()
    model_scores = evaluate_stream(punctuator.tags, test, spans)
    seconds = time.perf_counter() - began
    baseline = evaluate_stream(rule_baseline, test, spans)
    print(f"held-out books: {len(set(g for g, _ in read_groups([args.text]) if split_of(g) == 'test'))} "
          f"books, {len(spans)} passages of 1-3 sentences")
    table("held-out books", {"rule baseline": baseline, "punctuator": model_scores})
    quotes = quoted_speech(args.text, normalize, args.quotes)
    quote_spans = list(zip(quotes.starts, quotes.ends))
    table("quoted speech in held-out books (dialogue)",
          {"rule baseline": evaluate_stream(rule_baseline, quotes, quote_spans),
           "punctuator": evaluate_stream(punctuator.tags, quotes, quote_spans)})
    rate = model_scores.words / seconds
    print(f"\nspeed: {rate:.0f} words/s on one thread, passage by passage "
          f"({rate / SPOKEN_WORDS_PER_SECOND:.0f}x real time at "
          f"{SPOKEN_WORDS_PER_SECOND} spoken words/s)")


if __name__ == "__main__":
    main()

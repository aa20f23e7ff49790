"""Beam search speed and accuracy: harken's decoder against pyctcdecode.

Both decode the same emissions with the same beam width, the same KenLM word LM and the same
alpha/beta (both apply alpha to natural-log LM probabilities and add beta per word). Prints,
for each decoder, the time per second of audio and the WER, and harken's speed ratio at the
same beam width and at equal or better WER (harken's fastest smaller beam that is at least as
accurate).

The emissions are synthetic but shaped like a character CTC model's: held-out sentences of
../shared/text (or generated text), each character one or two frames at 25 frames/s with
blanks between, Gaussian noise on the logits and, now and then, a confusable letter nearly as
probable as the right one. The LM is a word 3-gram built by `harken.decoding.lm.build_lm` from other
sentences of the same text.

    pip install pyctcdecode            # for the benchmark only
    python benchmarks/decoder_speed.py [--sentences 200] [--beam-width 32] [--lm LM]
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import random
import string
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from harken.decoding.options import DecodeOptions
from harken.decoding.ctc_beam import get_decoder
from harken.decoding.greedy import greedy_decode
from harken.training.evaluate import error_rates
from harken.decoding.lm import build_lm, lm_vocabulary
from harken.text import CharTokenizer

SHARED_TEXT = Path(__file__).resolve().parents[2] / "shared" / "text" / "corpus.txt.gz"
FRAME_SECONDS = 0.04


def load_text(lm_words: int, sentences: int, seed: int) -> tuple[list[str], list[str]]:
    """(LM training sentences, test sentences): disjoint, spread over the whole corpus."""
    if SHARED_TEXT.is_file():
        with gzip.open(SHARED_TEXT, "rt", encoding="utf-8") as lines:
            sample = [line.strip() for line in itertools.islice(lines, 0, None, 10)]
    else:
        print(f"{SHARED_TEXT} not found: using generated text", file=sys.stderr)
        rng = random.Random(seed)
        vocabulary = ["".join(rng.choices(string.ascii_lowercase, k=rng.randint(1, 9)))
                      for _ in range(5000)]
        weights = [1 / (i + 1) for i in range(len(vocabulary))]
        sample = [" ".join(rng.choices(vocabulary, weights, k=rng.randint(4, 20)))
                  for _ in range(lm_words // 6)]
    rng = random.Random(seed)
    rng.shuffle(sample)
    test = [s for s in sample[:sentences * 3] if 5 <= len(s.split()) <= 25][:sentences]
    train, count = [], 0
    for line in sample[sentences * 3:]:
        train.append(line)
        count += len(line.split())
        if count >= lm_words:
            break
    return train, test


def synthetic_emissions(tokenizer: CharTokenizer, text: str, rng: np.random.Generator,
                        noise: float, confusion: float) -> np.ndarray:
    """(time, vocab) log-probabilities of `text` as a noisy character CTC model would give."""
    frames: list[int] = []
    for token in tokenizer.encode(text):
        frames += [token] * int(rng.integers(1, 3)) + [0] * int(rng.integers(0, 2))
    logits = rng.normal(0.0, noise, (len(frames), tokenizer.vocab_size))
    logits[np.arange(len(frames)), frames] += 6.0
    letters = np.arange(2, tokenizer.vocab_size)
    for t, token in enumerate(frames):
        if token > 1 and rng.random() < confusion:  # a confusable letter, nearly as likely
            logits[t, rng.choice(letters)] += 6.0 + rng.normal(0.0, 0.7)
    logits -= logits.max(axis=1, keepdims=True)
    return (logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sentences", type=int, default=200)
    parser.add_argument("--beam-width", type=int, default=32)
    parser.add_argument("--lm", help="word LM to use (default: built from the text)")
    parser.add_argument("--lm-words", type=int, default=2_000_000)
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--beta", type=float, default=1.0)
    parser.add_argument("--noise", type=float, default=1.0)
    parser.add_argument("--confusion", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=2,
                        help="time each decoder this many times and keep the fastest run")
    args = parser.parse_args()

    tokenizer = CharTokenizer()
    train, test = load_text(args.lm_words, args.sentences, args.seed)
    rng = np.random.default_rng(args.seed)
    emissions = [synthetic_emissions(tokenizer, s, rng, args.noise, args.confusion) for s in test]
    audio_seconds = sum(len(e) for e in emissions) * FRAME_SECONDS

    with tempfile.TemporaryDirectory() as tmp:
        lm = args.lm
        if lm is None:
            start = time.perf_counter()
            files = build_lm(train, 3, Path(tmp) / "words", normalize=False)
            lm = str(files.best)
            print(f"LM: 3-gram of {sum(len(s.split()) for s in train):,} words "
                  f"({files.best.name}), built in {time.perf_counter() - start:.1f} s")
        print(f"{len(test)} utterances, {audio_seconds / 60:.1f} min of audio at "
              f"{1 / FRAME_SECONDS:.0f} frames/s; beam width {args.beam_width}, "
              f"alpha {args.alpha}, beta {args.beta}\n")
        def run(decode) -> tuple[float, float]:
            seconds = []
            for _ in range(args.repeat):
                start = time.perf_counter()
                hypotheses = [decode(e) for e in emissions]
                seconds.append(time.perf_counter() - start)
            return min(seconds), float(error_rates(test, hypotheses)["wer"])

        rows = [("greedy", *run(lambda e: greedy_decode(e, tokenizer, FRAME_SECONDS).text))]

        for width in sorted({args.beam_width, max(1, args.beam_width // 4),
                             max(1, args.beam_width // 8)}, reverse=True):
            decoder = get_decoder(tokenizer, DecodeOptions(  # loads the LM, builds the lexicon
                beam_width=width, lm=lm, lm_weight=args.alpha, word_score=args.beta))
            name = "harken" if width == args.beam_width else f"harken, beam {width}"
            rows.append((name, *run(lambda e, d=decoder: d.decode(e, FRAME_SECONDS).text)))
        hot = get_decoder(tokenizer, DecodeOptions(
            beam_width=args.beam_width, lm=lm, lm_weight=args.alpha, word_score=args.beta,
            hotwords={"kubernetes": 5.0, "harken": 5.0}))
        rows.append(("harken + 2 hotwords", *run(lambda e: hot.decode(e, FRAME_SECONDS).text)))

        try:
            from pyctcdecode import build_ctcdecoder
        except ImportError:
            print("pyctcdecode is not installed (pip install pyctcdecode): harken only\n")
        else:
            labels = ["" if t == "<blank>" else t for t in tokenizer.tokens]
            peer = build_ctcdecoder(labels, lm, unigrams=lm_vocabulary(lm), alpha=args.alpha,
                                    beta=args.beta)
            peer.decode(emissions[0], beam_width=args.beam_width)  # loads its caches
            rows.append(("pyctcdecode",
                         *run(lambda e: peer.decode(e, beam_width=args.beam_width))))

    print(f"{'decoder':<22}{'s per audio s':>15}{'WER %':>9}")
    for name, seconds, wer in rows:
        print(f"{name:<22}{seconds / audio_seconds:>15.5f}{100 * wer:>9.2f}")
    timing = {name: (seconds, wer) for name, seconds, wer in rows}
    if "pyctcdecode" in timing:
        peer_seconds, peer_wer = timing["pyctcdecode"]
        print(f"\nsame beam width ({args.beam_width}): harken is "
              f"{peer_seconds / timing['harken'][0]:.1f}x faster than pyctcdecode")
        matching = [(seconds, name) for name, (seconds, wer) in timing.items()
                    if name.startswith("harken") and "hotwords" not in name and wer <= peer_wer]
        if matching:
            seconds, name = min(matching)
            print(f"equal or better WER: {name} is {peer_seconds / seconds:.1f}x faster than "
                  f"pyctcdecode (beam {args.beam_width})")

if __name__ == "__main__":
    main()

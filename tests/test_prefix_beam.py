"""CTC prefix beam search without an LM: it sums over alignments, checked against brute force."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

pytest.importorskip("flashlight.lib.text")
torch = pytest.importorskip("torch")

from harken.decoding.options import DecodeOptions, resolve_options
from harken.decoding.greedy import collapse_path
from harken.decoding.ctc_beam import get_decoder
from harken.text import CharTokenizer  # noqa: E402

TOKENS = CharTokenizer("ab ")  # blank, a, b, space: V = 4
FRAME = 0.04


def labelling_log_probs(log_probs: np.ndarray, labellings: list[tuple[int, ...]]) -> np.ndarray:
    """log P_ctc(labelling | log_probs) of each labelling (sum over all its alignments)."""
    count = len(labellings)
    lp = torch.from_numpy(log_probs).double()[:, None, :].expand(-1, count, -1)
    longest = max(1, max(len(l) for l in labellings))
    targets = torch.zeros(count, longest, dtype=torch.long)
    for i, labels in enumerate(labellings):
        targets[i, :len(labels)] = torch.tensor(labels, dtype=torch.long)
    loss = torch.nn.functional.ctc_loss(
        lp, targets, torch.full((count,), len(log_probs)),
        torch.tensor([len(l) for l in labellings]), blank=0, reduction="none",
        zero_infinity=False)
    return -loss.numpy()


def all_labellings(frames: int, vocab: int) -> list[tuple[int, ...]]:
    return [labels for length in range(frames + 1)
            for labels in itertools.product(range(1, vocab), repeat=length)]


def random_log_probs(rng: np.random.Generator, frames: int, vocab: int = 4) -> np.ndarray:
    x = rng.normal(size=(frames, vocab)) * 2.0
    return (x - np.logaddexp.reduce(x, axis=1, keepdims=True)).astype(np.float32)


def words(labels: tuple[int, ...] | list[int]) -> str:
    return " ".join(w for w, _ in TOKENS.split_words(list(labels)))


def test_wide_beam_finds_the_most_probable_labelling():
    """With a beam wide enough to keep every prefix, the result is the labelling of highest
    CTC probability among all of them, and its score is that probability."""
    rng = np.random.default_rng(7)
    decoder = get_decoder(TOKENS, DecodeOptions(beam_width=2200, token_beam=None,
                                                beam_threshold=1000.0))
    better_than_greedy = 0
    for _ in range(40):
        frames = int(rng.integers(1, 7))
        lp = random_log_probs(rng, frames)
        labellings = all_labellings(frames, 4)
        scores = labelling_log_probs(lp, labellings)
        best = int(np.argmax(scores))
        result = decoder.decode(lp, FRAME)
        assert result.score == pytest.approx(scores[best], abs=1e-4)
        assert result.text == words(labellings[best])
        greedy = tuple(collapse_path(lp.argmax(axis=1))[0])
        greedy_score = scores[labellings.index(greedy)]
        assert result.score >= greedy_score - 1e-5
        better_than_greedy += result.score > greedy_score + 1e-3
    assert better_than_greedy >= 5  # Viterbi decoding (the best single path) would give 0


def test_default_beam_is_never_below_greedy():
    """The default beam (width 32, no LM): the CTC probability of its text (its most probable
    labelling) is at least that of greedy's text, and above it where another is better."""
    rng = np.random.default_rng(11)
    decoder = get_decoder(TOKENS, DecodeOptions())
    above = 0
    for _ in range(60):
        frames = int(rng.integers(3, 7))
        lp = random_log_probs(rng, frames)
        labellings = all_labellings(frames, 4)
        scores = labelling_log_probs(lp, labellings)
        text_score: dict[str, float] = {}
        for labels, score in zip(labellings, scores):
            text = words(labels)
            text_score[text] = max(text_score.get(text, -np.inf), float(score))
        result = decoder.decode(lp, FRAME)
        greedy = words(collapse_path(lp.argmax(axis=1))[0])
        assert text_score[result.text] >= text_score[greedy] - 1e-5
        above += text_score[result.text] > text_score[greedy] + 1e-3
    assert above >= 5


def test_no_word_bonus_without_an_lm():
    """A model's stored word score belongs to its LM: without the LM, none applies unless
    asked for."""
    class Config:
        decoding = {"lm": "lm.bin", "lm_weight": 0.7, "word_score": 1.5, "beam_width": 32}

    class Model:
        config = Config()
        path = None

    options = resolve_options(Model(), None, {"lm": None})
    assert options is not None and options.lm is None
    assert options.word_score is None and options.lm_weight is None
    assert get_decoder(TOKENS, options).word_score == 0.0
    asked = resolve_options(Model(), None, {"lm": None, "word_score": 0.5})
    assert asked is not None and asked.word_score == 0.5


def test_command_line_no_lm_resolves_without_a_bonus():
    """`--no-lm` (CLI and `harken serve`) resolves through the same rule as the Python API."""
    import argparse

    from harken.cli.common import add_decode_args, decode_overrides

    class Config:
        decoding = {"lm": "lm.bin", "lm_weight": 0.7, "word_score": 1.0, "beam_width": 32}

    class Model:
        config = Config()
        path = None

    parser = argparse.ArgumentParser()
    add_decode_args(parser)
    overrides = decode_overrides(parser.parse_args(["--beam-width", "16", "--no-lm"]))
    options = resolve_options(Model(), None, overrides)
    assert options is not None
    assert (options.beam_width, options.lm, options.word_score) == (16, None, None)
    overrides = decode_overrides(parser.parse_args(["--no-lm", "--beta", "2"]))
    assert resolve_options(Model(), None, overrides).word_score == 2.0

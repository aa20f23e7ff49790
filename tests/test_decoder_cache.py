"""Decoders that differ only in hotwords share the LM (never reloaded) and, for hotwords in the
lexicon, the lexicon trie; their results equal decoders built from scratch."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

pytest.importorskip("flashlight.lib.text")

from harken.decoding import ctc_beam as decoding  # noqa: E402  (its decoder cache)
from harken.decoding.ctc_beam import Decoder  # noqa: E402
from harken.decoding.options import DecodeOptions
from harken.decoding.ctc_beam import get_decoder
from harken.decoding.lm import build_lm  # noqa: E402
from harken.text import CharTokenizer  # noqa: E402

CHARS = CharTokenizer()
FRAME = 0.04
SENTENCES = ["the cat sat on the mat", "a dog ate the fish", "the captain read the map",
             "she read the letter again", "he sat by the fire at night"] * 4


@pytest.fixture(scope="module")
def word_lm(tmp_path_factory: pytest.TempPathFactory) -> str:
    folder = tmp_path_factory.mktemp("lm")
    return str(build_lm(SENTENCES, 3, folder / "words", estimator="builtin").arpa)


def noisy(text: str, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    frames = []
    for token in CHARS.encode(text):
        frames += [token, token, 0]
    x = rng.normal(size=(len(frames), len(CHARS.tokens))) * 1.5
    x[np.arange(len(frames)), frames] += 4.0
    return (x - np.logaddexp.reduce(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("lm_weight", [0.5, 0.0])
def test_hotword_decoders_share_the_lm_and_equal_fresh_ones(word_lm: str, lm_weight: float):
    base_options = DecodeOptions(lm=word_lm, lm_weight=lm_weight, word_score=0.5)
    base = get_decoder(CHARS, base_options)
    inputs = [noisy("the captain read the map", s) for s in range(3)]
    inputs.append(noisy("the harken read the map", 7))
    for hotwords in ({"captain": 3.0}, {"read the map": 4.0}, {"harken": 6.0},
                     {"harken": 6.0, "fire": 2.0}):
        options = dataclasses.replace(base_options, hotwords=hotwords)
        shared = get_decoder(CHARS, options)
        assert shared._lm is base._lm  # the LM is never reloaded for new hotwords
        in_lexicon = all(w in base._labels for p in hotwords for w in p.split())
        assert (shared._trie is base._trie) == (in_lexicon and lm_weight > 0)
        fresh = Decoder(CHARS, options)
        for lp in inputs:
            a, b = shared.decode(lp, FRAME), fresh.decode(lp, FRAME)
            assert a.text == b.text and a.score == pytest.approx(b.score, abs=1e-4)
    assert "harken" in get_decoder(CHARS, dataclasses.replace(
        base_options, hotwords={"harken": 8.0})).decode(inputs[-1], FRAME).text.split()
    assert "harken" not in base.decode(inputs[-1], FRAME).text.split()


def test_few_lexicon_tries_are_cached(word_lm: str):
    base_options = DecodeOptions(lm=word_lm)
    for i in range(6):  # each has a word outside the lexicon: a trie of its own
        get_decoder(CHARS, dataclasses.replace(base_options, hotwords={f"zork{'a' * i}": 2.0}))
    owners = [d for d in decoding._DECODERS.values() if d.owns_trie]
    assert len(owners) <= decoding._TRIE_CACHE_SIZE
    assert len(decoding._DECODERS) <= decoding._DECODER_CACHE_SIZE

"""Beam search: LM fusion, hotwords, vocabulary restriction, N-best, streaming, timestamps."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Sequence

import numpy as np
import pytest

pytest.importorskip("flashlight.lib.text")

from harken.decoding import ctc_beam as beam  # noqa: E402
from harken.decoding.options import DecodeOptions, resolve_options
from harken.decoding.ctc_beam import beam_decode, get_decoder
from harken.decoding.greedy import greedy_decode
from harken.errors import ConfigError  # noqa: E402
from harken.decoding.lm import build_lm, write_lm_info  # noqa: E402
from harken.text import CharTokenizer, train_sentencepiece  # noqa: E402

FRAME = 0.04
CHARS = CharTokenizer()

# Acoustics will prefer "cat" after "the" and "bat" after "a"; this LM prefers the opposite.
FLIP_ARPA = """\\data\\
ngram 1=7
ngram 2=6

\\1-grams:
-1.0\t<unk>\t0
0\t<s>\t-0.5
-0.7\t</s>\t0
-0.8\tthe\t-0.3
-0.8\ta\t-0.3
-1.2\tcat\t-0.3
-1.2\tbat\t-0.3

\\2-grams:
-0.3\t<s> the
-0.3\t<s> a
-0.1\tthe bat
-2.5\tthe cat
-0.1\ta cat
-2.5\ta bat

\\end\\
"""

SENTENCES = [
    "the cat sat on the mat", "a dog ate the fish", "the old ship sailed at night",
    "we looked at the captain", "she read the letter again", "the fish swam in the sea",
    "a bird sang in the tree", "they walked to the old house", "the captain read the map",
    "he sat by the fire at night",
] * 3


def emissions(tokenizer: Any, frames: Sequence[dict[str, float]], floor: float = 1e-4
              ) -> np.ndarray:
    """(time, vocab) log-probabilities: each frame gives some tokens a probability, the rest
    a small floor. The floor is jittered (fixed seed): flashlight breaks exact ties between
    hypotheses by memory address, so tied scores could decode differently from run to run."""
    jitter = np.random.default_rng(0).uniform(0.5, 1.5, (len(frames), tokenizer.vocab_size))
    out = floor * jitter
    for t, frame in enumerate(frames):
        for token, p in frame.items():
            out[t, tokenizer.tokens.index(token)] = p
    out /= out.sum(axis=1, keepdims=True)
    return np.log(out).astype(np.float32)


def spell(tokens: Sequence[str], repeat: int = 1) -> list[dict[str, float]]:
    """Each token for `repeat` frames, then a blank frame."""
    frames: list[dict[str, float]] = []
    for token in tokens:
        frames += [{token: 1.0}] * repeat + [{"<blank>": 1.0}]
    return frames


def noisy(tokenizer: Any, text: str, seed: int) -> np.ndarray:
    """Peaked emissions of `text` with noise: greedy makes some mistakes."""
    rng = np.random.default_rng(seed)
    ids = tokenizer.encode(text)
    frames = []
    for i in ids:
        for _ in range(int(rng.integers(1, 3))):
            frames.append(i)
        frames += [0] * int(rng.integers(0, 3))
    logits = rng.normal(0, 1.2, (len(frames), tokenizer.vocab_size))
    logits[np.arange(len(frames)), frames] += 4.0
    logits -= logits.max(axis=1, keepdims=True)
    return (logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))).astype(np.float32)


@pytest.fixture(scope="module")
def flip_lm(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("lm") / "flip.arpa"
    path.write_text(FLIP_ARPA)
    return str(path)


@pytest.fixture(scope="module")
def word_lm(tmp_path_factory: pytest.TempPathFactory) -> str:
    folder = tmp_path_factory.mktemp("lm")
    return str(build_lm(SENTENCES, 3, folder / "words", estimator="builtin").arpa)


@pytest.fixture(scope="module")
def char_lm(tmp_path_factory: pytest.TempPathFactory) -> str:
    folder = tmp_path_factory.mktemp("lm")
    return str(build_lm(SENTENCES, 6, folder / "chars", unit="char", estimator="builtin").arpa)


@pytest.fixture(scope="module")
def pieces() -> Any:
    return train_sentencepiece(SENTENCES * 5, vocab_size=45, language=None)


def ambiguous(prefix: str, p_c: float) -> np.ndarray:
    """`prefix` then a word whose first letter is c (p_c) or b, then "at"."""
    frames = spell(prefix) + [{"c": p_c, "b": 1 - p_c}, {"<blank>": 1.0}] + spell("at")
    return emissions(CHARS, frames)


@pytest.mark.parametrize("prefix, acoustic, lm_choice", [("the ", "cat", "bat"),
                                                         ("a ", "bat", "cat")])
def test_lm_weight_flips_the_word(flip_lm: str, prefix: str, acoustic: str,
                                  lm_choice: str) -> None:
    lp = ambiguous(prefix, 0.6 if acoustic == "cat" else 0.4)
    options = DecodeOptions(lm=flip_lm, word_score=0.0, beam_width=16)
    assert greedy_decode(lp, CHARS, FRAME).text == prefix + acoustic
    decode = {alpha: beam_decode(lp, CHARS, FRAME, dataclasses.replace(options, lm_weight=alpha))
              for alpha in (0.0, 0.05, 0.5, 2.0)}
    # ln(0.6/0.4) = 0.41 of acoustic preference against 2.4 log10 = 5.5 nats of LM preference.
    assert decode[0.0].text == decode[0.05].text == prefix + acoustic
    assert decode[0.5].text == decode[2.0].text == prefix + lm_choice


def test_character_lm_in_lexicon_free_decoding(char_lm: str) -> None:
    # "the fish" with the s garbled into a z: a character LM trained on "fish" repairs it.
    frames = spell("the fi") + [{"z": 0.6, "s": 0.4}, {"<blank>": 1.0}] + spell("h")
    lp = emissions(CHARS, frames)
    assert greedy_decode(lp, CHARS, FRAME).text == "the fizh"
    assert beam_decode(lp, CHARS, FRAME, DecodeOptions(lm=char_lm, lm_weight=0.0,
                                                       word_score=0.0)).text == "the fizh"
    decoder = get_decoder(CHARS, DecodeOptions(lm=char_lm, lm_weight=1.0, word_score=0.0))
    assert not decoder.lexicon and decoder.lm_unit == "char"
    assert decoder.decode(lp, FRAME).text == "the fish"


HARKEN = spell("we looked at hark") + [{"i": 0.6, "e": 0.4}, {"<blank>": 1.0}] + spell("n")


@pytest.mark.parametrize("with_lm", [False, True])
def test_hotword_recognises_a_rare_word(word_lm: str, with_lm: bool) -> None:
    lp = emissions(CHARS, HARKEN)
    assert greedy_decode(lp, CHARS, FRAME).text == "we looked at harkin"
    base = DecodeOptions(lm=word_lm if with_lm else None, beam_width=16)
    plain = beam_decode(lp, CHARS, FRAME, base)
    other = beam_decode(lp, CHARS, FRAME, dataclasses.replace(base, hotwords={"kettle": 5.0}))
    boosted = beam_decode(lp, CHARS, FRAME, dataclasses.replace(base, hotwords={"Harken": 5.0}))
    # (the extra lexicon word adds hypotheses whose probability may merge into the best one)
    assert plain.text == other.text and plain.score == pytest.approx(other.score, abs=1e-3)
    # Without an LM the beam keeps the acoustics; the word LM (which has never seen
    # "harken" or "harkin") cannot output either.
    assert "harken" not in plain.text.split()
    assert boosted.text == "we looked at harken"
    assert [w.word for w in boosted.words] == ["we", "looked", "at", "harken"]


def test_hotword_phrase_is_boosted_only_when_complete() -> None:
    lp = emissions(CHARS, spell("we like hark") + [{"i": 0.6, "e": 0.4}, {"<blank>": 1.0}]
                   + spell("n"))
    options = DecodeOptions(hotwords={"harken now": 5.0})  # the phrase never completes
    assert beam_decode(lp, CHARS, FRAME, options).text == "we like harkin"


def test_vocabulary_restricts_the_words() -> None:
    lp = emissions(CHARS, spell("the ca") + [{"p": 0.7, "t": 0.2, "b": 0.1},
                                            {"<blank>": 1.0}])
    assert greedy_decode(lp, CHARS, FRAME).text == "the cap"
    options = DecodeOptions(vocabulary=["The", "cat", "cab", "dog"])
    result = beam_decode(lp, CHARS, FRAME, options)
    assert result.text == "the cat"
    assert get_decoder(CHARS, options).lexicon


def test_nbest_is_ordered_and_distinct(flip_lm: str) -> None:
    lp = ambiguous("the ", 0.6)
    result = beam_decode(lp, CHARS, FRAME, DecodeOptions(lm=flip_lm, lm_weight=0.05, nbest=4))
    texts = [a.text for a in result.alternatives]
    scores = [a.score for a in result.alternatives]
    assert 2 <= len(texts) <= 4 and len(set(texts)) == len(texts)
    assert texts[:2] == ["the cat", "the bat"]
    assert scores == sorted(scores, reverse=True)
    assert result.alternatives[0].score == pytest.approx(result.score)
    assert beam_decode(lp, CHARS, FRAME, DecodeOptions(lm=flip_lm)).alternatives == []


@pytest.mark.parametrize("kind", ["words", "chars", "hotwords", "nolm"])
def test_chunked_decoding_equals_whole(word_lm: str, char_lm: str, kind: str) -> None:
    options = {"words": DecodeOptions(lm=word_lm, beam_width=8, nbest=3),
               "chars": DecodeOptions(lm=char_lm, beam_width=8),
               "hotwords": DecodeOptions(lm=word_lm, beam_width=8, hotwords={"old ship": 3.0}),
               "nolm": DecodeOptions(beam_width=8)}[kind]
    decoder = get_decoder(CHARS, options)
    rng = np.random.default_rng(1)
    for seed, text in enumerate(SENTENCES[:4]):
        lp = noisy(CHARS, text, seed)
        whole = decoder.decode(lp, FRAME)
        stream = decoder.stream(FRAME)
        start = 0
        while start < len(lp):
            size = int(rng.integers(1, 12))
            stream.feed(lp[start:start + size])
            start += size
            assert isinstance(stream.partial().text, str)
        chunked = stream.finish()
        assert chunked == whole


def test_long_streams_commit_old_frames(word_lm: str, monkeypatch: pytest.MonkeyPatch) -> None:
    text = " ".join(SENTENCES[:6])
    lp = emissions(CHARS, spell(text))
    decoder = get_decoder(CHARS, DecodeOptions(lm=word_lm, beam_width=8))
    whole = decoder.decode(lp, FRAME)
    monkeypatch.setattr(beam, "STREAM_COMMIT_FRAMES", 40)
    monkeypatch.setattr(beam, "STREAM_LOOK_BACK", 10)
    stream = decoder.stream(FRAME)
    for start in range(0, len(lp), 25):
        stream.feed(lp[start:start + 25])
    assert stream._committed, "the stream should have committed frames"
    result = stream.finish()
    assert result.text == whole.text == text
    assert result.words == whole.words


def test_word_times_come_from_the_alignment(word_lm: str) -> None:
    # "the" at frames 2-7, pause, "old" at frames 12-17 (two frames per letter plus blanks).
    frames = [{"<blank>": 1.0}] * 2 + spell("the", 2)[:-1] + [{" ": 1.0}] + \
        [{"<blank>": 1.0}] * 3 + spell("old", 2)[:-1] + [{"<blank>": 1.0}] * 4
    lp = emissions(CHARS, frames)
    for options in (DecodeOptions(lm=word_lm), DecodeOptions()):
        result = beam_decode(lp, CHARS, FRAME, options, time_offset=10.0)
        assert [(w.word, w.start, w.end) for w in result.words] == [
            ("the", 10.0 + 2 * FRAME, 10.0 + 10 * FRAME), ("old", 10.0 + 14 * FRAME,
                                                           10.0 + 22 * FRAME)]
        assert all(0.9 < w.confidence <= 1.0 for w in result.words)
        assert result.duration == pytest.approx(len(lp) * FRAME)


def test_confidence_is_low_where_the_acoustics_hesitate() -> None:
    result = beam_decode(ambiguous("the ", 0.6), CHARS, FRAME, DecodeOptions())
    the, cat = result.words
    assert the.confidence > 0.99 and cat.confidence < 0.9


@pytest.mark.parametrize("options, message", [
    (dict(beam_width=0), "beam_width must be a positive integer, got 0"),
    (dict(token_beam=2.5), "token_beam must be a positive integer"),
    (dict(lm_weight=-1.0), "lm_weight must be a finite number >= 0.0"),
    (dict(word_score=float("nan")), "word_score must be a finite number"),
    (dict(beam_threshold=0), "beam_threshold must be > 0"),
    (dict(nbest=5, beam_width=4), "nbest (5) cannot exceed beam_width (4)"),
    (dict(hotwords={"x": "high"}), "hotwords['x'] must be a finite number"),
    (dict(hotwords=["x"]), "hotwords must be a mapping"),
    (dict(vocabulary="cat dog"), "vocabulary must be a list of words"),
    (dict(vocabulary=["cat"], lexicon=False), "cannot be used with lexicon=False"),
    (dict(lm=3), "lm must be the path"),
])
def test_options_are_validated(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as error:
        DecodeOptions(**options)
    assert message in str(error.value)


def test_decoder_set_up_errors(tmp_path: Path, word_lm: str, char_lm: str, pieces: Any) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        get_decoder(CHARS, DecodeOptions(lm=str(tmp_path / "missing.bin")))
    with pytest.raises(ConfigError, match="word LM, which needs lexicon decoding"):
        get_decoder(CHARS, DecodeOptions(lm=word_lm, lexicon=False))
    with pytest.raises(ConfigError, match="needs a word LM; lm: .* is a char LM"):
        get_decoder(CHARS, DecodeOptions(lm=char_lm, lexicon=True))
    with pytest.raises(ConfigError, match="needs a word LM"):
        get_decoder(CHARS, DecodeOptions(lm=char_lm, vocabulary=["cat"]))
    with pytest.raises(ConfigError, match="needs a word list"):
        get_decoder(CHARS, DecodeOptions(lexicon=True))
    with pytest.raises(ConfigError, match="needs a character tokenizer"):
        get_decoder(pieces, DecodeOptions(lm=char_lm))
    with pytest.raises(ConfigError, match="word_score needs a word-boundary token"):
        get_decoder(pieces, DecodeOptions(word_score=1.0))
    with pytest.raises(ValueError, match="expected log-probabilities over the tokenizer's 29"):
        beam_decode(np.zeros((5, 30), np.float32), CHARS, FRAME)
    with pytest.raises(ValueError, match="expected \\(time, vocab\\)"):
        beam_decode(np.zeros(5, np.float32), CHARS, FRAME)


def test_tuned_values_are_the_defaults(tmp_path: Path) -> None:
    lm = build_lm(SENTENCES, 2, tmp_path / "lm", estimator="builtin").arpa
    assert get_decoder(CHARS, DecodeOptions(lm=str(lm))).lm_weight == 0.5
    write_lm_info(lm, lm_weight=1.25, word_score=-0.5)
    decoder = get_decoder(CHARS, DecodeOptions(lm=str(lm)))
    assert (decoder.lm_weight, decoder.word_score) == (1.25, -0.5)
    assert get_decoder(CHARS, DecodeOptions(lm=str(lm), lm_weight=0.3)).lm_weight == 0.3


def test_resolve_options_for_a_model(tmp_path: Path) -> None:
    def model(decoding: dict[str, Any]) -> Any:
        return SimpleNamespace(config=SimpleNamespace(decoding=decoding), path=tmp_path)

    assert resolve_options(model({})) is None  # nothing asks for a beam: greedy
    assert resolve_options(model({"lm": "lm.bin"}), overrides={"greedy": True}) is None
    assert resolve_options(model({}), overrides={"beam_width": 1}) is None
    stored = resolve_options(model({"lm": "lm.bin", "beam_width": 8}),
                             overrides={"lm_weight": 0.7, "hotwords": {"x": 2.0}})
    assert stored == DecodeOptions(lm=str(tmp_path / "lm.bin"), beam_width=8, lm_weight=0.7,
                                   hotwords={"x": 2.0})
    given = DecodeOptions(beam_width=4)
    assert resolve_options(model({"beam_width": 64}), given) == given
    with pytest.raises(ConfigError, match="unknown keys \\['alpha'\\]"):
        resolve_options(model({}), overrides={"alpha": 1.0})


def test_sentencepiece_decoding(pieces: Any, word_lm: str, tmp_path: Path) -> None:
    text = "the captain read the letter"
    ids = pieces.encode(text)
    tokens = [pieces.tokens[i] for i in ids]
    lp = emissions(pieces, spell(tokens, repeat=3))  # every piece lasts 3 frames
    assert greedy_decode(lp, pieces, FRAME).text == text
    token_lm = str(build_lm(SENTENCES, 4, tmp_path / "pieces", unit="token", tokenizer=pieces,
                            estimator="builtin").arpa)
    for options in (DecodeOptions(), DecodeOptions(lm=word_lm), DecodeOptions(lm=token_lm),
                    DecodeOptions(vocabulary=text.split()),
                    DecodeOptions(lm=word_lm, hotwords={"letter": 2.0})):
        result = beam_decode(lp, pieces, FRAME, options)
        assert result.text == text, options
        assert [w.word for w in result.words] == text.split()
        # Word i starts at its first piece's first frame (4 frames per piece).
        first_piece = [positions[0] for _, positions in pieces.split_words(ids)]
        assert [w.start for w in result.words] == pytest.approx([4 * p * FRAME
                                                                 for p in first_piece])
    # A garbled piece is repaired by lexicon decoding.
    garbled = emissions(pieces, spell(tokens[:-1], 2) + [{tokens[-1]: 0.3, "<blank>": 0.7}])
    assert beam_decode(garbled, pieces, FRAME, DecodeOptions(lm=word_lm)).text == text


def test_decode_batch_matches_one_by_one(word_lm: str) -> None:
    decoder = get_decoder(CHARS, DecodeOptions(lm=word_lm, beam_width=8))
    batch = [noisy(CHARS, text, seed) for seed, text in enumerate(SENTENCES[:5])]
    one_by_one = [decoder.decode(lp, FRAME, 1.0) for lp in batch]
    assert decoder.decode_batch(batch, FRAME, workers=2, time_offsets=[1.0] * 5) == one_by_one
    assert decoder.decode_batch(batch, FRAME, workers=1, time_offsets=[1.0] * 5) == one_by_one


def test_empty_input_decodes_to_nothing(word_lm: str) -> None:
    for options in (DecodeOptions(lm=word_lm), DecodeOptions()):
        result = beam_decode(np.zeros((0, CHARS.vocab_size), np.float32), CHARS, FRAME, options)
        assert (result.text, result.words, result.duration) == ("", [], 0.0)
        silence = emissions(CHARS, [{"<blank>": 1.0}] * 10)
        assert beam_decode(silence, CHARS, FRAME, options).text == ""


def test_decoders_are_cached(word_lm: str) -> None:
    options = DecodeOptions(lm=word_lm, hotwords={"ship": 1.0})
    assert get_decoder(CHARS, options) is get_decoder(CharTokenizer(), dataclasses.replace(
        options, hotwords={"ship": 1.0}))
    assert get_decoder(CHARS, options) is not get_decoder(CHARS, dataclasses.replace(
        options, hotwords={"ship": 2.0}))
    assert math.isfinite(get_decoder(CHARS, options).lm_weight)


@pytest.mark.slow
def test_lm_lowers_the_wer_of_a_tiny_model(tts_corpus: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    """A barely trained model, other voices: the LM of its phrases repairs its words; then
    `harken lm tune` stores weights that decoding picks up."""
    import json

    from conftest import PHRASES, make_corpus
    from test_engine import tiny_config

    from harken.cli import main as cli_main
    from harken.training.evaluate import error_rates
    from harken.model import load_model
    from harken.training.loop import train

    model_path = train(tiny_config(tts_corpus, tmp_path / "run", "deepspeech2", 70))
    model = load_model(model_path)
    test_set = make_corpus(tmp_path / "voices", PHRASES, voices=("en-gb", "en-us+f3"))
    utterances = [json.loads(line) for line in test_set.read_text().splitlines()]
    audio = [test_set.parent / u["audio"] for u in utterances]
    references = [u["text"] for u in utterances]
    lm = build_lm(PHRASES, 2, tmp_path / "phrases", estimator="builtin").arpa

    greedy = [t.text for t in model.transcribe_batch(audio)]
    with_lm = [t.text for t in model.transcribe_batch(audio, DecodeOptions(lm=str(lm)))]
    greedy_wer = error_rates(references, greedy)["wer"]
    lm_wer = error_rates(references, with_lm)["wer"]
    assert lm_wer < greedy_wer - 0.1, (greedy, with_lm)

    assert cli_main(["lm", "tune", str(test_set), "--model", str(model_path),
                     "--lm", str(lm), "--lm-weights", "0.5", "1", "--word-scores", "0", "1",
                     "--workers", "1", "--write"]) == 0
    out = capsys.readouterr().out
    assert "greedy WER" in out and "wrote" in out
    decoder = get_decoder(model.tokenizer, DecodeOptions(lm=str(lm)))
    assert (decoder.lm_weight, decoder.word_score) in {(a, b) for a in (0.5, 1.0)
                                                       for b in (0.0, 1.0)}


def test_hotwords_use_the_tokenizers_language() -> None:
    """A Spanish model's hotwords keep letters outside a-z (the English normaliser would turn
    "Peña" into "pena")."""
    from harken.text import TextNormalizer

    spanish = CharTokenizer(" abcdefghijklmnopqrstuvwxyzñáéíóú'", TextNormalizer("es"))
    lp = emissions(spanish, spell("la pe") + [{"n": 0.6, "ñ": 0.4}, {"<blank>": 1.0}]
                   + spell("a"))
    assert greedy_decode(lp, spanish, FRAME).text == "la pena"
    boosted = beam_decode(lp, spanish, FRAME, DecodeOptions(hotwords={"Peña": 5.0}))
    assert boosted.text == "la peña"
    restricted = beam_decode(lp, spanish, FRAME, DecodeOptions(vocabulary=["La", "Peña"]))
    assert restricted.text == "la peña"


def test_hotwords_are_parsed_one_way_with_one_default_boost():
    from harken.decoding.hotwords import DEFAULT_BOOST, parse_hotword
    from harken.serving.openai_api import prompt_hotwords

    assert parse_hotword("harken:8") == ("harken", 8.0)
    assert parse_hotword("new york") == ("new york", DEFAULT_BOOST)
    assert parse_hotword("a:b:2.5") == ("a:b", 2.5)
    with pytest.raises(ConfigError, match="'harken:loud'"):
        parse_hotword("harken:loud")
    assert parse_hotword("harken:loud", strict=False) == ("harken:loud", DEFAULT_BOOST)
    # the server's `hotwords` field and the command line agree on the same text
    assert prompt_hotwords("Harken:8, new york") == {"harken": 8.0, "new york": DEFAULT_BOOST}

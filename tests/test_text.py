"""Transcript normalisation, character and SentencePiece tokenizers, tokenizer files."""

from __future__ import annotations

import gzip
import json
import random
import re
from pathlib import Path

import numpy as np
import pytest

from harken.decoding.greedy import greedy_decode
from harken.errors import ConfigError, ManifestError, ModelError
from harken.text import (
    BLANK,
    CharTokenizer,
    SentencePieceTokenizer,
    Tokenizer,
    load_tokenizer,
    normalize_text,
    read_texts,
    save_tokenizer,
    train_sentencepiece,
)

NORMALIZED = [
    ("Hello, World!", "hello world"),
    ("", ""),
    ("   \t\n ", ""),
    ("I don't know.", "i don't know"),
    ("It's 5 o'clock", "it's five o'clock"),
    ("rock'n'roll", "rock'n'roll"),
    ("'hello'", "hello"),
    ("\u2018quoted\u2019 \u201cdouble\u201d", "quoted double"),
    ("I don\u2019t", "i don't"),
    ("the students' books", "the students books"),
    ("O'Neil", "o'neil"),
    ("42", "forty two"),
    ("21 apples", "twenty one apples"),
    ("3,000,000 people", "three million people"),
    ("1,999 people", "one thousand nine hundred and ninety nine people"),
    ("in 1999.", "in nineteen ninety nine"),
    ("in 2024", "in twenty twenty four"),
    ("the 1990s and '80s", "the nineteen nineties and eighties"),
    ("1st 2nd 3rd 4th", "first second third fourth"),
    ("the 21st century", "the twenty first century"),
    ("pi is 3.14", "pi is three point one four"),
    ("0.05", "zero point zero five"),
    ("version 1.2.3", "version one point two point three"),
    ("-5 degrees", "minus five degrees"),
    ("1990-1995", "nineteen ninety nineteen ninety five"),
    ("$5", "five dollars"),
    ("$1", "one dollar"),
    ("$5.50", "five dollars fifty cents"),
    ("$0.99", "ninety nine cents"),
    ("$1.5 million", "one point five million dollars"),
    ("\u00a320 and \u20ac3.5", "twenty pounds and three point five euros"),
    ("50%", "fifty percent"),
    ("3.5 %", "three point five percent"),
    ("007", "zero zero seven"),
    ("mp3 player", "mp three player"),
    ("Tom & Jerry", "tom and jerry"),
    ("well-known state-of-the-art", "well known state of the art"),
    ("...and so\u2014on", "and so on"),
    ("caf\u00e9 na\u00efve Stra\u00dfe \u00c0\u00c9\u00ce\u00d5\u00dc", "cafe naive strasse aeiou"),
    ("\ufb01ne \uff21\uff22\uff23 \uff11\uff12", "fine abc twelve"),  # ligature, full width
    ("e-mail: a@b.com", "e mail a b com"),
    ("3:30 pm", "three thirty pm"),
    ("Mr. Smith", "mr smith"),
    ("tab\tnew\nline", "tab new line"),
]


@pytest.mark.parametrize("text,expected", NORMALIZED)
def test_normalize_english(text: str, expected: str) -> None:
    assert normalize_text(text) == expected


def test_normalize_output_alphabet_and_idempotence() -> None:
    for text, _ in NORMALIZED:
        once = normalize_text(text)
        assert re.fullmatch(r"[a-z' ]*", once)
        assert "  " not in once and once == once.strip()
        assert normalize_text(once) == once


def test_other_languages_get_the_basic_normaliser() -> None:
    assert normalize_text("\u00c7a va? L\u2019\u00e9t\u00e9!", "fr") == "\u00e7a va l'\u00e9t\u00e9"
    hello_world = "\u041f\u0440\u0438\u0432\u0435\u0442,  \u043c\u0438\u0440!"  # Russian
    expected = "\u043f\u0440\u0438\u0432\u0435\u0442 \u043c\u0438\u0440"
    assert normalize_text(hello_world, "ru") == expected
    assert normalize_text("Hello, 5!", "en-US") == "hello five"


# --- characters ------------------------------------------------------------------------------

def test_char_tokenizer_round_trip() -> None:
    tokenizer = CharTokenizer()
    assert tokenizer.blank_id == 0 and tokenizer.tokens[0] == BLANK
    assert tokenizer.vocab_size == 29 and tokenizer.tokens[1] == " "
    text = "don't stop the rock'n'roll"
    ids = tokenizer.encode(text)
    assert 0 not in ids and tokenizer.decode(ids) == text
    assert tokenizer.decode([0, *ids[:3], 0]) == text[:3]
    assert tokenizer.encode("ab") == [2, 3]


def test_char_tokenizer_split_words() -> None:
    tokenizer = CharTokenizer()
    ids = tokenizer.encode(" hi  there")
    ids.insert(3, 0)  # a blank inside "hi" belongs to no word
    assert tokenizer.split_words(ids) == [("hi", [1, 2]), ("there", [6, 7, 8, 9, 10])]
    assert tokenizer.split_words([]) == []


def test_char_tokenizer_errors() -> None:
    tokenizer = CharTokenizer()
    with pytest.raises(ValueError, match=r"cannot encode characters '!', '5', 'H'.*normalize_text"):
        tokenizer.encode("Hello 5!")
    with pytest.raises(ValueError, match=r"outside the vocabulary \[0, 29\)"):
        tokenizer.decode([1, 29])
    with pytest.raises(ValueError, match="containing the space"):
        CharTokenizer("abc")
    with pytest.raises(ValueError, match=r"repeats characters \['a'\]"):
        CharTokenizer(" aba")


def test_greedy_decoding_with_char_tokenizer() -> None:
    tokenizer = CharTokenizer()
    path = [0, "h", "h", "i", 0, " ", " ", "y", "o", 0, "o"]  # frame-by-frame best tokens
    log_probs = np.full((len(path), tokenizer.vocab_size), -10.0, dtype=np.float32)
    for t, token in enumerate(path):
        log_probs[t, 0 if token == 0 else tokenizer.encode(str(token))[0]] = 0.0
    transcript = greedy_decode(log_probs, tokenizer, frame_seconds=0.04)
    assert transcript.text == "hi yoo"
    assert [(w.word, w.start, w.end) for w in transcript.words] == [
        ("hi", 0.04, 0.16), ("yoo", 0.28, 0.44)]


# --- SentencePiece ---------------------------------------------------------------------------

WORDS = ("the a quick brown fox jumps over lazy dog don't rock'n'roll hello world speech text "
         "model river mountain seven hundred singing quietly after winter station morning yellow "
         "garden people running through light evening answer question number window kitchen "
         "o'clock five twenty").split()


def corpus(count: int = 300, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12))) for _ in range(count)]


@pytest.fixture(scope="module", params=["unigram", "bpe"])
def sentencepiece_tokenizer(request: pytest.FixtureRequest) -> SentencePieceTokenizer:
    return train_sentencepiece(corpus(), vocab_size=50, model_type=request.param)


def test_sentencepiece_vocabulary(sentencepiece_tokenizer: SentencePieceTokenizer) -> None:
    tokenizer = sentencepiece_tokenizer
    assert tokenizer.vocab_size == 51 and tokenizer.tokens[0] == BLANK
    assert tokenizer.tokens[1] == "<unk>"
    assert "<s>" not in tokenizer.tokens and "</s>" not in tokenizer.tokens
    for letter in "abcdefghijklmnopqrstuvwxyz'":  # every normalised character is encodable
        assert letter in tokenizer.tokens


def test_sentencepiece_round_trip(sentencepiece_tokenizer: SentencePieceTokenizer) -> None:
    tokenizer = sentencepiece_tokenizer
    unseen = ["zebra quiz of jazz", "twelve vexing wolves", "don't"]
    for text in corpus(50, seed=1) + unseen:
        ids = tokenizer.encode(text)
        assert ids and min(ids) >= 2  # neither blank nor <unk>
        assert tokenizer.decode(ids) == text


def test_sentencepiece_split_words(sentencepiece_tokenizer: SentencePieceTokenizer) -> None:
    tokenizer = sentencepiece_tokenizer
    for text in corpus(30, seed=2) + ["zebra quiz of jazz"]:
        ids = tokenizer.encode(text)
        with_blanks = [i for token in ids for i in (0, token)]  # blanks between all tokens
        for sequence in (ids, with_blanks):
            words = tokenizer.split_words(sequence)
            assert [word for word, _ in words] == text.split()
            for word, positions in words:
                assert positions == sorted(positions)
                assert tokenizer.decode([sequence[p] for p in positions]).strip() == word
                assert all(sequence[p] != 0 for p in positions)
                # a word starts at a "▁piece" or right after a lone "▁"
                previous = [i for i in sequence[:positions[0]] if i != 0][-1:]
                assert (tokenizer.tokens[sequence[positions[0]]].startswith("\u2581")
                        or [tokenizer.tokens[i] for i in previous] == ["\u2581"])


def test_sentencepiece_rejects_unknown_characters(
        sentencepiece_tokenizer: SentencePieceTokenizer) -> None:
    with pytest.raises(ValueError, match=r"cannot encode characters '7', '\u00e9'"):
        sentencepiece_tokenizer.encode("caf\u00e9 7 hello")


def test_sentencepiece_trains_on_normalised_text() -> None:
    raw = [f"The {i}th Fox, jumping!" for i in range(1, 60)] + corpus(100)
    tokenizer = train_sentencepiece(raw, vocab_size=40, model_type="bpe")
    text = normalize_text("The 21st Fox, jumping!")
    assert tokenizer.decode(tokenizer.encode(text)) == text == "the twenty first fox jumping"


def test_tokenizer_files_round_trip(sentencepiece_tokenizer: SentencePieceTokenizer,
                                    tmp_path: Path) -> None:
    tokenizers: list[Tokenizer] = [sentencepiece_tokenizer, CharTokenizer(" abc'")]
    for index, tokenizer in enumerate(tokenizers):
        folder = tmp_path / str(index)
        config = json.loads(json.dumps(save_tokenizer(tokenizer, folder)))
        loaded = load_tokenizer(config, folder)
        assert type(loaded) is type(tokenizer) and loaded.tokens == tokenizer.tokens
        for text in corpus(20, seed=3) if index == 0 else ["abc cab", "a'b"]:
            assert loaded.encode(text) == tokenizer.encode(text)
    assert (tmp_path / "0" / "tokenizer.model").is_file()
    assert not (tmp_path / "1").exists()
    assert tokenizers[1].to_config() == {"kind": "char", "alphabet": " abc'"}


def test_load_tokenizer_errors(sentencepiece_tokenizer: SentencePieceTokenizer,
                               tmp_path: Path) -> None:
    config = save_tokenizer(sentencepiece_tokenizer, tmp_path)
    with pytest.raises(ConfigError, match=r"unknown kind 'wordpiece'.*'char', 'sentencepiece'"):
        load_tokenizer({"kind": "wordpiece"}, tmp_path)
    with pytest.raises(ConfigError, match=r"unknown keys \['lowercase'\]"):
        load_tokenizer({**config, "lowercase": True}, tmp_path)
    with pytest.raises(ConfigError, match="tokenizer file .*other.model is missing"):
        load_tokenizer({**config, "file": "other.model"}, tmp_path)
    with pytest.raises(ConfigError, match="file name inside the model folder"):
        load_tokenizer({**config, "file": "../tokenizer.model"}, tmp_path)
    with pytest.raises(ConfigError, match="containing the space"):
        load_tokenizer({"kind": "char", "alphabet": "abc"}, tmp_path)
    (tmp_path / "tokenizer.model").write_bytes(b"not a model")
    with pytest.raises(ModelError, match="SHA-256 does not match"):
        load_tokenizer(config, tmp_path)
    with pytest.raises(ModelError, match="not a SentencePiece model"):
        load_tokenizer({k: v for k, v in config.items() if k != "sha256"}, tmp_path)


def test_train_sentencepiece_errors() -> None:
    with pytest.raises(ValueError, match="model_type must be 'unigram' or 'bpe'"):
        train_sentencepiece(corpus(), 50, model_type="word")
    with pytest.raises(ValueError, match="vocab_size 20 is too small"):
        train_sentencepiece(corpus(), 20)
    with pytest.raises(ValueError, match="SentencePiece training failed.*vocab_size=5000"):
        train_sentencepiece(corpus(), 5000)


# --- transcript files ------------------------------------------------------------------------

def test_read_texts(tmp_path: Path) -> None:
    lines = ["Hello there.", "", "  second line  "]
    (tmp_path / "a.txt").write_text("\n".join(lines), encoding="utf-8")
    with gzip.open(tmp_path / "b.txt.gz", "wt", encoding="utf-8") as f:
        f.write("\n".join(lines))
    manifest = "\n".join(json.dumps({"audio": f"{i}.wav", "text": t}) for i, t in enumerate("xy"))
    (tmp_path / "c.jsonl").write_text(manifest + "\n\n", encoding="utf-8")
    with gzip.open(tmp_path / "d.jsonl.gz", "wt", encoding="utf-8") as f:
        f.write(manifest)
    assert list(read_texts(tmp_path / "a.txt")) == ["Hello there.", "second line"]
    assert list(read_texts(tmp_path / "b.txt.gz")) == ["Hello there.", "second line"]
    assert list(read_texts(tmp_path / "c.jsonl")) == ["x", "y"]
    assert list(read_texts(str(tmp_path / "d.jsonl.gz"))) == ["x", "y"]
    (tmp_path / "e.csv").write_text('wav_filename,wav_filesize,transcript\na.wav,10,"one, two"\n'
                                    "b.wav,12,three\n", encoding="utf-8")
    assert list(read_texts(tmp_path / "e.csv")) == ["one, two", "three"]


def test_read_texts_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="missing.txt does not exist"):
        read_texts(tmp_path / "missing.txt")
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{"audio": "x.wav"}\n', encoding="utf-8")
    with pytest.raises(ManifestError, match=r"bad.jsonl, line 2: expected an object with a"):
        list(read_texts(tmp_path / "bad.jsonl"))
    (tmp_path / "no_text.csv").write_text("wav_filename,label\na.wav,x\n", encoding="utf-8")
    with pytest.raises(ManifestError, match="no_text.csv, line 1: expected a 'transcript'"):
        list(read_texts(tmp_path / "no_text.csv"))
    (tmp_path / "broken.jsonl").write_text("{oops\n", encoding="utf-8")
    with pytest.raises(ManifestError, match="broken.jsonl, line 1: not valid JSON"):
        list(read_texts(tmp_path / "broken.jsonl"))

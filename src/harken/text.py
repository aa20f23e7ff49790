"""Transcript text: the normaliser shared by training and evaluation, and CTC tokenizers.

`normalize_text` turns any transcript into the alphabet the models are trained on (English:
a-z, apostrophe, space). A `TextNormalizer` picks the normaliser of a language: English's own
(numbers spelled out), or the script-agnostic default for every other language. Tokenizers map
normalised text to CTC token ids: id 0 is always the blank, `encode` never emits it, and
`split_words` tells decoding which tokens form each word; each carries its `normalizer`.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import os
import re
import unicodedata
import zlib
from abc import ABC, abstractmethod
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence, TextIO

from num2words import num2words

from harken.errors import ConfigError, ManifestError, ModelError

BLANK_ID = 0
BLANK = "<blank>"
ENGLISH_ALPHABET = " abcdefghijklmnopqrstuvwxyz'"
TOKENIZER_FILE = "tokenizer.model"
SENTENCEPIECE_WORD_START = "\u2581"  # "▁", SentencePiece's marker of a word's first piece
SENTENCEPIECE_MAX_SENTENCES = 5_000_000  # a larger corpus is sampled down to this many lines

# --- normalisation ---------------------------------------------------------------------------

_TO_ASCII = str.maketrans({
    "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'", "\u02bc": "'",
    "\u00b4": "'", "`": "'", "\u2212": "-", "\u2044": "/",
    "ß": "ss", "æ": "ae", "œ": "oe", "ø": "o", "ł": "l", "đ": "d", "ð": "d", "þ": "th",
})
_CURRENCIES = {  # symbol: (one, many, one hundredth, many hundredths or "" when none)
    "$": ("dollar", "dollars", "cent", "cents"),
    "£": ("pound", "pounds", "penny", "pence"),
    "€": ("euro", "euros", "cent", "cents"),
    "¥": ("yen", "yen", "", ""),
}
_SCALES = r"thousand|million|billion|trillion"
_AMOUNT = r"(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d+))?"  # integer part (commas allowed), fraction
_CURRENCY_RE = re.compile(r"([$£€¥])\s?" + _AMOUNT + r"(?:\s?(" + _SCALES + r")\b)?")
_PERCENT_RE = re.compile(r"(?<![\d.])" + _AMOUNT + r"\s?%")
_ORDINAL_RE = re.compile(r"(?<![\d.])(\d{1,3}(?:,\d{3})+|\d+)(st|nd|rd|th)\b")
_DECADE_RE = re.compile(r"(?<![\d.])(\d+)s\b")
_MINUS_RE = re.compile(r"(?<![\w.])-(?=\d)")
_NUMBER_RE = re.compile(r"(?<![\d.])" + _AMOUNT)
_LEADING_POINT_RE = re.compile(r"(?<!\d)\.(\d+)")
_NOT_ENGLISH_RE = re.compile(r"[^a-z' ]+")
_STRAY_APOSTROPHE_RE = re.compile(r"(?<![a-z])'|'(?![a-z])")
_SPACES_RE = re.compile(r"\s+")
_DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def _digit_by_digit(digits: str) -> str:
    return " ".join(_DIGITS[int(d)] for d in digits)


def _integer_words(digits: str, years: bool = True) -> str:
    """Spoken form of an integer string (commas allowed).

    A 4-digit number from 1100 to 2099 written without a comma is read as a year ("1999" ->
    "nineteen ninety-nine", "1500" -> "fifteen hundred"); "1,999" is read as a cardinal.
    Numbers with a leading zero ("007") or more than 15 digits are read digit by digit.
    """
    plain = digits.replace(",", "")
    if (len(plain) > 1 and plain[0] == "0") or len(plain) > 15:
        return _digit_by_digit(plain)
    value = int(plain)
    if years and "," not in digits and len(plain) == 4 and 1100 <= value <= 2099:
        return num2words(value, lang="en", to="year")
    return num2words(value, lang="en")


def _number_words(integer: str, fraction: str | None, years: bool = True) -> str:
    words = _integer_words(integer, years=years and fraction is None)
    if fraction:
        words += " point " + _digit_by_digit(fraction)
    return words


def _plural(words: str) -> str:
    """'nineteen ninety' -> 'nineteen nineties', 'six' -> 'sixes'."""
    head, _, last = words.rpartition(" ")
    if last.endswith("y"):
        last = last[:-1] + "ies"
    elif last.endswith(("x", "s")):
        last += "es"
    else:
        last += "s"
    return f"{head} {last}" if head else last


def _currency(match: re.Match[str]) -> str:
    symbol, integer, fraction, scale = match.groups()
    one, many, cent, cents = _CURRENCIES[symbol]
    if scale:
        return f" {_number_words(integer, fraction, years=False)} {scale} {many} "
    if fraction is not None and len(fraction) == 2 and cent:
        units, hundredths = int(integer.replace(",", "")), int(fraction)
        parts = []
        if units or not hundredths:
            parts.append(f"{_integer_words(integer, years=False)} {one if units == 1 else many}")
        if hundredths:
            parts.append(f"{num2words(hundredths, lang='en')} {cent if hundredths == 1 else cents}")
        return " " + " ".join(parts) + " "
    if fraction is None and integer.replace(",", "") == "1":
        return f" one {one} "
    return f" {_number_words(integer, fraction, years=False)} {many} "


def normalize_english(text: str) -> str:
    """English transcript normaliser: the output alphabet is a-z, apostrophe and space.

    NFKC, accents removed, lowercase; numbers spelled out with num2words (integers, decimals
    "3.14" -> "three point one four", ordinals "21st" -> "twenty-first", years "1999" ->
    "nineteen ninety-nine", decades "1990s", currency "$5.50" -> "five dollars fifty cents",
    percentages, negative numbers); "&" -> "and"; other punctuation and hyphens become spaces;
    apostrophes are kept only inside words ("don't", "rock'n'roll"). Abbreviations are not
    expanded ("mr" stays "mr").
    """
    text = unicodedata.normalize("NFKC", text.translate(_TO_ASCII))
    text = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    text = text.lower().translate(_TO_ASCII)
    text = text.replace("&", " and ")
    text = _CURRENCY_RE.sub(_currency, text)
    text = _PERCENT_RE.sub(lambda m: f" {_number_words(m[1], m[2], years=False)} percent ", text)
    text = text.replace("%", " percent ")
    text = _ORDINAL_RE.sub(
        lambda m: f" {num2words(int(m[1].replace(',', '')), lang='en', to='ordinal')} ", text)
    text = _DECADE_RE.sub(lambda m: f" {_plural(_integer_words(m[1]))} ", text)
    text = _MINUS_RE.sub(" minus ", text)
    text = _NUMBER_RE.sub(lambda m: f" {_number_words(m[1], m[2])} ", text)
    text = _LEADING_POINT_RE.sub(lambda m: f" point {_digit_by_digit(m[1])} ", text)
    text = _NOT_ENGLISH_RE.sub(" ", text)  # num2words' hyphens and commas go here too
    text = _STRAY_APOSTROPHE_RE.sub(" ", text)
    return _SPACES_RE.sub(" ", text).strip()


_APOSTROPHES = str.maketrans({c: "'" for c in "\u2018\u2019\u201b\u2032\u02bc\u00b4`"})
_STRAY_APOSTROPHE_ANY_RE = re.compile(r"(?<!\w)'|'(?!\w)")


def normalize_basic(text: str, *, lowercase: bool = True, keep_punctuation: str = "") -> str:
    """Default for languages without a normaliser of their own, for any script.

    NFC; lowercase (optional); typographic apostrophes become "'", kept only inside words;
    punctuation, symbols and control characters become spaces, except `keep_punctuation`;
    letters, combining marks and digits of every script are kept as they are ("ñ", "ё", "क्षि",
    "日本"); whitespace collapsed. Numbers are not spelled out.
    """
    text = unicodedata.normalize("NFC", text.translate(_APOSTROPHES))
    if lowercase:
        text = text.lower()
    keep = set(keep_punctuation) | {"'"}
    text = "".join(" " if unicodedata.category(c)[0] in "PSCZ" and c not in keep else c
                   for c in text)
    text = _STRAY_APOSTROPHE_ANY_RE.sub(" ", text)
    return _SPACES_RE.sub(" ", text).strip()


NORMALIZERS: dict[str, Callable[[str], str]] = {"en": normalize_english}
"""Normalisers of their own, by language code (the part before "-"): their output is fixed."""


def language_code(language: str) -> str:
    return language.lower().replace("_", "-").split("-")[0]


def normalize_text(text: str, language: str = "en") -> str:
    """Normalise a transcript for training or scoring; both must use the same function.

    `language` is a code such as "en" or "en-US"; languages without an entry in
    `NORMALIZERS` get `normalize_basic`.
    """
    return NORMALIZERS.get(language_code(language), normalize_basic)(text)


@dataclass(frozen=True)
class TextNormalizer:
    """A language's transcript normaliser, callable: text -> normalised text.

    A language in `NORMALIZERS` (English) uses its own normaliser; any other code ("es", "ru",
    "zh", or "und" for English text with case kept) uses `normalize_basic` with `lowercase`
    and `keep_punctuation`. Stored with a model's tokenizer, so scoring normalises references
    as training did. Raises `ConfigError` for settings the language's normaliser ignores.
    """

    language: str = "en"
    lowercase: bool = True
    keep_punctuation: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.language, str) or not self.language.strip():
            raise ConfigError(f"language: expected a language code such as 'en' or 'es', got "
                              f"{self.language!r}")
        own = NORMALIZERS.get(language_code(self.language))
        if own is not None and (not self.lowercase or self.keep_punctuation):
            raise ConfigError(f"language {self.language!r} has its own normaliser "
                              f"({own.__name__}) with a fixed output: lowercase and "
                              "keep_punctuation apply to the default normaliser of other "
                              "languages")
        bad = [c for c in self.keep_punctuation
               if c.isspace() or unicodedata.category(c)[0] in "LMN"]
        if bad:
            raise ConfigError(f"keep_punctuation: {bad} are not punctuation or symbols (letters, "
                              "marks and digits are always kept)")

    def __call__(self, text: str) -> str:
        own = NORMALIZERS.get(language_code(self.language))
        if own is not None:
            return own(text)
        return normalize_basic(text, lowercase=self.lowercase,
                               keep_punctuation=self.keep_punctuation)

    @property
    def is_english(self) -> bool:
        return NORMALIZERS.get(language_code(self.language)) is normalize_english

    def to_config(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_config(cls, data: Any) -> TextNormalizer:
        if not isinstance(data, dict) or set(data) - {"language", "lowercase", "keep_punctuation"}:
            raise ConfigError(f"tokenizer config: normalizer must be a table of language, "
                              f"lowercase and keep_punctuation, got {data!r}")
        return cls(**data)


ENGLISH = TextNormalizer()


def reference_normalizer(model: Any, language: str | None = None) -> TextNormalizer:
    """How to normalise reference transcripts for scoring `model`: `TextNormalizer(language)`
    when a language is given, else the normaliser its tokenizer was trained with."""
    if language is not None:
        return TextNormalizer(language)
    return getattr(getattr(model, "tokenizer", None), "normalizer", ENGLISH)


def derive_alphabet(texts: Iterable[str], min_count: int = 1) -> str:
    """A character alphabet from normalised texts: the space (the word separator), then every
    other character seen at least `min_count` times, in code point order.

    Raises ValueError when the texts hold no character.
    """
    counts = Counter(c for text in texts for c in text if not c.isspace())
    characters = sorted(c for c, n in counts.items() if n >= min_count)
    if not characters:
        raise ValueError(f"no character occurs {min_count} time(s) or more in the texts")
    return " " + "".join(characters)


# --- tokenizers ------------------------------------------------------------------------------

class Tokenizer(ABC):
    """CTC tokenizer: `tokens[i]` is token i's string, `tokens[0]` is the blank."""

    blank_id: int = BLANK_ID
    tokens: list[str]
    normalizer: TextNormalizer = ENGLISH  # what `encode` expects its input to have gone through

    @property
    def vocab_size(self) -> int:
        """Number of CTC outputs, the blank included."""
        return len(self.tokens)

    @abstractmethod
    def encode(self, text: str) -> list[int]:
        """Normalised text -> token ids (never the blank).

        Raises ValueError naming the characters that cannot be encoded.
        """

    @abstractmethod
    def decode(self, ids: Sequence[int]) -> str:
        """Token ids -> text; blanks are skipped (repeats are not merged: that is CTC's job)."""

    @abstractmethod
    def split_words(self, ids: Sequence[int]) -> list[tuple[str, list[int]]]:
        """Each word of `ids` with the positions in `ids` of its tokens (blanks and word
        separators belong to no word)."""

    @abstractmethod
    def to_config(self) -> dict[str, Any]:
        """JSON-able description ("kind" and settings); `load_tokenizer` reads it back."""

    def _check_ids(self, ids: Sequence[int]) -> None:
        bad = [i for i in ids if not 0 <= int(i) < len(self.tokens)]
        if bad:
            raise ValueError(
                f"token ids {bad[:10]} are outside the vocabulary [0, {len(self.tokens)})")


def _cannot_encode(chars: Iterable[str], where: str) -> ValueError:
    listed = ", ".join(repr(c) for c in sorted(set(chars)))
    return ValueError(f"cannot encode characters {listed}: not in {where}; "
                      "normalise transcripts with harken.text.normalize_text first")


class CharTokenizer(Tokenizer):
    """One token per character: id 0 is the blank, id i + 1 is `alphabet[i]`.

    The space is the word separator and must be in the alphabet.
    """

    kind = "char"

    def __init__(self, alphabet: str = ENGLISH_ALPHABET,
                 normalizer: TextNormalizer = ENGLISH) -> None:
        if not isinstance(alphabet, str) or " " not in alphabet:
            raise ValueError(f"a character alphabet must be a string containing the space "
                             f"(the word separator), got {alphabet!r}")
        duplicates = sorted({c for c in alphabet if alphabet.count(c) > 1})
        if duplicates:
            raise ValueError(f"alphabet {alphabet!r} repeats characters {duplicates}")
        self.alphabet = alphabet
        self.normalizer = normalizer
        self.tokens = [BLANK, *alphabet]
        self._ids = {c: i + 1 for i, c in enumerate(alphabet)}
        self._separator_id = self._ids[" "]

    def encode(self, text: str) -> list[int]:
        """Characters -> ids; ValueError naming characters outside the alphabet."""
        try:
            return [self._ids[c] for c in text]
        except KeyError:
            raise _cannot_encode((c for c in text if c not in self._ids),
                                 f"the alphabet {self.alphabet!r}") from None

    def decode(self, ids: Sequence[int]) -> str:
        """Ids -> characters, blanks skipped."""
        self._check_ids(ids)
        return "".join(self.tokens[i] for i in ids if i != BLANK_ID)

    def split_words(self, ids: Sequence[int]) -> list[tuple[str, list[int]]]:
        """Words separated by the space token, with the positions of their characters."""
        self._check_ids(ids)
        words: list[tuple[str, list[int]]] = []
        positions: list[int] = []
        for position, i in enumerate(ids):
            if i == BLANK_ID:
                continue
            if i == self._separator_id:
                if positions:
                    words.append(("".join(self.tokens[ids[p]] for p in positions), positions))
                positions = []
            else:
                positions.append(position)
        if positions:
            words.append(("".join(self.tokens[ids[p]] for p in positions), positions))
        return words

    def to_config(self) -> dict[str, Any]:
        return {"kind": self.kind, "alphabet": self.alphabet, **_normalizer_config(self)}


class SentencePieceTokenizer(Tokenizer):
    """Subword tokens from a SentencePiece model: id 0 is the blank, id i + 1 is piece i.

    A word starts at each piece beginning with "▁". `encode` raises ValueError for characters
    the model maps to <unk> rather than emitting <unk> targets (train with
    `train_sentencepiece`, which makes every character of the normalised alphabet a piece).
    """

    kind = "sentencepiece"

    def __init__(self, model_proto: bytes, normalizer: TextNormalizer = ENGLISH) -> None:
        import sentencepiece

        self.normalizer = normalizer
        self._proto = bytes(model_proto)
        self._sp = sentencepiece.SentencePieceProcessor()
        try:
            self._sp.LoadFromSerializedProto(self._proto)
        except (RuntimeError, OSError, TypeError) as exc:
            raise ModelError(
                f"not a SentencePiece model ({len(self._proto)} bytes): {exc}") from exc
        n = self._sp.get_piece_size()
        self.tokens = [BLANK, *(self._sp.id_to_piece(i) for i in range(n))]
        self._unk = self._sp.unk_id() + 1
        self._control = {i + 1 for i in range(n) if self._sp.is_control(i)}

    def serialized(self) -> bytes:
        """The SentencePiece model file's bytes."""
        return self._proto

    def encode(self, text: str) -> list[int]:
        """Text -> piece ids + 1; ValueError naming characters the model does not know."""
        ids = [i + 1 for i in self._sp.encode(text, out_type=int)]
        if self._unk in ids:
            unknown = (c for c in text if not c.isspace()
                       and self._unk - 1 in self._sp.encode(c, out_type=int))
            raise _cannot_encode(unknown, "the SentencePiece vocabulary")
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        """Ids -> text, blanks skipped."""
        self._check_ids(ids)
        return str(self._sp.decode([int(i) - 1 for i in ids if i != BLANK_ID]))

    def split_words(self, ids: Sequence[int]) -> list[tuple[str, list[int]]]:
        """Words begin at pieces starting with "▁"; a lone "▁" only separates."""
        self._check_ids(ids)
        groups: list[list[int]] = []
        for position, i in enumerate(ids):
            if i == BLANK_ID or i in self._control:
                continue
            piece = self.tokens[i]
            if piece.startswith(SENTENCEPIECE_WORD_START) or not groups:
                groups.append([])
            if piece != SENTENCEPIECE_WORD_START:
                groups[-1].append(position)
        words = []
        for positions in groups:
            text = self.decode([ids[p] for p in positions]).strip()
            if positions and text:
                words.append((text, positions))
        return words

    def to_config(self) -> dict[str, Any]:
        return {"kind": self.kind, "file": TOKENIZER_FILE, "vocab_size": self.vocab_size,
                "sha256": hashlib.sha256(self._proto).hexdigest(), **_normalizer_config(self)}


def _normalizer_config(tokenizer: Tokenizer) -> dict[str, Any]:
    """{"normalizer": ...} unless English (configs of English models stay as they were)."""
    if tokenizer.normalizer == ENGLISH:
        return {}
    return {"normalizer": tokenizer.normalizer.to_config()}


class VocabTokenizer(CharTokenizer):
    """A fixed list of CTC tokens (e.g. a Hugging Face wav2vec2 `vocab.json`): id 0 is the
    blank, id i + 1 is `tokens[i]`; the " " token separates words. Tokens may be longer than
    one character (`<unk>`); `encode` uses the single-character ones.
    """

    kind = "vocab"

    def __init__(self, tokens: Sequence[str]) -> None:
        tokens = list(tokens)
        if not all(isinstance(t, str) and t for t in tokens) or " " not in tokens:
            raise ValueError("a token vocabulary must be non-empty strings including the "
                             "space (the word separator)")
        duplicates = sorted({t for t in tokens if tokens.count(t) > 1})
        if duplicates:
            raise ValueError(f"the vocabulary repeats tokens {duplicates}")
        self.tokens = [BLANK, *tokens]
        self.normalizer = ENGLISH  # imported vocabularies are English (harken import hf)
        self.alphabet = "".join(t for t in tokens if len(t) == 1)  # what `encode` can write
        self._ids = {t: i + 1 for i, t in enumerate(tokens) if len(t) == 1}
        self._separator_id = self._ids[" "]

    def to_config(self) -> dict[str, Any]:
        return {"kind": self.kind, "tokens": self.tokens[1:]}


def train_sentencepiece(
    texts: Iterable[str],
    vocab_size: int,
    model_type: str = "unigram",
    character_coverage: float = 1.0,
    language: str | TextNormalizer | None = "en",
    required_chars: str | None = None,
) -> SentencePieceTokenizer:
    """Train a SentencePiece model in memory on transcripts.

    `vocab_size` counts SentencePiece pieces (<unk> included); the CTC vocabulary has one more
    entry, the blank. Texts are normalised with `TextNormalizer(language)` (or the
    `TextNormalizer` given) first; pass `language=None` for texts that are already normalised.
    The tokenizer keeps that normaliser. `required_chars` become pieces even when rare or
    absent; by default the English alphabet when `language` is English. Languages written
    without spaces (Chinese, Japanese, Thai) work too: pieces then never start a word with "▁"
    inside a sentence; a `character_coverage` below 1 (0.9995) leaves their rarest characters out.
    """
    import sentencepiece

    if model_type not in ("unigram", "bpe"):
        raise ValueError(f"model_type must be 'unigram' or 'bpe', got {model_type!r}")
    if not 0.0 < character_coverage <= 1.0:
        raise ValueError(f"character_coverage must be in (0, 1], got {character_coverage}")
    normalizer = None
    if language is not None:
        normalizer = language if isinstance(language, TextNormalizer) else TextNormalizer(language)
    if required_chars is None:
        english = normalizer is not None and normalizer.is_english
        required_chars = ENGLISH_ALPHABET.replace(" ", "") if english else ""
    if vocab_size <= len(set(required_chars)) + 1:
        raise ValueError(f"vocab_size {vocab_size} is too small: it must exceed the "
                         f"{len(set(required_chars))} required characters plus <unk>")
    normalised = (normalizer(t) if normalizer else t for t in texts)
    model = io.BytesIO()
    try:
        sentencepiece.SentencePieceTrainer.train(
            sentence_iterator=(t for t in normalised if t.strip()),
            model_writer=model,
            vocab_size=vocab_size,
            model_type=model_type,
            character_coverage=character_coverage,
            required_chars=required_chars,
            normalization_rule_name="identity",  # the text is normalised already
            unk_id=0, bos_id=-1, eos_id=-1, pad_id=-1,  # CTC needs no sentence markers
            input_sentence_size=SENTENCEPIECE_MAX_SENTENCES,
            shuffle_input_sentence=True,
            num_threads=min(os.cpu_count() or 1, 8),
            minloglevel=2,
        )
    except RuntimeError as exc:
        raise ValueError(f"SentencePiece training failed ({model_type}, vocab_size={vocab_size}): "
                         f"{exc}") from exc
    return SentencePieceTokenizer(model.getvalue(), normalizer or ENGLISH)


# --- files -----------------------------------------------------------------------------------

def save_tokenizer(tokenizer: Tokenizer, folder: str | os.PathLike[str]) -> dict[str, Any]:
    """Write the tokenizer's files into `folder` (`tokenizer.model` for SentencePiece; nothing
    for characters) and return its config dict, to be stored in the model's config.json."""
    config = tokenizer.to_config()
    if isinstance(tokenizer, SentencePieceTokenizer):
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / config["file"]).write_bytes(tokenizer.serialized())
    return config


_CONFIG_KEYS = {"vocab": {"kind", "tokens"}, "char": {"kind", "alphabet", "normalizer"},
                "sentencepiece": {"kind", "file", "vocab_size", "sha256", "normalizer"}}


def load_tokenizer(config: dict[str, Any], folder: str | os.PathLike[str]) -> Tokenizer:
    """Rebuild a tokenizer from its config dict and the files in `folder`.

    Raises `ConfigError` for an unknown kind, unknown keys or a missing file, `ModelError`
    when the file's checksum or size does not match the config.
    """
    kind = config.get("kind")
    if kind not in _CONFIG_KEYS:
        raise ConfigError(f"tokenizer config: unknown kind {kind!r}; expected one of "
                          f"{sorted(_CONFIG_KEYS)}")
    unknown = sorted(set(config) - _CONFIG_KEYS[kind])
    if unknown:
        raise ConfigError(f"tokenizer config ({kind}): unknown keys {unknown}")
    normalizer = TextNormalizer.from_config(config.get("normalizer", ENGLISH.to_config()))
    if kind == "char":
        try:
            return CharTokenizer(config.get("alphabet", ENGLISH_ALPHABET), normalizer)
        except ValueError as exc:
            raise ConfigError(f"tokenizer config: {exc}") from exc
    if kind == "vocab":
        try:
            return VocabTokenizer(config.get("tokens", []))
        except ValueError as exc:
            raise ConfigError(f"tokenizer config: {exc}") from exc
    name = config.get("file", TOKENIZER_FILE)
    if not isinstance(name, str) or Path(name).name != name:
        raise ConfigError(f"tokenizer config: file must be a file name inside the model folder, "
                          f"got {name!r}")
    path = Path(folder) / name
    if not path.is_file():
        raise ConfigError(f"tokenizer file {path} is missing (named by the tokenizer config)")
    data = path.read_bytes()
    expected = config.get("sha256")
    if expected is not None and hashlib.sha256(data).hexdigest() != expected:
        raise ModelError(f"{path}: SHA-256 does not match the tokenizer config (corrupt or "
                         "replaced file)")
    try:
        tokenizer = SentencePieceTokenizer(data, normalizer)
    except ModelError as exc:
        raise ModelError(f"{path}: {exc}") from exc
    if "vocab_size" in config and config["vocab_size"] != tokenizer.vocab_size:
        raise ModelError(f"{path}: {tokenizer.vocab_size} tokens, the config says "
                         f"{config['vocab_size']}")
    return tokenizer


def read_texts(path: str | os.PathLike[str]) -> Iterator[str]:
    """Transcripts from a text file (one per line) or a manifest.

    By the name (optionally ending in .gz, then decompressed): .jsonl, .json or .ndjson are
    JSONL manifests ("text" field), .csv a DeepSpeech-style CSV ("transcript" or "text"
    column); any other file is plain text. Empty lines and texts are skipped. Raises
    FileNotFoundError at once, `ManifestError` (file and line) while reading.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"transcript file {path} does not exist")
    name = path.name.lower().removesuffix(".gz")
    if name.endswith(".csv"):
        return _checked(path, _read_csv(path))
    return _checked(path, _read_lines(path, jsonl=name.endswith((".jsonl", ".json", ".ndjson"))))


def _checked(path: Path, texts: Iterator[str]) -> Iterator[str]:
    """`texts`, with undecodable bytes and broken compression raised as `ManifestError`."""
    try:
        yield from texts
    except UnicodeDecodeError as exc:
        raise ManifestError(f"{path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x}: "
                            f"{exc.reason})") from exc
    except (OSError, EOFError, zlib.error) as exc:
        raise ManifestError(f"{path}: cannot read it ({exc})") from exc


def _open_text(path: Path) -> TextIO:
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def _read_csv(path: Path) -> Iterator[str]:
    with _open_text(path) as handle:
        rows = csv.DictReader(handle)
        column = next((c for c in ("transcript", "text") if c in (rows.fieldnames or [])), None)
        if column is None:
            raise ManifestError(f"{path}, line 1: expected a 'transcript' or 'text' column, got "
                                f"{rows.fieldnames}")
        for row in rows:
            text = (row.get(column) or "").strip()
            if text:
                yield text


def _read_lines(path: Path, jsonl: bool) -> Iterator[str]:
    with _open_text(path) as lines:
        for number, line in enumerate(lines, 1):
            line = line.strip()
            if not line:
                continue
            if not jsonl:
                yield line
                continue
            try:
                entry = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ManifestError(f"{path}, line {number}: not valid JSON ({exc})") from exc
            if not isinstance(entry, dict) or not isinstance(entry.get("text"), str):
                raise ManifestError(f'{path}, line {number}: expected an object with a "text" '
                                    "string field")
            yield entry["text"]

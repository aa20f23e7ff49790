"""CTC decoding: (time, vocab) log-probabilities -> `Transcript` with word times and confidences.

Greedy (best path) decoding and the decoding options live here; beam search with an n-gram
language model (`harken.beam`, flashlight-text's decoders) builds on the same result types:

    options = DecodeOptions(beam_width=32, lm="lm/4gram.bin", hotwords={"harken": 6.0})
    transcript = beam_decode(log_probs, tokenizer, frame_seconds, options)
    decoder = get_decoder(tokenizer, options)   # built once: trie, LM (cached by path)
    decoder.decode(log_probs, frame_seconds); decoder.decode_batch([...], frame_seconds)
    stream = decoder.stream(frame_seconds); stream.feed(chunk); stream.partial(); stream.finish()
"""

from __future__ import annotations

import dataclasses
import math
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Callable, Mapping, Protocol, Sequence

import numpy as np

from harken.errors import ConfigError

if TYPE_CHECKING:
    from harken.beam import Decoder

# A pause longer than this between two words starts a new segment (subtitles, long audio).
SEGMENT_PAUSE_SECONDS = 0.8
# A segment is also closed once it is this long.
SEGMENT_MAX_SECONDS = 10.0


class WordTokenizer(Protocol):
    blank_id: int
    tokens: list[str]
    normalizer: Callable[[str], str]  # its language's transcript normaliser (hotwords, vocabularies)

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...

    def split_words(self, ids: Sequence[int]) -> list[tuple[str, list[int]]]: ...


@dataclass
class Word:
    """One recognised word: `start`/`end` in seconds, `confidence` in [0, 1].

    `word` is the word as spoken (normalised); `written` is how it is written in a written
    transcript ("Stella," or "$21"), None when none was made, "" when the word is part of
    the written form of the word before it ("twenty" -> "$21", "one" -> "")."""

    word: str
    start: float
    end: float
    confidence: float
    written: str | None = None


@dataclass
class Segment:
    """A run of words without a long pause: the unit of subtitles and long-audio results."""

    text: str
    start: float
    end: float
    words: list[Word] = field(default_factory=list)


@dataclass
class Alternative:
    """One entry of a beam search's N-best list: its text and scores (natural log)."""

    text: str
    score: float
    acoustic_score: float = 0.0


@dataclass
class Transcript:
    """The result of transcribing one input.

    `score` is the decoder's total score (acoustic log-probability, plus weighted LM and word
    scores for beam search). `alternatives` is the N-best list, best first, when
    `DecodeOptions.nbest` > 1 (its first entry is `text`); empty otherwise. `raw_text` is
    the normalised text as recognised when `text` is written text (`harken.written`), else None.
    """

    text: str
    words: list[Word] = field(default_factory=list)
    segments: list[Segment] = field(default_factory=list)
    score: float = 0.0
    duration: float = 0.0
    alternatives: list[Alternative] = field(default_factory=list)
    raw_text: str | None = None

    def to_dict(self) -> dict:
        from dataclasses import asdict

        return asdict(self)


def check_log_probs(log_probs: np.ndarray) -> np.ndarray:
    """Validate a (time, vocab) array of log-probabilities and return it as float32."""
    log_probs = np.asarray(log_probs)
    if log_probs.ndim != 2:
        raise ValueError(f"expected (time, vocab) log-probabilities, got shape {log_probs.shape}")
    if log_probs.shape[1] < 2:
        raise ValueError(f"expected a vocabulary of at least 2 (blank + 1), got {log_probs.shape[1]}")
    return log_probs.astype(np.float32, copy=False)


def best_path(log_probs: np.ndarray, blank_id: int = 0) -> tuple[list[int], list[int], list[int]]:
    """Greedy CTC path: (token ids, first frame of each token, last frame of each token)."""
    return collapse_path(log_probs.argmax(axis=1), blank_id)


def collapse_path(path: Sequence[int] | np.ndarray, blank_id: int = 0
                  ) -> tuple[list[int], list[int], list[int]]:
    """A frame-level CTC path (one token per frame) -> (token ids, first frame of each token,
    last frame of each token): repeats merge, blanks separate and are dropped."""
    path = np.asarray(path)
    if len(path) == 0:
        return [], [], []
    run_starts = np.flatnonzero(np.r_[True, path[1:] != path[:-1]])
    run_ends = np.r_[run_starts[1:] - 1, len(path) - 1]
    tokens = path[run_starts] != blank_id
    return (path[run_starts][tokens].tolist(), run_starts[tokens].tolist(),
            run_ends[tokens].tolist())


def build_transcript(
    ids: Sequence[int],
    starts: Sequence[int],
    ends: Sequence[int],
    token_confidences: Sequence[float],
    tokenizer: WordTokenizer,
    frame_seconds: float,
    score: float = 0.0,
    duration: float = 0.0,
    time_offset: float = 0.0,
) -> Transcript:
    """Group aligned tokens into words and segments (shared by greedy and beam search)."""
    words: list[Word] = []
    for text, positions in tokenizer.split_words(ids):
        if not positions:
            continue
        confidence = math.exp(math.fsum(math.log(max(token_confidences[p], 1e-12))
                                        for p in positions) / len(positions))
        words.append(Word(
            word=text,
            start=round(time_offset + starts[positions[0]] * frame_seconds, 3),
            end=round(time_offset + (ends[positions[-1]] + 1) * frame_seconds, 3),
            confidence=round(confidence, 4),
        ))
    text = " ".join(w.word for w in words) if words else tokenizer.decode(ids).strip()
    return Transcript(text=text, words=words, segments=group_segments(words), score=score,
                      duration=duration)


def group_segments(words: list[Word]) -> list[Segment]:
    """Split words into segments at long pauses and at a maximum length."""
    segments: list[Segment] = []
    current: list[Word] = []
    for word in words:
        if current and (word.start - current[-1].end > SEGMENT_PAUSE_SECONDS
                        or word.end - current[0].start > SEGMENT_MAX_SECONDS):
            segments.append(_segment(current))
            current = []
        current.append(word)
    if current:
        segments.append(_segment(current))
    return segments


def _segment(words: list[Word]) -> Segment:
    return Segment(text=" ".join(w.word for w in words), start=words[0].start,
                   end=words[-1].end, words=list(words))


def greedy_decode(
    log_probs: np.ndarray,
    tokenizer: WordTokenizer,
    frame_seconds: float,
    time_offset: float = 0.0,
) -> Transcript:
    """Best-path CTC decoding of (time, vocab) log-probabilities.

    A word's confidence is the geometric mean, over its tokens, of each token's highest
    posterior in the frames where it was emitted.
    """
    log_probs = check_log_probs(log_probs)
    frame_scores = log_probs.max(axis=1)
    return path_transcript(log_probs.argmax(axis=1), frame_scores, tokenizer, frame_seconds,
                           score=float(frame_scores.sum()), time_offset=time_offset)


def path_transcript(
    path: np.ndarray,
    frame_scores: np.ndarray,
    tokenizer: WordTokenizer,
    frame_seconds: float,
    score: float = 0.0,
    time_offset: float = 0.0,
) -> Transcript:
    """The transcript of a frame-level CTC path (greedy's or a beam's).

    `frame_scores[t]` is the log-probability of `path[t]` at frame t. A word's confidence is
    the geometric mean, over its tokens, of each token's highest posterior in its frames.
    """
    ids, starts, ends = collapse_path(path, tokenizer.blank_id)
    # A token's frames are followed only by blanks until the next token starts.
    token_frames = np.where(np.asarray(path) != tokenizer.blank_id, frame_scores, -np.inf)
    confidences = np.exp(np.maximum.reduceat(token_frames, starts)).tolist() if starts else []
    return build_transcript(ids, starts, ends, confidences, tokenizer, frame_seconds,
                            score=score, duration=len(path) * frame_seconds,
                            time_offset=time_offset)


# --- beam search options and entry points ------------------------------------------------------

DEFAULT_BEAM_WIDTH = 32
DEFAULT_LM_WEIGHT = 0.5  # alpha, applied to natural-log LM probabilities
DEFAULT_WORD_SCORE = 1.0  # beta, with an LM (0 without one)
DEFAULT_BEAM_THRESHOLD = 15.0  # nats below the best (pyctcdecode prunes at 10)
DEFAULT_TOKEN_BEAM = 8  # tokens tried per frame (the most probable): raise for large vocabularies


@dataclass(frozen=True)
class DecodeOptions:
    """Beam search settings, validated once; vary them with `dataclasses.replace`.

    The score of a hypothesis is log P_ctc + lm_weight * ln P_lm + word_score * words
    (+ hotword boosts), as in DeepSpeech and pyctcdecode (natural logs: KenLM's log10 scores are
    converted).

    - `beam_width`: hypotheses kept per frame.
    - `lm`: n-gram LM file (ARPA or KenLM binary, see `harken.lm`); None: no LM.
    - `lm_weight` (alpha), `word_score` (beta): None takes the values `harken lm tune` stored
      with the LM, else `DEFAULT_LM_WEIGHT` / `DEFAULT_WORD_SCORE` (0 without an LM). In
      lexicon-free decoding `word_score` is added per frame of the word-boundary token.
    - `unk_score`: lexicon decoding only; -inf (default) outputs lexicon words only. A finite
      value lets a hypothesis end an out-of-lexicon word (spelled from its tokens) where a
      lexicon word's spelling could go on, at this extra cost.
    - `silence_score`: added per frame of the word-boundary token (character tokenizers).
    - `beam_threshold`: hypotheses scoring this much below the best are dropped.
    - `token_beam`: only the `token_beam` most probable tokens of a frame are tried
      (None: all).
    - `hotwords`: {"word or phrase": boost}: the boost (natural log) is added when the phrase
      is recognised, with or without an LM, in the LM's vocabulary or not.
    - `nbest`: length of `Transcript.alternatives` (1: none).
    - `lexicon`: decode only words of a lexicon (the word LM's vocabulary, or `vocabulary`).
      None: lexicon decoding when the LM is a word LM or `vocabulary` is given; lexicon-free
      decoding (any token sequence, scored by a character/token LM if any) otherwise.
    - `vocabulary`: restrict the output to these words (grammar-like decoding).
    """

    beam_width: int = DEFAULT_BEAM_WIDTH
    lm: str | None = None
    lm_weight: float | None = None
    word_score: float | None = None
    unk_score: float = -math.inf
    silence_score: float = 0.0
    beam_threshold: float = DEFAULT_BEAM_THRESHOLD
    token_beam: int | None = DEFAULT_TOKEN_BEAM
    hotwords: Mapping[str, float] = field(default_factory=dict)
    nbest: int = 1
    lexicon: bool | None = None
    vocabulary: Sequence[str] | None = None

    def __post_init__(self) -> None:
        def positive_int(name: str, value: Any, allow_none: bool = False) -> None:
            if value is None and allow_none:
                return
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")

        def number(name: str, value: Any, allow_none: bool = False, minimum: float | None = None,
                   allow_minus_inf: bool = False) -> None:
            if value is None and allow_none:
                return
            ok = isinstance(value, (int, float, np.floating)) and not isinstance(value, bool)
            ok = ok and not math.isnan(value) and value != math.inf
            ok = ok and (allow_minus_inf or value != -math.inf)
            if not ok or (minimum is not None and value < minimum):
                bound = f" >= {minimum}" if minimum is not None else ""
                raise ConfigError(f"{name} must be a finite number{bound}, got {value!r}")

        positive_int("beam_width", self.beam_width)
        positive_int("token_beam", self.token_beam, allow_none=True)
        positive_int("nbest", self.nbest)
        if self.nbest > self.beam_width:
            raise ConfigError(f"nbest ({self.nbest}) cannot exceed beam_width ({self.beam_width})")
        if self.lm is not None:
            if not isinstance(self.lm, (str, os.PathLike)) or not str(self.lm):
                raise ConfigError(f"lm must be the path of an ARPA or KenLM binary file, "
                                  f"got {self.lm!r}")
            object.__setattr__(self, "lm", os.fspath(self.lm))
        number("lm_weight", self.lm_weight, allow_none=True, minimum=0.0)
        number("word_score", self.word_score, allow_none=True)
        number("unk_score", self.unk_score, allow_minus_inf=True)
        number("silence_score", self.silence_score)
        number("beam_threshold", self.beam_threshold, minimum=0.0)
        if self.beam_threshold == 0:
            raise ConfigError("beam_threshold must be > 0, got 0")
        if not isinstance(self.hotwords, Mapping):
            raise ConfigError(f"hotwords must be a mapping {{phrase: boost}}, got "
                              f"{type(self.hotwords).__name__}")
        for phrase, boost in self.hotwords.items():
            if not isinstance(phrase, str) or not phrase.strip():
                raise ConfigError(f"hotwords: each key must be a non-empty phrase, got {phrase!r}")
            number(f"hotwords[{phrase!r}]", boost)
        object.__setattr__(self, "hotwords", MappingProxyType(dict(self.hotwords)))
        if self.lexicon is not None and not isinstance(self.lexicon, bool):
            raise ConfigError(f"lexicon must be True, False or None, got {self.lexicon!r}")
        if self.vocabulary is not None:
            if isinstance(self.vocabulary, (str, bytes)):
                raise ConfigError("vocabulary must be a list of words, got a single string")
            words = tuple(self.vocabulary)
            if not words or not all(isinstance(w, str) and w.strip() for w in words):
                raise ConfigError("vocabulary must be a non-empty list of non-empty words")
            if self.lexicon is False:
                raise ConfigError("vocabulary restricts lexicon decoding: it cannot be used "
                                  "with lexicon=False")
            object.__setattr__(self, "vocabulary", words)

    def __reduce__(self) -> tuple[Any, ...]:  # the read-only hotwords view does not pickle
        return (type(self), tuple(dict(getattr(self, f.name)) if f.name == "hotwords"
                                  else getattr(self, f.name) for f in dataclasses.fields(self)))

    def cache_key(self) -> tuple[Any, ...]:
        """A hashable identity of these options (hotwords and vocabulary included)."""
        return tuple((f.name, tuple(sorted(getattr(self, f.name).items()))
                      if f.name == "hotwords" else getattr(self, f.name))
                     for f in dataclasses.fields(self))


# Options that mean greedy decoding whatever a model's stored defaults say.
GREEDY = DecodeOptions(beam_width=1)

_DECODERS: OrderedDict[tuple[Any, ...], "Decoder"] = OrderedDict()
_DECODERS_LOCK = threading.Lock()
_DECODER_CACHE_SIZE = 8


def get_decoder(tokenizer: WordTokenizer, options: DecodeOptions | None = None) -> "Decoder":
    """The beam search decoder for a tokenizer and options, built once and cached (the last
    few are kept: building one loads the LM and its lexicon)."""
    from harken.beam import Decoder

    from harken.lm import info_path

    options = options or DecodeOptions()
    lm_stamps = []  # a rebuilt LM or newly tuned weights make a new decoder
    if options.lm is not None:
        for path in (options.lm, info_path(options.lm)):
            stat = os.stat(path) if os.path.exists(path) else None
            lm_stamps.append((stat.st_mtime_ns, stat.st_size) if stat else None)
    key = (type(tokenizer), tuple(tokenizer.tokens), options.cache_key(), tuple(lm_stamps))
    with _DECODERS_LOCK:
        decoder = _DECODERS.get(key)
        if decoder is not None:
            _DECODERS.move_to_end(key)
            return decoder
    decoder = Decoder(tokenizer, options)
    with _DECODERS_LOCK:
        _DECODERS[key] = decoder
        while len(_DECODERS) > _DECODER_CACHE_SIZE:
            _DECODERS.popitem(last=False)
    return decoder


def beam_decode(
    log_probs: np.ndarray,
    tokenizer: WordTokenizer,
    frame_seconds: float,
    options: DecodeOptions | None = None,
    time_offset: float = 0.0,
) -> Transcript:
    """CTC beam search of (time, vocab) log-probabilities, with an n-gram LM when
    `options.lm` is set; word times come from the best beam's frame alignment."""
    return get_decoder(tokenizer, options).decode(log_probs, frame_seconds,
                                                  time_offset=time_offset)


def resolve_options(model: Any, options: DecodeOptions | None = None,
                    overrides: Mapping[str, Any] | None = None) -> DecodeOptions | None:
    """The decoding options of `model`: the defaults stored in its config ("decoding"), then
    `options`, then keyword `overrides`. None means greedy decoding: asked for with
    greedy=True, or when nothing asks for a beam search (no stored defaults, no options, or a
    beam width of 1 without LM, hotwords or vocabulary).

    A relative `lm` path among the stored defaults is relative to the model's folder.
    """
    overrides = dict(overrides or {})
    if overrides.pop("greedy", False):
        return None
    config = getattr(model, "config", None)
    stored = dict(getattr(config, "decoding", None) or {})
    known = {f.name for f in dataclasses.fields(DecodeOptions)}
    for source, values in (("the model's decoding defaults", stored),
                           ("decoding options", overrides)):
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"{source}: unknown keys {unknown}; expected some of "
                              f"{sorted(known)}")
    if stored.get("lm") and not os.path.isabs(stored["lm"]):
        folder = getattr(model, "path", None)
        if folder is not None:
            folder = os.fspath(folder)
            base = folder if os.path.isdir(folder) else os.path.dirname(folder)
            stored["lm"] = os.path.join(base, stored["lm"])
    if options is None and not stored and not overrides:
        return None
    resolved = options if options is not None else DecodeOptions(**stored)
    resolved = dataclasses.replace(resolved, **overrides) if overrides else resolved
    if (resolved.beam_width == 1 and resolved.lm is None and not resolved.hotwords
            and resolved.vocabulary is None):
        return None
    return resolved

"""Decoding options: `DecodeOptions` (beam width, LM, weights, hotwords), validated once, and how a
model's stored defaults, options and keyword overrides combine (`resolve_options`)."""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping, Sequence

import numpy as np

from harken.errors import ConfigError


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
    - `lm`: n-gram LM file (ARPA or KenLM binary, see `harken.decoding.lm`); None: no LM.
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


# Stored decoding defaults that belong to the stored LM (tuned with it).
_LM_TIED = ("lm_weight", "word_score", "silence_score")


def _same_file(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is b
    return os.path.realpath(os.fspath(a)) == os.path.realpath(os.fspath(b))


def resolve_options(model: Any, options: DecodeOptions | None = None,
                    overrides: Mapping[str, Any] | None = None) -> DecodeOptions | None:
    """The decoding options of `model`: the defaults stored in its config ("decoding"), then
    `options`, then keyword `overrides`. None means greedy decoding: asked for with
    greedy=True, or when nothing asks for a beam search (no stored defaults, no options, or a
    beam width of 1 without LM, hotwords or vocabulary).

    A relative `lm` path among the stored defaults is relative to the model's folder. The
    stored `lm_weight`, `word_score` and `silence_score` go with the stored LM: overriding
    `lm` (None for no LM) drops them, so no word bonus applies without an LM unless asked for.
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
    if "lm" in overrides and not _same_file(overrides["lm"], stored.get("lm")):
        # The stored weights were tuned with the stored LM: without it (or with another LM)
        # no word or silence bonus applies unless the caller sets one.
        for name in _LM_TIED:
            stored.pop(name, None)
    if options is None and not stored and not overrides:
        return None
    resolved = options if options is not None else DecodeOptions(**stored)
    resolved = dataclasses.replace(resolved, **overrides) if overrides else resolved
    if (resolved.beam_width == 1 and resolved.lm is None and not resolved.hotwords
            and resolved.vocabulary is None):
        return None
    return resolved


def requested_options(model: Any, overrides: Mapping[str, Any]) -> DecodeOptions | None:
    """The options a caller asked for by keyword `overrides` over `model`'s stored defaults:
    GREEDY for greedy=True, None (the model's own defaults) when nothing is asked."""
    overrides = dict(overrides)
    if overrides.pop("greedy", False):
        return GREEDY
    return model.decode_options(**overrides) if overrides else None

"""CTC prefix beam search with n-gram language models, on flashlight-text's decoders.

Hypotheses that reach the same state (tokens so far, whether the last frame was a blank, LM
state) are merged by adding their probabilities (flashlight's `log_add`), so a token sequence is
scored over all its alignments: without an LM this is CTC prefix beam search, not the best path.
flashlight starts a search on its silence token; a first frame that only allows the blank makes
that start CTC's initial state (else a space in the first frame would be a repeat, not a label).

`Decoder` is built once per tokenizer and `DecodeOptions` (use `harken.decoding.get_decoder`,
which caches them): it loads the LM (KenLM, through flashlight; cached by path) and, for lexicon
decoding, the trie of every word's token spelling. Then:

- lexicon decoding (`LexiconDecoder`): the output is a sequence of lexicon words (the word LM's
  vocabulary, or `vocabulary`), scored by the word LM;
- lexicon-free decoding (`LexiconFreeDecoder`): any token sequence, scored by a character or
  token LM (`harken.decoding.lm` units "char" / "token"), or by none.

How tokenizers map onto flashlight's decoders:

- Character tokenizers: the space token is the word boundary (flashlight's "silence"). A word
  is spelled as its characters followed by the boundary, so a word is complete once the
  boundary is emitted; decoding ends with one extra frame in which only the boundary is
  possible, which completes the last word. A character LM sees the space as
  `harken.decoding.lm.WORD_BOUNDARY`.
- SentencePiece: words begin at "▁" pieces and there is no boundary token, so the
  "silence" is an extra emission column that never scores. flashlight completes a word on
  the frame its last piece is first emitted and cannot repeat that piece afterwards, so each
  word is also spelled with its last piece doubled, which lets the piece last several frames.
  The price: a one-piece word said twice with only blanks between ("had had") can be read
  once, as flashlight lets a label fire after a blank.

Hotwords are added by `BoostedLM`, a Python LM wrapped around KenLM (or around nothing): a
phrase earns its boost piece by piece as it is recognised, and what it earned is taken back if
the phrase is not completed. Python is called for every LM query then, which costs about ten
times the LM time in lexicon-free decoding (little in lexicon decoding, where the LM is queried
once per word).

flashlight reports KenLM's log10 probabilities; `lm_weight` is applied to natural logs, as in
DeepSpeech and pyctcdecode, by scaling it by ln(10).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import math
import os
import threading
from collections import OrderedDict
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from harken.decoding.options import DEFAULT_LM_WEIGHT, DEFAULT_WORD_SCORE, DecodeOptions
from harken.decoding.types import Alternative, Transcript, WordTokenizer
from harken.decoding.greedy import check_log_probs, collapse_path, path_transcript
from harken.errors import ConfigError
from harken.decoding.lm import UNK, WORD_BOUNDARY, LMInfo, info_path, lm_vocabulary, read_lm_info
from harken.decoding.lexicon_cache import (cache_key as lexicon_key, load_lexicon, make_lexicon,
                                           save_lexicon)

_IMPOSSIBLE = -1e9  # emission score of a token that cannot occur in a frame
_WORD_START = "\u2581"  # SentencePiece's mark of a word's first piece
# Streams commit their oldest frames once this many are undecided, keeping the last
# STREAM_LOOK_BACK frames open (bounded memory for long audio).
STREAM_COMMIT_FRAMES = 3000
_TRIE_BUILDS = threading.Lock()
# Word labels kept for hotword words outside a lexicon (the LM reads them as unknown words).
HOTWORD_LABELS = 512
STREAM_LOOK_BACK = 500


def _flashlight() -> Any:
    from flashlight.lib.text import decoder

    return decoder


class Decoder:
    """CTC beam search for one tokenizer and one set of options (see `DecodeOptions`).

    `decode` one utterance, `decode_batch` many in worker processes, `stream` for incremental
    decoding. Building loads the LM and builds the lexicon trie: reuse the decoder.
    """

    def __init__(self, tokenizer: WordTokenizer, options: DecodeOptions | None = None) -> None:
        self.tokenizer = tokenizer
        self.options = options = options or DecodeOptions()
        self.vocab_size = len(tokenizer.tokens)
        tokens = list(tokenizer.tokens)
        self.boundary_id = tokens.index(" ") if " " in tokens else None
        # flashlight's "silence" token: the word boundary, or an extra column that never scores.
        self._sil = self.boundary_id if self.boundary_id is not None else self.vocab_size
        self._columns = self.vocab_size + (self.boundary_id is None)

        info = LMInfo(unit="")  # no LM
        if options.lm is not None:
            if not os.path.isfile(options.lm):
                raise ConfigError(f"lm: {options.lm} does not exist")
            info = read_lm_info(options.lm)
        self.lm_unit: str | None = info.unit or None
        # Unset weights: the LM's tuned values (`harken lm tune --write`), else the defaults.
        self.lm_weight = _first(options.lm_weight, info.lm_weight, DEFAULT_LM_WEIGHT) \
            if options.lm else 0.0
        self.word_score = _first(options.word_score, info.word_score,
                                 DEFAULT_WORD_SCORE if options.lm else 0.0)
        self.lexicon = self._use_lexicon()
        if not self.lexicon and self.boundary_id is None:  # no word boundary to score
            if options.word_score:
                raise ConfigError(
                    "word_score needs a word-boundary token in lexicon-free decoding; "
                    "SentencePiece tokenizers have none: use lexicon decoding (a word LM or "
                    "vocabulary) or word_score=0")
            self.word_score = 0.0
        if self.lm_unit == "char" and self.boundary_id is None:
            raise ConfigError(f"lm: {options.lm} is a character LM; it needs a character "
                              "tokenizer (use a token LM built with this tokenizer)")

        # Lexicon words are labels 0..n-1, then the unknown word, then hotword words outside
        # the lexicon (`HOTWORD_LABELS` of them at most, which the LM reads as unknown): the LM
        # and the lexicon's trie do not depend on the hotwords, and are shared by the
        # decoders that differ only in them (`with_hotwords`).
        # The lexicon of a word LM without hotwords or vocabulary is cached next to the LM
        # (harken.decoding.lexicon_cache): the words, spellings and unigram scores of the trie.
        cache_key = cached = None
        if self.lexicon and options.lm and options.vocabulary is None and not options.hotwords:
            cache_key = lexicon_key(options.lm, tokens, self.boundary_id)
            cached = load_lexicon(options.lm, cache_key)
        if cached is not None:
            self.words: list[str] = cached.words
        else:
            self.words = self._lexicon_words() if self.lexicon else []
        self._unk = len(self.words)
        self._labels = {w: i for i, w in enumerate(self.words)}
        spare = [f"<hotword {i}>" for i in range(HOTWORD_LABELS)]
        entries = self.words + [UNK] + spare if self.lexicon else self._token_lm_symbols()
        self._lm = _load_kenlm(options.lm, tuple(entries)) if options.lm else None
        if options.lm and not self.lexicon:
            self._check_token_lm(entries)
        self._base = self  # the decoder without hotwords that this one shares LM and trie with
        self._hotwords: _Hotwords | None = None
        if cached is not None:
            self._spelled = {tuple(s): label for s, label in zip(cached.spellings(),
                                                                 cached.labels.tolist())}
            self._unigrams = dict(zip(cached.labels.tolist(), cached.scores.tolist()))
        else:
            self._spelled = self._spellings(self.words) if self.lexicon else {}
        self._trie = self._build_trie() if self.lexicon else None
        if cache_key is not None and cached is None:
            save_lexicon(options.lm, cache_key, make_lexicon(
                self.words, self._spelled, [self._unigrams[label] for label in self._spelled.values()]))
        self.owns_trie = self.lexicon  # (decoders with hotwords may share their base's)
        if options.hotwords:
            base = copy.copy(self)
            base.options = dataclasses.replace(options, hotwords={})
            base._base = base
            self._base = base
            self._use_hotwords(options.hotwords)

    # -- set-up ---------------------------------------------------------------------------
    def _use_lexicon(self) -> bool:
        options = self.options
        word_lm = self.lm_unit == "word"
        lexicon = options.lexicon
        if lexicon is None:
            lexicon = word_lm or options.vocabulary is not None
        if lexicon and options.lm is not None and not word_lm:
            raise ConfigError(f"lexicon decoding (lexicon=True or a vocabulary) needs a word LM; "
                              f"lm: {options.lm} is a {self.lm_unit} LM")
        if lexicon and options.lm is None and options.vocabulary is None:
            raise ConfigError("lexicon decoding needs a word list: give a word LM (lm=...) or "
                              "vocabulary=[...]")
        if not lexicon and word_lm:
            raise ConfigError(f"lm: {options.lm} is a word LM, which needs lexicon decoding "
                              "(lexicon=True or None); lexicon-free decoding takes a character "
                              "or token LM")
        return lexicon

    def _lexicon_words(self) -> list[str]:
        if self.options.vocabulary is not None:
            words = [w for entry in self.options.vocabulary
                     for w in self.tokenizer.normalizer(entry).split()]
        else:
            words = lm_vocabulary(self.options.lm)  # type: ignore[arg-type]
        return list(dict.fromkeys(w for w in words if w))

    def with_hotwords(self, hotwords: Any, nbest: int | None = None) -> "Decoder":
        """This decoder with other hotwords (and N-best length), sharing its LM, and its
        lexicon trie unless a hotword has a word outside the lexicon (then only the trie is
        rebuilt)."""
        base = self._base
        other = copy.copy(base)
        other.options = dataclasses.replace(base.options, hotwords=dict(hotwords),
                                            nbest=nbest or self.options.nbest)
        other._use_hotwords(other.options.hotwords)
        return other

    def _use_hotwords(self, hotwords: Any) -> None:
        base = self._base
        self.words, self._labels = base.words, base._labels
        self._trie, self.owns_trie = base._trie, False
        self._hotwords = None
        if not hotwords:
            return
        extra: list[str] = []
        if self.lexicon:
            for phrase in hotwords:
                extra.extend(w for w in self.tokenizer.normalizer(phrase).split()
                             if w not in base._labels and w not in extra)
            if len(extra) > HOTWORD_LABELS:
                raise ConfigError(f"hotwords: at most {HOTWORD_LABELS} words outside the "
                                  f"lexicon, got {len(extra)}")
            if extra:
                self.words = base.words + extra
                self._labels = {**base._labels,
                                **{w: self._unk + 1 + i for i, w in enumerate(extra)}}
        self._hotwords = _Hotwords.compile(hotwords, self)
        if self.lexicon and (extra or (self._lm is not None and self._lm_scale() == 0)):
            # (with lm_weight 0 the trie's look-ahead scores are scaled differently)
            spelled = dict(base._spelled)
            for word in extra:
                spelled.update(self._spellings([word], self._labels[word]))
            with _TRIE_BUILDS:  # one at a time: each holds every word's spelling
                self._trie, self.owns_trie = self._build_trie(spelled), True

    def _lm_scale(self) -> float:
        """The weight of natural-log LM scores, for flashlight's log10 ones."""
        return self.lm_weight * math.log(10.0)

    def _token_lm_symbols(self) -> list[str]:
        """The LM word of each token (lexicon-free decoding), then the extra column's."""
        symbols = [WORD_BOUNDARY if i == self.boundary_id else t
                   for i, t in enumerate(self.tokenizer.tokens)]
        return symbols + ["</s>"] * (self._columns - self.vocab_size)

    def _check_token_lm(self, symbols: list[str]) -> None:
        known = set(lm_vocabulary(self.options.lm))  # type: ignore[arg-type]
        used = [s for i, s in enumerate(symbols[:self.vocab_size]) if i != self.tokenizer.blank_id]
        if sum(s in known for s in used) < len(used) / 2:
            raise ConfigError(f"lm: {self.options.lm} ({self.lm_unit} LM) knows few of the "
                              "tokenizer's tokens: it was built for another tokenizer")

    def spell(self, word: str) -> list[int] | None:
        """A word's token spelling in the lexicon trie (None when the tokenizer cannot
        spell it)."""
        try:
            ids = self.tokenizer.encode(word)
        except ValueError:
            return None
        if not ids or self.tokenizer.blank_id in ids:
            return None
        return ids + [self.boundary_id] if self.boundary_id is not None else ids

    def _spellings(self, words: Sequence[str], first_label: int = 0
                   ) -> dict[tuple[int, ...], int]:
        """{token spelling: word label} of the words the tokenizer can spell."""
        spelled: dict[tuple[int, ...], int] = {}
        for label, word in enumerate(words, first_label):
            spelling = self.spell(word)
            if spelling is not None:
                spelled.setdefault(tuple(spelling), label)
        if self.boundary_id is None:  # see the module docstring: the last piece may repeat
            for spelling, label in list(spelled.items()):
                spelled.setdefault(spelling + spelling[-1:], label)
        return spelled

    def _build_trie(self, spelled: dict[tuple[int, ...], int] | None = None) -> Any:
        """The lexicon trie of `spelled` (default: the lexicon's words), each word with its
        unigram score as look-ahead; the base decoder's scores are computed once."""
        fl = _flashlight()
        spelled = self._spelled if spelled is None else spelled
        trie = fl.Trie(self._columns + 1, self._sil)
        lm = self._new_lm()
        start = lm.start(True)  # unigram context: the trie's look-ahead scores
        known = self._base.__dict__.get("_unigrams", {})
        scale = 1.0 if self._hotwords is None or self._lm_scale() > 0 else 0.0
        unigrams: dict[int, float] = {}
        for spelling, label in spelled.items():
            score = unigrams.get(label)
            if score is None:
                base_score = known.get(label)  # the base decoder's, or the cached lexicon's
                score = (base_score * scale if base_score is not None
                         else lm.score(start, label)[1])
                unigrams[label] = score
            trie.insert(list(spelling), label, score)
        if self._hotwords is None:
            self._unigrams = unigrams
        if not spelled:
            raise ConfigError("lexicon decoding: the tokenizer can spell none of the lexicon's "
                              "words")
        trie.smear(fl.SmearingMode.MAX)
        return trie

    def _new_lm(self) -> Any:
        """The LM of one search: the shared KenLM (or none), wrapped for hotwords."""
        fl = _flashlight()
        if self._hotwords is None:
            return self._lm if self._lm is not None else fl.ZeroLM()
        scale = self._lm_scale()
        # LM scores stay in the units the decoder weights (so the shared trie's look-ahead
        # scores fit); boosts are divided by the weight. A zero weight weights boosts only.
        if scale > 0:
            return _boosted_lm_type()(self._lm, 1.0, 1.0 / scale, self._hotwords)
        return _boosted_lm_type()(self._lm, 0.0, 1.0, self._hotwords)

    def _new_search(self) -> Any:
        """A flashlight decoder for one utterance (it holds that utterance's beam)."""
        fl = _flashlight()
        o = self.options
        weight = self._lm_scale()
        if self._hotwords is not None and weight == 0:
            weight = 1.0  # BoostedLM then gives the boosts only (see `_new_lm`)
        token_beam = min(o.token_beam or self._columns, self._columns)
        lm = self._new_lm()
        if self.lexicon:
            options = fl.LexiconDecoderOptions(
                beam_size=o.beam_width, beam_size_token=token_beam,
                beam_threshold=o.beam_threshold, lm_weight=weight, word_score=self.word_score,
                unk_score=o.unk_score, sil_score=o.silence_score, log_add=True,
                criterion_type=fl.CriterionType.CTC)
            return fl.LexiconDecoder(options, self._trie, lm, self._sil,
                                     self.tokenizer.blank_id, self._unk, [], False), lm
        sil_score = o.silence_score + (self.word_score if self.boundary_id is not None else 0.0)
        options = fl.LexiconFreeDecoderOptions(
            beam_size=o.beam_width, beam_size_token=token_beam, beam_threshold=o.beam_threshold,
            lm_weight=weight, sil_score=sil_score, log_add=True,
            criterion_type=fl.CriterionType.CTC)
        return fl.LexiconFreeDecoder(options, lm, self._sil, self.tokenizer.blank_id, []), lm

    # -- decoding -------------------------------------------------------------------------
    def emissions(self, log_probs: np.ndarray) -> np.ndarray:
        """Checked (time, vocab) log-probabilities as flashlight reads them (C-contiguous
        float32, plus the never-scoring silence column for SentencePiece)."""
        log_probs = check_log_probs(log_probs)
        if log_probs.shape[1] != self.vocab_size:
            raise ValueError(f"expected log-probabilities over the tokenizer's "
                             f"{self.vocab_size} tokens, got shape {log_probs.shape}")
        if self._columns == self.vocab_size:
            return np.ascontiguousarray(log_probs)
        out = np.full((len(log_probs), self._columns), _IMPOSSIBLE, dtype=np.float32)
        out[:, :self.vocab_size] = log_probs
        return out

    def _lead_frame(self) -> np.ndarray:
        """The frame fed before the audio's: only the blank is possible."""
        frame = np.full((1, self._columns), _IMPOSSIBLE, dtype=np.float32)
        frame[0, self.tokenizer.blank_id] = 0.0
        return frame

    def _final_frame(self) -> np.ndarray | None:
        """The extra last frame that completes the last word (character lexicon decoding)."""
        if not (self.lexicon and self.boundary_id is not None):
            return None
        frame = np.full((1, self._columns), _IMPOSSIBLE, dtype=np.float32)
        frame[0, self.boundary_id] = 0.0
        return frame

    def decode(self, log_probs: np.ndarray, frame_seconds: float,
               time_offset: float = 0.0) -> Transcript:
        """Beam search of one utterance's (time, vocab) log-probabilities."""
        stream = self.stream(frame_seconds, time_offset)
        stream.feed(log_probs)
        return stream.finish()

    def decode_batch(self, batch: Sequence[np.ndarray], frame_seconds: float,
                     workers: int | None = 1,
                     time_offsets: Sequence[float] | None = None) -> list[Transcript]:
        """Decode many utterances; results keep the input order.

        `workers` > 1 decodes in that many processes (None: one per CPU core). flashlight
        holds the GIL while it decodes, so threads would not help; processes pay off for
        large batches on idle cores (each worker starts from a copy of this decoder).
        """
        offsets = list(time_offsets) if time_offsets is not None else [0.0] * len(batch)
        if len(offsets) != len(batch):
            raise ValueError(f"time_offsets has {len(offsets)} entries for {len(batch)} inputs")
        workers = min(workers or os.cpu_count() or 1, len(batch))
        if workers <= 1:
            return [self.decode(lp, frame_seconds, t) for lp, t in zip(batch, offsets)]
        with ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(self,)) as pool:
            jobs = [(lp, frame_seconds, t) for lp, t in zip(batch, offsets)]
            return list(pool.map(_decode_in_worker, jobs,
                                 chunksize=max(1, len(jobs) // (4 * workers))))

    def stream(self, frame_seconds: float, time_offset: float = 0.0) -> "DecoderStream":
        """Incremental decoding: `feed` chunks of log-probabilities, read `partial`, then
        `finish`. The result equals `decode` of all chunks at once."""
        return DecoderStream(self, frame_seconds, time_offset)

    def reweighted(self, lm_weight: float, word_score: float) -> "Decoder":
        """This decoder with another LM weight and word score, sharing its LM and lexicon
        (cheap, for grid searches; rebuilt when hotwords are scored into the lexicon)."""
        options = dataclasses.replace(self.options, lm_weight=lm_weight, word_score=word_score)
        if word_score and not self.lexicon and self.boundary_id is None:
            return Decoder(self.tokenizer, options)  # raises the error that explains why
        if self._hotwords is not None:
            return self._base.reweighted(lm_weight, word_score).with_hotwords(
                self.options.hotwords)
        other = copy.copy(self)
        other._base = other
        other.options = options
        other.lm_weight = float(lm_weight) if self._lm is not None else 0.0
        other.word_score = float(word_score)
        return other

    def __reduce__(self) -> tuple[Any, ...]:  # worker processes rebuild it
        return (Decoder, (self.tokenizer, self.options))

    def __copy__(self) -> "Decoder":  # shares the LM and trie (`__reduce__` would rebuild)
        other = Decoder.__new__(Decoder)
        other.__dict__.update(self.__dict__)
        return other

    # -- results --------------------------------------------------------------------------
    def _text(self, path: np.ndarray) -> str:
        ids = collapse_path(path, self.tokenizer.blank_id)[0]
        words = self.tokenizer.split_words(ids)
        return " ".join(w for w, _ in words) if words else self.tokenizer.decode(ids).strip()

    def _frame_path(self, tokens: Sequence[int], frames: int) -> np.ndarray:
        """flashlight's token list (the root first, one entry per frame) -> frame path."""
        path = np.asarray(tokens[1:1 + frames], dtype=np.int64)
        path[path >= self.vocab_size] = self.tokenizer.blank_id
        return path


class DecoderStream:
    """One utterance decoded chunk by chunk (from `Decoder.stream`).

    Memory stays bounded on long audio: once `STREAM_COMMIT_FRAMES` frames are undecided, the
    best hypothesis up to `STREAM_LOOK_BACK` frames ago is committed and the beam's older
    history dropped (the committed words no longer change).
    """

    def __init__(self, decoder: Decoder, frame_seconds: float, time_offset: float) -> None:
        self.decoder = decoder
        self.frame_seconds = frame_seconds
        self.time_offset = time_offset
        self._search, self._lm = decoder._new_search()
        self._search.decode_begin()
        # flashlight starts every hypothesis on the silence token, so a space in the first
        # frame would count as a repeat of it (no label) while one after a blank is a label:
        # a first frame that can only be blank starts the search in CTC's initial state.
        lead = decoder._lead_frame()
        self._search.decode_step(lead.ctypes.data, 1, lead.shape[1])
        self._lead = 1  # frames of `lead` not committed yet (they are not part of the path)
        self._open: list[np.ndarray] = []  # emissions of the frames not committed yet
        self._open_frames = 0
        self._committed: list[np.ndarray] = []  # frame path of committed frames
        self._committed_scores: list[np.ndarray] = []
        self._done = False

    def feed(self, log_probs: np.ndarray) -> None:
        """Decode the next (time, vocab) chunk of log-probabilities."""
        if self._done:
            raise RuntimeError("this stream is finished; start another with Decoder.stream()")
        emissions = self.decoder.emissions(log_probs)
        if len(emissions) == 0:
            return
        self._search.decode_step(emissions.ctypes.data, len(emissions), emissions.shape[1])
        self._open.append(emissions)
        self._open_frames += len(emissions)
        if self._open_frames > STREAM_COMMIT_FRAMES:
            self._commit()

    def partial(self, nbest: int = 1) -> Transcript:
        """The best transcript of the frames fed so far (words may still change), with up to
        `nbest` alternatives (when `nbest` > 1), each with its own words."""
        if self._done:
            raise RuntimeError("this stream is finished")
        # The best hypothesis of the current frame with its whole path, the word being spelled
        # included (`get_best_hypothesis` walks back to the last completed word, which in
        # lexicon decoding is often no word at all mid-utterance).
        hypotheses = self._search.get_all_final_hypothesis()
        if not hypotheses:
            return self._transcript([], 0.0, [])
        best = max(hypotheses, key=lambda h: h.score)
        alternatives = []
        if nbest > 1:
            ranked = sorted(hypotheses, key=lambda h: -h.score)
            alternatives = self._alternatives(ranked, nbest)
        return self._transcript(list(best.tokens), best.score, alternatives)

    def finish(self) -> Transcript:
        """Finish the utterance (the LM scores the sentence end) and return its transcript,
        with the N-best list when `nbest` > 1."""
        if self._done:
            raise RuntimeError("this stream is finished")
        self._done = True
        final = self.decoder._final_frame()
        if final is not None:
            self._search.decode_step(final.ctypes.data, 1, final.shape[1])
        self._search.decode_end()
        results = self._search.get_all_final_hypothesis()
        if not results:
            return self._transcript([], 0.0, [])
        alternatives = self._alternatives(results) if self.decoder.options.nbest > 1 else []
        return self._transcript(list(results[0].tokens), results[0].score, alternatives)

    def _path(self, tokens: list[int], frames: int) -> np.ndarray:
        """A hypothesis' flashlight tokens -> the frame path of the open frames."""
        return self.decoder._frame_path(tokens[self._lead:], frames)

    def _commit(self) -> None:
        best = self._search.get_best_hypothesis(STREAM_LOOK_BACK)
        frames = len(best.tokens) - 1
        if frames <= 0:
            return
        emissions = np.concatenate(self._open)
        path = self._path(list(best.tokens), frames - self._lead)
        frames -= self._lead
        self._lead = 0
        self._committed.append(path)
        self._committed_scores.append(emissions[np.arange(frames), path])
        self._open = [emissions[frames:]]
        self._open_frames -= frames
        self._search.prune(STREAM_LOOK_BACK)

    def _transcript(self, tokens: list[int], score: float,
                    alternatives: list[Alternative]) -> Transcript:
        emissions = (np.concatenate(self._open) if self._open
                     else np.zeros((0, self.decoder._columns), np.float32))
        path = self._path(tokens, len(emissions)) if tokens else \
            np.zeros(0, np.int64)
        if len(path) < len(emissions):  # frames after the hypothesis' end: nothing recognised
            path = np.concatenate([path, np.full(len(emissions) - len(path),
                                                 self.decoder.tokenizer.blank_id, np.int64)])
        scores = emissions[np.arange(len(path)), path]
        full_path = np.concatenate(self._committed + [path])
        full_scores = np.concatenate(self._committed_scores + [scores])
        transcript = path_transcript(full_path, full_scores, self.decoder.tokenizer,
                                     self.frame_seconds, score=float(score),
                                     time_offset=self.time_offset)
        transcript.alternatives = alternatives
        return transcript

    def _alternatives(self, results: Sequence[Any], nbest: int | None = None
                      ) -> list[Alternative]:
        """The first `nbest` distinct texts of `results` (best first), each with the words
        and times of its own alignment."""
        nbest = nbest or self.decoder.options.nbest
        frames = self._open_frames
        emissions = (np.concatenate(self._open) if self._open
                     else np.zeros((0, self.decoder._columns), np.float32))
        seen: dict[str, Alternative] = {}
        for result in results:
            path = self._path(list(result.tokens), frames)
            if len(path) < frames:
                path = np.concatenate([path, np.full(frames - len(path),
                                                     self.decoder.tokenizer.blank_id, np.int64)])
            scores = emissions[np.arange(frames), path]
            aligned = path_transcript(np.concatenate(self._committed + [path]),
                                      np.concatenate(self._committed_scores + [scores]),
                                      self.decoder.tokenizer, self.frame_seconds,
                                      time_offset=self.time_offset)
            if aligned.text not in seen:
                seen[aligned.text] = Alternative(
                    text=aligned.text, score=float(result.score),
                    acoustic_score=float(result.emittingModelScore), words=aligned.words)
                if len(seen) == nbest:
                    break
        return list(seen.values())


# --- hotwords ----------------------------------------------------------------------------------

@dataclass
class _Hotwords:
    """A trie of hotword unit sequences (words in lexicon decoding, tokens otherwise).

    `bonus[node]`: what a hypothesis has earned on reaching `node` (a phrase's boost spread
    evenly over its units). Per unit: `begins[u]` (it may start a phrase), `ends[u]` (it ends
    the word before it: a phrase just before it is complete), `separator[u]` (the next unit
    begins a word: the character tokenizers' space).
    """

    children: list[dict[int, int]]
    bonus: list[float]
    terminal: list[bool]
    begins: np.ndarray
    ends: np.ndarray
    separator: np.ndarray

    @classmethod
    def compile(cls, hotwords: Any, decoder: Decoder) -> "_Hotwords":
        units = (decoder._unk + 1 + HOTWORD_LABELS) if decoder.lexicon else decoder._columns
        if decoder.lexicon:
            labels = decoder._labels
            begins = ends = np.ones(units, dtype=bool)
            separator = np.zeros(units, dtype=bool)
        else:
            tokens = list(decoder.tokenizer.tokens) + [""] * (units - decoder.vocab_size)
            separator = np.array([i == decoder.boundary_id for i in range(units)])
            begins = np.array([t.startswith(_WORD_START) for t in tokens])
            ends = separator | begins
        table = cls([{}], [0.0], [False], begins, ends, separator)
        for phrase, boost in hotwords.items():
            text = decoder.tokenizer.normalizer(phrase)
            if not text:
                raise ConfigError(f"hotwords: {phrase!r} has no letters left after normalisation")
            if decoder.lexicon:
                unspellable = [w for w in text.split() if decoder.spell(w) is None]
                if unspellable:
                    raise ConfigError(f"hotwords: the tokenizer cannot spell {unspellable}")
                sequence = [labels[w] for w in text.split()]
            else:
                try:
                    sequence = decoder.tokenizer.encode(text)
                except ValueError as exc:
                    raise ConfigError(f"hotwords: {phrase!r}: {exc}") from exc
            table._add(sequence, float(boost))
        return table

    def _add(self, sequence: Sequence[int], boost: float) -> None:
        add_hotword(self.children, self.bonus, self.terminal, sequence, boost)

    def step(self, node: int, earned: float, can_begin: bool, unit: int
             ) -> tuple[int, float, float]:
        """Follow `unit`: (new node, earned so far, score change)."""
        change = 0.0
        if node:
            child = self.children[node].get(unit)
            if child is not None:
                return child, self.bonus[child], self.bonus[child] - earned
            if not (self.terminal[node] and self.ends[unit]):
                change = -earned  # not a hotword after all: take back what it earned
        if can_begin or self.begins[unit]:
            child = self.children[0].get(unit)
            if child is not None:
                return child, self.bonus[child], change + self.bonus[child]
        return 0, 0.0, change


def add_hotword(children: list[dict[int, int]], bonus: list[float], terminal: list[bool],
                sequence: Sequence[int], boost: float) -> None:
    """Insert one phrase (its units) into a hotword trie held as parallel lists: node i has
    `children[i]` {unit: node}, earns `bonus[i]` (the phrase's boost, shared out over its
    units so a partial match earns part of it) and is `terminal[i]` where a phrase ends."""
    node = 0
    for depth, unit in enumerate(sequence, 1):
        child = children[node].get(unit)
        share = float(boost) * depth / len(sequence)
        if child is None:
            child = children[node][unit] = len(children)
            children.append({})
            bonus.append(share)
            terminal.append(False)
        else:
            bonus[child] = max(bonus[child], share)
        node = child
    terminal[node] = True


@functools.lru_cache(maxsize=1)
def _boosted_lm_type() -> type:
    """The `BoostedLM` class (defined on first use: it subclasses flashlight's LM)."""
    fl = _flashlight()

    class BoostedLM(fl.LM):  # type: ignore[misc, valid-type]
        """An LM (KenLM or none) plus hotword boosts, called by flashlight from C++."""

        def __init__(self, inner: Any, weight: float, boost_scale: float,
                     hotwords: _Hotwords) -> None:
            fl.LM.__init__(self)
            self._inner = inner
            self._weight = weight  # of the inner LM's scores
            self._boost_scale = boost_scale
            self._hotwords = hotwords
            self._states: dict[Any, tuple[int, float, bool, float]] = {}

        def start(self, start_with_nothing: bool) -> Any:
            state = self._inner.start(start_with_nothing) if self._inner else fl.LMState()
            self._states = {state: (0, 0.0, True, 0.0)}
            return state

        def score(self, state: Any, unit: int) -> tuple[Any, float]:
            if self._inner is not None:
                child, value = self._inner.score(state, unit)
                value *= self._weight
            else:
                child, value = state.child(unit), 0.0
            known = self._states.get(child)
            if known is None:
                node, earned, can_begin, _ = self._states[state]
                node, earned, change = self._hotwords.step(node, earned, can_begin, unit)
                known = self._states[child] = (node, earned,
                                               bool(self._hotwords.separator[unit]),
                                               change * self._boost_scale)
            return child, value + known[3]

        def finish(self, state: Any) -> tuple[Any, float]:
            node, earned, _, _ = self._states[state]
            if self._inner is not None:
                child, value = self._inner.finish(state)
                value *= self._weight
            else:
                child, value = state.child(-1), 0.0
            if node and not self._hotwords.terminal[node]:
                value -= earned * self._boost_scale
            return child, value

    return BoostedLM


# --- helpers -----------------------------------------------------------------------------------

def _first(*values: float | None) -> float:
    return float(next(v for v in values if v is not None))


@functools.lru_cache(maxsize=4)
def _load_kenlm_cached(path: str, stamp: tuple[int, int], entries: tuple[str, ...]) -> Any:
    from flashlight.lib.text.decoder.kenlm import KenLM
    from flashlight.lib.text.dictionary import Dictionary

    dictionary = Dictionary()
    for index, entry in enumerate(entries):
        dictionary.add_entry(entry, index)
    with quiet_stderr():  # KenLM prints a progress bar while it reads an ARPA file
        try:
            return KenLM(path, dictionary)
        except Exception as exc:  # flashlight raises plain RuntimeErrors
            raise ConfigError(f"lm: cannot load {path}: {exc}") from exc


def _load_kenlm(path: str, entries: tuple[str, ...]) -> Any:
    """flashlight's KenLM for `path`, its words mapped to `entries` (cached by path, file
    stamp and entries)."""
    resolved = Path(path).resolve()
    stat = resolved.stat()
    return _load_kenlm_cached(str(resolved), (stat.st_mtime_ns, stat.st_size), entries)


@contextlib.contextmanager
def quiet_stderr() -> Iterator[None]:
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


_WORKER: Decoder | None = None


def _init_worker(decoder: Decoder) -> None:
    global _WORKER
    _WORKER = decoder


def _decode_in_worker(job: tuple[np.ndarray, float, float]) -> Transcript:
    assert _WORKER is not None
    return _WORKER.decode(*job)


_DECODERS: OrderedDict[tuple[Any, ...], Decoder] = OrderedDict()


_DECODERS_LOCK = threading.Lock()


_DECODER_CACHE_SIZE = 8
_TRIE_CACHE_SIZE = 2  # of the cached decoders, at most this many with a lexicon trie of their own


def get_decoder(tokenizer: WordTokenizer, options: DecodeOptions | None = None) -> Decoder:
    """The beam search decoder for a tokenizer and options, built once and cached (the last
    few are kept: building one loads the LM and its lexicon)."""
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
    if options.hotwords or options.nbest > 1:  # shares the LM (and mostly the lexicon) of
        # the decoder without them
        decoder = get_decoder(tokenizer, dataclasses.replace(options, hotwords={}, nbest=1))
        decoder = decoder.with_hotwords(options.hotwords, options.nbest)
    else:
        decoder = Decoder(tokenizer, options)
    with _DECODERS_LOCK:
        _DECODERS[key] = decoder
        _DECODERS.move_to_end(key)
        while len(_DECODERS) > _DECODER_CACHE_SIZE:
            _DECODERS.popitem(last=False)
        # A lexicon trie holds every word's spelling (about 100 MB for 150 k words): few are kept.
        owners = [k for k, d in _DECODERS.items() if getattr(d, "owns_trie", False)]
        for old in owners[:-_TRIE_CACHE_SIZE]:
            del _DECODERS[old]
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

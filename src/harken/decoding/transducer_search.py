"""Decoding transducer models: greedy and beam search, frame by frame, into `Transcript`s
with word times; hotwords and word n-gram LM shallow fusion; streaming.

Both searches consume the encoder frames (T, D) of `Transducer` one frame at a time and keep
their whole state (predictor state and output of each hypothesis, the beam), so feeding a
stream in pieces gives exactly the result of feeding it at once:

    search = make_search(network, tokenizer, frame_seconds, options)
    search.feed(frames_0); search.feed(frames_1)       # (T_i, D) each
    transcript = search.finish()

- Greedy (`beam_width=1`): at each frame, emit the best token and query the joint network
  again, until blank or `max_symbols` tokens were emitted at that frame.
- Beam search: each frame, every hypothesis is extended by blank (it moves to the next
  frame) and by its `token_beam` best tokens (it may emit again at the same frame, up to
  `max_symbols` tokens); equal token sequences are merged (log-add), the `beam_width` best
  are kept and those scoring `beam_threshold` below the best are dropped. With
  `max_symbols=1` this is icefall's `modified_beam_search`. A hypothesis that leaves a frame
  after `max_symbols` tokens, without its blank, defers its next tokens to the next frame; at
  the last frame there is none, so `finish` lets it go on there (up to `max_symbols` more
  tokens) and closes it with the blank, as every path of the training lattice ends: otherwise
  a word cut short ("blu" for "blue") would keep the probability of its missing tokens.
- `hotwords`: a phrase's boost is spread over its tokens and earned as they are emitted
  (taken back if the phrase is not completed, or its last word goes on), as the CTC beam
  search does.
- `lm`: a word n-gram LM (ARPA or KenLM binary) read with the kenlm module: when a
  hypothesis completes a word it gains lm_weight * ln P_lm(word | history) + word_score (the
  end of sentence is scored at `finish`). The predictor is already a language model over
  tokens, so the LM weight that helps is usually smaller than for CTC.
- `lexicon`, `vocabulary`, `unk_score`, `silence_score` are CTC beam search settings and do
  not apply (a `ConfigError` says so).
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass, replace
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from harken.decoding.options import DEFAULT_LM_WEIGHT, DEFAULT_WORD_SCORE, DecodeOptions, resolve_options
from harken.decoding.types import Alternative, Transcript, build_transcript
from harken.decoding.greedy import greedy_decode
from harken.errors import ConfigError
from harken.decoding.ctc_beam import _Hotwords, get_decoder, quiet_stderr

# Greedy search: at most this many tokens are emitted at one encoder frame.
MAX_SYMBOLS_PER_FRAME = 3
# The decoding option that picks the head of a hybrid model ("transducer" or "ctc").
HEAD_OPTION = "head"
_WORD_START = "\u2581"  # SentencePiece's word-start mark
_LN10 = math.log(10.0)


# --- hotwords and LM ---------------------------------------------------------------------------

class _HotwordTrie:
    """The hotwords' token sequences, matched as the CTC beam search matches them
    (`harken.decoding.ctc_beam._Hotwords`): a phrase begins at a word start, earns its boost
    token by token, and keeps it only where its last word ends (the next token is a space or
    begins a word, or the input ends): "hello word" earns nothing in "hello wordy"."""

    def __init__(self, hotwords: dict[str, float], tokenizer: Any) -> None:
        tokens = list(tokenizer.tokens)
        separator = np.array([t == " " for t in tokens])
        begins = np.array([t.startswith(_WORD_START) for t in tokens])
        self.table = _Hotwords([{}], [0.0], [False], begins, separator | begins, separator)
        for phrase, boost in hotwords.items():
            text = tokenizer.normalizer(phrase)  # the model's language, as in training
            if not text:
                raise ConfigError(f"hotwords: {phrase!r} has no letters left after normalisation")
            try:
                sequence = tokenizer.encode(text)
            except ValueError as exc:
                raise ConfigError(f"hotwords: {phrase!r}: {exc}") from exc
            self.table._add(sequence, boost)

    def step(self, node: int, previous: int | None, token: int) -> tuple[int, float]:
        """Follow `token` (after the token `previous`, None at the start) from `node`:
        (new node, score change)."""
        can_begin = previous is None or bool(self.table.separator[previous])
        node, _, change = self.table.step(node, self.table.bonus[node], can_begin, token)
        return node, change

    def close(self, node: int) -> float:
        """Score change at the end: an unfinished phrase gives back what it earned."""
        return 0.0 if self.table.terminal[node] else -self.table.bonus[node]


@functools.lru_cache(maxsize=4)
def _kenlm_model(path: str, stamp: tuple[int, int]) -> Any:
    import kenlm

    try:
        with quiet_stderr():  # KenLM prints a progress bar while it reads an ARPA file
            return kenlm.Model(path)
    except (OSError, RuntimeError) as exc:
        raise ConfigError(f"lm: cannot load {path}: {exc}") from exc


def load_word_lm(path: str) -> Any:
    """A kenlm.Model for `path` (cached by path and file stamp)."""
    if not os.path.isfile(path):
        raise ConfigError(f"lm: {path}: no such file")
    stat = os.stat(path)
    return _kenlm_model(os.path.realpath(path), (stat.st_mtime_ns, stat.st_size))


# --- hypotheses --------------------------------------------------------------------------------

@dataclass
class Hypothesis:
    """One partial transcript: tokens with their frames and log-probabilities, its score
    (acoustic + hotword + LM terms), and the predictor state after its last token."""

    tokens: tuple[int, ...]
    score: float
    acoustic: float
    predictor_out: Tensor  # (J,) projected predictor output after `tokens`
    state: Any  # predictor state (batch of one)
    frames: tuple[int, ...] = ()
    token_log_probs: tuple[float, ...] = ()
    hotword_node: int = 0
    lm_state: Any = None
    word: str = ""  # the word being spelled (LM fusion)
    words: int = 0
    capped: float = -math.inf  # the part of `score` that left the last frame after max_symbols


def _stack_states(kind: str, states: Sequence[Any]) -> Any:
    if kind == "lstm":
        return (torch.cat([s[0] for s in states], 1), torch.cat([s[1] for s in states], 1))
    return torch.cat(list(states), 0 if kind == "stateless" else 1)


def _select_state(kind: str, state: Any, i: int) -> Any:
    if kind == "lstm":
        return (state[0][:, i: i + 1], state[1][:, i: i + 1])
    return state[i: i + 1] if kind == "stateless" else state[:, i: i + 1]


# (score, parent hypothesis, token emitted after it or None for blank, its log-probability,
#  acoustic score, the part of score that left the frame without a blank (max_symbols))
_Candidate = tuple[float, Hypothesis, "int | None", float, float, float]


def _add(candidates: dict[tuple[int, ...], _Candidate], tokens: tuple[int, ...], score: float,
         parent: Hypothesis, token: int | None, value: float, capped: bool = False) -> None:
    """Add a candidate; the same tokens by another alignment add their probabilities (the
    better alignment is kept for word times). Hotword and LM terms depend on the tokens only,
    so score - acoustic is the same for both. `capped`: it leaves the frame without a blank."""
    acoustic = parent.acoustic + value
    cap = score if capped else -math.inf
    known = candidates.get(tokens)
    if known is None:
        candidates[tokens] = (score, parent, token, value, acoustic, cap)
        return
    best = known if known[0] >= score else (score, parent, token, value, acoustic)
    candidates[tokens] = (float(np.logaddexp(known[0], score)), best[1], best[2], best[3],
                          float(np.logaddexp(known[4], acoustic)),
                          float(np.logaddexp(known[5], cap)))


def _ranked(candidates: dict[tuple[int, ...], _Candidate], width: int
            ) -> list[tuple[tuple[int, ...], _Candidate]]:
    return sorted(candidates.items(), key=lambda item: -item[1][0])[:width]


# --- the search --------------------------------------------------------------------------------

class TransducerSearch:
    """Frame-synchronous search over a transducer's encoder frames (greedy or beam).

    `feed(frames (T, D))` advances it; `result(tail)` is the best transcript so far (plus the
    provisional `tail` frames, without consuming them); `finish()` closes the hypotheses
    (LM end of sentence, unfinished hotwords) and returns the final transcript.
    """

    def __init__(self, network: Any, tokenizer: Any, frame_seconds: float,
                 options: DecodeOptions | None = None, time_offset: float = 0.0,
                 max_symbols: int = MAX_SYMBOLS_PER_FRAME) -> None:
        options = options or replace(DecodeOptions(), beam_width=1)
        check_options(options)
        if max_symbols < 1:
            raise ConfigError(f"max_symbols must be at least 1, got {max_symbols}")
        self.network = network
        self.tokenizer = tokenizer
        self.frame_seconds = frame_seconds
        self.options = options
        self.time_offset = time_offset
        self.max_symbols = max_symbols
        self.greedy = options.beam_width == 1 and options.lm is None and not options.hotwords
        self.blank = network.blank_id
        self.kind = network.predictor.kind
        self.hotwords = (_HotwordTrie(dict(options.hotwords), tokenizer) if options.hotwords
                         else None)
        self.lm = load_word_lm(options.lm) if options.lm else None
        self.lm_weight = options.lm_weight if options.lm_weight is not None else DEFAULT_LM_WEIGHT
        self.word_score = (options.word_score if options.word_score is not None
                           else DEFAULT_WORD_SCORE if self.lm is not None else 0.0)
        self._boundary = [t == " " or t.startswith(_WORD_START) for t in tokenizer.tokens]
        self._pieces = [t.lstrip(_WORD_START) if t != " " else "" for t in tokenizer.tokens]
        device = next(network.parameters()).device
        with torch.inference_mode():
            state = network.predictor.initial_state(1, device)
            out, state = network.predictor.step(torch.tensor([self.blank], device=device), state)
            out = network.joint.predictor_proj(out)[0]
        lm_state = None
        if self.lm is not None:
            import kenlm

            lm_state = kenlm.State()
            self.lm.BeginSentenceWrite(lm_state)
        self.hyps = [Hypothesis((), 0.0, 0.0, out, state, lm_state=lm_state)]
        self._frames = 0
        self._last_frame: Tensor | None = None  # (J,) the last frame fed, projected

    # -- public -------------------------------------------------------------------------------
    def frames(self) -> int:
        """Encoder frames consumed so far."""
        return self._frames

    @torch.inference_mode()
    def feed(self, frames: Tensor | np.ndarray) -> None:
        """Consume encoder frames (T, D)."""
        frames = torch.as_tensor(frames)
        if frames.dim() != 2 or (len(frames) and frames.size(1) != self.network.encoder_dim):
            raise ValueError(f"expected encoder frames of shape (time, "
                             f"{self.network.encoder_dim}), got {tuple(frames.shape)}")
        if not len(frames):
            return
        device = self.hyps[0].predictor_out.device
        frames = frames.to(device=device, dtype=self.hyps[0].predictor_out.dtype)
        frames = self.network.joint.encoder_proj(frames)  # (T, J)
        for frame in frames:
            if self.greedy:
                self._greedy_frame(frame)
            else:
                self.hyps = self._beam_frame(frame, self.hyps, {})
            self._frames += 1
        self._last_frame = frames[-1]

    def result(self, tail: Tensor | np.ndarray | None = None) -> Transcript:
        """The best transcript so far (with `tail` frames decoded on a copy)."""
        search = self
        if tail is not None and len(tail):
            search = self._copy()
            search.feed(tail)
        return search._transcript(search._closed_hyps(final=False))

    def finish(self) -> Transcript:
        """The final transcript: end-of-sentence LM scores and unfinished hotwords counted."""
        return self._transcript(self._closed_hyps(final=True, hyps=self._close_last_frame()))

    # -- greedy ---------------------------------------------------------------------------------
    def _greedy_frame(self, frame: Tensor) -> None:
        hyp = self.hyps[0]
        joint = self.network.joint
        for _ in range(self.max_symbols):
            log_probs = torch.log_softmax(joint.out(torch.tanh(frame + hyp.predictor_out)).float(),
                                          dim=-1)
            score, token = log_probs.max(dim=-1)
            token_id, value = int(token), float(score)
            if token_id == self.blank:
                hyp.score += value
                hyp.acoustic += value
                hyp.capped = -math.inf
                return
            out, state = self.network.predictor.step(token.view(1), hyp.state)
            hyp = Hypothesis(hyp.tokens + (token_id,), hyp.score + value, hyp.acoustic + value,
                             self.network.joint.predictor_proj(out)[0], state,
                             hyp.frames + (self._frames,), hyp.token_log_probs + (value,))
            self.hyps = [hyp]
        # max_symbols reached: the frame is left without its blank (as icefall/NeMo do); at the
        # end of the input `finish` counts the last frame's blank in the score
        hyp.capped = hyp.score

    # -- beam search ---------------------------------------------------------------------------
    def _beam_frame(self, frame: Tensor, active: list[Hypothesis],
                    done: dict[tuple[int, ...], _Candidate], close: bool = False
                    ) -> list[Hypothesis]:
        """One frame (J,) of beam search from the hypotheses `active`; `done` holds those that
        already consumed the frame. Hypotheses may emit up to `max_symbols` tokens before the
        blank that moves them to the next frame; after `max_symbols` tokens they move without
        it (as in greedy search), or with `close` (the last frame, see `finish`) they must
        take it. Returns the new beam."""
        options = self.options
        for symbol in range(self.max_symbols + close):
            last = symbol == self.max_symbols - 1 and not close  # tokens leave without blank
            predictor_out = torch.stack([h.predictor_out for h in active])  # (N, J)
            log_probs = torch.log_softmax(
                self.network.joint.out(torch.tanh(frame[None] + predictor_out)).float(), dim=-1)
            for hyp, value in zip(active, log_probs[:, self.blank].tolist()):
                _add(done, hyp.tokens, hyp.score + value, hyp, None, value)
            if symbol == self.max_symbols:  # closing: only the blank is left
                break
            emitted: dict[tuple[int, ...], _Candidate] = {}
            token_scores = log_probs.clone()
            token_scores[:, self.blank] = -math.inf
            per_hyp = min(options.token_beam or log_probs.size(1), log_probs.size(1) - 1)
            top_values, top_tokens = token_scores.topk(per_hyp, dim=-1)
            base = torch.tensor([h.score for h in active], dtype=torch.float32,
                                device=log_probs.device)
            totals = (base[:, None] + top_values).flatten()
            best = totals.topk(min(len(totals), options.beam_width)).indices.tolist()
            values, tokens = top_values.flatten().tolist(), top_tokens.flatten().tolist()
            for flat in best:
                hyp = active[flat // per_hyp]
                token, value = tokens[flat], values[flat]
                _add(done if last else emitted, hyp.tokens + (token,),
                     hyp.score + value + self._bonus(hyp, token), hyp, token, value, last)
            if last or not emitted:
                break
            # A blank only lowers a score: candidates below the beam of finished ones are out.
            finished = sorted((c[0] for c in done.values()), reverse=True)
            floor = (finished[options.beam_width - 1] if len(finished) >= options.beam_width
                     else -math.inf)
            floor = max(floor, finished[0] - options.beam_threshold)
            kept = [item for item in _ranked(emitted, options.beam_width) if item[1][0] > floor]
            if not kept:
                break
            active = self._extend(kept)
        ranked = _ranked(done, options.beam_width)
        threshold = ranked[0][1][0] - options.beam_threshold
        return self._extend([r for r in ranked if r[1][0] >= threshold])

    @torch.inference_mode()
    def _close_last_frame(self) -> list[Hypothesis]:
        """The beam at the end of the input: the alignments that left the last frame after
        `max_symbols` tokens without its blank go on at that frame (there is no next one to
        emit their next tokens) and end with its blank, as every path of the lattice does.
        Greedy search (one alignment, the textbook loop) keeps its tokens and counts the blank."""
        if self._last_frame is None or all(h.capped == -math.inf for h in self.hyps):
            return self.hyps
        if self.greedy:
            hyp = self.hyps[0]
            log_probs = torch.log_softmax(self.network.joint.out(
                torch.tanh(self._last_frame + hyp.predictor_out)).float(), dim=-1)
            value = float(log_probs[self.blank])
            return [replace(hyp, score=hyp.score + value, acoustic=hyp.acoustic + value,
                            capped=-math.inf)]
        done: dict[tuple[int, ...], _Candidate] = {}
        active = []
        for hyp in self.hyps:
            rest = hyp.score - hyp.capped  # log of (all / capped) >= 0
            settled = (hyp.score + math.log(-math.expm1(-rest)) if rest > 1e-12 else -math.inf)
            if settled > -math.inf:  # the alignments that took the blank are final
                done[hyp.tokens] = (settled, hyp, None, 0.0, hyp.acoustic - hyp.score + settled,
                                    -math.inf)
            if hyp.capped > -math.inf:
                active.append(replace(hyp, score=hyp.capped, capped=-math.inf,
                                      acoustic=hyp.acoustic - hyp.score + hyp.capped))
        self._frames -= 1  # tokens emitted now belong to the last frame
        try:
            return self._beam_frame(self._last_frame, active, done, close=True)
        finally:
            self._frames += 1

    def _bonus(self, hyp: Hypothesis, token: int) -> float:
        """Hotword and LM score change of emitting `token` after `hyp`."""
        bonus = 0.0
        if self.hotwords is not None:
            previous = hyp.tokens[-1] if hyp.tokens else None
            bonus += self.hotwords.step(hyp.hotword_node, previous, token)[1]
        if self.lm is not None and self._boundary[token] and hyp.word:
            bonus += self._word_lm_score(hyp.lm_state, hyp.word)[0]
        return bonus

    def _word_lm_score(self, lm_state: Any, word: str) -> tuple[float, Any]:
        import kenlm

        out = kenlm.State()
        log10 = self.lm.BaseScore(lm_state, word, out)
        return self.lm_weight * log10 * _LN10 + self.word_score, out

    def _extend(self, ranked: list[tuple[tuple[int, ...], _Candidate]]) -> list[Hypothesis]:
        """New hypotheses from the kept candidates; one batched predictor step for those that
        emitted a token."""
        result: list[Hypothesis | None] = []
        emitted = []
        for tokens, (score, parent, token, value, acoustic, capped) in ranked:
            if token is None:
                result.append(replace(parent, score=score, acoustic=acoustic, capped=capped))
            else:
                result.append(None)
                emitted.append((len(result) - 1, tokens, score, parent, token, value, acoustic,
                                capped))
        if emitted:
            device = self.hyps[0].predictor_out.device
            tokens_in = torch.tensor([e[4] for e in emitted], device=device)
            state = _stack_states(self.kind, [e[3].state for e in emitted])
            out, state = self.network.predictor.step(tokens_in, state)
            out = self.network.joint.predictor_proj(out)
            for i, (slot, tokens, score, parent, token, value, acoustic, capped) in enumerate(
                    emitted):
                node, lm_state = parent.hotword_node, parent.lm_state
                word, words = parent.word, parent.words
                if self.hotwords is not None:
                    node = self.hotwords.step(node, parent.tokens[-1] if parent.tokens
                                              else None, token)[0]
                if self.lm is not None:
                    if self._boundary[token]:
                        if word:
                            lm_state = self._word_lm_score(lm_state, word)[1]
                            words += 1
                        word = self._pieces[token]
                    else:
                        word += self._pieces[token]
                result[slot] = Hypothesis(tokens, score, acoustic, out[i],
                                          _select_state(self.kind, state, i),
                                          parent.frames + (self._frames,),
                                          parent.token_log_probs + (value,), node, lm_state,
                                          word, words, capped)
        return [h for h in result if h is not None]

    # -- results --------------------------------------------------------------------------------
    def _closed_hyps(self, final: bool, hyps: list[Hypothesis] | None = None
                     ) -> list[tuple[float, Hypothesis]]:
        """Hypotheses (`hyps`, else the beam) with their closing scores (LM: last word and end
        of sentence), best first. Without `final`, unfinished hotwords keep what they earned."""
        closed = []
        for hyp in self.hyps if hyps is None else hyps:
            score = hyp.score
            if final and self.hotwords is not None:
                score += self.hotwords.close(hyp.hotword_node)
            if self.lm is not None:
                state = hyp.lm_state
                if hyp.word:
                    change, state = self._word_lm_score(state, hyp.word)
                    score += change
                if final:
                    import kenlm

                    end = self.lm.BaseScore(state, "</s>", kenlm.State())
                    score += self.lm_weight * end * _LN10
            closed.append((score, hyp))
        closed.sort(key=lambda item: -item[0])
        return closed

    def _transcript(self, closed: list[tuple[float, Hypothesis]]) -> Transcript:
        score, best = closed[0]
        confidences = [math.exp(v) for v in best.token_log_probs]
        transcript = build_transcript(list(best.tokens), list(best.frames), list(best.frames),
                                      confidences, self.tokenizer, self.frame_seconds,
                                      score=score, duration=self._frames * self.frame_seconds,
                                      time_offset=self.time_offset)
        if self.options.nbest > 1:
            transcript.alternatives = [
                Alternative(self.tokenizer.decode(list(h.tokens)).strip(), s, h.acoustic)
                for s, h in closed[: self.options.nbest]]
        return transcript

    def _copy(self) -> "TransducerSearch":
        copy = object.__new__(TransducerSearch)
        copy.__dict__.update(self.__dict__)
        copy.hyps = [replace(h) for h in self.hyps]
        return copy


def check_options(options: DecodeOptions) -> None:
    """`ConfigError` for CTC-only settings."""
    defaults = DecodeOptions()
    for name in ("lexicon", "vocabulary", "unk_score", "silence_score"):
        if getattr(options, name) != getattr(defaults, name):
            raise ConfigError(f"{name} is a CTC beam search setting; transducer decoding does "
                              "not support it")


def make_search(network: Any, tokenizer: Any, frame_seconds: float,
                options: DecodeOptions | None = None, time_offset: float = 0.0,
                max_symbols: int = MAX_SYMBOLS_PER_FRAME) -> TransducerSearch:
    """A greedy (options None or beam_width 1 without LM and hotwords) or beam search."""
    return TransducerSearch(network, tokenizer, frame_seconds, options, time_offset, max_symbols)


def decode_frames(network: Any, frames: Tensor | np.ndarray, tokenizer: Any,
                  frame_seconds: float, options: DecodeOptions | None = None,
                  time_offset: float = 0.0,
                  max_symbols: int = MAX_SYMBOLS_PER_FRAME) -> Transcript:
    """Decode one utterance's encoder frames (T, D) into a `Transcript`."""
    search = make_search(network, tokenizer, frame_seconds, options, time_offset, max_symbols)
    search.feed(frames)
    return search.finish()


# --- Model integration -------------------------------------------------------------------------

def split_options(model: Any, options: Any, overrides: dict[str, Any]
                  ) -> tuple[str, int, DecodeOptions | None]:
    """(head, max_symbols, DecodeOptions or None for greedy) from `Model.transcribe` options:
    `head` ("transducer", or "ctc" for hybrid models) and `max_symbols` are taken out, the
    rest resolved as for CTC models."""
    overrides = dict(overrides)
    head = overrides.pop(HEAD_OPTION, "transducer")
    max_symbols = overrides.pop("max_symbols", MAX_SYMBOLS_PER_FRAME)
    if head not in ("transducer", "ctc"):
        raise ConfigError(f"head must be 'transducer' or 'ctc', got {head!r}")
    if head == "ctc" and not model.network.has_ctc:
        raise ConfigError("head='ctc' needs a hybrid model (this one has no CTC head)")
    if isinstance(max_symbols, bool) or not isinstance(max_symbols, int) or max_symbols < 1:
        raise ConfigError(f"max_symbols must be a positive integer, got {max_symbols!r}")
    return head, max_symbols, resolve_options(model, options, overrides)


def frame_decoder(model: Any, options: Any, overrides: dict[str, Any]) -> Any:
    """`Model`'s decode function for transducers: (encoder frames (T, D), time offset) ->
    `Transcript` (`Model.log_probs` gives a transducer's encoder frames). With head="ctc"
    (hybrid models) the CTC head's log-probabilities are decoded as a CTC model's."""
    head, max_symbols, resolved = split_options(model, options, overrides)
    network = model.network
    if head == "ctc":

        ctc_decoder = get_decoder(model.tokenizer, resolved) if resolved is not None else None

        def decode_ctc(frames: np.ndarray, offset: float) -> Transcript:
            with torch.inference_mode():
                hidden = torch.as_tensor(frames, device=model.device)[None]
                log_probs = network.ctc_log_probs(hidden)[0].cpu().numpy()
            if ctc_decoder is None:
                return greedy_decode(log_probs, model.tokenizer, model.frame_seconds, offset)
            return ctc_decoder.decode(log_probs, model.frame_seconds, time_offset=offset)

        return decode_ctc

    def decode(frames: np.ndarray, offset: float) -> Transcript:
        return decode_frames(network, frames, model.tokenizer, model.frame_seconds, resolved,
                             offset, max_symbols)

    return decode


# --- streaming ---------------------------------------------------------------------------------

def transducer_stream_search(model: Any, options: Any, overrides: dict[str, Any]
                             ) -> Callable[[float], "_StreamSearch"]:
    """The search factory of `Model.stream()` for transducers (`harken.streaming.Stream`'s
    `search`): given an utterance's time offset, a search keeping the predictor state and the beam."""
    head, max_symbols, resolved = split_options(model, options, overrides)
    if head == "ctc":
        raise ConfigError("streaming decodes with the transducer head; head='ctc' is for "
                          "Model.transcribe")
    return lambda offset: _StreamSearch(make_search(model.network, model.tokenizer,
                                                    model.frame_seconds, resolved, offset,
                                                    max_symbols))


class _StreamSearch:
    """Adapts `TransducerSearch` to `harken.streaming.Stream`'s search interface."""

    exact_prefix = False

    def __init__(self, search: TransducerSearch) -> None:
        self.search = search

    def feed(self, frames: np.ndarray) -> None:
        if len(frames):
            self.search.feed(frames)

    def result(self, tail: np.ndarray | None = None) -> Transcript:
        return self.search.result(tail)

    def finish(self) -> Transcript:
        return self.search.finish()

    def frames(self) -> int:
        return self.search.frames()


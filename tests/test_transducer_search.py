"""Transducer beam search over hand-built log-probabilities (no training): the last frame is
closed by its blank, and hotwords count only where their last word ends."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from harken.decoding.options import DecodeOptions
from harken.decoding.transducer_search import decode_frames, make_search
from harken.text import CharTokenizer

TOKENIZER = CharTokenizer(" abcd")  # 0 blank, 1 space, 2 a, 3 b, 4 c, 5 d
V = len(TOKENIZER.tokens)
MAX_U = 8  # the table's rows: tokens emitted so far


class _Counter(nn.Module):
    """A predictor whose state and output are the number of tokens emitted so far."""

    kind = "stateless"  # state (N, 1): stacked and selected along the batch

    def __init__(self, width: int) -> None:
        super().__init__()
        self.width = width

    def initial_state(self, batch: int, device: torch.device | str = "cpu") -> torch.Tensor:
        return torch.zeros(batch, 1, dtype=torch.long, device=device)

    def step(self, tokens: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        count = state + (tokens[:, None] != 0)
        return nn.functional.one_hot(count[:, 0], self.width).float(), count


class _Table(nn.Module):
    """The joint output layer: log_probs[t, u] read back from x = tanh(frame t + predictor u)
    (..., J), where frame t is one-hot in the last T dims and predictor u in the first MAX_U."""

    def __init__(self, log_probs: torch.Tensor) -> None:
        super().__init__()
        self.log_probs = log_probs  # (T, MAX_U, V)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.log_probs[x[..., MAX_U:].argmax(-1), x[..., :MAX_U].argmax(-1)]


class _Network(nn.Module):
    """A transducer whose joint network gives fixed log-probabilities per (frame, tokens so far)."""

    def __init__(self, log_probs: torch.Tensor) -> None:
        super().__init__()
        frames = log_probs.size(0)
        self.blank_id = 0
        self.encoder_dim = MAX_U + frames
        self.predictor = _Counter(self.encoder_dim)
        self.joint = nn.Module()
        self.joint.encoder_proj = nn.Identity()
        self.joint.predictor_proj = nn.Identity()
        self.joint.out = _Table(log_probs)
        self.unused = nn.Parameter(torch.zeros(1))  # the search reads the device from it

    def frames(self) -> torch.Tensor:
        """The encoder frames (T, D): frame t is one-hot at MAX_U + t."""
        count = self.encoder_dim - MAX_U
        return torch.cat([torch.zeros(count, MAX_U), torch.eye(count)], 1)


def table(frames: int, rows: dict[tuple[int, int], dict[int, float]]) -> torch.Tensor:
    """(T, MAX_U, V) log-probabilities: rows[(t, u)] = {token: logit}, blank 0 elsewhere."""
    logits = torch.full((frames, MAX_U, V), -30.0)
    logits[:, :, 0] = 0.0
    for (t, u), row in rows.items():
        for token, logit in row.items():
            logits[t, u, token] = logit
    return torch.log_softmax(logits, -1)


def lattice_log_prob(log_probs: torch.Tensor, ids: list[int]) -> float:
    """ln P(ids) summed over every alignment (the training loss's lattice: each frame ends
    with a blank)."""
    lp = log_probs.double().numpy()
    frames, labels = lp.shape[0], len(ids)
    alpha = np.full((frames + 1, labels + 1), -np.inf)
    alpha[0, 0] = 0.0
    for t in range(frames):
        for u in range(labels + 1):
            if u:
                alpha[t, u] = np.logaddexp(alpha[t, u], alpha[t, u - 1] + lp[t, u - 1, ids[u - 1]])
            alpha[t + 1, u] = np.logaddexp(alpha[t + 1, u], alpha[t, u] + lp[t, u, 0])
    return float(alpha[frames, labels])


def last_frame_word() -> _Network:
    """Four frames; "abcd" is almost surely spoken at the last one (four tokens there, more
    than max_symbols=3), then the blank."""
    rows = {}
    for u in range(4):
        for t in range(3):
            rows[(t, u)] = {u + 2: -6.0}  # earlier: blank, the next letter unlikely
        rows[(3, u)] = {u + 2: 6.0}  # the last frame: the next letter, not the blank
    return _Network(table(4, rows))


def test_a_word_spoken_at_the_last_frame_is_not_cut_at_max_symbols() -> None:
    network = last_frame_word()
    options = DecodeOptions(beam_width=8, token_beam=None, nbest=2)
    frames = network.frames()
    result = decode_frames(network, frames, TOKENIZER, 0.04, options, max_symbols=3)
    log_probs = network.joint.out.log_probs
    assert result.text == "abcd"
    # the beam sums the alignments as the lattice does (those it keeps: nearly all)
    assert result.score == pytest.approx(lattice_log_prob(log_probs, [2, 3, 4, 5]), abs=1e-3)
    # "abc" pays the last frame's blank after it instead of keeping the mass of "abcd"
    assert result.alternatives[1].score < result.score - 5
    assert [w.word for w in result.words] == ["abcd"] and result.words[0].start == 0.12
    search = make_search(network, TOKENIZER, 0.04, options, max_symbols=3)
    search.feed(frames[:3])
    search.feed(frames[3:])
    streamed = search.finish()
    assert streamed.text == "abcd" and streamed.score == pytest.approx(result.score, abs=1e-6)
    # greedy search follows one alignment (three tokens at most a frame) and counts the last
    # frame's blank after "abc": ln P(blank | abc, last frame) = ln softmax(0 vs 6)
    greedy = decode_frames(network, frames, TOKENIZER, 0.04, max_symbols=3)
    assert greedy.text == "abc"
    expected = float(log_probs[:3, 0, 0].sum() + log_probs[3, [0, 1, 2], [2, 3, 4]].sum()
                     + log_probs[3, 3, 0])
    assert greedy.score == pytest.approx(expected, abs=1e-5) and greedy.score < -6


def spelled_abc() -> _Network:
    """Three frames spelling "abc", one letter each; stopping after "ab" costs ln P(blank) at
    the last frame (about -6)."""
    rows = {(t, t): {t + 2: 6.0} for t in range(3)}
    return _Network(table(3, rows))


def test_a_hotword_counts_only_where_its_last_word_ends() -> None:
    network = spelled_abc()
    frames = network.frames()
    plain = decode_frames(network, frames, TOKENIZER, 0.04, DecodeOptions(beam_width=4, nbest=2))
    assert plain.text == "abc"
    # "abc" is not the hotword "ab": it earns nothing (the boost of "ab" is taken back)
    small = decode_frames(network, frames, TOKENIZER, 0.04,
                          DecodeOptions(beam_width=4, nbest=2, hotwords={"ab": 3.0}))
    assert small.text == "abc"
    assert small.score == pytest.approx(plain.score, abs=1e-6)
    assert small.alternatives[0].acoustic_score == pytest.approx(plain.score, abs=1e-6)
    # a boost larger than the cost of stopping after "ab" makes the beam stop there
    boosted = decode_frames(network, frames, TOKENIZER, 0.04,
                            DecodeOptions(beam_width=4, nbest=2, hotwords={"ab": 10.0}))
    assert boosted.text == "ab"
    assert boosted.score == pytest.approx(boosted.alternatives[0].acoustic_score + 10.0, abs=1e-6)
    # a phrase begins at a word start: "bc" inside "abc" earns nothing either
    inside = decode_frames(network, frames, TOKENIZER, 0.04,
                           DecodeOptions(beam_width=4, hotwords={"bc": 3.0}))
    assert inside.text == "abc" and inside.score == pytest.approx(plain.score, abs=1e-6)

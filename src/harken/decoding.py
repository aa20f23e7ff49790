"""CTC decoding: (time, vocab) log-probabilities -> `Transcript` with word times and confidences.

Greedy (best path) decoding lives here; beam search with an n-gram language model builds on the
same result types.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence

import numpy as np

# A pause longer than this between two words starts a new segment (subtitles, long audio).
SEGMENT_PAUSE_SECONDS = 0.8
# A segment is also closed once it is this long.
SEGMENT_MAX_SECONDS = 10.0


class WordTokenizer(Protocol):
    blank_id: int

    def decode(self, ids: Sequence[int]) -> str: ...

    def split_words(self, ids: Sequence[int]) -> list[tuple[str, list[int]]]: ...


@dataclass
class Word:
    """One recognised word: `start`/`end` in seconds, `confidence` in [0, 1]."""

    word: str
    start: float
    end: float
    confidence: float


@dataclass
class Segment:
    """A run of words without a long pause: the unit of subtitles and long-audio results."""

    text: str
    start: float
    end: float
    words: list[Word] = field(default_factory=list)


@dataclass
class Transcript:
    """The result of transcribing one input."""

    text: str
    words: list[Word] = field(default_factory=list)
    segments: list[Segment] = field(default_factory=list)
    score: float = 0.0
    duration: float = 0.0

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
    best = log_probs.argmax(axis=1)
    ids: list[int] = []
    starts: list[int] = []
    ends: list[int] = []
    previous = blank_id
    for t, token in enumerate(best.tolist()):
        if token != blank_id and token == previous:
            ends[-1] = t
        elif token != blank_id:
            ids.append(token)
            starts.append(t)
            ends.append(t)
        previous = token
    return ids, starts, ends


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
        confidence = float(np.exp(np.mean(np.log(np.maximum(
            [token_confidences[p] for p in positions], 1e-12)))))
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
    ids, starts, ends = best_path(log_probs, tokenizer.blank_id)
    confidences = [float(np.exp(log_probs[s:e + 1, i].max())) for i, s, e in zip(ids, starts, ends)]
    score = float(log_probs.max(axis=1).sum())
    return build_transcript(ids, starts, ends, confidences, tokenizer, frame_seconds,
                            score=score, duration=len(log_probs) * frame_seconds,
                            time_offset=time_offset)

"""Greedy (best path) CTC decoding: (time, vocab) log-probabilities -> `Transcript`."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from harken.decoding.types import Transcript, WordTokenizer, build_transcript


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

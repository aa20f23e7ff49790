"""Decoding results: `Transcript` (text, words with times and confidences, segments, N-best
alternatives), shared by greedy, beam and transducer search."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Protocol, Sequence

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
    """One recognised word: `start`/`end` in seconds, `confidence` in [0, 1]; `speaker` is
    set by diarization (`harken.diarization`), None otherwise.

    `word` is the word as spoken (normalised); `written` is how it is written in a written
    transcript ("Stella," or "$21"), None when none was made, "" when the word is part of
    the written form of the word before it ("twenty" -> "$21", "one" -> "")."""

    word: str
    start: float
    end: float
    confidence: float
    speaker: str | None = None
    written: str | None = None


@dataclass
class Segment:
    """A run of words without a long pause: the unit of subtitles and long-audio results."""

    text: str
    start: float
    end: float
    words: list[Word] = field(default_factory=list)
    speaker: str | None = None  # set by diarization: the one speaker of all its words


@dataclass
class Alternative:
    """One entry of a beam search's N-best list: its text, scores (natural log) and its own
    words with their times (from its own alignment)."""

    text: str
    score: float
    acoustic_score: float = 0.0
    words: list[Word] = field(default_factory=list)


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
    # who spoke when (`harken.diarization.SpeakerTurn`s), set by diarization; empty otherwise
    speaker_turns: list[Any] = field(default_factory=list)
    raw_text: str | None = None

    def to_dict(self) -> dict:
        out = asdict(self)
        # `speaker` appears only in diarized transcripts
        for item in [*out["words"], *out["segments"],
                     *(w for s in out["segments"] for w in s["words"])]:
            if item.get("speaker") is None:
                item.pop("speaker", None)
        if not out["speaker_turns"]:
            del out["speaker_turns"]
        return out








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

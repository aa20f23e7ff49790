"""Written transcripts: punctuation, capitals and written numbers on a recognised transcript.

`write_transcript` turns "i paid twenty one dollars at three thirty p m" into
"I paid $21 at 3:30 PM." with a `harken.written.punctuator.Punctuator` (casing and punctuation) and,
for English, `harken.written.itn` (numbers, money, times, dates). Every `Word` keeps its spoken
`word` and its times and gains `written`; a number said in several words is written on its
first word and the others get "" (so subtitles and word timestamps still line up).
`Transcript.raw_text` keeps the recognised (normalised) text.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Sequence

from harken.decoding import Segment, Transcript, Word
from harken.written.itn import inverse_normalize_words
from harken.written.punctuator import sentence_marks


def written_words(words: Sequence[str], punctuator: Any, final: bool = True) -> list[str]:
    """The written form of each spoken word ("" for words folded into the one before)."""

    words = list(words)
    if not words:
        return []
    cased, marks = sentence_marks(words, punctuator.tag(words), final=final)
    out = [w + m for w, m in zip(cased, marks)]
    if not str(punctuator.config.language).lower().startswith("en"):
        return out

    for rewrite in inverse_normalize_words(words, marks):
        text = rewrite.text
        first = cased[rewrite.start]
        if text[:1].isalpha() and first[:1].isupper():
            text = text[:1].upper() + text[1:]
        out[rewrite.start] = text + marks[rewrite.end - 1]
        for k in range(rewrite.start + 1, rewrite.end):
            out[k] = ""
    return out


def write_transcript(transcript: Transcript, punctuator: Any) -> Transcript:
    """`transcript` as written text: `text` and segment texts written, each word's `written`
    set, times unchanged; `raw_text` holds the recognised text. A transcript that is already
    written is returned as it is."""
    if transcript.raw_text is not None:
        return transcript
    if transcript.words:
        forms = written_words([w.word for w in transcript.words], punctuator)
        words = [replace(w, written=f) for w, f in zip(transcript.words, forms)]
        by_id = {id(old): new for old, new in zip(transcript.words, words)}
        segments = [_segment(s, [by_id.get(id(w), w) for w in s.words], punctuator)
                    for s in transcript.segments]
        text = _join(forms)
    else:
        words = []
        segments = [_segment(s, [], punctuator) for s in transcript.segments]
        text = _join(written_words(transcript.text.split(), punctuator))
    return replace(transcript, text=text, words=words, segments=segments,
                   raw_text=transcript.text)


def _segment(segment: Segment, words: list[Word], punctuator: Any) -> Segment:
    if words:
        text = _join([w.written if w.written is not None else w.word for w in words])
    else:
        text = _join(written_words(segment.text.split(), punctuator))
    return replace(segment, text=text, words=words)


def _join(forms: Sequence[str]) -> str:
    return " ".join(f for f in forms if f)


__all__ = ["write_transcript", "written_words"]

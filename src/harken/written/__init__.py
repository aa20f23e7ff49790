"""Written transcripts: punctuation and casing restored by a small model (`punctuator.py`),
spoken numbers, dates, times and money written as people write them (`itn.py`, inverse text
normalisation), and both applied to a transcript with word times kept (`transcript.py`)."""

from harken.written.transcript import write_transcript, written_words

__all__ = ["write_transcript", "written_words"]

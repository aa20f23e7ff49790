"""Who spoke when: speaker embeddings (`speakers.py`) and diarization (`diarize.py`: windows,
clustering, speaker turns, a speaker per word, online labels for streams)."""

from harken.diarization.diarize import DiarizeOptions, Diarization, SpeakerTurn, diarize

__all__ = ["DiarizeOptions", "Diarization", "SpeakerTurn", "diarize"]

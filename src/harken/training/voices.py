"""What a synthetic utterance is made of: a `Voice` of a TTS engine and the `Job` that renders
one file with it (shared by the classic engines in `synth.py` and the neural ones in
`synth_neural.py`)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from harken.errors import HarkenError

EXTENSIONS = {"flac": ".flac", "opus": ".ogg"}


@dataclass(frozen=True)
class Voice:
    """One voice of one engine; `name` is what the engine is given (`en-us+f3`, `slt`)."""

    engine: str
    name: str

    @property
    def speaker(self) -> str:
        return f"{self.engine}:{self.name}"


@dataclass(frozen=True)
class Job:
    """Everything that determines one rendered file."""

    index: int
    text: str
    voice: Voice
    rate: float
    pitch: float
    level_db: float
    lead_s: float
    tail_s: float
    audio_format: str = "flac"

    @property
    def id(self) -> str:
        key = json.dumps(
            [
                self.text,
                self.voice.engine,
                self.voice.name,
                round(self.rate, 4),
                round(self.pitch, 4),
                round(self.level_db, 3),
                round(self.lead_s, 4),
                round(self.tail_s, 4),
                self.audio_format,
            ]
        )
        return f"{self.index:06d}-{hashlib.sha1(key.encode()).hexdigest()[:8]}"

    @property
    def relative_path(self) -> str:
        return f"audio/{self.voice.engine}/{self.id}{EXTENSIONS[self.audio_format]}"


class SynthesisError(HarkenError):
    """One utterance could not be rendered; the message names the voice and the reason."""

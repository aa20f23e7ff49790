"""harken: private, local, trainable speech recognition."""

from harken.audio import load_audio
from harken.decoding.types import Segment, Transcript, Word
from harken.errors import AudioError, HarkenError, ModelError
from harken.model import Model, load_model

__version__ = "0.1.0"

__all__ = [
    "AudioError",
    "HarkenError",
    "Model",
    "ModelError",
    "Segment",
    "Transcript",
    "Word",
    "load_audio",
    "load_model",
]

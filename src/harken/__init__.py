"""harken: private, local, trainable speech recognition.

    model = harken.load_model()                  # the bundled English model
    transcript = model.transcribe("clip.wav")    # Transcript: text, words with times, segments
    stream = model.stream()                      # Stream: feed(audio), partial(), finish()
"""

from harken.audio import load_audio
from harken.decoding.options import DecodeOptions
from harken.decoding.types import Segment, Transcript, Word
from harken.errors import AudioError, ConfigError, HarkenError, ModelError
from harken.model import Model, load_model
from harken.streaming import Partial, Stream
from harken.version import __version__

__all__ = [
    "AudioError",
    "ConfigError",
    "DecodeOptions",
    "HarkenError",
    "Model",
    "ModelError",
    "Partial",
    "Segment",
    "Stream",
    "Transcript",
    "Word",
    "__version__",
    "load_audio",
    "load_model",
]

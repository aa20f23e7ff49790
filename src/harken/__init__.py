"""harken: private, local, trainable speech recognition."""

__version__ = "0.1.0"

"""Drop-in APIs of other speech engines on harken models (`harken.compat.deepspeech`)."""

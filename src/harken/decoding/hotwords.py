"""Hotwords as people write them: ``phrase`` or ``phrase:boost`` (natural log, added when the
phrase is recognised), parsed the same way by the command line (`--hotword`), the server (the
`hotwords` field, WebSocket configs) and anything else that takes them as text."""

from __future__ import annotations

import math

from harken.errors import ConfigError

# The boost of a hotword given without one.
DEFAULT_BOOST = 10.0


def parse_hotword(item: str, *, strict: bool = True) -> tuple[str, float]:
    """(phrase, boost) of ``phrase`` or ``phrase:boost``. A boost that is not a finite number is
    a `ConfigError` when `strict`, else the whole item is taken as a phrase with the default."""
    phrase, _, boost = item.rpartition(":")
    if not phrase:
        return item.strip(), DEFAULT_BOOST
    try:
        value = float(boost)
        if not math.isfinite(value):
            raise ValueError(boost)
    except ValueError:
        if strict:
            raise ConfigError(f"hotword {item!r}: expected PHRASE:BOOST with a finite number") from None
        return item.strip(), DEFAULT_BOOST
    return phrase.strip(), value


__all__ = ["DEFAULT_BOOST", "parse_hotword"]

"""Limits on what clients of `harken serve` may send, checked before anything is built.

Every message a client sends is either accepted or refused with a protocol error that says
which limit it broke; none reaches the decoder unchecked, and none ends in an internal error:

- WebSocket text messages: at most `MAX_TEXT_MESSAGE_BYTES`, JSON objects nested at most
  `MAX_JSON_DEPTH` deep (deeper nesting is refused before parsing: Python's parser would
  recurse until it fails);
- WebSocket audio messages: at most `MAX_AUDIO_MESSAGE_BYTES` (the server's WebSocket frame
  limit is the same);
- hotwords, on every path (stream config, form fields, prompts): at most `MAX_HOTWORDS`
  phrases of at most `MAX_HOTWORD_CHARS` characters.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import json
import re
import threading
import time
from typing import Any

from harken.errors import ConfigError

MAX_TEXT_MESSAGE_BYTES = 64 << 10
MAX_JSON_DEPTH = 16
MAX_AUDIO_MESSAGE_BYTES = 16 << 20
MAX_HOTWORDS = 100
MAX_HOTWORD_CHARS = 200
_BRACKETS = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')


def json_depth(text: str) -> int:
    """How deeply the arrays and objects of a JSON text nest (strings skipped), without
    parsing it."""
    depth = deepest = 0
    for match in _BRACKETS.finditer(text):
        token = match.group()
        if token in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif token in "]}":
            depth -= 1
    return deepest


def parse_text_message(text: str) -> dict[str, Any]:
    """A WebSocket text message -> its JSON object; ValueError saying what is wrong."""
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_TEXT_MESSAGE_BYTES:
        raise ValueError(f"a text message of {size} bytes; the limit is "
                         f"{MAX_TEXT_MESSAGE_BYTES} bytes")
    depth = json_depth(text)
    if depth > MAX_JSON_DEPTH:
        raise ValueError(f"JSON nested {depth} deep; the limit is {MAX_JSON_DEPTH}")
    try:
        request = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ValueError(str(exc) or type(exc).__name__) from None
    if not isinstance(request, dict):
        raise ValueError("expected a JSON object")
    return request


def check_audio_message(data: bytes) -> None:
    """ValueError for a WebSocket audio message over `MAX_AUDIO_MESSAGE_BYTES`."""
    if len(data) > MAX_AUDIO_MESSAGE_BYTES:
        raise ValueError(f"an audio message of {len(data)} bytes; the limit is "
                         f"{MAX_AUDIO_MESSAGE_BYTES} bytes (send audio in smaller chunks)")


def check_hotwords(hotwords: dict[str, Any], where: str) -> dict[str, Any]:
    """`hotwords` unchanged, or ConfigError when there are too many or one is too long."""
    if len(hotwords) > MAX_HOTWORDS:
        raise ConfigError(f"{where}: at most {MAX_HOTWORDS} hotwords, got {len(hotwords)}")
    for phrase in hotwords:
        if len(str(phrase)) > MAX_HOTWORD_CHARS:
            raise ConfigError(f"{where}: a hotword of {len(str(phrase))} characters; the limit "
                              f"is {MAX_HOTWORD_CHARS}")
    return hotwords


_TRIM_LOCK = threading.Lock()
_TRIM_EVERY_SECONDS = 5.0
_trimmed_at = 0.0


def trim_memory(force: bool = False) -> bool:
    """Give freed memory back to the operating system (glibc keeps what large freed
    structures, such as an evicted decoder's lexicon trie, leave behind), at most every
    `_TRIM_EVERY_SECONDS`; True when it ran."""
    global _trimmed_at
    if not force and time.monotonic() - _trimmed_at < _TRIM_EVERY_SECONDS:
        return False
    if not _TRIM_LOCK.acquire(blocking=False):
        return False
    try:
        _trimmed_at = time.monotonic()
        gc.collect()
        name = ctypes.util.find_library("c")
        if name:
            libc = ctypes.CDLL(name)
            if hasattr(libc, "malloc_trim"):
                libc.malloc_trim(0)
        return True
    finally:
        _TRIM_LOCK.release()


__all__ = ["MAX_AUDIO_MESSAGE_BYTES", "MAX_HOTWORDS", "MAX_HOTWORD_CHARS", "MAX_JSON_DEPTH",
           "MAX_TEXT_MESSAGE_BYTES", "check_audio_message", "check_hotwords", "json_depth",
           "parse_text_message", "trim_memory"]

"""A cache of what the lexicon trie of a word-LM beam search is built from.

Lexicon decoding inserts every word of the LM into flashlight's trie with its spelling in the
tokenizer's tokens and its unigram score. For the bundled 3-gram LM (154k words) reading the
word list, spelling and scoring them costs about as much as inserting them, on every start.
flashlight's `Trie` cannot be saved, so what is saved is its input: the words, their spellings
(token ids), their labels and unigram scores, in one ``.npz`` file next to the LM
(``<lm>.lexicon-<key>.npz``), or under ``$HARKEN_CACHE/lexicons`` (default
``~/.cache/harken/lexicons``) where the LM's folder is not writable. The key covers the LM file
(path, size, modification time) and the tokenizer's tokens, so a rebuilt LM or another
tokenizer makes a new entry; a missing, stale or unreadable cache is rebuilt, never an error.
Measured in docs/performance.md.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

log = logging.getLogger(__name__)

CACHE_ENV = "HARKEN_CACHE"
FORMAT = 1


@dataclass(frozen=True)
class Lexicon:
    """The trie's input: `words` (labels are positions), and for each spelled word its
    `labels` (N,), `scores` (N,) float32 unigram scores and spelling `tokens` (sum of lengths,)
    int32 split at `offsets` (N + 1,) int64."""

    words: list[str]
    labels: np.ndarray
    scores: np.ndarray
    tokens: np.ndarray
    offsets: np.ndarray

    def spellings(self) -> list[list[int]]:
        """The spelling of each entry, as lists of token ids."""
        flat = self.tokens.tolist()
        bounds = self.offsets.tolist()
        return [flat[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def cache_key(lm: str | os.PathLike[str], tokens: Sequence[str], boundary_id: int | None) -> str:
    """A hex key for the LM file (resolved path, size, mtime) and the tokenizer's tokens."""
    path = Path(lm).resolve()
    stat = path.stat()
    digest = hashlib.sha256(json.dumps(
        [FORMAT, str(path), stat.st_size, stat.st_mtime_ns, list(tokens), boundary_id]
    ).encode("utf-8"))
    return digest.hexdigest()[:16]


def cache_paths(lm: str | os.PathLike[str], key: str) -> list[Path]:
    """Where the cache of `lm` may be: next to it, then the user's cache folder."""
    path = Path(lm).resolve()
    name = f"{path.name}.lexicon-{key}.npz"
    root = os.environ.get(CACHE_ENV) or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "harken")
    return [path.parent / name, Path(root) / "lexicons" / name]


def load_lexicon(lm: str | os.PathLike[str], key: str) -> Lexicon | None:
    """The cached lexicon of `lm` under `key`, or None when there is none (or it is unusable)."""
    for path in cache_paths(lm, key):
        if not path.is_file():
            continue
        try:
            with np.load(path, allow_pickle=False) as data:
                words = bytes(data["words"]).decode("utf-8").split("\n")
                lexicon = Lexicon(words, data["labels"], data["scores"], data["tokens"],
                                  data["offsets"])
        except (OSError, ValueError, KeyError, UnicodeDecodeError) as exc:
            log.info("%s: unreadable lexicon cache, rebuilding it (%s)", path, exc)
            continue
        n = len(lexicon.labels)
        if (len(lexicon.scores) != n or len(lexicon.offsets) != n + 1
                or int(lexicon.offsets[-1]) != len(lexicon.tokens)
                or (n and int(lexicon.labels.max()) >= len(words))):
            log.info("%s: inconsistent lexicon cache, rebuilding it", path)
            continue
        return lexicon
    return None


def save_lexicon(lm: str | os.PathLike[str], key: str, lexicon: Lexicon) -> Path | None:
    """Write the cache (atomically) to the first writable place; None when none is."""
    for path in cache_paths(lm, key):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".npz")
        except OSError:
            continue
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, words=np.frombuffer("\n".join(lexicon.words).encode("utf-8"),
                                                dtype=np.uint8),
                         labels=lexicon.labels.astype(np.int32),
                         scores=lexicon.scores.astype(np.float32),
                         tokens=lexicon.tokens.astype(np.int32),
                         offsets=lexicon.offsets.astype(np.int64))
            os.chmod(tmp, 0o644)  # mkstemp makes it private; the LM beside it is not
            os.replace(tmp, path)
            return path
        except OSError as exc:
            log.info("%s: cannot write the lexicon cache (%s)", path, exc)
            Path(tmp).unlink(missing_ok=True)
    return None


def make_lexicon(words: list[str], spelled: dict[tuple[int, ...], int],
                 scores: Sequence[float]) -> Lexicon:
    """A `Lexicon` from the words, {spelling: label} and each entry's score (same order)."""
    spellings = list(spelled)
    lengths = np.fromiter((len(s) for s in spellings), dtype=np.int64, count=len(spellings))
    offsets = np.zeros(len(spellings) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    tokens = np.fromiter((t for s in spellings for t in s), dtype=np.int32,
                         count=int(offsets[-1]))
    return Lexicon(list(words), np.fromiter(spelled.values(), dtype=np.int32,
                                            count=len(spellings)),
                   np.asarray(scores, dtype=np.float32), tokens, offsets)


__all__ = ["Lexicon", "cache_key", "cache_paths", "load_lexicon", "make_lexicon",
           "save_lexicon"]

"""Exceptions raised by harken. Every message names the input and says what was wrong."""

from __future__ import annotations

import importlib
import os
import sys
from types import ModuleType

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, from PyPI
    import tomli as tomllib


class HarkenError(Exception):
    """Base class of every error harken raises on purpose."""


class AudioError(HarkenError, ValueError):
    """An audio input could not be used: the message names the source and the reason."""

    def __init__(self, source: object, reason: str) -> None:
        self.source = source
        self.reason = reason
        super().__init__(f"{_describe(source)}: {reason}")


class ModelError(HarkenError):
    """A model file or folder is missing, corrupt or of an unknown format."""


class ConfigError(HarkenError, ValueError):
    """A configuration value is invalid; the message names the key and the expected values."""


class ManifestError(HarkenError, ValueError):
    """A manifest line could not be read; the message names the file and the line."""


class UsageError(ConfigError):
    """A command-line option cannot be used (a missing LM, a model that does not load); the
    command reports it once, before reading any input, and exits with status 2."""


class DependencyError(HarkenError, ImportError):
    """An optional dependency is missing; the message says which extra installs it."""


def require(module: str, extra: str) -> ModuleType:
    """Import an optional dependency or raise a `DependencyError` naming the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise DependencyError(
            f"{module} is needed for this feature: pip install 'harken[{extra}]' ({exc})"
        ) from exc


def _describe(source: object) -> str:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"<{len(source)} bytes>"
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    if hasattr(source, "shape"):
        return f"<array shape {tuple(source.shape)}>"  # type: ignore[attr-defined]
    name = getattr(source, "name", None)
    if isinstance(name, str):
        return name
    return str(source)

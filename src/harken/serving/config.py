"""Server settings: `ServerConfig` (limits, batching, jobs, endpointing), validated once, and the
defaults `harken serve` starts with. Needs neither PyTorch nor the web framework."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

from harken.errors import ConfigError


DEFAULT_HOST = "127.0.0.1"


DEFAULT_PORT = 8000


API_KEY_ENV = "HARKEN_API_KEY"


def default_db_path() -> str:
    """Where jobs are kept unless `--db` says otherwise: $XDG_DATA_HOME/harken/jobs.sqlite3."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(base, "harken", "jobs.sqlite3")


@dataclass(frozen=True)
class ServerConfig:
    """Limits and settings of a server; validated once."""

    api_key: str | None = None
    max_upload_bytes: int = 100 << 20
    max_audio_seconds: float = 600.0  # per synchronous request; jobs take any length
    request_timeout_seconds: float = 300.0
    idle_stream_seconds: float = 30.0
    max_streams: int = 32
    max_batch: int = 8  # pieces of audio per acoustic-model batch (1: no batching)
    max_stream_batch: int = 32  # stream steps per batch (1: no batching)
    max_wait_ms: float = 10.0
    threads: int = 2  # inference worker threads
    job_workers: int = 1  # jobs transcribed at once (0: accept jobs, transcribe none)
    db: str = field(default_factory=default_db_path)
    cors_origins: tuple[str, ...] = ()
    vad: str = "webrtc"  # endpointing of streams
    silence_ms: float = 600.0
    model_name: str = "harken"
    decode_options: dict[str, Any] = field(default_factory=dict)  # server-wide overrides

    def __post_init__(self) -> None:
        for name in ("max_upload_bytes", "max_streams", "max_batch", "max_stream_batch",
                     "threads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(self.job_workers, int) or self.job_workers < 0:
            raise ConfigError(f"job_workers must be >= 0, got {self.job_workers!r}")
        for name in ("max_audio_seconds", "request_timeout_seconds", "idle_stream_seconds",
                     "silence_ms"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not value > 0 or math.isinf(value):
                raise ConfigError(f"{name} must be a positive number, got {value!r}")
        if not 0 <= self.max_wait_ms < 10_000:
            raise ConfigError(f"max_wait_ms must be in [0, 10000), got {self.max_wait_ms!r}")

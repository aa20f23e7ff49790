"""Persistent transcription jobs: an SQLite table of uploaded audio, status and results.

A job is accepted once its row is committed; `harken serve` then transcribes queued jobs one
after another. A restart loses nothing: jobs that were running when the server stopped are
queued again (`JobStore.open`), results stay until deleted. The audio is kept in the database
until its job is done, then dropped (the result is what a client asks for).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harken.errors import ConfigError

STATUSES = ("queued", "running", "done", "failed")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    filename TEXT,
    options TEXT NOT NULL,
    audio BLOB,
    result TEXT,
    error TEXT
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status, created_at);
"""


@dataclass
class Job:
    """One job as stored; `result` is a transcript dictionary once `status` is "done"."""

    id: str
    status: str
    created_at: float
    started_at: float | None
    finished_at: float | None
    filename: str | None
    options: dict[str, Any]
    result: dict[str, Any] | None
    error: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "object": "transcription.job", "status": self.status,
                "created_at": self.created_at, "started_at": self.started_at,
                "finished_at": self.finished_at, "filename": self.filename,
                "result": self.result, "error": self.error}


class JobStore:
    """Jobs in one SQLite file (or ":memory:"). Thread-safe: one connection behind a lock."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        if self.path.startswith("sqlite:///"):  # a URL names the same file
            self.path = self.path[len("sqlite:///"):]
        if self.path != ":memory:":
            Path(self.path).expanduser().parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise ConfigError(f"job database {self.path}: cannot open it ({exc})") from exc
        self._lock = threading.Lock()
        # Jobs interrupted by a stop start again from the beginning.
        self._execute("UPDATE jobs SET status = 'queued', started_at = NULL "
                      "WHERE status = 'running'")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _execute(self, sql: str, parameters: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._db.execute(sql, parameters).fetchall()

    def add(self, audio: bytes, filename: str | None, options: dict[str, Any]) -> Job:
        """Store a new queued job; it is durable when this returns."""
        job_id = "job_" + uuid.uuid4().hex
        now = time.time()
        self._execute("INSERT INTO jobs (id, status, created_at, filename, options, audio) "
                      "VALUES (?, 'queued', ?, ?, ?, ?)",
                      (job_id, now, filename, json.dumps(options), sqlite3.Binary(audio)))
        return self.get(job_id)  # type: ignore[return-value]

    def get(self, job_id: str) -> Job | None:
        rows = self._execute("SELECT id, status, created_at, started_at, finished_at, filename, "
                             "options, result, error FROM jobs WHERE id = ?", (job_id,))
        if not rows:
            return None
        (id_, status, created, started, finished, filename, options, result, error) = rows[0]
        return Job(id_, status, created, started, finished, filename, json.loads(options),
                   json.loads(result) if result else None, error)

    def next_queued(self) -> tuple[Job, bytes] | None:
        """Mark the oldest queued job running and return it with its audio (None: no job)."""
        with self._lock:
            row = self._db.execute("SELECT id, audio FROM jobs WHERE status = 'queued' "
                                   "ORDER BY created_at LIMIT 1").fetchone()
            if row is None:
                return None
            self._db.execute("UPDATE jobs SET status = 'running', started_at = ? WHERE id = ?",
                             (time.time(), row[0]))
        return self.get(row[0]), bytes(row[1])  # type: ignore[return-value]

    def finish(self, job_id: str, result: dict[str, Any] | None, error: str | None = None) -> None:
        """Record a result (status "done") or an error ("failed"); the audio is dropped."""
        status = "failed" if error is not None else "done"
        self._execute("UPDATE jobs SET status = ?, finished_at = ?, result = ?, error = ?, "
                      "audio = NULL WHERE id = ?",
                      (status, time.time(), json.dumps(result) if result is not None else None,
                       error, job_id))

    def count(self, status: str) -> int:
        return int(self._execute("SELECT COUNT(*) FROM jobs WHERE status = ?", (status,))[0][0])


__all__ = ["Job", "JobStore", "STATUSES"]

"""`harken serve`: speech recognition over HTTP and WebSocket (FastAPI + uvicorn).

    app = create_app(load_model(), ServerConfig(api_key="secret"))
    uvicorn.run(app, host="127.0.0.1", port=8000)

Endpoints (docs/server.md):

- ``POST /v1/audio/transcriptions``: OpenAI-compatible transcription of an uploaded file.
- ``WS /v1/stream``: real-time streaming with partial and final results (endpointing by VAD).
- ``POST /v1/jobs``, ``GET /v1/jobs/{id}``: jobs for long files, kept in SQLite (`harken.jobs`).
- ``GET /health``, ``GET /metrics`` (Prometheus), ``GET /v1/models``, ``GET /`` (live captions).

The acoustic model runs in worker threads, never on the event loop. Pieces of audio from
concurrent requests are batched (`Batcher`: up to `max_batch` pieces, waiting at most
`max_wait_ms` for more). Streams run their network step by step, each with its own state;
the steps of concurrent streams are batched too (`harken.batching.StreamStepBatcher`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hmac
import io
import json
import logging
import math
import os
import re
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, AsyncIterator, Callable

import numpy as np

from harken.batching import Batcher, StreamStepBatcher, batch_stream_steps
from harken.decoding import Transcript, Word
from harken.errors import AudioError, ConfigError, HarkenError, require

log = logging.getLogger("harken.server")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
API_KEY_ENV = "HARKEN_API_KEY"
RESPONSE_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
TIMESTAMP_GRANULARITIES = ("word", "segment")
STREAM_ENCODINGS = {"pcm_s16le": np.dtype("<i2"), "f32": np.dtype("<f4")}
# Boost of a hotword taken from a request's `prompt` (natural log, as `harken --hotword`).
PROMPT_HOTWORD_BOOST = 10.0
MAX_HOTWORDS = 100
# Streams send a partial result at most this often (seconds of audio).
PARTIAL_INTERVAL_SECONDS = 0.2
# Multipart framing allowed on top of the largest upload before the body is refused unread.
MULTIPART_SLACK_BYTES = 64 << 10
STATIC_DIR = Path(__file__).parent / "assets" / "server"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
# WebSocket close codes (RFC 6455 and the private range).
CLOSE_NORMAL, CLOSE_POLICY, CLOSE_ERROR, CLOSE_TRY_LATER, CLOSE_IDLE = 1000, 1008, 1011, 1013, 4408


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


# --- metrics ------------------------------------------------------------------------------------

class Metrics:
    """The server's Prometheus metrics, in a registry of its own."""

    def __init__(self) -> None:
        pc = require("prometheus_client", "server")
        self._pc = pc
        self.registry = registry = pc.CollectorRegistry()
        self.requests = pc.Counter("harken_requests", "HTTP requests and WebSocket sessions",
                                   ["endpoint", "status"], registry=registry)
        self.latency = pc.Histogram("harken_request_seconds", "Time to answer a request",
                                    ["endpoint"], registry=registry,
                                    buckets=(.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60))
        self.audio_seconds = pc.Counter("harken_audio_seconds", "Seconds of audio transcribed",
                                        ["endpoint"], registry=registry)
        self.real_time_factor = pc.Histogram(
            "harken_real_time_factor", "Processing seconds per second of audio", ["endpoint"],
            registry=registry, buckets=(.005, .01, .02, .05, .1, .2, .5, 1, 2))
        self.active_streams = pc.Gauge("harken_active_streams", "Open streaming sessions",
                                       registry=registry)
        self.stream_chunk_seconds = pc.Histogram(
            "harken_stream_chunk_seconds", "Time to process one received stream chunk",
            registry=registry, buckets=(.001, .005, .01, .025, .05, .1, .25, .5, 1))
        self.batch_size = pc.Histogram("harken_batch_size", "Pieces of audio per model batch",
                                       registry=registry, buckets=(1, 2, 4, 8, 16, 32, 64))
        self.stream_batch_size = pc.Histogram(
            "harken_stream_batch_size", "Streams per batched network step", registry=registry,
            buckets=(1, 2, 4, 8, 16, 32, 64))
        self.queue_depth = pc.Gauge("harken_queue_depth",
                                    "Pieces of audio waiting for the acoustic model",
                                    registry=registry)
        self.jobs_queued = pc.Gauge("harken_jobs_queued", "Jobs waiting to be transcribed",
                                    registry=registry)

    def render(self) -> tuple[bytes, str]:
        return self._pc.generate_latest(self.registry), self._pc.CONTENT_TYPE_LATEST


# --- results ------------------------------------------------------------------------------------

def prompt_hotwords(prompt: str | None) -> dict[str, float]:
    """Hotwords from an OpenAI-style `prompt`: phrases separated by commas, semicolons or new
    lines, each optionally ``phrase:boost``; free text without separators gives its words."""
    if not prompt or not prompt.strip():
        return {}
    items = [p.strip() for p in re.split(r"[,;\n]", prompt)]
    if len(items) == 1:
        items = prompt.split()
    hotwords: dict[str, float] = {}
    for item in items:
        phrase, _, boost = item.rpartition(":")
        try:
            value = float(boost) if phrase else PROMPT_HOTWORD_BOOST
        except ValueError:
            phrase, value = item, PROMPT_HOTWORD_BOOST
        phrase = (phrase if phrase else item).strip().strip(".!?\"'").lower()
        if phrase and math.isfinite(value):
            hotwords[phrase] = value
    if len(hotwords) > MAX_HOTWORDS:
        raise ConfigError(f"prompt: at most {MAX_HOTWORDS} hotwords, got {len(hotwords)}")
    return hotwords


def _word_dict(word: Word) -> dict[str, Any]:
    out = {"word": word.word, "start": round(word.start, 3), "end": round(word.end, 3),
           "confidence": round(word.confidence, 4)}
    if word.written is not None:  # written transcripts: the word as written ("" if folded)
        out["written"] = word.written
    return out


def verbose_json(transcript: Transcript, language: str,
                 granularities: tuple[str, ...] = ("segment",)) -> dict[str, Any]:
    """The OpenAI `verbose_json` shape: text, duration, and segments and/or words."""
    from harken.transcribe import _segments

    out: dict[str, Any] = {"task": "transcribe", "language": language,
                           "duration": transcript.duration, "text": transcript.text}
    if "segment" in granularities:
        out["segments"] = [
            {"id": i, "seek": 0, "start": round(s.start, 3), "end": round(s.end, 3),
             "text": s.text, "tokens": [], "temperature": 0.0,
             "avg_logprob": round(float(np.mean([math.log(max(w.confidence, 1e-9))
                                                 for w in s.words])) if s.words else 0.0, 4),
             "compression_ratio": 1.0, "no_speech_prob": 0.0}
            for i, s in enumerate(_segments(transcript))]
    if "word" in granularities:
        out["words"] = [_word_dict(w) for w in transcript.words]
    return out


def _error(status: int, message: str, code: str, param: str | None = None) -> Any:
    from fastapi.responses import JSONResponse

    return JSONResponse(status_code=status, content={"error": {
        "message": message, "type": "invalid_request_error" if status < 500 else "server_error",
        "param": param, "code": code}})


class RequestError(Exception):
    """A request that cannot be served: answered with `status` and a JSON error."""

    def __init__(self, status: int, message: str, code: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param


def _load_upload(data: bytes, filename: str, sample_rate: int) -> np.ndarray:
    from harken.audio import load_audio

    upload = io.BytesIO(data)
    upload.name = filename  # AudioError messages name the uploaded file
    return load_audio(upload, sample_rate)


# --- the service --------------------------------------------------------------------------------

class Service:
    """What the endpoints share: the model, the batcher, the worker threads, jobs, metrics."""

    def __init__(self, model: Any, config: ServerConfig) -> None:
        from harken.jobs import JobStore

        self.model = model
        self.config = config
        self.metrics = Metrics()
        self.jobs = JobStore(config.db)
        self.active_streams = 0
        self.executor: ThreadPoolExecutor | None = None
        self.batcher: Batcher | None = None
        # Streams wait for their batched steps in threads of their own.
        self.stream_executor: ThreadPoolExecutor | None = None
        self.stream_batcher: StreamStepBatcher | None = None
        self._job_tasks: list[asyncio.Task[None]] = []
        self._job_added = asyncio.Event()
        self.started = time.time()

    async def start(self) -> None:
        self.executor = ThreadPoolExecutor(self.config.threads, thread_name_prefix="harken-infer")
        self.batcher = Batcher(self.model, self.config.max_batch, self.config.max_wait_ms,
                               self.config.threads, self.executor, self.metrics)
        self.batcher.start()
        self.stream_executor = ThreadPoolExecutor(self.config.max_streams,
                                                  thread_name_prefix="harken-stream")
        self.stream_batcher = StreamStepBatcher(self.model.network, self.config.max_stream_batch,
                                                self.config.max_wait_ms, self.metrics)
        self._job_added = asyncio.Event()
        loop = asyncio.get_running_loop()
        self._job_tasks = [loop.create_task(self._job_worker())
                           for _ in range(self.config.job_workers)]
        self.metrics.jobs_queued.set(self.jobs.count("queued"))

    async def stop(self) -> None:
        for task in self._job_tasks:
            task.cancel()
        await asyncio.gather(*self._job_tasks, return_exceptions=True)
        if self.batcher is not None:
            await self.batcher.stop()
        if self.stream_batcher is not None:
            self.stream_batcher.close()
        for executor in (self.executor, self.stream_executor):
            if executor is not None:
                executor.shutdown(wait=True, cancel_futures=True)
        self.jobs.close()

    async def run_sync(self, function: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.executor, function, *args)

    async def run_stream(self, function: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.stream_executor, function,
                                                                *args)

    def decode_overrides(self, hotwords: dict[str, float] | None = None) -> dict[str, Any]:
        overrides = dict(self.config.decode_options)
        if hotwords:
            overrides["hotwords"] = {**overrides.get("hotwords", {}), **hotwords}
        return overrides

    async def transcribe(self, data: bytes, filename: str, overrides: dict[str, Any],
                         max_seconds: float | None, endpoint: str,
                         written: bool | None = None) -> Transcript:
        """Transcribe an uploaded file exactly as `Model.transcribe` does, batching the network
        with concurrent requests; written text when the model has a punctuator, unless
        `written` is False."""
        from harken.model import merge_transcripts, split_long_audio

        model, started = self.model, time.perf_counter()
        wave = await self.run_sync(_load_upload, data, filename, model.sample_rate)
        seconds = len(wave) / model.sample_rate
        if max_seconds is not None and seconds > max_seconds:
            raise RequestError(413, f"{filename}: audio is {seconds:.1f} s long; this server "
                               f"transcribes at most {max_seconds:g} s per request (POST "
                               "/v1/jobs takes longer files)", "audio_too_long", "file")
        decode = await self.run_sync(model._decoder, None, overrides)
        pieces = await self.run_sync(partial(split_long_audio, wave, model.sample_rate,
                                             vad="auto"))
        log_probs = await self.batcher.log_probs([p for _, p in pieces])  # type: ignore[union-attr]

        def finish() -> Transcript:
            transcript = merge_transcripts([decode(lp, offset) for (offset, _), lp
                                            in zip(pieces, log_probs)], seconds)
            writes = getattr(model, "writes", None)
            return model.write(transcript) if writes is not None and writes(written) \
                else transcript

        transcript = await self.run_sync(finish)
        self.metrics.audio_seconds.labels(endpoint).inc(seconds)
        if seconds > 0:
            self.metrics.real_time_factor.labels(endpoint).observe(
                (time.perf_counter() - started) / seconds)
        return transcript

    # -- jobs --------------------------------------------------------------------------------
    def job_added(self) -> None:
        self._job_added.set()
        self.metrics.jobs_queued.set(self.jobs.count("queued"))

    async def _job_worker(self) -> None:
        while True:
            item = await asyncio.to_thread(self.jobs.next_queued)
            if item is None:
                self._job_added.clear()
                try:
                    await asyncio.wait_for(self._job_added.wait(), 1.0)
                except asyncio.TimeoutError:
                    pass
                continue
            job, audio = item
            self.metrics.jobs_queued.set(self.jobs.count("queued"))
            options = job.options
            try:
                transcript = await self.transcribe(
                    audio, job.filename or "upload", self.decode_overrides(options.get("hotwords")),
                    None, "jobs")
                result = verbose_json(transcript, options.get("language") or "en",
                                      TIMESTAMP_GRANULARITIES)
                await asyncio.to_thread(self.jobs.finish, job.id, result)
            except asyncio.CancelledError:
                raise  # the job stays "running" and is queued again at the next start
            except (HarkenError, RequestError) as exc:
                await asyncio.to_thread(self.jobs.finish, job.id, None, str(exc))
            except Exception:
                log.exception("job %s failed", job.id)
                await asyncio.to_thread(self.jobs.finish, job.id, None, "internal error")


# --- streaming ----------------------------------------------------------------------------------

class StreamSession:
    """One WebSocket stream: decodes audio messages, feeds `harken.streaming.Stream`, and
    returns the messages to send. Runs in a worker thread (one call at a time per session)."""

    def __init__(self, service: Service, settings: dict[str, Any]) -> None:
        from harken.vad import EndpointConfig

        known = {"type", "sample_rate", "encoding", "hotwords", "partials", "endpointing",
                 "silence_ms", "raw"}
        unknown = sorted(set(settings) - known)
        if unknown:
            raise ConfigError(f"stream config: unknown keys {unknown}; expected some of "
                              f"{sorted(known - {'type'})}")
        model = service.model
        self.sample_rate = settings.get("sample_rate", model.sample_rate)
        if isinstance(self.sample_rate, bool) or not isinstance(self.sample_rate, int) or not (
                8000 <= self.sample_rate <= 192000):
            raise ConfigError(f"stream config: sample_rate must be an integer from 8000 to "
                              f"192000, got {self.sample_rate!r}")
        encoding = settings.get("encoding", "pcm_s16le")
        if encoding not in STREAM_ENCODINGS:
            raise ConfigError(f"stream config: encoding must be one of "
                              f"{', '.join(STREAM_ENCODINGS)}, got {encoding!r}")
        self.dtype = STREAM_ENCODINGS[encoding]
        self.partials = bool(settings.get("partials", True))
        # Finals are written text when the model has a punctuator; partials stay raw.
        self.write = None if settings.get("raw") is True else getattr(model, "write", None)
        hotwords = settings.get("hotwords") or {}
        if isinstance(hotwords, list):
            hotwords = {str(w): PROMPT_HOTWORD_BOOST for w in hotwords}
        if not isinstance(hotwords, dict):
            raise ConfigError("stream config: hotwords must be a list of phrases or an object "
                              f"{{phrase: boost}}, got {type(hotwords).__name__}")
        endpoint = None
        if settings.get("endpointing", True):
            silence_ms = settings.get("silence_ms", service.config.silence_ms)
            if isinstance(silence_ms, bool) or not isinstance(silence_ms, (int, float)) or not (
                    0 < silence_ms < math.inf):
                raise ConfigError(f"stream config: silence_ms must be a positive number of "
                                  f"milliseconds, got {silence_ms!r}")
            endpoint = EndpointConfig(silence_ms=float(silence_ms), method=service.config.vad)
        self.stream = model.stream(endpoint=endpoint, **service.decode_overrides(hotwords))
        self.batcher = service.stream_batcher
        if self.batcher is not None:
            batch_stream_steps(self.stream, self.batcher)
        self.resampler = None
        if self.sample_rate != model.sample_rate:
            import soxr

            self.resampler = soxr.ResampleStream(self.sample_rate, model.sample_rate, 1,
                                                 dtype="float32")
        self._rest = b""  # bytes of a sample split between two messages
        self._utterance_start = 0.0
        self._last_partial = ""
        self._partial_at = 0.0

    @property
    def seconds(self) -> float:
        return self.stream.seconds_fed

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        with self._feeding():
            return self._feed(data)

    def _feeding(self) -> Any:
        return self.batcher.feeding() if self.batcher is not None else contextlib.nullcontext()

    def _feed(self, data: bytes) -> list[dict[str, Any]]:
        data = self._rest + data
        whole = len(data) - len(data) % self.dtype.itemsize
        self._rest = data[whole:]
        samples = np.frombuffer(data[:whole], self.dtype)
        if self.dtype.kind == "i":
            samples = samples.astype(np.float32) / 32768.0
        elif not np.isfinite(samples).all():
            raise AudioError("stream", "f32 audio contains NaN or infinite samples")
        else:
            samples = samples.astype(np.float32)
        if self.resampler is not None:
            samples = self.resampler.resample_chunk(samples)
        messages = [self._final(t) for t in self.stream.feed(samples)]
        messages = [m for m in messages if m["text"]]
        if messages:
            self._last_partial = ""
        if self.partials and self.seconds - self._partial_at >= PARTIAL_INTERVAL_SECONDS:
            self._partial_at = self.seconds
            result = self.stream.partial()
            if result.text != self._last_partial:
                self._last_partial = result.text
                messages.append({"type": "partial", "text": result.text,
                                 "stable": result.stable, "unstable": result.unstable,
                                 "words": [_word_dict(w) for w in result.words],
                                 "audio_seconds": round(self.seconds, 3)})
        return messages

    def finish(self) -> list[dict[str, Any]]:
        """Flush: the final result of the audio since the last final (sent even if empty)."""
        if self._rest:
            raise AudioError("stream", f"the audio ended inside a sample ({len(self._rest)} "
                             f"stray bytes for {self.dtype.itemsize}-byte samples)")
        with self._feeding():
            messages = []
            if self.resampler is not None:
                tail = self.resampler.resample_chunk(np.zeros(0, np.float32), last=True)
                messages = [m for m in map(self._final, self.stream.feed(tail)) if m["text"]]
            return [*messages, self._final(self.stream.finish())]

    def _final(self, transcript: Transcript) -> dict[str, Any]:
        if self.write is not None:
            transcript = self.write(transcript)
        start = self._utterance_start
        self._utterance_start = end = start + transcript.duration
        return {"type": "final", "text": transcript.text,
                "words": [_word_dict(w) for w in transcript.words],
                "start": round(start, 3), "end": round(end, 3),
                "audio_seconds": round(self.seconds, 3)}


async def _stream_endpoint(service: Service, websocket: Any) -> None:
    from starlette.websockets import WebSocketDisconnect

    await websocket.accept()
    metrics, config = service.metrics, service.config

    async def fail(code: str, message: str, close_code: int) -> None:
        metrics.requests.labels("/v1/stream", code).inc()
        await websocket.send_json({"type": "error", "code": code, "message": message})
        await websocket.close(close_code)

    if config.api_key is not None and not _authorized(
            config.api_key, websocket.headers.get("authorization"),
            websocket.query_params.get("token")):
        return await fail("unauthorized", "missing or wrong API key: send 'Authorization: "
                          "Bearer KEY' or ?token=KEY", CLOSE_POLICY)
    if service.active_streams >= config.max_streams:
        return await fail("too_many_streams", f"the server is serving its maximum of "
                          f"{config.max_streams} streams; try again later", CLOSE_TRY_LATER)
    service.active_streams += 1
    metrics.active_streams.set(service.active_streams)
    stream_id = uuid.uuid4().hex[:12]
    log.info("stream %s opened", stream_id)
    session: StreamSession | None = None
    status = "ok"
    try:
        while True:
            try:
                message = await asyncio.wait_for(websocket.receive(), config.idle_stream_seconds)
            except asyncio.TimeoutError:
                status = "idle_timeout"
                return await fail(status, f"no message for {config.idle_stream_seconds:g} s; "
                                  "closing the stream", CLOSE_IDLE)
            if message["type"] == "websocket.disconnect":
                status = "disconnected"
                return
            text, data = message.get("text"), message.get("bytes")
            if text is not None:
                try:
                    request = json.loads(text)
                    if not isinstance(request, dict):
                        raise ValueError("expected a JSON object")
                except ValueError as exc:
                    status = "bad_message"
                    return await fail(status, f"text messages must be JSON objects ({exc})",
                                      CLOSE_POLICY)
                kind = request.get("type", "config")
                if kind == "config" and session is None:
                    try:
                        session = await service.run_sync(StreamSession, service, request)
                    except HarkenError as exc:
                        status = "bad_config"
                        return await fail(status, str(exc), CLOSE_POLICY)
                    await websocket.send_json({"type": "ready", "sample_rate":
                                               session.sample_rate, "model": config.model_name})
                elif kind in ("end", "eof"):
                    if session is None:
                        session = await service.run_sync(StreamSession, service, {})
                    messages = await service.run_stream(session.finish)
                    for reply in messages:
                        await websocket.send_json(reply)
                    await websocket.send_json({"type": "done",
                                               "audio_seconds": round(session.seconds, 3)})
                    metrics.audio_seconds.labels("/v1/stream").inc(session.seconds)
                    await websocket.close(CLOSE_NORMAL)
                    return
                else:
                    status = "bad_message"
                    return await fail(status, f"unexpected message type {kind!r}: send one "
                                      "config message first, then audio, then {\"type\": "
                                      "\"end\"}", CLOSE_POLICY)
            elif data is not None:
                if session is None:
                    session = await service.run_sync(StreamSession, service, {})
                started = time.perf_counter()
                messages = await service.run_stream(session.feed, data)
                metrics.stream_chunk_seconds.observe(time.perf_counter() - started)
                for reply in messages:
                    await websocket.send_json(reply)
    except WebSocketDisconnect:
        status = "disconnected"
    except HarkenError as exc:
        status = "bad_audio"
        await fail(status, str(exc), CLOSE_POLICY)
    except Exception:
        status = "error"
        log.exception("stream %s failed", stream_id)
        try:
            await fail(status, f"internal error (stream {stream_id})", CLOSE_ERROR)
        except Exception:
            pass
    finally:
        service.active_streams -= 1
        metrics.active_streams.set(service.active_streams)
        if status in ("ok", "disconnected"):  # `fail` counted the others
            metrics.requests.labels("/v1/stream", status).inc()
        log.info("stream %s closed (%s, %.1f s of audio)", stream_id, status,
                 session.seconds if session is not None else 0.0)


# --- the application ----------------------------------------------------------------------------

def _authorized(api_key: str, header: str | None, token: str | None = None) -> bool:
    supplied = token
    if header is not None and header.lower().startswith("bearer "):
        supplied = header[7:].strip()
    return supplied is not None and hmac.compare_digest(supplied.encode(), api_key.encode())


def _route_path(app: Any, scope: dict[str, Any]) -> str:
    """The path template a request matched ("/v1/jobs/{job_id}"): a metrics label of bounded
    cardinality."""
    from starlette.routing import Match

    for route in app.router.routes:
        if route.matches(scope)[0] == Match.FULL:
            return str(route.path)
    return "other"


def _open_path(path: str) -> bool:
    """Paths served without an API key: the health check and the caption page's static files
    (the page asks for the key and sends it with its own requests)."""
    return path in ("/health", "/") or path.startswith("/static/")


def create_app(model: Any, config: ServerConfig | None = None) -> Any:
    """The FastAPI application serving `model` (see the module docstring for the endpoints)."""
    fastapi = require("fastapi", "server")
    require("python_multipart", "server")
    from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response

    config = config or ServerConfig()
    service = Service(model, config)

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    app = fastapi.FastAPI(title="harken", lifespan=lifespan, docs_url=None, redoc_url=None,
                          openapi_url=None)
    app.state.service = service
    if config.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(config.cors_origins),
                           allow_methods=["GET", "POST"], allow_headers=["Authorization"])

    @app.middleware("http")
    async def requests(request: Any, call_next: Any) -> Any:
        incoming = request.headers.get("x-request-id", "")
        request_id = incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex[:16]
        request.state.request_id = request_id
        started = time.perf_counter()
        path = request.url.path
        if (config.api_key is not None and not _open_path(path)
                and request.method != "OPTIONS"  # CORS preflights carry no credentials
                and not _authorized(config.api_key, request.headers.get("authorization"))):
            response = _error(401, "missing or wrong API key: send 'Authorization: Bearer KEY'",
                              "invalid_api_key")
        else:
            try:
                response = await call_next(request)
            except Exception:  # the server never dies from a request
                log.exception("request %s %s %s failed", request_id, request.method, path)
                response = _error(500, f"internal error (request {request_id})", "internal_error")
        endpoint = _route_path(app, request.scope)
        elapsed = time.perf_counter() - started
        service.metrics.requests.labels(endpoint, str(response.status_code)).inc()
        service.metrics.latency.labels(endpoint).observe(elapsed)
        response.headers["X-Request-ID"] = request_id
        log.info("request %s %s %s %d %.1f ms", request_id, request.method, endpoint,
                 response.status_code, 1000 * elapsed)
        return response

    async def read_upload(request: Any) -> tuple[bytes, str, Any]:
        """The multipart form's `file` (bytes, name) and the form, within the size limit."""
        length = request.headers.get("content-length")
        if length is None or not length.isdigit():
            raise RequestError(411, "a Content-Length header is required", "length_required")
        if int(length) > config.max_upload_bytes + MULTIPART_SLACK_BYTES:
            raise RequestError(413, f"upload of {int(length)} bytes exceeds this server's limit "
                               f"of {config.max_upload_bytes} bytes", "upload_too_large", "file")
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            raise RequestError(400, "expected a multipart/form-data body with a 'file' field",
                               "bad_request")
        try:
            form = await request.form(max_files=1, max_fields=100)
        except Exception as exc:
            raise RequestError(400, f"the multipart form could not be read ({exc})",
                               "bad_request") from None
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise RequestError(400, "missing form field 'file' (the audio file to transcribe)",
                               "missing_file", "file")
        data = await upload.read()
        if len(data) > config.max_upload_bytes:
            raise RequestError(413, f"upload of {len(data)} bytes exceeds this server's limit "
                               f"of {config.max_upload_bytes} bytes", "upload_too_large", "file")
        name = os.path.basename(upload.filename or "") or "upload"
        return data, name, form

    def handle_errors(endpoint: Callable[[Any], Any]) -> Callable[[Any], Any]:
        async def handler(request: Any) -> Any:
            try:
                return await endpoint(request)
            except RequestError as exc:
                return _error(exc.status, exc.message, exc.code, exc.param)
            except AudioError as exc:
                return _error(400, str(exc), "bad_audio", "file")
            except HarkenError as exc:
                return _error(400, str(exc), "bad_request")
        return handler

    async def transcriptions(request: Any) -> Any:
        data, name, form = await read_upload(request)
        response_format = form.get("response_format") or "json"
        if response_format not in RESPONSE_FORMATS:
            raise RequestError(400, f"response_format must be one of "
                               f"{', '.join(RESPONSE_FORMATS)}, got {response_format!r}",
                               "bad_request", "response_format")
        granularities = tuple(form.getlist("timestamp_granularities[]")
                              or form.getlist("timestamp_granularities")) or ("segment",)
        wrong = sorted(set(granularities) - set(TIMESTAMP_GRANULARITIES))
        if wrong:
            raise RequestError(400, f"timestamp_granularities: unknown values {wrong}; expected "
                               "word and/or segment", "bad_request", "timestamp_granularities")
        overrides = service.decode_overrides(prompt_hotwords(form.get("prompt")))
        raw = str(form.get("raw") or "").lower()
        if raw not in ("", "true", "false", "1", "0"):
            raise RequestError(400, f"raw must be true or false, got {raw!r}", "bad_request",
                               "raw")
        try:
            transcript = await asyncio.wait_for(
                service.transcribe(data, name, overrides, config.max_audio_seconds,
                                   "/v1/audio/transcriptions",
                                   written=False if raw in ("true", "1") else None),
                config.request_timeout_seconds)
        except asyncio.TimeoutError:
            raise RequestError(504, f"transcription took longer than this server's request "
                               f"timeout of {config.request_timeout_seconds:g} s",
                               "timeout") from None
        if response_format == "json":
            return JSONResponse({"text": transcript.text})
        if response_format == "verbose_json":
            return JSONResponse(verbose_json(transcript, form.get("language") or "en",
                                             granularities))
        from harken.transcribe import format_transcript

        fmt = "txt" if response_format == "text" else response_format
        media = "text/vtt" if fmt == "vtt" else "text/plain"
        return PlainTextResponse(format_transcript(transcript, fmt), media_type=media)

    async def create_job(request: Any) -> Any:
        data, name, form = await read_upload(request)
        await service.run_sync(_load_upload, data, name, model.sample_rate)  # reject bad audio now
        options = {"hotwords": prompt_hotwords(form.get("prompt")),
                   "language": form.get("language") or None}
        job = await asyncio.to_thread(service.jobs.add, data, name, options)
        service.job_added()
        return JSONResponse(job.to_dict(), status_code=202)

    async def get_job(request: Any) -> Any:
        job_id = request.path_params["job_id"]
        job = await asyncio.to_thread(service.jobs.get, job_id)
        if job is None:
            raise RequestError(404, f"no job with id {job_id!r}", "job_not_found")
        return JSONResponse(job.to_dict())

    async def health(request: Any) -> Any:
        return JSONResponse({"status": "ok", "model": config.model_name,
                             "uptime_seconds": round(time.time() - service.started, 1),
                             "active_streams": service.active_streams})

    async def metrics(request: Any) -> Any:
        body, content_type = service.metrics.render()
        return Response(body, media_type=content_type)

    async def models(request: Any) -> Any:
        return JSONResponse({"object": "list", "data": [{
            "id": config.model_name, "object": "model", "created": int(service.started),
            "owned_by": "harken", "architecture": model.config.architecture,
            "size": model.config.size, "sample_rate": model.sample_rate,
            "streaming": getattr(model.network, "streamable", False)}]})

    async def page(request: Any) -> Any:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    async def static(request: Any) -> Any:
        name = request.path_params["name"]
        path = STATIC_DIR / name
        if "/" in name or name.startswith(".") or not path.is_file():
            raise RequestError(404, f"no static file {name!r}", "not_found")
        return FileResponse(path)

    async def stream(websocket: Any) -> None:
        await _stream_endpoint(service, websocket)

    for path, endpoint, methods in (
            ("/v1/audio/transcriptions", transcriptions, ["POST"]),
            ("/v1/jobs", create_job, ["POST"]), ("/v1/jobs/{job_id}", get_job, ["GET"]),
            ("/health", health, ["GET"]), ("/metrics", metrics, ["GET"]),
            ("/v1/models", models, ["GET"]), ("/", page, ["GET"]),
            ("/static/{name}", static, ["GET"])):
        app.add_route(path, handle_errors(endpoint), methods=methods)
    app.router.add_websocket_route("/v1/stream", stream)

    @app.exception_handler(404)
    async def not_found(request: Any, exc: Any) -> Any:
        return _error(404, f"no endpoint {request.method} {request.url.path}", "not_found")

    @app.exception_handler(405)
    async def not_allowed(request: Any, exc: Any) -> Any:
        return _error(405, f"{request.method} is not allowed on {request.url.path}",
                      "method_not_allowed")

    return app


# --- the command --------------------------------------------------------------------------------

def register_serve_command(sub: Any) -> None:
    """Add `harken serve` to the command line."""
    from harken.cli import add_decode_args, add_model_args

    defaults = ServerConfig(db=":memory:")
    p = sub.add_parser("serve", help="speech recognition server (REST, WebSocket, jobs, web page)",
                       description="Serve a model over HTTP: OpenAI-compatible transcription, "
                       "WebSocket streaming, persistent jobs, metrics and a live-caption page "
                       "(docs/server.md). Needs pip install 'harken[server]'.")
    add_model_args(p)
    add_decode_args(p)
    net = p.add_argument_group("network")
    net.add_argument("--host", default=DEFAULT_HOST,
                     help=f"address to bind (default: {DEFAULT_HOST}; 0.0.0.0 exposes the server)")
    net.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"(default: {DEFAULT_PORT})")
    net.add_argument("--api-key", default=os.environ.get(API_KEY_ENV),
                     help=f"require 'Authorization: Bearer KEY' on every endpoint but /health "
                     f"(default: ${API_KEY_ENV})")
    net.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                     help="allow browser requests from this origin (repeatable; default: none)")
    limits = p.add_argument_group("limits")
    limits.add_argument("--max-upload-mb", type=float, default=defaults.max_upload_bytes / 2**20,
                        help="largest upload (default: %(default)g MiB)")
    limits.add_argument("--max-audio-seconds", type=float, default=defaults.max_audio_seconds,
                        help="longest audio per synchronous request (default: %(default)g)")
    limits.add_argument("--request-timeout", type=float,
                        default=defaults.request_timeout_seconds,
                        help="seconds before a request is answered 504 (default: %(default)g)")
    limits.add_argument("--idle-timeout", type=float, default=defaults.idle_stream_seconds,
                        help="seconds without a message before a stream is closed "
                        "(default: %(default)g)")
    limits.add_argument("--max-streams", type=int, default=defaults.max_streams,
                        help="concurrent streams; more are refused (default: %(default)d)")
    work = p.add_argument_group("inference")
    work.add_argument("--max-batch", type=int, default=defaults.max_batch,
                      help="pieces of audio per model batch, 1 disables batching "
                      "(default: %(default)d)")
    work.add_argument("--max-stream-batch", type=int, default=defaults.max_stream_batch,
                      help="stream network steps per batch, 1 disables batching "
                      "(default: %(default)d)")
    work.add_argument("--max-wait-ms", type=float, default=defaults.max_wait_ms,
                      help="how long a batch waits for more requests (default: %(default)g)")
    work.add_argument("--threads", type=int, default=defaults.threads,
                      help="inference worker threads (default: %(default)d)")
    work.add_argument("--torch-threads", type=int, default=None,
                      help="threads per PyTorch operation (default: PyTorch's choice)")
    work.add_argument("--job-workers", type=int, default=defaults.job_workers,
                      help="jobs transcribed at once; 0 accepts jobs without running them "
                      "(default: %(default)d)")
    work.add_argument("--db", default=None,
                      help=f"SQLite file (or sqlite:/// URL) for jobs (default: {default_db_path()})")
    work.add_argument("--vad", choices=("webrtc", "silero", "energy"), default=defaults.vad,
                      help="detector for stream endpointing (default: %(default)s)")
    work.add_argument("--silence-ms", type=float, default=defaults.silence_ms,
                      help="trailing silence that ends an utterance (default: %(default)g)")
    p.set_defaults(func=_run_serve)


def _run_serve(args: argparse.Namespace) -> int:
    from harken.cli import decode_overrides
    from harken.model import load_model

    uvicorn = require("uvicorn", "server")
    require("fastapi", "server")
    if args.torch_threads is not None:
        import torch

        torch.set_num_threads(args.torch_threads)
    overrides = decode_overrides(args)
    config = ServerConfig(
        api_key=args.api_key or None, max_upload_bytes=int(args.max_upload_mb * 2**20),
        max_audio_seconds=args.max_audio_seconds, request_timeout_seconds=args.request_timeout,
        idle_stream_seconds=args.idle_timeout, max_streams=args.max_streams,
        max_batch=args.max_batch, max_stream_batch=args.max_stream_batch,
        max_wait_ms=args.max_wait_ms, threads=args.threads,
        job_workers=args.job_workers, db=args.db or default_db_path(),
        cors_origins=tuple(args.cors_origin), vad=args.vad, silence_ms=args.silence_ms,
        model_name=Path(args.model).stem if args.model else "en-small",
        decode_options=overrides)
    model = load_model(args.model, device=args.device, backend=args.backend)
    app = create_app(model, config)
    if args.host not in ("127.0.0.1", "localhost", "::1") and config.api_key is None:
        log.warning("serving on %s without an API key: anyone who can reach it can use it",
                    args.host)
    print(f"harken: serving {config.model_name} on http://{args.host}:{args.port} "
          f"(jobs in {config.db})", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False,
                ws_max_size=16 << 20)
    return 0


__all__ = ["Batcher", "Metrics", "ServerConfig", "create_app", "prompt_hotwords",
           "register_serve_command", "verbose_json"]

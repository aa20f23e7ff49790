"""`harken serve`: speech recognition over HTTP and WebSocket (FastAPI + uvicorn).

    app = create_app(load_model(), ServerConfig(api_key="secret"))
    uvicorn.run(app, host="127.0.0.1", port=8000)

Endpoints (docs/server.md):

- ``POST /v1/audio/transcriptions``: OpenAI-compatible transcription of an uploaded file.
- ``WS /v1/stream``: real-time streaming with partial and final results (endpointing by VAD).
- ``POST /v1/jobs``, ``GET /v1/jobs/{id}``: jobs for long files, kept in SQLite (`harken.serving.jobs`).
- ``GET /health``, ``GET /metrics`` (Prometheus), ``GET /v1/models``, ``GET /`` (live captions).

The acoustic model runs in worker threads, never on the event loop. Pieces of audio from
concurrent requests are batched (`Batcher`: up to `max_batch` pieces, waiting at most
`max_wait_ms` for more). Streams run their network step by step, each with its own state;
the steps of concurrent streams are batched too (`harken.serving.batching.StreamStepBatcher`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import math
import os
import re
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from functools import partial
from typing import Any, AsyncIterator, Callable

import numpy as np

from harken.serving.batching import Batcher, StreamStepBatcher
from harken.decoding.types import Transcript, Word
from harken.errors import AudioError, ConfigError, HarkenError, require
from harken.serving.uploads import RequestError, load_upload
from harken.modelfile import ASSETS
from harken.serving.config import ServerConfig
from harken.model import merge_transcripts, split_long_audio
from harken.serving.jobs import JobStore
from harken.transcribe import transcript_segments, format_transcript
from harken.vad import EndpointConfig
from harken.serving.limits import (check_audio_message, check_hotwords, parse_text_message,
                                   trim_memory)
from harken.serving.openai_api import (form_language, form_overrides, model_card, openai_routes,
                                       PROMPT_HOTWORD_BOOST, prompt_hotwords,
                                       streamed_transcription)
from harken.diarization.diarize import assign_speakers, diarize, DiarizeOptions, OnlineDiarizer

log = logging.getLogger("harken.serving.app")

RESPONSE_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
TIMESTAMP_GRANULARITIES = ("word", "segment")
STREAM_ENCODINGS = {"pcm_s16le": np.dtype("<i2"), "f32": np.dtype("<f4")}
MAX_HOTWORDS = 100  # (harken.serving.limits checks every path)
# Streams send a partial result at most this often (seconds of audio).
PARTIAL_INTERVAL_SECONDS = 0.2
# Multipart framing allowed on top of the largest upload before the body is refused unread.
MULTIPART_SLACK_BYTES = 64 << 10
STATIC_DIR = ASSETS / "server"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
# WebSocket close codes (RFC 6455 and the private range).
CLOSE_NORMAL, CLOSE_POLICY, CLOSE_ERROR, CLOSE_TRY_LATER, CLOSE_IDLE = 1000, 1008, 1011, 1013, 4408






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



def _word_dict(word: Word) -> dict[str, Any]:
    out = {"word": word.word, "start": round(word.start, 3), "end": round(word.end, 3),
           "confidence": round(word.confidence, 4)}
    if word.written is not None:  # written transcripts: the word as written ("" if folded)
        out["written"] = word.written
    if word.speaker is not None:
        out["speaker"] = word.speaker
    return out


def form_diarize(form: Any) -> dict[str, Any] | None:
    """The diarization a request asks for (form fields `diarize`, `speakers`,
    `min_speakers`, `max_speakers`) as JSON-ready settings, None when not asked."""

    value = str(form.get("diarize") or "false").strip().lower()
    if value not in ("true", "1", "yes", "false", "0", "no"):
        raise RequestError(400, f"diarize must be true or false, got {value!r}", "bad_request",
                           "diarize")
    counts: dict[str, Any] = {}
    for name in ("speakers", "min_speakers", "max_speakers"):
        raw = form.get(name)
        if raw in (None, ""):
            continue
        if value not in ("true", "1", "yes"):
            raise RequestError(400, f"{name} needs diarize=true", "bad_request", name)
        if not str(raw).strip().isdigit() or int(raw) < 1:
            raise RequestError(400, f"{name} must be a whole number >= 1, got {raw!r}",
                               "bad_request", name)
        counts[name] = int(raw)
    if value not in ("true", "1", "yes"):
        return None
    if "speakers" in counts:
        counts["max_speakers"] = max(counts.get("max_speakers", 1), counts["speakers"])
    try:
        DiarizeOptions(**counts)
    except ConfigError as exc:
        raise RequestError(400, str(exc), "bad_request", "speakers") from None
    return counts


def verbose_json(transcript: Transcript, language: str,
                 granularities: tuple[str, ...] = ("segment",),
                 task: str = "transcribe") -> dict[str, Any]:
    """The OpenAI `verbose_json` shape: text, duration, and segments and/or words."""

    out: dict[str, Any] = {"task": task, "language": language,
                           "duration": transcript.duration, "text": transcript.text}
    if "segment" in granularities:
        out["segments"] = [
            {"id": i, "seek": 0, "start": round(s.start, 3), "end": round(s.end, 3),
             "text": s.text, "tokens": [], "temperature": 0.0,
             "avg_logprob": round(float(np.mean([math.log(max(w.confidence, 1e-9))
                                                 for w in s.words])) if s.words else 0.0, 4),
             "compression_ratio": 1.0, "no_speech_prob": 0.0,
             **({"speaker": s.speaker} if s.speaker is not None else {})}
            for i, s in enumerate(transcript_segments(transcript))]
    if "word" in granularities:
        out["words"] = [_word_dict(w) for w in transcript.words]
    speakers = list(dict.fromkeys(s.speaker for s in transcript.segments if s.speaker))
    if speakers:
        out["speakers"] = speakers
    return out


def _error(status: int, message: str, code: str, param: str | None = None) -> Any:
    from fastapi.responses import JSONResponse

    return JSONResponse(status_code=status, content={"error": {
        "message": message, "type": "invalid_request_error" if status < 500 else "server_error",
        "param": param, "code": code}})






# --- the service --------------------------------------------------------------------------------

class Service:
    """What the endpoints share: the model, the batcher, the worker threads, jobs, metrics."""

    def __init__(self, model: Any, config: ServerConfig) -> None:
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
                         diarize: dict[str, Any] | None = None, written: bool | None = None
                         ) -> Transcript:
        """Transcribe an uploaded file exactly as `Model.transcribe` does, batching the network
        with concurrent requests; `diarize` (`DiarizeOptions` fields) labels speakers; written
        text when the model has a punctuator, unless `written` is False."""

        model, started = self.model, time.perf_counter()
        wave = await self.run_sync(load_upload, data, filename, model.sample_rate)
        seconds = len(wave) / model.sample_rate
        if max_seconds is not None and seconds > max_seconds:
            raise RequestError(413, f"{filename}: audio is {seconds:.1f} s long; this server "
                               f"transcribes at most {max_seconds:g} s per request (POST "
                               "/v1/jobs takes longer files)", "audio_too_long", "file")
        decode = await self.run_sync(partial(model.decoder, None, **overrides))
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
        if diarize is not None:
            transcript = await self.run_sync(_diarize_transcript, transcript, wave, diarize,
                                             self.config.vad)
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
                    None, "jobs", options.get("diarize"))
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
        known = {"type", "sample_rate", "encoding", "hotwords", "partials", "endpointing",
                  "silence_ms", "diarize", "raw"}
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
        check_hotwords(hotwords, "stream config")
        endpoint = None
        if settings.get("endpointing", True):
            silence_ms = settings.get("silence_ms", service.config.silence_ms)
            if isinstance(silence_ms, bool) or not isinstance(silence_ms, (int, float)) or not (
                    0 < silence_ms < math.inf):
                raise ConfigError(f"stream config: silence_ms must be a positive number of "
                                  f"milliseconds, got {silence_ms!r}")
            endpoint = EndpointConfig(silence_ms=float(silence_ms), method=service.config.vad)
        self.batcher = service.stream_batcher
        step = self.batcher.step if self.batcher is not None else None
        self.stream = model.stream(endpoint=endpoint, step=step, **service.decode_overrides(hotwords))
        self.resampler = None
        if self.sample_rate != model.sample_rate:
            import soxr

            self.resampler = soxr.ResampleStream(self.sample_rate, model.sample_rate, 1,
                                                 dtype="float32")
        self._rest = b""  # bytes of a sample split between two messages
        diarize = settings.get("diarize", False)
        if not isinstance(diarize, bool):
            raise ConfigError(f"stream config: diarize must be true or false, got {diarize!r}")
        self.speakers = None
        if diarize:

            self.speakers = OnlineDiarizer()
        self._audio: list[np.ndarray] = []  # chunks of the open utterance (diarize only)
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
        if self.speakers is not None:
            self._audio.append(samples)
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
                if self.speakers is not None:
                    self._audio.append(tail)
                messages = [m for m in map(self._final, self.stream.feed(tail)) if m["text"]]
            return [*messages, self._final(self.stream.finish())]

    def _final(self, transcript: Transcript) -> dict[str, Any]:
        if self.write is not None:
            transcript = self.write(transcript)
        start = self._utterance_start
        self._utterance_start = end = start + transcript.duration
        message = {"type": "final", "text": transcript.text,
                   "words": [_word_dict(w) for w in transcript.words],
                   "start": round(start, 3), "end": round(end, 3),
                   "audio_seconds": round(self.seconds, 3)}
        if self.speakers is not None:
            cut = round(transcript.duration * self.stream.sample_rate)
            audio = np.concatenate(self._audio) if self._audio else np.zeros(0, np.float32)
            utterance, rest = audio[:cut], audio[cut:]
            self._audio = [rest] if len(rest) else []
            speaker = self.speakers.label(utterance) if transcript.text else None
            message["speaker"] = speaker
            for word in message["words"]:
                word["speaker"] = speaker
        return message


def _diarize_transcript(transcript: Transcript, wave: np.ndarray, settings: dict[str, Any],
                        vad: str) -> Transcript:

    method = vad if vad in ("webrtc", "silero", "energy") else "auto"
    return assign_speakers(transcript, diarize(wave, DiarizeOptions(**settings, vad=method)))


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
                    request = parse_text_message(text)
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
                try:
                    check_audio_message(data)
                except ValueError as exc:
                    status = "bad_message"
                    return await fail(status, str(exc), CLOSE_POLICY)
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
        session = None  # its decoder may hold the last reference to an evicted one

        await asyncio.to_thread(trim_memory)


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


def _request_middleware(app: Any, service: Service) -> Callable[..., Any]:
    """The HTTP middleware: request ids, the API key, errors as JSON, metrics and logs."""
    config = service.config

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
        if path.startswith("/v1/audio/"):
            await asyncio.to_thread(trim_memory)
        service.metrics.requests.labels(endpoint, str(response.status_code)).inc()
        service.metrics.latency.labels(endpoint).observe(elapsed)
        response.headers["X-Request-ID"] = request_id
        log.info("request %s %s %s %d %.1f ms", request_id, request.method, endpoint,
                 response.status_code, 1000 * elapsed)
        return response

    return requests


async def read_upload(request: Any, config: ServerConfig) -> tuple[bytes, str, Any]:
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


def _service_routes(service: Service) -> list[tuple[str, Any, list[str]]]:
    """Health, metrics, the model list, the caption page and its static files."""
    from fastapi.responses import FileResponse, JSONResponse, Response

    model, config = service.model, service.config

    async def health(request: Any) -> Any:
        return JSONResponse({"status": "ok", "model": config.model_name,
                             "uptime_seconds": round(time.time() - service.started, 1),
                             "active_streams": service.active_streams})

    async def metrics(request: Any) -> Any:
        body, content_type = service.metrics.render()
        return Response(body, media_type=content_type)

    async def models(request: Any) -> Any:
        return JSONResponse({"object": "list", "data": [
            model_card(model, config.model_name, int(service.started))]})

    async def page(request: Any) -> Any:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    async def static(request: Any) -> Any:
        name = request.path_params["name"]
        path = STATIC_DIR / name
        if "/" in name or name.startswith(".") or not path.is_file():
            raise RequestError(404, f"no static file {name!r}", "not_found")
        return FileResponse(path)

    return [("/health", health, ["GET"]), ("/metrics", metrics, ["GET"]),
            ("/v1/models", models, ["GET"]), ("/", page, ["GET"]),
            ("/static/{name}", static, ["GET"])]


def create_app(model: Any, config: ServerConfig | None = None) -> Any:
    """The FastAPI application serving `model` (see the module docstring for the endpoints)."""
    fastapi = require("fastapi", "server")
    require("python_multipart", "server")
    from fastapi.responses import JSONResponse, PlainTextResponse

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

    app.middleware("http")(_request_middleware(app, service))

    async def transcriptions(request: Any, task: str = "transcribe") -> Any:
        data, name, form = await read_upload(request, config)
        language = form_language(form, model)
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
        overrides = form_overrides(form, service)
        diarize = form_diarize(form)
        raw = str(form.get("raw") or "").lower()
        if raw not in ("", "true", "false", "1", "0"):
            raise RequestError(400, f"raw must be true or false, got {raw!r}", "bad_request",
                               "raw")
        streamed = await streamed_transcription(service, form, data, name, overrides)
        if streamed is not None:
            return streamed
        try:
            transcript = await asyncio.wait_for(
                service.transcribe(data, name, overrides, config.max_audio_seconds,
                                   "/v1/audio/transcriptions", diarize,
                                   written=False if raw in ("true", "1") else None),
                config.request_timeout_seconds)
        except asyncio.TimeoutError:
            raise RequestError(504, f"transcription took longer than this server's request "
                               f"timeout of {config.request_timeout_seconds:g} s",
                               "timeout") from None
        if response_format == "json":
            return JSONResponse({"text": transcript.text})
        if response_format == "verbose_json":
            return JSONResponse(verbose_json(transcript, language, granularities, task))

        fmt = "txt" if response_format == "text" else response_format
        media = "text/vtt" if fmt == "vtt" else "text/plain"
        return PlainTextResponse(format_transcript(transcript, fmt), media_type=media)

    async def create_job(request: Any) -> Any:
        data, name, form = await read_upload(request, config)
        await service.run_sync(load_upload, data, name, model.sample_rate)  # reject bad audio now
        options = {"hotwords": form_overrides(form, service).get("hotwords", {}),
                   "language": form_language(form, model), "diarize": form_diarize(form)}
        job = await asyncio.to_thread(service.jobs.add, data, name, options)
        service.job_added()
        return JSONResponse(job.to_dict(), status_code=202)

    async def get_job(request: Any) -> Any:
        job_id = request.path_params["job_id"]
        job = await asyncio.to_thread(service.jobs.get, job_id)
        if job is None:
            raise RequestError(404, f"no job with id {job_id!r}", "job_not_found")
        return JSONResponse(job.to_dict())

    async def stream(websocket: Any) -> None:
        await _stream_endpoint(service, websocket)

    for path, endpoint, methods in (
            ("/v1/audio/transcriptions", transcriptions, ["POST"]),
            ("/v1/jobs", create_job, ["POST"]), ("/v1/jobs/{job_id}", get_job, ["GET"]),
            *_service_routes(service), *openai_routes(service, transcriptions)):
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





def bind_socket(host: str, port: int) -> Any:
    """A TCP socket bound to `host`:`port` (0: a free port), as uvicorn binds it, not yet
    listening; a port in use or an address that is not this machine's is a `HarkenError`."""
    import errno
    import socket

    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                    flags=socket.AI_PASSIVE)[0][0]
    except socket.gaierror as exc:
        raise HarkenError(f"serve: cannot resolve --host {host!r} ({exc})") from None
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise HarkenError(f"serve: port {port} on {host} is already in use (another "
                              "server?); choose another with --port") from None
        raise HarkenError(f"serve: cannot listen on {host}:{port} ({exc.strerror or exc})"
                          ) from None
    sock.set_inheritable(True)
    return sock


__all__ = ["Batcher", "Metrics", "ServerConfig", "create_app", "prompt_hotwords",
           "register_serve_command", "verbose_json"]

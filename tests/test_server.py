"""`harken serve`: real uvicorn servers on free ports, the official `openai` client, a real
`websockets` client, jobs that survive a restart, limits, authentication and metrics."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import soundfile as sf
import torch

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("prometheus_client")
httpx = pytest.importorskip("httpx")

from harken.serving.jobs import JobStore  # noqa: E402
from harken.model import Model, new_model  # noqa: E402
from harken.serving.openai_api import PROMPT_WORD_BOOST, prompt_bias  # noqa: E402
from harken.serving.app import create_app
from harken.serving.openai_api import prompt_hotwords
from harken.serving.config import ServerConfig  # noqa: E402
from harken.transcribe import format_transcript  # noqa: E402
from harken.vad import EndpointConfig  # noqa: E402

RATE = 16000


def tiny_streaming_model() -> Model:
    """A random unidirectional DeepSpeech2 (streams step by step): tone bursts make it emit
    tokens, so transcripts are deterministic, non-empty and differ between clips."""
    torch.manual_seed(0)
    rng = np.random.default_rng(1)
    features = {"normalize": "global", "n_mels": 80,
                "global_mean": tuple(rng.uniform(-12, -6, 80).tolist()),
                "global_std": tuple(rng.uniform(1.5, 3.0, 80).tolist())}
    model = new_model("deepspeech2", "tiny", features=features, bidirectional=False, lookahead=2)
    with torch.no_grad():  # a confident head that rarely says blank: distinct clips give
        model.network.head.weight.mul_(4.0)  # distinct transcripts ("jxjajajaf", "jnjajaf")
        model.network.head.bias[0] -= 2.0
    return model.eval()


def bursts(seconds: float, seed: int = 0, gaps: int = 0) -> np.ndarray:
    """Tone bursts in noise; with `gaps`, that many 1.2 s silences split it (endpointing)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    t = np.arange(n) / RATE
    tone = (np.sin(2 * np.pi * 1.3 * t) > 0.3) * np.sin(2 * np.pi * (300 + 60 * seed) * t * (1 + t % 1))
    audio = (0.05 * rng.standard_normal(n) + 0.3 * tone).astype(np.float32)
    if not gaps:
        return audio
    pieces = np.array_split(audio, gaps + 1)
    silence = np.zeros(int(1.2 * RATE), np.float32)
    return np.concatenate([x for p in pieces for x in (p, silence)][:-1])


def wav_bytes(audio: np.ndarray, rate: int = RATE) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, audio, rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def model() -> Model:
    torch.set_num_threads(1)
    return tiny_streaming_model()


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("clips")
    paths = []
    for seed, seconds in enumerate((2.0, 3.5, 1.2, 4.0, 2.7, 3.1)):
        path = folder / f"clip{seed}.wav"
        path.write_bytes(wav_bytes(bursts(seconds, seed)))
        paths.append(path)
    return paths


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running(model: Model, **settings) -> Iterator[str]:
    """A real uvicorn server in a thread; yields its base URL."""
    import uvicorn

    settings.setdefault("db", ":memory:")
    app = create_app(model, ServerConfig(model_name="tiny", **settings))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not server.started:
        assert thread.is_alive() and time.time() < deadline, "the server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def transcribe_request(base: str, data: bytes, name: str = "a.wav", headers=None, **fields):
    return httpx.post(base + "/v1/audio/transcriptions", files={"file": (name, data)},
                      data={"model": "tiny", **fields}, headers=headers, timeout=60)


# --- REST ---------------------------------------------------------------------------------------

def test_openai_client_gets_what_model_transcribe_gives(model: Model, clips: list[Path]) -> None:
    openai = pytest.importorskip("openai")
    expected = model.transcribe(clips[1])
    assert expected.text and expected.words
    with running(model) as base:
        client = openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0)
        with open(clips[1], "rb") as f:
            result = client.audio.transcriptions.create(model="whisper-1", file=f)
        assert result.text == expected.text
        with open(clips[1], "rb") as f:
            verbose = client.audio.transcriptions.create(
                model="whisper-1", file=f, response_format="verbose_json", language="en",
                timestamp_granularities=["word", "segment"], temperature=0.7)
        assert verbose.text == expected.text
        assert verbose.duration == pytest.approx(3.5)
        assert [(w.word, w.start, w.end) for w in verbose.words] == [
            (w.word, round(w.start, 3), round(w.end, 3)) for w in expected.words]
        assert [s.text for s in verbose.segments] == [s.text for s in expected.segments]
        for fmt, ours in (("text", "txt"), ("srt", "srt"), ("vtt", "vtt")):
            with open(clips[1], "rb") as f:
                rendered = client.audio.transcriptions.create(model="whisper-1", file=f,
                                                              response_format=fmt)
            assert rendered == format_transcript(expected, ours)


def test_concurrent_requests_are_batched_and_unchanged(model: Model, clips: list[Path]) -> None:
    expected = [model.transcribe(p).text for p in clips]
    assert len(set(expected)) == len(clips)  # a mix-up between requests would show
    # A batch waits up to 2 s for more, and runs as soon as all six pieces are there.
    with running(model, max_batch=len(clips), max_wait_ms=2000) as base:
        results: dict[int, str] = {}

        def post(i: int) -> None:
            results[i] = transcribe_request(base, clips[i].read_bytes()).json()["text"]

        threads = [threading.Thread(target=post, args=(i,)) for i in range(len(clips))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        metrics = httpx.get(base + "/metrics").text
    assert [results[i] for i in range(len(clips))] == expected
    count = _metric(metrics, "harken_batch_size_count")
    assert _metric(metrics, "harken_batch_size_sum") == len(clips)
    assert count < len(clips), "concurrent requests were not batched"


def test_hotwords_field_and_prompt(model: Model, clips: list[Path]) -> None:
    assert prompt_hotwords("Kaldi, harken:5; open the door") == {
        "kaldi": 10.0, "harken": 5.0, "open the door": 10.0}
    assert prompt_hotwords("Hello Kaldi.") == {"hello": 10.0, "kaldi": 10.0}
    expected = model.transcribe(clips[0], hotwords={"jaja": 10.0})
    assert expected.text != model.transcribe(clips[0]).text  # the boost changes the result
    moderate = model.transcribe(clips[0], hotwords={"jaja": PROMPT_WORD_BOOST})
    with running(model) as base:
        reply = transcribe_request(base, clips[0].read_bytes(), hotwords="jaja")
        assert reply.json()["text"] == expected.text
        reply = transcribe_request(base, clips[0].read_bytes(), prompt="Jaja.")
        assert reply.json()["text"] == moderate.text  # a rare word of the prompt: moderate


def test_bad_requests_get_json_errors_and_the_server_lives_on(model: Model,
                                                             clips: list[Path]) -> None:
    with running(model, max_upload_bytes=200_000, max_audio_seconds=3.0) as base:
        reply = transcribe_request(base, b"RIFF\x10\x00\x00\x00WAVEjunkjunk", name="broken.wav")
        assert reply.status_code == 400
        error = reply.json()["error"]
        assert error["code"] == "bad_audio" and error["param"] == "file"
        assert error["message"].startswith("broken.wav: ")
        reply = transcribe_request(base, b"", name="empty.wav")
        assert reply.status_code == 400
        assert reply.json()["error"]["message"] == "empty.wav: empty file (0 bytes)"
        reply = httpx.post(base + "/v1/audio/transcriptions", data={"model": "x"},
                           files={"other": ("x", b"1")})
        assert reply.status_code == 400
        assert "missing form field 'file'" in reply.json()["error"]["message"]
        reply = transcribe_request(base, clips[0].read_bytes(), response_format="mp3")
        assert reply.status_code == 400 and "response_format" in reply.json()["error"]["message"]
        reply = transcribe_request(base, wav_bytes(np.zeros(RATE * 7, np.float32)))
        assert reply.status_code == 413
        assert reply.json()["error"]["message"] == ("upload of 224044 bytes exceeds this "
                                                    "server's limit of 200000 bytes")
        reply = transcribe_request(base, clips[3].read_bytes(), name="long.wav")
        assert reply.status_code == 413
        assert reply.json()["error"]["message"].startswith(
            "long.wav: audio is 4.0 s long; this server transcribes at most 3 s per request")
        assert httpx.get(base + "/nothing").status_code == 404
        assert transcribe_request(base, clips[0].read_bytes()).status_code == 200
        assert httpx.get(base + "/health").json()["status"] == "ok"


def test_internal_errors_and_timeouts_are_answered_and_logged_without_content(
        model: Model, clips: list[Path], monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    import logging

    caplog.set_level(logging.INFO, logger="harken.serving.app")
    text = model.transcribe(clips[0]).text
    assert len(text) >= 8  # long enough not to turn up in a log line by chance
    with running(model) as base:
        reply = transcribe_request(base, clips[0].read_bytes(), headers={"X-Request-ID": "r-42"})
        assert reply.json()["text"] == text and reply.headers["x-request-id"] == "r-42"

        def broken(audios):
            raise RuntimeError("out of memory")

        monkeypatch.setattr(model, "log_probs", broken)
        reply = transcribe_request(base, clips[0].read_bytes(), headers={"X-Request-ID": "r-43"})
        assert reply.status_code == 500
        assert reply.json()["error"]["message"] == "internal error (request r-43)"
        monkeypatch.undo()
        assert transcribe_request(base, clips[0].read_bytes()).json()["text"] == text
    with running(model, request_timeout_seconds=0.001) as base:
        reply = transcribe_request(base, clips[3].read_bytes())
        assert reply.status_code == 504 and reply.json()["error"]["code"] == "timeout"
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "request r-42 POST /v1/audio/transcriptions 200" in logged
    assert "request r-43 POST /v1/audio/transcriptions failed" in logged
    assert text not in logged and "clip0" not in logged


def test_api_key_is_required_everywhere_but_health(model: Model, clips: list[Path]) -> None:
    with running(model, api_key="s3cret") as base:
        assert httpx.get(base + "/health").status_code == 200
        for path in ("/v1/models", "/metrics", "/v1/jobs/job_x"):
            reply = httpx.get(base + path)
            assert reply.status_code == 401, path
            assert reply.json()["error"]["code"] == "invalid_api_key"
        wrong = {"Authorization": "Bearer nope"}
        assert transcribe_request(base, clips[0].read_bytes(), headers=wrong).status_code == 401
        right = {"Authorization": "Bearer s3cret"}
        reply = transcribe_request(base, clips[0].read_bytes(), headers=right)
        assert reply.status_code == 200 and reply.headers["x-request-id"]
        models = httpx.get(base + "/v1/models", headers=right).json()
        assert models["data"][0]["id"] == "tiny" and models["data"][0]["streaming"] is True
        messages = asyncio.run(_stream(base.replace("http", "ws") + "/v1/stream", [], []))
        assert messages == [{"type": "error", "code": "unauthorized", "message":
                             "missing or wrong API key: send 'Authorization: Bearer KEY' or "
                             "?token=KEY"}]
        messages = asyncio.run(_stream(base.replace("http", "ws") + "/v1/stream?token=s3cret",
                                       [{"type": "config"}], []))
        assert [m["type"] for m in messages] == ["ready", "final", "done"]


# --- streaming ------------------------------------------------------------------------------------

async def _stream(url: str, first: list[dict], chunks: list[bytes], end: bool = True,
                  pace: float = 0.0) -> list[dict]:
    import websockets

    messages: list[dict] = []
    async with websockets.connect(url, max_size=None) as ws:
        async def receive() -> None:
            with contextlib.suppress(websockets.ConnectionClosed):
                async for message in ws:
                    messages.append(json.loads(message))

        reader = asyncio.create_task(receive())
        with contextlib.suppress(websockets.ConnectionClosed):
            for message in first:
                await ws.send(json.dumps(message))
            for chunk in chunks:
                await ws.send(chunk)
                if pace:
                    await asyncio.sleep(pace)
            if end:
                await ws.send(json.dumps({"type": "end"}))
        await asyncio.wait_for(reader, 30)
    return messages


def test_websocket_stream_matches_a_local_stream(model: Model) -> None:
    pytest.importorskip("websockets")
    audio = bursts(6.0, seed=2, gaps=2)
    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()
    chunks = [pcm[i: i + 3201] for i in range(0, len(pcm), 3201)]  # odd sizes split samples
    local = model.stream(endpoint=EndpointConfig(method="energy", silence_ms=600))
    finals = [t for t in local.feed(pcm) if t.text] + [local.finish()]
    with running(model, vad="energy") as base:
        messages = asyncio.run(_stream(base.replace("http", "ws") + "/v1/stream", [
            {"sample_rate": RATE, "encoding": "pcm_s16le", "partials": True}], chunks))
    kinds = [m["type"] for m in messages]
    assert kinds[0] == "ready" and kinds[-1] == "done" and "partial" in kinds
    got = [m for m in messages if m["type"] == "final"]
    assert len(got) >= 3, "pauses should end utterances"
    assert [m["text"] for m in got] == [t.text for t in finals]
    assert [[w["word"] for w in m["words"]] for m in got] == [[w.word for w in t.words]
                                                              for t in finals]
    assert [w["start"] for w in got[1]["words"]] == [round(w.start, 3) for w in finals[1].words]
    assert got[-1]["end"] == pytest.approx(len(audio) / RATE, abs=1e-3)
    assert messages[-1]["audio_seconds"] == pytest.approx(len(audio) / RATE, abs=1e-3)


def test_websocket_hotwords_without_endpointing(model: Model) -> None:
    pytest.importorskip("websockets")
    audio = bursts(2.0, seed=0)
    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()
    local = model.stream(hotwords={"jaja": 10.0})
    local.feed(pcm)
    expected = local.finish()
    plain = model.stream()
    plain.feed(pcm)
    assert expected.text != plain.finish().text
    with running(model) as base:
        messages = asyncio.run(_stream(base.replace("http", "ws") + "/v1/stream", [
            {"hotwords": ["jaja"], "endpointing": False, "partials": False}],
            [pcm[i: i + 4000] for i in range(0, len(pcm), 4000)]))
    assert [m["type"] for m in messages] == ["ready", "final", "done"]
    assert messages[1]["text"] == expected.text
    assert messages[1]["words"] == [{"word": w.word, "start": round(w.start, 3),
                                     "end": round(w.end, 3),
                                     "confidence": round(w.confidence, 4)} for w in expected.words]


def test_websocket_f32_at_another_rate_and_limits(model: Model) -> None:
    pytest.importorskip("websockets")
    audio = bursts(2.0, seed=1)[::2].copy()  # 8 kHz
    data = audio.astype("<f4").tobytes()
    with running(model, max_streams=1, idle_stream_seconds=1.0) as base:
        url = base.replace("http", "ws") + "/v1/stream"
        messages = asyncio.run(_stream(url, [{"sample_rate": 8000, "encoding": "f32",
                                              "partials": False}], [data[:1001], data[1001:]]))
        assert [m["type"] for m in messages] == ["ready", "final", "done"]
        assert messages[0]["sample_rate"] == 8000
        assert messages[-1]["audio_seconds"] == pytest.approx(2.0, abs=0.01)
        messages = asyncio.run(_stream(url, [{"encoding": "mp3"}], []))
        assert messages == [{"type": "error", "code": "bad_config", "message":
                             "stream config: encoding must be one of pcm_s16le, f32, got 'mp3'"}]
        messages = asyncio.run(_stream(url, [{"sample_rate": 16000, "colour": 1}], []))
        assert messages[0]["code"] == "bad_config" and "['colour']" in messages[0]["message"]
        messages = asyncio.run(_stream(url, [], [b"\x00\x00"] * 3, end=False))
        assert messages[-1]["code"] == "idle_timeout"

        async def two() -> tuple[list[dict], list[dict]]:
            first = asyncio.create_task(_stream(url, [{}], [b"\x00\x00" * 1600] * 10, pace=0.1))
            while (await asyncio.to_thread(httpx.get, base + "/health")).json()[
                    "active_streams"] == 0:
                await asyncio.sleep(0.02)
            second = await _stream(url, [{}], [])
            return await first, second

        first, second = asyncio.run(two())
        assert first[-1]["type"] == "done"
        assert second == [{"type": "error", "code": "too_many_streams", "message":
                           "the server is serving its maximum of 1 streams; try again later"}]
        assert httpx.get(base + "/health").json()["active_streams"] == 0


# --- jobs, metrics, the command -------------------------------------------------------------------

def test_jobs_survive_a_restart(model: Model, clips: list[Path], tmp_path: Path) -> None:
    db = str(tmp_path / "jobs.sqlite3")
    with running(model, db=db, job_workers=0) as base:  # accepts jobs, runs none
        reply = httpx.post(base + "/v1/jobs", files={"file": ("long.wav", clips[3].read_bytes())},
                           data={"prompt": ""})
        assert reply.status_code == 202
        job = reply.json()
        assert job["status"] == "queued" and job["id"].startswith("job_")
        bad = httpx.post(base + "/v1/jobs", files={"file": ("x.wav", b"not audio at all")})
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "bad_audio"
    with running(model, db=db, job_workers=1) as base:  # restarted: the job resumes
        deadline = time.time() + 30
        while (state := httpx.get(f"{base}/v1/jobs/{job['id']}").json())["status"] != "done":
            assert state["status"] in ("queued", "running") and time.time() < deadline
            time.sleep(0.05)
        assert httpx.get(base + "/v1/jobs/job_missing").status_code == 404
    expected = model.transcribe(clips[3])
    assert state["result"]["text"] == expected.text
    assert [w["word"] for w in state["result"]["words"]] == [w.word for w in expected.words]
    with running(model, db=db, job_workers=0) as base:  # and the result stays
        assert httpx.get(f"{base}/v1/jobs/{job['id']}").json() == state


def test_job_store_requeues_interrupted_jobs(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "j.db")
    job = store.add(b"audio", "a.wav", {"hotwords": {}})
    running_job, audio = store.next_queued()
    assert (running_job.id, running_job.status, audio) == (job.id, "running", b"audio")
    assert store.next_queued() is None
    store.close()
    store = JobStore(f"sqlite:///{tmp_path / 'j.db'}")
    assert store.get(job.id).status == "queued"
    store.finish(job.id, None, "a.wav: bad")
    assert (store.get(job.id).status, store.get(job.id).error) == ("failed", "a.wav: bad")


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in metrics")


def test_metrics_count_requests_audio_and_streams(model: Model, clips: list[Path]) -> None:
    with running(model) as base:
        transcribe_request(base, clips[0].read_bytes())
        transcribe_request(base, b"junk")
        asyncio.run(_stream(base.replace("http", "ws") + "/v1/stream", [{}],
                            [np.zeros(RATE, "<i2").tobytes()]))
        text = httpx.get(base + "/metrics").text
    assert 'harken_requests_total{endpoint="/v1/audio/transcriptions",status="200"} 1.0' in text
    assert 'harken_requests_total{endpoint="/v1/audio/transcriptions",status="400"} 1.0' in text
    assert 'harken_requests_total{endpoint="/v1/stream",status="ok"} 1.0' in text
    assert 'harken_audio_seconds_total{endpoint="/v1/audio/transcriptions"} 2.0' in text
    assert 'harken_audio_seconds_total{endpoint="/v1/stream"} 1.0' in text
    assert _metric(text, "harken_real_time_factor_count") == 1
    assert _metric(text, "harken_active_streams") == 0
    assert _metric(text, "harken_queue_depth") == 0
    assert _metric(text, "harken_batch_size_count") == 1
    assert _metric(text, "harken_request_seconds_count") >= 2


def test_harken_serve_command(model: Model, tmp_path: Path) -> None:
    model.save(tmp_path / "tiny-model")
    port = free_port()
    env = {**os.environ, "HARKEN_API_KEY": "k", "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "harken.cli", "serve", "--model", str(tmp_path / "tiny-model"),
         "--port", str(port), "--db", str(tmp_path / "jobs.db"), "--threads", "1"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 60
        while True:
            assert process.poll() is None, process.stdout.read()
            assert time.time() < deadline, "harken serve did not start"
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                    break
            time.sleep(0.2)
        assert httpx.get(f"http://127.0.0.1:{port}/v1/models").status_code == 401
        models = httpx.get(f"http://127.0.0.1:{port}/v1/models",
                           headers={"Authorization": "Bearer k"}).json()
        assert models["data"][0]["id"] == "tiny-model"
    finally:
        process.terminate()
        process.wait(20)
    assert (tmp_path / "jobs.db").is_file()


# --- the live-caption page in a real browser ------------------------------------------------------

def test_caption_page_in_headless_chromium(model: Model, clips: list[Path], tmp_path: Path) -> None:
    """A fake microphone plays a WAV file into the page: captions appear as the server sends
    them (finals black, partials grey), and the upload box shows `Model.transcribe`'s text."""
    import shutil

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("needs Debian's chromium (scripts/install-system-deps.sh)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs playwright from PyPI")
    microphone = tmp_path / "microphone.wav"
    microphone.write_bytes(wav_bytes(bursts(6.0, seed=4, gaps=2)))
    with running(model, vad="energy") as base, sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, headless=True, args=[
            "--no-sandbox", "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={microphone}"])
        try:
            page = browser.new_page()
            received: list[dict] = []
            page.on("websocket", lambda ws: ws.on(
                "framereceived", lambda payload: received.append(json.loads(payload))))
            page.goto(base + "/")
            page.click("#start")
            page.wait_for_function("document.querySelectorAll('#finals .final').length >= 1",
                                   timeout=30_000)
            assert page.eval_on_selector("#partial", "e => getComputedStyle(e).color") == \
                "rgb(136, 136, 136)"
            assert page.eval_on_selector("#finals .final", "e => getComputedStyle(e).color") == \
                "rgb(0, 0, 0)"
            page.click("#stop")
            page.wait_for_function("document.getElementById('status').textContent"
                                   ".startsWith('done')", timeout=15_000)
            finals = [m["text"] for m in received if m["type"] == "final" and m["text"]]
            assert finals and page.inner_text("#finals") == " ".join(finals)
            assert any(m["type"] == "partial" for m in received)
            page.set_input_files("#file", str(clips[2]))
            page.click("#upload")
            page.wait_for_function("document.getElementById('file-status').textContent === 'done'",
                                   timeout=15_000)
            assert page.inner_text("#file-result") == model.transcribe(clips[2]).text
        finally:
            browser.close()


def test_cors_is_off_unless_an_origin_is_allowed(model: Model) -> None:
    preflight = {"Origin": "https://example.org", "Access-Control-Request-Method": "POST"}
    with running(model) as base:
        reply = httpx.options(base + "/v1/audio/transcriptions", headers=preflight)
        assert "access-control-allow-origin" not in reply.headers
        assert "access-control-allow-origin" not in httpx.get(
            base + "/health", headers={"Origin": "https://example.org"}).headers
    with running(model, cors_origins=("https://example.org",), api_key="k") as base:
        reply = httpx.options(base + "/v1/audio/transcriptions", headers=preflight)
        assert reply.status_code == 200
        assert reply.headers["access-control-allow-origin"] == "https://example.org"
        reply = httpx.options(base + "/v1/audio/transcriptions",
                              headers={**preflight, "Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in reply.headers


# --- OpenAI API: prompt as context, streaming, translations, models, language -------------------

def test_prompt_is_context_not_a_list_of_hotwords(model: Model, clips: list[Path]) -> None:
    from harken.text import ENGLISH

    whisper_prompt = "The following is a clear reading of a sentence from a novel."
    assert prompt_bias(whisper_prompt, ENGLISH) == {}  # only common words: no boost at all
    assert prompt_bias("Notes: Kaldi met the captain at Newgate, then Kaldi left.", ENGLISH) == {
        "kaldi": PROMPT_WORD_BOOST, "newgate": PROMPT_WORD_BOOST}
    plain = model.transcribe(clips[2]).text
    with running(model) as base:
        reply = transcribe_request(base, clips[2].read_bytes(), prompt=whisper_prompt)
    assert reply.status_code == 200 and reply.json()["text"] == plain


def test_openai_streaming_translations_models_and_language(model: Model,
                                                           clips: list[Path]) -> None:
    openai = pytest.importorskip("openai")
    long_clip = wav_bytes(bursts(40.0, seed=3, gaps=3))  # longer than a window: several deltas
    expected = model.transcribe(io.BytesIO(long_clip)).text
    with running(model) as base:
        client = openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0)
        events = list(client.audio.transcriptions.create(
            model="whisper-1", file=("long.wav", long_clip), stream=True))
        types = [e.type for e in events]
        assert types[-1] == "transcript.text.done" and types.count("transcript.text.done") == 1
        deltas = [e.delta for e in events if e.type == "transcript.text.delta"]
        assert len(deltas) >= 2
        assert "".join(deltas) == events[-1].text == expected
        with open(clips[1], "rb") as f:
            translated = client.audio.translations.create(model="whisper-1", file=f)
        assert translated.text == model.transcribe(clips[1]).text
        card = client.models.retrieve("tiny")
        assert card.id == "tiny" and card.object == "model"
        with pytest.raises(openai.NotFoundError):
            client.models.retrieve("whisper-large")
        with open(clips[1], "rb") as f, pytest.raises(openai.BadRequestError) as error:
            client.audio.transcriptions.create(model="whisper-1", file=f, language="fr")
        assert "language 'fr': this model transcribes 'en' only" in str(error.value)
        with open(clips[1], "rb") as f:  # a region of the model's language is fine
            assert client.audio.transcriptions.create(model="whisper-1", file=f,
                                                      language="en-GB").text
        reply = transcribe_request(base, clips[1].read_bytes(), stream="maybe")
        assert reply.status_code == 400 and reply.json()["error"]["param"] == "stream"

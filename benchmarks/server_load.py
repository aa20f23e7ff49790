"""Load test of `harken serve`: concurrent real-time WebSocket streams and a burst of REST requests.

Starts `harken serve` on a free loopback port (a subprocess, so its CPU and memory are its
own), then:

1. `--streams` WebSocket clients each stream `--seconds` of speech in real time (100 ms
   chunks, paced by the clock) and end with `{"type": "end"}`. The latency of a partial or
   final result is the time from sending the chunk that completed the audio it covers
   (`audio_seconds`) to receiving it. Reports p50/p95/max latency, messages, errors.
2. A burst of `--requests` concurrent `POST /v1/audio/transcriptions` of one clip,
   on this server (batching: `--max-batch`) and on a second one started with
   `--max-batch 1` (no batching): wall time, requests/s, audio seconds per second.

CPU (cores used, from the server's /proc CPU time over the wall time) and peak RSS of the
server are reported for each phase. Speech is synthesised with espeak-ng (sentences with
pauses, so endpointing closes utterances); without espeak-ng a speech-like signal is used.

Usage:
    nice python benchmarks/server_load.py [--model en-small] [--streams 20] [--seconds 20]
        [--requests 32] [--clip-seconds 5] [--max-batch 8] [--max-stream-batch 32]
        [--threads 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RATE = 16000
CHUNK_SECONDS = 0.1
SENTENCES = ("the quick brown fox jumps over the lazy dog",
             "please call stella and ask her to bring these things with her from the store",
             "we will meet at the station at half past nine tomorrow morning",
             "a large size in stockings is hard to sell")


def speech(seconds: float) -> np.ndarray:
    """`seconds` of 16 kHz speech: espeak-ng sentences separated by 0.8 s pauses, looped."""
    from harken.audio import load_audio

    pieces = []
    if shutil.which("espeak-ng"):
        with tempfile.TemporaryDirectory() as tmp:
            for i, sentence in enumerate(SENTENCES):
                path = Path(tmp) / f"{i}.wav"
                subprocess.run(["espeak-ng", "-w", str(path), sentence], check=True)
                pieces += [load_audio(path), np.zeros(int(0.8 * RATE), np.float32)]
    else:
        t = np.arange(int(3 * RATE)) / RATE
        pitch = 120 + 30 * np.sin(2 * np.pi * 0.7 * t)
        wave = sum(np.sin(k * 2 * np.pi * np.cumsum(pitch) / RATE) / k for k in range(1, 8))
        pieces = [(0.1 * wave).astype(np.float32), np.zeros(int(0.8 * RATE), np.float32)]
    audio = np.concatenate(pieces)
    return np.resize(audio, int(seconds * RATE)).astype(np.float32)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """`harken serve` in a subprocess; CPU time and peak RSS read from /proc."""

    def __init__(self, args: argparse.Namespace, max_batch: int, db: Path) -> None:
        self.port = free_port()
        command = [sys.executable, "-m", "harken.cli", "serve", "--port", str(self.port),
                   "--db", str(db), "--max-batch", str(max_batch), "--threads", str(args.threads),
                   "--max-streams", str(max(args.streams, 1) + 8), "--job-workers", "0",
                   "--max-stream-batch", str(args.max_stream_batch)]
        if args.model:
            command += ["--model", args.model]
        if args.torch_threads:
            command += ["--torch-threads", str(args.torch_threads)]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE, text=True)
        self.base = f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 120) -> None:
        import httpx

        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"harken serve exited: {self.process.stderr.read()}")
            try:
                if httpx.get(self.base + "/health").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise RuntimeError("harken serve did not start")

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def peak_rss_mb(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()


async def stream_client(url: str, pcm: bytes, start_delay: float) -> dict:
    """Stream `pcm` in real time; latencies of partial/final messages, error if any."""
    import websockets

    await asyncio.sleep(start_delay)
    chunk = int(CHUNK_SECONDS * RATE) * 2
    sent_at: dict[float, float] = {}  # audio seconds -> time the chunk completing it was sent
    latencies: list[float] = []
    counts = {"partial": 0, "final": 0}
    error = None
    try:
        async with websockets.connect(url, max_size=None) as ws:
            await ws.send(json.dumps({"sample_rate": RATE, "encoding": "pcm_s16le"}))

            async def receive() -> str | None:
                async for message in ws:
                    data = json.loads(message)
                    kind = data["type"]
                    if kind in counts:
                        counts[kind] += 1
                        sent = sent_at.get(round(data["audio_seconds"], 3))
                        if sent is not None:
                            latencies.append(time.perf_counter() - sent)
                    elif kind == "error":
                        return data["message"]
                    elif kind == "done":
                        return None
                return "closed before done"

            reader = asyncio.create_task(receive())
            began = time.perf_counter()
            for i, offset in enumerate(range(0, len(pcm), chunk)):
                await asyncio.sleep(max(0.0, began + i * CHUNK_SECONDS - time.perf_counter()))
                piece = pcm[offset: offset + chunk]
                sent_at[round((offset + len(piece)) / 2 / RATE, 3)] = time.perf_counter()
                await ws.send(piece)
            await ws.send(json.dumps({"type": "end"}))
            error = await asyncio.wait_for(reader, 60)
    except Exception as exc:  # counted, never fatal to the benchmark
        error = f"{type(exc).__name__}: {exc}"
    return {"latencies": latencies, "error": error, **counts}


async def stream_phase(server: ServerProcess, streams: int, audio: np.ndarray) -> dict:
    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()
    url = server.base.replace("http", "ws") + "/v1/stream"
    # Warm-up: the first stream builds the decoder (and loads its LM).
    await stream_client(url, pcm[: 2 * RATE], 0.0)
    cpu, wall = server.cpu_seconds(), time.perf_counter()
    # Clients start spread over one chunk, as independent callers would.
    results = await asyncio.gather(*(stream_client(url, pcm, CHUNK_SECONDS * i / max(streams, 1))
                                     for i in range(streams)))
    wall = time.perf_counter() - wall
    cpu = server.cpu_seconds() - cpu
    latencies = sorted(x for r in results for x in r["latencies"])
    errors = [r["error"] for r in results if r["error"]]
    return {"streams": streams, "audio_seconds_each": round(len(audio) / RATE, 1),
            "results": len(latencies),
            "partials": sum(r["partial"] for r in results),
            "finals": sum(r["final"] for r in results),
            "latency_p50_ms": round(1000 * percentile(latencies, 50), 1),
            "latency_p95_ms": round(1000 * percentile(latencies, 95), 1),
            "latency_max_ms": round(1000 * latencies[-1], 1) if latencies else None,
            "errors": len(errors), "error_examples": errors[:3],
            "server_cpu_cores": round(cpu / wall, 2),
            # Contention-free capacity: CPU seconds per second of streamed audio, and how many
            # real-time streams two idle cores would carry at that cost.
            "cpu_seconds_per_audio_second": round(cpu / (streams * len(audio) / RATE), 4),
            "streams_per_2_cores_estimate": round(2 * streams * len(audio) / RATE / cpu, 1),
            "server_peak_rss_mb": round(server.peak_rss_mb(), 1)}


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return float(np.percentile(values, q))


async def rest_phase(server: ServerProcess, requests: int, clip: bytes, seconds: float) -> dict:
    import httpx

    async with httpx.AsyncClient(timeout=600) as client:
        async def one() -> int:
            reply = await client.post(server.base + "/v1/audio/transcriptions",
                                      files={"file": ("clip.wav", clip)},
                                      data={"model": "harken"})
            return reply.status_code

        await one()  # warm-up: the decoder (and its LM) is built on first use
        cpu, wall = server.cpu_seconds(), time.perf_counter()
        codes = await asyncio.gather(*(one() for _ in range(requests)))
        wall = time.perf_counter() - wall
        cpu = server.cpu_seconds() - cpu
        metrics = (await client.get(server.base + "/metrics")).text
    return {"requests": requests, "errors": sum(c != 200 for c in codes),
            "wall_seconds": round(wall, 2), "requests_per_second": round(requests / wall, 2),
            "audio_seconds_per_second": round(requests * seconds / wall, 1),
            "mean_batch_size": round(_metric(metrics, "harken_batch_size_sum")
                                     / max(_metric(metrics, "harken_batch_size_count"), 1), 2),
            "server_cpu_cores": round(cpu / wall, 2),
            "cpu_seconds_per_audio_second": round(cpu / (requests * seconds), 4),
            "server_peak_rss_mb": round(server.peak_rss_mb(), 1)}


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="model path or bundled name (default: en-small)")
    parser.add_argument("--streams", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=20.0, help="audio per stream")
    parser.add_argument("--requests", type=int, default=32, help="REST burst size")
    parser.add_argument("--clip-seconds", type=float, default=5.0)
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--max-stream-batch", type=int, default=32,
                        help="streams per batched network step (1: no stream batching)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--torch-threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None, help="also write the report here")
    args = parser.parse_args()

    import io

    import soundfile as sf

    audio = speech(max(args.seconds, args.clip_seconds))
    buffer = io.BytesIO()
    sf.write(buffer, audio[: int(args.clip_seconds * RATE)], RATE, format="WAV", subtype="PCM_16")
    clip = buffer.getvalue()
    report: dict = {"cpu_count": os.cpu_count(), "settings": vars(args) | {"json": None}}
    with tempfile.TemporaryDirectory() as tmp:
        server = ServerProcess(args, args.max_batch, Path(tmp) / "a.db")
        try:
            server.wait_ready()
            if args.streams:
                report["streams"] = asyncio.run(
                    stream_phase(server, args.streams, audio[: int(args.seconds * RATE)]))
                print("streams:", json.dumps(report["streams"]), flush=True)
            if args.requests:
                report["rest_batched"] = asyncio.run(
                    rest_phase(server, args.requests, clip, args.clip_seconds))
                print("rest, batching:", json.dumps(report["rest_batched"]), flush=True)
        finally:
            server.stop()
        if args.requests:
            server = ServerProcess(args, 1, Path(tmp) / "b.db")
            try:
                server.wait_ready()
                report["rest_unbatched"] = asyncio.run(
                    rest_phase(server, args.requests, clip, args.clip_seconds))
                print("rest, no batching:", json.dumps(report["rest_unbatched"]), flush=True)
            finally:
                server.stop()
    if args.requests:
        report["batching_speedup"] = round(report["rest_batched"]["requests_per_second"]
                                           / report["rest_unbatched"]["requests_per_second"], 2)
        report["batching_cpu_saving"] = round(
            report["rest_unbatched"]["cpu_seconds_per_audio_second"]
            / report["rest_batched"]["cpu_seconds_per_audio_second"], 2)
        print("batching speed-up (requests/s):", report["batching_speedup"],
              "; CPU per audio second, unbatched / batched:", report["batching_cpu_saving"])
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()

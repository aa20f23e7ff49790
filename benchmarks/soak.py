"""Soak test of `harken serve`: hours of traffic compressed into minutes, looking for errors and
leaks.

Starts `harken serve` on a free loopback port (a subprocess: its memory is its own), then for
`--minutes`:

- `--streams` WebSocket clients loop: connect, send a config, stream speech in 100 ms chunks at
  `--pace` x real time, and either end the stream and wait for `done`, or (one session in
  `--abort-every`) drop the TCP connection mid-stream without a close frame;
- `--rest` clients loop on `POST /v1/audio/transcriptions` of a short clip, and every tenth
  request sends a broken file (which must get a 400, not an error).

With `--hostile`, a burst of hostile traffic follows (malformed uploads, broken and deeply
nested stream messages, 40 simultaneous short streams, a 20 MB frame, an enormous hotword map,
streams and uploads that each bring new hotwords or prompt words), and the report adds the RSS
before the burst, right after it and once the streams have closed, each over the warm baseline
(goals: under 1.5x after the burst, back near the baseline once settled).

Every `--sample` seconds it records the server's RSS (/proc) and the internal-error count from
/metrics. Reports sessions, aborts, requests, errors, and RSS growth after the warm-up (the
first `--warmup` fraction of the run): the goal is zero errors and growth under 5%.
Exit status 1 when either goal is missed.

Usage:
    nice python benchmarks/soak.py [--model en-small] [--minutes 10] [--streams 20] [--rest 2]
        [--pace 1.0] [--abort-every 4] [--json soak.json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import random
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from server_load import CHUNK_SECONDS, RATE, ServerProcess, speech  # noqa: E402

RSS_GROWTH_GOAL = 0.05
# Admission control, not a failure: a dropped connection holds its slot until the server has
# worked through the audio it had queued, so a client reconnecting at once may be turned away.
BUSY_CODE, CLOSE_TRY_LATER = "too_many_streams", 1013


def rss_mb(server: ServerProcess) -> float:
    for line in Path(f"/proc/{server.process.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def internal_errors(client, base: str) -> float:
    text = (await client.get(base + "/metrics")).text
    return sum(float(v) for v in re.findall(
        r'harken_requests_total\{[^}]*status="(?:error|500)"[^}]*\} (\S+)', text))


async def stream_worker(url: str, pcm: bytes, args: argparse.Namespace, stop: float,
                        seed: int, counts: dict) -> None:
    import websockets

    chance = random.Random(seed)
    step = int(CHUNK_SECONDS * RATE) * 2
    while time.monotonic() < stop:
        abort = chance.random() < 1 / args.abort_every
        length = chance.randrange(step * 10, len(pcm), step)
        cut = chance.randrange(step, length, step) if abort else length
        try:
            async with websockets.connect(url, max_size=None, open_timeout=30) as ws:
                await ws.send(json.dumps({"partials": True}))
                ready = json.loads(await asyncio.wait_for(ws.recv(), 30))
                if ready.get("code") == BUSY_CODE:
                    counts["turned_away"] += 1
                    await asyncio.sleep(1.0)
                    continue
                if ready.get("type") != "ready":
                    counts["stream_errors"].append(ready)
                    continue
                for start in range(0, cut, step):
                    await ws.send(pcm[start: start + step])
                    await asyncio.sleep(CHUNK_SECONDS / args.pace)
                if abort:
                    ws.transport.abort()
                    counts["aborted"] += 1
                    continue
                await ws.send(json.dumps({"type": "end"}))
                async for message in ws:
                    reply = json.loads(message)
                    if reply["type"] == "error":
                        counts["stream_errors"].append(reply)
                    if reply["type"] in ("done", "error"):
                        break
                counts["streams"] += 1
        except websockets.ConnectionClosed as exc:
            if exc.rcvd is not None and exc.rcvd.code == CLOSE_TRY_LATER:
                counts["turned_away"] += 1
            elif not abort:
                counts["stream_errors"].append(f"{type(exc).__name__}: {exc}")
        except (OSError, asyncio.TimeoutError, websockets.WebSocketException) as exc:
            if not abort:
                counts["stream_errors"].append(f"{type(exc).__name__}: {exc}")


async def rest_worker(base: str, clip: bytes, stop: float, counts: dict) -> None:
    import httpx

    async with httpx.AsyncClient(timeout=120) as client:
        n = 0
        while time.monotonic() < stop:
            n += 1
            broken = n % 10 == 0
            data = clip[: len(clip) // 3] if broken else clip  # a truncated WAV
            try:
                reply = await client.post(base + "/v1/audio/transcriptions",
                                          files={"file": ("clip.wav", data)},
                                          data={"model": "harken"})
            except httpx.HTTPError as exc:
                counts["rest_errors"].append(f"{type(exc).__name__}: {exc}")
                continue
            expected = 400 if broken else 200
            if reply.status_code != expected:
                counts["rest_errors"].append(f"{reply.status_code}: {reply.text[:200]}")
            counts["requests"] += 1


async def monitor(server: ServerProcess, args: argparse.Namespace, stop: float,
                  samples: list) -> None:
    import httpx

    started = time.monotonic()
    async with httpx.AsyncClient(timeout=30) as client:
        while True:
            errors = await internal_errors(client, server.base)
            samples.append({"t": round(time.monotonic() - started, 1),
                            "rss_mb": round(rss_mb(server), 1), "internal_errors": errors})
            print(json.dumps(samples[-1]), flush=True)
            if time.monotonic() >= stop:
                return
            await asyncio.sleep(min(args.sample, max(0.0, stop - time.monotonic())))


async def soak(server: ServerProcess, args: argparse.Namespace, pcm: bytes, clip: bytes) -> dict:
    counts: dict = {"streams": 0, "aborted": 0, "turned_away": 0, "requests": 0,
                    "stream_errors": [], "rest_errors": []}
    samples: list = []
    stop = time.monotonic() + args.minutes * 60
    url = server.base.replace("http", "ws") + "/v1/stream"
    await asyncio.gather(
        monitor(server, args, stop, samples),
        *(stream_worker(url, pcm, args, stop, seed, counts) for seed in range(args.streams)),
        *(rest_worker(server.base, clip, stop, counts) for _ in range(args.rest)))
    await asyncio.sleep(2)  # let the server notice the last aborted connections
    import httpx

    async with httpx.AsyncClient(timeout=30) as client:
        health = (await client.get(server.base + "/health")).json()
        final_errors = await internal_errors(client, server.base)
    warm = [s for s in samples if s["t"] >= args.warmup * args.minutes * 60] or samples
    base_rss, peak_rss = warm[0]["rss_mb"], max(s["rss_mb"] for s in warm)
    return {
        "minutes": args.minutes, "streams_completed": counts["streams"],
        "streams_aborted": counts["aborted"], "streams_turned_away": counts["turned_away"],
        "requests": counts["requests"],
        "stream_errors": len(counts["stream_errors"]), "rest_errors": len(counts["rest_errors"]),
        "server_internal_errors": final_errors,
        "error_examples": (counts["stream_errors"] + counts["rest_errors"])[:5],
        "open_streams_after": health.get("active_streams"),
        "rss_mb_after_warmup": base_rss, "rss_mb_peak_after_warmup": peak_rss,
        "rss_mb_end": samples[-1]["rss_mb"],
        "rss_growth": round(samples[-1]["rss_mb"] / base_rss - 1, 4),
        "samples": samples,
    }


async def hostile_burst(server: ServerProcess, pcm: bytes, clip: bytes) -> dict:
    """About 80 hostile requests and sessions at once; the errors they got, by kind."""
    import httpx
    import websockets

    url = server.base.replace("http", "ws") + "/v1/stream"
    answers: dict = {}

    async def stream(messages: list) -> None:
        try:
            async with websockets.connect(url, max_size=None, open_timeout=30) as ws:
                for message in messages:
                    await ws.send(message)
                async for reply in ws:
                    kind = json.loads(reply).get("code") or json.loads(reply)["type"]
                    answers[kind] = answers.get(kind, 0) + 1
                    if kind not in ("ready", "partial", "final"):
                        break
        except (OSError, websockets.WebSocketException, asyncio.TimeoutError) as exc:
            answers[type(exc).__name__] = answers.get(type(exc).__name__, 0) + 1

    async def upload(client, data: bytes, **fields) -> None:
        try:
            reply = await client.post(server.base + "/v1/audio/transcriptions",
                                      files={"file": ("x.wav", data)}, data=fields)
            answers[reply.status_code] = answers.get(reply.status_code, 0) + 1
        except httpx.HTTPError as exc:
            answers[type(exc).__name__] = answers.get(type(exc).__name__, 0) + 1

    end = json.dumps({"type": "end"})
    short = [pcm[i: i + 3200] for i in range(0, 3 * 32000, 3200)]
    sessions = [["[" * 50_000 + "]" * 50_000], ['{"type": "config"'], [b"\x00" * (20 << 20)],
                [json.dumps({"hotwords": {f"w{i}": 1.0 for i in range(20_000)}})]]
    sessions += [[json.dumps({"hotwords": {f"zorb{i}qx": 5.0, f"klem{i}vor": 3.0}}), *short, end]
                 for i in range(8)]
    sessions += [[json.dumps({}), *short[: 1 + i % 5], end] for i in range(40)]
    sessions += [[json.dumps({}), *short[:3]] for _ in range(6)]  # dropped without an end
    async with httpx.AsyncClient(timeout=300) as client:
        uploads = [upload(client, clip[: len(clip) // 3]) for _ in range(8)]
        uploads += [upload(client, clip, prompt=f"Notes on Quorvath{i} and Belmintar{i}.")
                    for i in range(6)]
        await asyncio.gather(*(stream(m) for m in sessions), *uploads)
    return answers


async def hostile(server: ServerProcess, args: argparse.Namespace, pcm: bytes,
                  clip: bytes, report: dict) -> None:
    baseline = rss_mb(server)
    answers = await hostile_burst(server, pcm, clip)
    after = rss_mb(server)
    await asyncio.sleep(15)  # the streams close, the server idles
    settled = rss_mb(server)
    report.update({"hostile_answers": {str(k): v for k, v in answers.items()},
                   "rss_mb_before_burst": baseline, "rss_mb_after_burst": after,
                   "rss_mb_settled": settled, "burst_ratio": round(after / baseline, 3),
                   "settled_ratio": round(settled / baseline, 3)})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="model path or bundled name (default: en-small)")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--streams", type=int, default=20, help="concurrent WebSocket clients")
    parser.add_argument("--rest", type=int, default=2, help="concurrent REST clients")
    parser.add_argument("--pace", type=float, default=1.0, help="x real time per stream")
    parser.add_argument("--abort-every", type=float, default=4.0,
                        help="one stream session in this many drops its connection mid-stream")
    parser.add_argument("--stream-seconds", type=float, default=12.0, help="longest session")
    parser.add_argument("--sample", type=float, default=10.0, help="seconds between RSS samples")
    parser.add_argument("--warmup", type=float, default=0.2, help="fraction of the run ignored")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--torch-threads", type=int, default=1)
    parser.add_argument("--max-stream-batch", type=int, default=32)
    parser.add_argument("--json", type=Path, default=None, help="also write the report here")
    parser.add_argument("--hostile", action="store_true",
                        help="then a burst of hostile traffic, with RSS before and after")
    args = parser.parse_args()

    import soundfile as sf

    audio = speech(args.stream_seconds)
    pcm = (audio.clip(-1, 1) * 32767).astype("<i2").tobytes()
    buffer = io.BytesIO()
    sf.write(buffer, audio[: 3 * RATE], RATE, format="WAV", subtype="PCM_16")
    with tempfile.TemporaryDirectory() as tmp:
        server = ServerProcess(args, 8, Path(tmp) / "soak.db")
        try:
            server.wait_ready()
            report = asyncio.run(soak(server, args, pcm, buffer.getvalue()))
            if args.hostile:
                asyncio.run(hostile(server, args, pcm, buffer.getvalue(), report))
        finally:
            server.stop()
    summary = {k: v for k, v in report.items() if k != "samples"}
    print(json.dumps(summary, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    failed = (report["stream_errors"] or report["rest_errors"] or report["server_internal_errors"]
              or report["open_streams_after"] or report["rss_growth"] >= RSS_GROWTH_GOAL)
    print("goal (zero errors, RSS growth < 5% after warm-up):", "missed" if failed else "met")
    if args.hostile:
        burst_failed = report["burst_ratio"] >= 1.5 or report["settled_ratio"] >= 1.1
        print("goal (RSS under 1.5x the warm baseline after the burst, within 10% once settled):",
              "missed" if burst_failed else "met")
        failed = failed or burst_failed
    return 1 if failed else 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())

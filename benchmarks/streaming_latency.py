"""Streaming latency and cost over a long stream, against PocketSphinx's streaming decoder.

Feeds `--seconds` of speech (the example recordings with pauses, looped) to `model.stream()`
in chunks of `--chunk-ms`, asking for a partial result after every chunk, as a live captioner
would. Reports, for harken and for PocketSphinx (`process_raw` + `hyp()` per chunk) on the same
audio in the same run:

- compute time per chunk (p50/p95/max), as a fraction of the chunk's duration;
- the cost of the last tenth of the stream over the cost of the first tenth (constant-cost
  streaming stays near 1.0; a decoder that re-decodes its whole history grows);
- harken's partial latency: model look-ahead + half a chunk of buffering on average + p95 compute.

Usage: python benchmarks/streaming_latency.py [--seconds 120] [--chunk-ms 100] [--beam]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

ROOT = Path(__file__).resolve().parents[1]


def build_audio(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    clips = [sf.read(p, dtype="float32")[0] for p in sorted((ROOT / "examples").glob("*.wav"))]
    parts, total = [], 0
    while total < seconds * 16000:
        pause = (0.003 * rng.standard_normal(int(rng.uniform(0.3, 1.5) * 16000))).astype(np.float32)
        parts += [pause, clips[int(rng.integers(len(clips)))]]
        total += len(pause) + len(parts[-1])
    return np.concatenate(parts)[: int(seconds * 16000)]


def chunk_times(audio: np.ndarray, chunk: int, step) -> np.ndarray:
    times = []
    for start in range(0, len(audio), chunk):
        began = time.perf_counter()
        step(audio[start: start + chunk])
        times.append(time.perf_counter() - began)
    return np.array(times)


def summarise(name: str, times: np.ndarray, chunk_seconds: float) -> None:
    tenth = max(1, len(times) // 10)
    growth = times[-tenth:].sum() / max(times[:tenth].sum(), 1e-9)
    print(f"{name:13s} per chunk: p50 {1000 * np.percentile(times, 50):6.1f} ms  "
          f"p95 {1000 * np.percentile(times, 95):6.1f} ms  max {1000 * times.max():6.1f} ms  "
          f"load {times.sum() / (len(times) * chunk_seconds):.3f} of real time  "
          f"last/first tenth {growth:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--chunk-ms", type=int, default=100)
    parser.add_argument("--model", default=None, help="model path (default: the bundled model)")
    parser.add_argument("--beam", action="store_true", help="LM beam search instead of greedy")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from harken import load_model

    audio = build_audio(args.seconds)
    chunk = args.chunk_ms * 16
    model = load_model(args.model)
    options = {} if args.beam else {"greedy": True}
    stream = model.stream(**options)

    def ours(piece: np.ndarray) -> None:
        stream.feed(piece)
        stream.partial()

    ours(audio[:chunk])  # warm-up
    stream.reset()
    times = chunk_times(audio, chunk, ours)
    final = stream.finish()
    print(f"{args.seconds:.0f} s stream in {args.chunk_ms} ms chunks; harken "
          f"{'beam + LM' if args.beam else 'greedy'}, {len(final.words)} words")
    summarise("harken", times, args.chunk_ms / 1000)
    p95 = float(np.percentile(times, 95))
    latency = stream.latency_seconds + args.chunk_ms / 2000 + p95
    print(f"harken partial latency ~ {1000 * latency:.0f} ms (look-ahead "
          f"{1000 * stream.latency_seconds:.0f} ms + {args.chunk_ms / 2:.0f} ms buffering + "
          f"{1000 * p95:.0f} ms p95 compute)")
    try:
        from pocketsphinx import Decoder
    except ImportError:
        print("pocketsphinx: not installed (pip install pocketsphinx)")
        return
    decoder = Decoder(loglevel="FATAL")
    decoder.start_utt()
    pcm = (np.clip(audio, -1, 1) * 32767).astype(np.int16)

    def peer(piece: np.ndarray) -> None:
        decoder.process_raw(piece.tobytes(), False, False)
        decoder.hyp()

    peer_times = chunk_times(pcm, chunk, peer)
    decoder.end_utt()
    summarise("pocketsphinx", peer_times, args.chunk_ms / 1000)
    print(f"harken / pocketsphinx compute per chunk (p95): "
          f"{p95 / float(np.percentile(peer_times, 95)):.3f}")


if __name__ == "__main__":
    main()

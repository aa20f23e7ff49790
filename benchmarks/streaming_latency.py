"""Streaming latency and cost over a long stream, against PocketSphinx's streaming decoder.

Feeds `--seconds` of speech (the example recordings with pauses, looped) to `model.stream()`
in chunks of `--chunk-ms`, asking for a partial result after every chunk, as a live captioner
would. Reports, for harken and for PocketSphinx (`process_raw` + `hyp()` per chunk) on the same
audio in the same run:

- compute time per chunk (p50/p95/max), as a fraction of the chunk's duration;
- the cost of the last tenth of the stream over the cost of the first tenth (constant-cost
  streaming stays near 1.0; a decoder that re-decodes its whole history grows);
- harken's word lag: audio arrives in real time (simulated: chunk k is available at its end
  time, and is processed once the previous chunks are done); for every word of the final
  transcript, the lag is from the audio time the word ends to the moment a partial first shows
  it (same text, start within 100 ms). p50/p95 of that lag, the goal being p95 <= 250 ms.

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


def word_lags(audio: np.ndarray, chunk: int, stream) -> tuple[np.ndarray, list, np.ndarray]:
    """Feed `audio` in real time; (compute time per chunk, final words, lag per final word)."""
    times, seen, clock = [], [], 0.0
    for start in range(0, len(audio), chunk):
        began = time.perf_counter()
        stream.feed(audio[start: start + chunk])
        words = stream.partial().words
        spent = time.perf_counter() - began
        arrival = (start + len(audio[start: start + chunk])) / 16000
        clock = max(clock, arrival) + spent  # when this partial is on screen
        times.append(spent)
        seen.append((clock, [(w.word, w.start) for w in words]))
    final = stream.finish().words
    lags = []
    for word in final:
        for shown_at, words in seen:
            if any(text == word.word and abs(begin - word.start) < 0.1 for text, begin in words):
                lags.append(shown_at - word.end)
                break
    return np.array(times), final, np.array(lags)


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

    stream.feed(audio[:chunk])  # warm-up
    stream.partial()
    stream.reset()
    times, final, lags = word_lags(audio, chunk, stream)
    print(f"{args.seconds:.0f} s stream in {args.chunk_ms} ms chunks; harken "
          f"{'beam + LM' if args.beam else 'greedy'}, {len(final)} words")
    summarise("harken", times, args.chunk_ms / 1000)
    p95 = float(np.percentile(times, 95))
    if len(lags):
        print(f"harken word lag (word end -> shown in a partial): p50 "
              f"{1000 * np.percentile(lags, 50):.0f} ms  p95 {1000 * np.percentile(lags, 95):.0f} ms"
              f"  ({len(lags)} of {len(final)} final words were shown in partials first; "
              f"network look-ahead {1000 * stream.latency_seconds:.0f} ms; goal p95 <= 250 ms)")
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

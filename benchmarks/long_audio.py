"""Memory and speed on one long recording (default: one hour), against PocketSphinx.

Builds a long WAV from the example recordings separated by pauses of 0.5-4 s of light noise,
then, each in a fresh process so peak memory is its own:

- harken `Model.iter_segments` (lazy long-audio transcription with VAD): peak RSS, RTF,
  seconds until the first segment;
- PocketSphinx (the peer) on the first `--peer-minutes` of the same file: peak RSS, RTF.

The goal for harken: a one-hour file stays under 1.5 GB RSS.

Usage: python benchmarks/long_audio.py [--minutes 60] [--peer-minutes 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
GOAL_BYTES = 1.5 * 2**30

HARKEN_CHILD = r"""
import json, resource, sys, time
import torch
torch.set_num_threads(int(sys.argv[3]))
from harken import load_model
began = time.perf_counter()
model = load_model(sys.argv[2] or None)
first = None
words = 0
segments = 0
for segment in model.iter_segments(sys.argv[1]):
    if first is None:
        first = time.perf_counter() - began
    segments += 1
    words += len(segment.words)
spent = time.perf_counter() - began
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"seconds": spent, "first": first, "rss": rss, "segments": segments,
                  "words": words}))
"""

PEER_CHILD = r"""
import json, resource, sys, time
import soundfile as sf
from pocketsphinx import Decoder
limit = int(float(sys.argv[2]) * 16000)
decoder = Decoder(loglevel="FATAL")
began = time.perf_counter()
decoder.start_utt()
done = 0
for block in sf.blocks(sys.argv[1], blocksize=16000, dtype="int16"):
    if done >= limit:
        break
    decoder.process_raw(block[: limit - done].tobytes(), False, False)
    done += len(block)
decoder.end_utt()
spent = time.perf_counter() - began
hyp = decoder.hyp()
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"seconds": spent, "audio": done / 16000, "rss": rss,
                  "words": len(hyp.hypstr.split()) if hyp else 0}))
"""


def build_recording(path: Path, minutes: float, seed: int = 0) -> float:
    """Write `minutes` of speech (the examples, repeated) and pauses to `path`; return seconds."""
    rng = np.random.default_rng(seed)
    clips = [sf.read(p, dtype="float32")[0] for p in sorted((ROOT / "examples").glob("*.wav"))]
    total = int(minutes * 60 * 16000)
    written = 0
    with sf.SoundFile(path, "w", samplerate=16000, channels=1, subtype="PCM_16") as out:
        while written < total:
            pause = (0.003 * rng.standard_normal(int(rng.uniform(0.5, 4.0) * 16000))
                     ).astype(np.float32)
            clip = clips[int(rng.integers(len(clips)))]
            block = np.concatenate([pause, clip * rng.uniform(0.5, 1.0)])[: total - written]
            out.write(block)
            written += len(block)
    return written / 16000


def run_child(code: str, *args: str) -> dict:
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"benchmark child failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--peer-minutes", type=float, default=5.0,
                        help="minutes of the file given to PocketSphinx (0: skip the peer)")
    parser.add_argument("--model", default="", help="model path (default: the bundled model)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "long.wav"
        began = time.perf_counter()
        seconds = build_recording(path, args.minutes)
        print(f"recording: {seconds / 60:.1f} min ({path.stat().st_size / 2**20:.0f} MB WAV), "
              f"built in {time.perf_counter() - began:.0f} s", flush=True)
        ours = run_child(HARKEN_CHILD, str(path), args.model, str(args.threads))
        rtf = ours["seconds"] / seconds
        print(f"harken      : peak RSS {ours['rss'] / 2**20:7.0f} MB  RTF {rtf:.4f}  "
              f"first segment after {ours['first']:.1f} s  "
              f"({ours['segments']} segments, {ours['words']} words)")
        verdict = "within" if ours["rss"] < GOAL_BYTES else "OVER"
        print(f"goal        : {verdict} 1.5 GB for {seconds / 60:.0f} min of audio")
        if args.peer_minutes > 0:
            try:
                import pocketsphinx  # noqa: F401
            except ImportError:
                print("pocketsphinx: not installed (pip install pocketsphinx)")
                return
            peer = run_child(PEER_CHILD, str(path), str(args.peer_minutes * 60))
            peer_rtf = peer["seconds"] / peer["audio"]
            print(f"pocketsphinx: peak RSS {peer['rss'] / 2**20:7.0f} MB  RTF {peer_rtf:.4f}  "
                  f"(first {peer['audio'] / 60:.1f} min)")
            print(f"harken RTF / pocketsphinx RTF: {rtf / peer_rtf:.3f}")


if __name__ == "__main__":
    main()

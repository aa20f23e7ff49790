"""Batch transcription throughput: 1 vs N worker processes (and Ray actors) on this machine.

Generates `--files` WAV files of `--seconds` each (tones in noise, cut by pauses), then runs
`harken.serving.batch_jobs.run_batch` into a fresh folder per configuration and prints files/s, audio
seconds per second, the real-time factor (wall seconds per audio second, all workers together)
the speed-up over one worker, and CPU seconds per audio second (this process and its worker
processes; not measured for Ray, whose workers are not our children). Wall time includes starting
the workers and loading the model in each, as a user sees it. On a machine whose cores are busy
with other work, the CPU figure shows the cost of the work and the wall figures how much of the
machine it got. Outputs of every configuration are checked to be identical.

Usage: python benchmarks/scaling.py [--model en-small] [--files 32] [--seconds 12]
                                    [--workers 1 2] [--threads 1] [--ray]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from harken.serving.batch_jobs import BatchSettings, collect_inputs, run_batch


def make_audio(folder: Path, files: int, seconds: float) -> float:
    """`files` WAV files of `seconds` each; returns the total audio seconds."""
    rng = np.random.default_rng(0)
    sr = 16000
    t = np.arange(int(sr * seconds)) / sr
    for i in range(files):
        wave = 0.3 * np.sin(2 * np.pi * (150 + 20 * i) * t) * (np.sin(2 * np.pi * 0.4 * t) > -0.3)
        wave += 0.02 * rng.standard_normal(len(t))
        sf.write(folder / f"f{i:03d}.wav", wave.astype(np.float32), sr)
    return files * len(t) / sr


def run(label: str, inputs, out: Path, settings: BatchSettings, audio_seconds: float,
        **kwargs) -> dict:
    cpu_before = _cpu_seconds()
    began = time.perf_counter()
    report = run_batch(inputs, out, settings, progress=False, **kwargs)
    wall = time.perf_counter() - began
    cpu = _cpu_seconds() - cpu_before
    assert report.done == len(inputs), f"{label}: {report.failed} files failed"
    return {"label": label, "wall": wall, "files_per_s": len(inputs) / wall,
            "audio_per_s": audio_seconds / wall, "rtf": wall / audio_seconds,
            "cpu_per_audio": None if "ray_address" in kwargs else cpu / audio_seconds,
            "outputs": {p.name: p.read_bytes() for p in out.glob("*.txt")}}


def _cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="en-small", help="model name or path")
    parser.add_argument("--files", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    parser.add_argument("--ray", action="store_true", help="also run on a local Ray instance")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="harken-scaling-") as tmp:
        folder = Path(tmp) / "audio"
        folder.mkdir()
        audio_seconds = make_audio(folder, args.files, args.seconds)
        inputs = collect_inputs([folder])
        settings = BatchSettings(model=args.model, formats=("txt", "json"), threads=args.threads)
        results = []
        for workers in args.workers:
            results.append(run(f"{workers} worker{'s' if workers > 1 else ''}", inputs,
                               Path(tmp) / f"out-{workers}", settings, audio_seconds,
                               workers=workers))
        if args.ray:
            import ray

            count = max(args.workers)
            ray.init(num_cpus=count * args.threads, include_dashboard=False,
                     logging_level="ERROR", log_to_driver=False)
            try:
                results.append(run(f"ray, {count} actors", inputs, Path(tmp) / "out-ray",
                                   settings, audio_seconds, workers=count, ray_address="auto"))
            finally:
                ray.shutdown()

    base = results[0]
    print(f"{args.files} files x {args.seconds:g} s = {audio_seconds / 60:.1f} min of audio, "
          f"model {args.model}, {args.threads} thread(s) per worker")
    print(f"{'configuration':<18}{'wall s':>9}{'files/s':>9}{'audio s/s':>11}{'RTF':>8}"
          f"{'speed-up':>10}{'CPU s/audio s':>15}")
    for r in results:
        cpu = "n/a" if r["cpu_per_audio"] is None else f"{r['cpu_per_audio']:.3f}"
        print(f"{r['label']:<18}{r['wall']:>9.1f}{r['files_per_s']:>9.2f}{r['audio_per_s']:>11.1f}"
              f"{r['rtf']:>8.3f}{base['wall'] / r['wall']:>9.2f}x{cpu:>15}")
    same = all(r["outputs"] == base["outputs"] for r in results)
    print("outputs identical across configurations:", same)


if __name__ == "__main__":
    main()

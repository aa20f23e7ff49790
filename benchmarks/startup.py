"""Start-up time of the command line and small-file throughput, against `import torch`.

Each measurement runs in a fresh interpreter (median of --repeats, wall and CPU seconds):

- the peer: `python -c "import torch"`;
- `harken --version`, `harken --help`;
- the stages of `harken transcribe` in one process: import torch, import harken, load the
  bundled model, load the LM (KenLM), build the lexicon trie without and with its cache
  (harken.decoding.lexicon_cache), the first transcription of a 3 s clip;
- `harken transcribe CLIP` for a 3 s clip: with a fresh copy of the LM (no lexicon cache: the
  first run after installing) and with the cache (every later run), as a ratio to the peer;
- `harken transcribe FOLDER` of --clips short clips (AN4 test utterances when
  /work/shared/corpora/an4 exists, else copies of examples/*.wav): wall time / audio seconds.

Usage:
    python benchmarks/startup.py [--repeats 3] [--clips 50] [--corpus /work/shared/corpora/an4]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLIP = ROOT / "examples" / "fox.wav"

STAGES = r"""
import json, sys, time
marks = [("start", time.process_time())]
import torch
torch.set_num_threads(1)  # as harken transcribe runs a small model (harken.cli)
marks.append(("import torch", time.process_time()))
import harken
from harken.decoding.ctc_beam import Decoder, _load_kenlm
from harken.decoding.lm import lm_vocabulary
marks.append(("import harken", time.process_time()))
model = harken.load_model()
marks.append(("load model", time.process_time()))
options = model.decode_options(lm=sys.argv[1])
entries = tuple(lm_vocabulary(options.lm) + ["<unk>"])
_load_kenlm(options.lm, entries)
marks.append(("LM (KenLM + word list)", time.process_time()))
Decoder(model.tokenizer, options)
marks.append(("lexicon trie, no cache (+ LM cached)", time.process_time()))
Decoder(model.tokenizer, options)
marks.append(("lexicon trie from its cache", time.process_time()))
model.transcribe(sys.argv[2], options)
marks.append(("first transcription of the clip", time.process_time()))
print(json.dumps([(name, b - a) for (_, a), (name, b) in zip(marks, marks[1:])]))
"""


def timed(command: list[str], env: dict[str, str] | None = None) -> tuple[float, float, str]:
    """(wall seconds, CPU seconds of the child, stdout)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode not in (0, 1):
        raise RuntimeError(f"{command}: exit {done.returncode}: {done.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, done.stdout


def median_run(command: list[str], repeats: int, prepare=None) -> tuple[float, float]:
    walls, cpus = [], []
    for _ in range(repeats):
        if prepare is not None:
            prepare()
        wall, cpu, _ = timed(command)
        walls.append(wall)
        cpus.append(cpu)
    return statistics.median(walls), statistics.median(cpus)


def short_clips(folder: Path, count: int, corpus: Path) -> float:
    """Copy `count` short clips into `folder`; returns their total duration in seconds."""
    import soundfile as sf

    from harken.audio import load_audio

    folder.mkdir(parents=True, exist_ok=True)
    sources: list[Path] = []
    manifest = corpus / "test.jsonl"
    if manifest.is_file():
        for line in manifest.read_text().splitlines():
            sources.append(corpus / json.loads(line)["audio"])
            if len(sources) == count:
                break
    while len(sources) < count:
        sources.append(sorted((ROOT / "examples").glob("*.wav"))[len(sources) % 2])
    seconds = 0.0
    for index, source in enumerate(sources):
        target = folder / f"{index:03d}{source.suffix}"
        shutil.copyfile(source, target)
        seconds += len(load_audio(target)) / 16000
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--clips", type=int, default=50)
    parser.add_argument("--corpus", type=Path, default=Path("/work/shared/corpora/an4"))
    args = parser.parse_args()
    python = sys.executable
    harken = [python, "-m", "harken.cli"]
    from harken.modelfile import ASSETS

    bundled_lm = ASSETS / "en-small.bin"
    with tempfile.TemporaryDirectory(prefix="harken-startup-") as tmp:
        tmp_path = Path(tmp)
        fresh_lm = tmp_path / "lm" / "en-small.bin"

        def fresh_copy() -> None:  # a new LM file: no lexicon cache exists for it
            shutil.rmtree(fresh_lm.parent, ignore_errors=True)
            fresh_lm.parent.mkdir()
            shutil.copyfile(bundled_lm, fresh_lm)

        rows: list[tuple[str, float, float]] = []
        peer = median_run([python, "-c", "import torch"], args.repeats)
        rows.append(("python -c 'import torch' (peer)", *peer))
        rows.append(("harken --version", *median_run(harken + ["--version"], args.repeats)))
        rows.append(("harken --help", *median_run(harken + ["--help"], args.repeats)))
        cold = median_run(harken + ["transcribe", str(CLIP), "--lm", str(fresh_lm)],
                          args.repeats, prepare=fresh_copy)
        rows.append(("harken transcribe 3 s clip, first run (no lexicon cache)", *cold))
        timed(harken + ["transcribe", str(CLIP), "--lm", str(fresh_lm)])  # writes the cache
        warm = median_run(harken + ["transcribe", str(CLIP), "--lm", str(fresh_lm)],
                          args.repeats)
        rows.append(("harken transcribe 3 s clip, later runs (lexicon cached)", *warm))
        stage_runs = []
        for _ in range(args.repeats):
            fresh_copy()
            stage_runs.append(json.loads(timed([python, "-c", STAGES, str(fresh_lm),
                                                str(CLIP)])[2]))
        folder = tmp_path / "clips"
        audio = short_clips(folder, args.clips, args.corpus)
        wall, cpu, _ = timed(harken + ["transcribe", str(folder), "--lm", str(fresh_lm),
                                       "--no-progress"])

    print(f"{'command':62s} {'wall s':>8s} {'CPU s':>8s} {'wall / peer':>11s}")
    for name, w, c in rows:
        print(f"{name:62s} {w:8.2f} {c:8.2f} {w / peer[0]:11.2f}")
    print(f"\nstages of a transcription in one process (median of {args.repeats}, CPU s):")
    for index, (name, _) in enumerate(stage_runs[0]):
        print(f"  {name:50s} {statistics.median(r[index][1] for r in stage_runs):6.2f}")
    print(f"\nharken transcribe FOLDER of {args.clips} clips, {audio:.1f} s of audio: "
          f"{wall:.1f} s wall, {cpu:.1f} s CPU, RTF {wall / audio:.3f} (start-up included), "
          f"{(wall - warm[0]) / audio:.3f} without one start-up")
    print(f"machine: {os.cpu_count()} cores, load average "
          f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()

"""Equal error rate of speaker encoders on speakers none of them trained on.

    python benchmarks/speaker_eer.py --corpora /work/shared/corpora \
        --encoder bundled --encoder exp/xvector/final [--per-speaker 6]

Test sets: speechocean762 test (125 speakers, L2 English, children and adults), AN4 test (10
speakers) and LJ + kathleen (2 speakers, read books/ARCTIC). Every pair of utterances of a set
is a trial (cosine similarity of whole-utterance embeddings); the x-vector trains on neither,
nor did Resemblyzer's GE2E. Also prints each encoder's speed (seconds of audio embedded per
second, one thread).
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from harken.audio import SAMPLE_RATE, load_audio
from harken.training.speakers import equal_error_rate
from harken.diarization.speakers import load_speaker_encoder

SETS = {"speechocean762": [("speechocean762", "test.jsonl")], "an4": [("an4", "test.jsonl")],
        "lj+kathleen": [("ljspeech", "test.jsonl"), ("kathleen_arctic", "manifest.jsonl")]}


def read_set(corpora: Path, parts: list[tuple[str, str]], per_speaker: int
             ) -> list[tuple[Path, str]]:
    chosen: list[tuple[Path, str]] = []
    for corpus, manifest in parts:
        by_speaker: dict[str, list[Path]] = defaultdict(list)
        for line in (corpora / corpus / manifest).read_text().splitlines():
            row = json.loads(line)
            if row.get("duration", 2.0) >= 1.0:
                by_speaker[f"{corpus}/{row['speaker']}"].append(corpora / corpus / row["audio"])
        for speaker, paths in sorted(by_speaker.items()):
            step = max(1, len(paths) // per_speaker)
            chosen.extend((p, speaker) for p in paths[::step][:per_speaker])
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpora", type=Path, required=True)
    parser.add_argument("--encoder", action="append", default=[],
                        help="'bundled' or a speaker encoder folder (repeatable)")
    parser.add_argument("--per-speaker", type=int, default=6)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    waves = {name: [(load_audio(p), s) for p, s in read_set(args.corpora, parts,
                                                             args.per_speaker)]
             for name, parts in SETS.items()}
    report = {}
    for spec in args.encoder or ["bundled"]:
        encoder = load_speaker_encoder(None if spec == "bundled" else spec)
        row: dict[str, object] = {"encoder": spec, "architecture": encoder.config.architecture}
        seconds = spent = 0.0
        for name, items in waves.items():
            began = time.perf_counter()
            emb = np.stack([encoder.embed(w) for w, _ in items])
            spent += time.perf_counter() - began
            seconds += sum(len(w) for w, _ in items) / SAMPLE_RATE
            eer, _ = equal_error_rate(emb, [s for _, s in items])
            row[name] = round(100 * eer, 2)
            row[f"{name}_utterances"] = len(items)
        row["audio_seconds_per_second"] = round(seconds / spent, 1)
        report[spec] = row
        print(json.dumps(row))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()

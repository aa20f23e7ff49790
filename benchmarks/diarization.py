"""Diarization error rate on conversations of speakers no encoder trained on.

    python benchmarks/diarization.py --corpora /work/shared/corpora [--encoder DIR] \
        [--conversations 6] [--hour] [--words]

Conversations are built from held-out real speakers: speechocean762 test speakers (2, 3, 4
per conversation), AN4 test speakers (2) and LJ vs kathleen (2). Each turn is one to three
utterances of one speaker (leading and trailing silence trimmed), the next speaker different;
between turns a pause of 0.2-1.0 s or, one time in six, an overlap of 0.1-0.4 s. The
reference is the speech of each utterance. DER is `pyannote.metrics` DiarizationErrorRate with
a 0.25 s collar (overlaps scored), with the speaker count estimated and given.

`--words` also transcribes the conversations (bundled model) and scores the words given the
wrong speaker (a word's reference speaker: the one speaking at its middle; hypothesis labels
mapped to reference speakers as DER maps them). `--hour` diarizes one hour of audio on one
thread: real-time factor and peak memory (RSS) of diarization alone.
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
from harken.diarization.diarize import DiarizeOptions, assign_speakers, diarize

RNG_SEED = 26


def trim(wave: np.ndarray, margin_db: float = 35.0) -> np.ndarray:
    """Cut leading and trailing audio more than `margin_db` below the loudest 20 ms."""
    hop = SAMPLE_RATE // 50
    n = len(wave) // hop
    if n < 3:
        return wave
    level = 10 * np.log10(np.mean(wave[: n * hop].reshape(n, hop) ** 2, axis=1) + 1e-12)
    loud = np.flatnonzero(level > level.max() - margin_db)
    return wave[max(0, loud[0] - 1) * hop: min(n, loud[-1] + 2) * hop]


def read_speakers(corpora: Path, parts: list[tuple[str, str]]) -> dict[str, list[dict]]:
    by_speaker: dict[str, list[dict]] = defaultdict(list)
    for corpus, manifest in parts:
        for line in (corpora / corpus / manifest).read_text().splitlines():
            row = json.loads(line)
            row["path"] = corpora / corpus / row["audio"]
            by_speaker[f"{corpus}/{row['speaker']}"].append(row)
    return by_speaker


def build_conversation(pool: dict[str, list[dict]], speakers: list[str], seconds: float,
                       rng: np.random.Generator, cache: dict[Path, np.ndarray]
                       ) -> tuple[np.ndarray, list[tuple[float, float, str]], list[tuple]]:
    """(audio, reference turns (start, end, speaker), words (start, end, text, speaker))."""
    pieces: list[tuple[int, np.ndarray, str]] = []
    reference: list[tuple[float, float, str]] = []
    position, previous = 0, None
    while position < seconds * SAMPLE_RATE:
        who = str(rng.choice([s for s in speakers if s != previous]))
        previous = who
        if pieces:
            if rng.random() < 1 / 6:
                position -= int(rng.uniform(0.1, 0.4) * SAMPLE_RATE)
            else:
                position += int(rng.uniform(0.2, 1.0) * SAMPLE_RATE)
        for k in range(int(rng.integers(1, 4))):
            row = pool[who][int(rng.integers(len(pool[who])))]
            if row["path"] not in cache:
                cache[row["path"]] = trim(load_audio(row["path"]))
            wave = cache[row["path"]]
            if k:
                position += int(rng.uniform(0.1, 0.3) * SAMPLE_RATE)
            pieces.append((position, wave, who))
            reference.append((position / SAMPLE_RATE, (position + len(wave)) / SAMPLE_RATE, who))
            position += len(wave)
    audio = np.zeros(max(p + len(w) for p, w, _ in pieces), np.float32)
    for start, wave, _ in pieces:
        audio[start: start + len(wave)] += wave
    return audio, reference, []


def annotation(turns: list[tuple[float, float, str]]):
    from pyannote.core import Annotation, Segment

    out = Annotation()
    for i, (start, end, who) in enumerate(turns):
        out[Segment(start, end), i] = who
    return out


def score(reference, hypothesis, metric) -> float:
    return float(metric(reference, hypothesis))


def wrong_speaker_words(model, audio, diarization, reference, metric
                        ) -> tuple[int, int, float]:
    """(words with the wrong speaker, words scored, seconds transcribing) for one
    conversation."""
    began = time.perf_counter()
    transcript = model.transcribe(audio)
    asr_seconds = time.perf_counter() - began
    transcript = assign_speakers(transcript, diarization)
    ref = annotation(reference)
    hyp = annotation([(t.start, t.end, t.speaker) for t in diarization.turns])
    mapping = metric.optimal_mapping(ref, hyp)
    wrong = total = 0
    for word in transcript.words:
        middle = (word.start + word.end) / 2
        truth = [who for s, e, who in reference if s <= middle <= e]
        if len(truth) != 1:
            continue  # silence or overlap: no single right answer
        total += 1
        wrong += mapping.get(word.speaker) != truth[0]
    return wrong, total, asr_seconds


def tune(args: argparse.Namespace) -> None:
    """DER by clustering threshold on training speakers (embeddings computed once)."""
    from dataclasses import replace

    from pyannote.metrics.diarization import DiarizationErrorRate

    from harken.diarization.diarize import _encoder, embed_speech, windows_to_diarization

    rng = np.random.default_rng(RNG_SEED + 1)
    pools = {"speechocean762": read_speakers(args.corpora, [("speechocean762", "train.jsonl")]),
             "an4": read_speakers(args.corpora, [("an4", "train.jsonl")])}
    options = DiarizeOptions(encoder=args.encoder, clustering=args.clustering)
    encoder = _encoder(options)
    cache: dict[Path, np.ndarray] = {}
    for corpus, count in (("speechocean762", 2), ("speechocean762", 4), ("an4", 2),
                          ("an4", 4)):
        metrics = {t: DiarizationErrorRate(collar=0.25) for t in args.tune}
        for _ in range(args.conversations):
            speakers = [str(s) for s in rng.choice(sorted(pools[corpus]), count, replace=False)]
            audio, reference, _ = build_conversation(pools[corpus], speakers, args.seconds[0],
                                                     rng, cache)
            windows, emb = embed_speech(audio, encoder, options)
            for t in args.tune:
                result = windows_to_diarization(windows, emb, replace(options, threshold=t),
                                                len(audio) / SAMPLE_RATE)
                metrics[t](annotation(reference), annotation(
                    [(x.start, x.end, x.speaker) for x in result.turns]))
        print(json.dumps({"corpus": corpus, "speakers": count, "der_by_threshold": {
            t: round(100 * abs(m), 2) for t, m in metrics.items()}}), flush=True)


HOUR_CHILD = """
import json, resource, sys, time
import numpy as np, torch
torch.set_num_threads(1)
from harken.diarization.diarize import DiarizeOptions, diarize
audio = np.load(sys.argv[1])
loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
began = time.perf_counter()
result = diarize(audio, DiarizeOptions(encoder=sys.argv[2] or None))
spent = time.perf_counter() - began
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"seconds": spent, "rss_loaded_mb": loaded / 1024, "rss_peak_mb": peak / 1024,
                  "turns": [[t.start, t.end, t.speaker] for t in result.turns]}))
"""


def hour(args: argparse.Namespace, pool: dict[str, list[dict]], rng: np.random.Generator,
         cache: dict[Path, np.ndarray], options: DiarizeOptions) -> dict:
    """Diarize one hour of a 4-speaker conversation in a fresh process: time and memory."""
    import subprocess
    import sys
    import tempfile

    from pyannote.metrics.diarization import DiarizationErrorRate

    speakers = [str(s) for s in rng.choice(sorted(pool), 4, replace=False)]
    audio, reference, _ = build_conversation(pool, speakers, 3600.0, rng, cache)
    with tempfile.TemporaryDirectory() as folder:
        np.save(Path(folder) / "hour.npy", audio)
        del audio
        out = subprocess.run([sys.executable, "-c", HOUR_CHILD, str(Path(folder) / "hour.npy"),
                              args.encoder or ""], capture_output=True, text=True, check=True)
    child = json.loads(out.stdout.splitlines()[-1])
    seconds = max(e for _, e, _ in reference)
    der = abs(DiarizationErrorRate(collar=0.25)(annotation(reference),
                                                annotation([tuple(t) for t in child["turns"]])))
    row = {"hour_seconds": round(seconds, 1), "diarize_seconds": round(child["seconds"], 1),
           "rtf": round(child["seconds"] / seconds, 4),
           "rss_with_audio_loaded_mb": round(child["rss_loaded_mb"]),
           "rss_peak_mb": round(child["rss_peak_mb"]), "der": round(100 * der, 2),
           "speakers_found": len({t[2] for t in child["turns"]})}
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpora", type=Path, required=True)
    parser.add_argument("--encoder", default=None, help="speaker encoder folder (default: bundled)")
    parser.add_argument("--conversations", type=int, default=6,
                        help="per condition (0: only --hour)")
    parser.add_argument("--seconds", type=float, nargs="+", default=[60.0, 180.0])
    parser.add_argument("--words", action="store_true")
    parser.add_argument("--clustering", default="auto",
                        choices=("auto", "agglomerative", "spectral"))
    parser.add_argument("--hour", action="store_true")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--tune", type=float, nargs="+", default=None, metavar="THRESHOLD",
                        help="instead: DER of these clustering thresholds on conversations of "
                             "training speakers (speechocean762 and AN4 train)")
    args = parser.parse_args()
    if args.tune:
        tune(args)
        return
    torch.set_num_threads(1)
    from pyannote.metrics.diarization import DiarizationErrorRate

    rng = np.random.default_rng(RNG_SEED)
    pools = {"speechocean762": read_speakers(args.corpora, [("speechocean762", "test.jsonl")]),
             "an4": read_speakers(args.corpora, [("an4", "test.jsonl")]),
             "lj+kathleen": read_speakers(args.corpora, [("ljspeech", "test.jsonl"),
                                                         ("kathleen_arctic", "manifest.jsonl")])}
    conditions = [("speechocean762", 2), ("speechocean762", 3), ("speechocean762", 4),
                  ("an4", 2), ("lj+kathleen", 2)]
    cache: dict[Path, np.ndarray] = {}
    model = None
    if args.words:
        from harken.model import load_model

        model = load_model()
    options = DiarizeOptions(encoder=args.encoder, clustering=args.clustering)
    rows = []
    for corpus, count in conditions if args.conversations > 0 else []:
        for seconds in args.seconds:
            metrics = {"estimated": DiarizationErrorRate(collar=0.25),
                       "given": DiarizationErrorRate(collar=0.25)}
            spent = audio_seconds = 0.0
            words_wrong = words_total = 0
            asr_seconds = 0.0
            found = []
            for _ in range(args.conversations):
                speakers = [str(s) for s in rng.choice(sorted(pools[corpus]), count,
                                                       replace=False)]
                audio, reference, _ = build_conversation(pools[corpus], speakers, seconds,
                                                         rng, cache)
                ref = annotation(reference)
                began = time.perf_counter()
                estimated = diarize(audio, options)
                spent += time.perf_counter() - began
                audio_seconds += len(audio) / SAMPLE_RATE
                found.append(len(estimated.speakers))
                given = diarize(audio, options, speakers=count)
                for name, result in (("estimated", estimated), ("given", given)):
                    metrics[name](ref, annotation([(t.start, t.end, t.speaker)
                                                   for t in result.turns]))
                if model is not None:
                    w, t, asr = wrong_speaker_words(model, audio, estimated, reference,
                                                    metrics["estimated"])
                    words_wrong, words_total = words_wrong + w, words_total + t
                    asr_seconds += asr
            row = {"corpus": corpus, "speakers": count, "seconds": seconds,
                   "conversations": args.conversations,
                   "der_estimated": round(100 * abs(metrics["estimated"]), 2),
                   "der_given": round(100 * abs(metrics["given"]), 2),
                   "speakers_found": found, "rtf": round(spent / audio_seconds, 4)}
            if model is not None:
                row["wrong_speaker_words"] = round(100 * words_wrong / max(1, words_total), 2)
                row["words_scored"] = words_total
                row["asr_rtf"] = round(asr_seconds / audio_seconds, 4)
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.hour:
        rows.append(hour(args, pools["speechocean762"], rng, cache, options))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()

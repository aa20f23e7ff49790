"""CTC vs RNN-T vs hybrid on the same data and the same encoder: dev WER, training speed and
decoding speed, side by side.

The data is generated with espeak-ng (no downloads): sentences of 2-4 words from a small
vocabulary, spoken by two voices for training and by a third, unseen voice for the dev set.
Each head trains the same tiny Conformer encoder with `harken train` for the same number of
steps; the RNN-T and hybrid models add an LSTM predictor and a joint network.

"step ms" is one training step on the same batch with the heads taking turns (fair on a busy
machine); "steps/s" and "train x RT" come from each `harken train` run.

Usage: python benchmarks/transducer.py [--steps 400] [--threads 1] [--out /tmp/harken-rnnt]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import time
from pathlib import Path

import torch

from harken.audio import load_audio
from harken.training.evaluate import error_rates
from harken.model import load_model
from harken.training.config import config_from_dict
from harken.training.loop import train

WORDS = ("red green blue yellow black white one two three four five six seven eight nine "
         "left right up down stop go yes no open close start play pause next back").split()
TRAIN_VOICES = (("en-us", 150), ("en-gb", 170))
DEV_VOICE = ("en-us+m3", 140)
DECODE_ROUNDS = 3
ENCODER = {"d_model": 64, "n_layers": 2, "n_heads": 2, "subsampling_channels": 32}


def make_corpus(folder: Path, sentences: list[str], voices, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for v, (voice, speed) in enumerate(voices):
        for i, text in enumerate(sentences):
            wav = folder / f"{name}{v}_{i}.wav"
            if not wav.exists():
                subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(wav), text],
                               check=True, capture_output=True)
            lines.append({"audio": wav.name, "text": text, "id": wav.stem})
    manifest = folder / f"{name}.jsonl"
    manifest.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return manifest


def sentences(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 4))) for _ in range(count)]


def run(head: str, train_manifest: Path, out: Path, steps: int, threads: int) -> Path:
    if head == "ctc":
        model = {"architecture": "conformer", "size": "tiny", "overrides": ENCODER}
    else:
        model = {"architecture": "transducer", "size": "tiny",
                 "overrides": {"encoder": "conformer", "head": head, "encoder_overrides": ENCODER,
                               "predictor_dim": 64, "joint_dim": 64}}
    shutil.rmtree(out, ignore_errors=True)
    config = config_from_dict({
        "model": model,
        "data": {"train": [{"manifest": str(train_manifest)}], "max_batch_seconds": 40.0,
                 "num_workers": 0},
        "optim": {"lr": 3e-3, "warmup_steps": 50, "max_steps": steps, "epochs": 10_000,
                  "schedule": "cosine"},
        "specaugment": {"enabled": False},
        "run": {"out_dir": str(out), "seed": 1, "device": "cpu", "checkpoint_every": 100_000,
                "log_every": 50, "progress": False, "epochs_per_eval": 100_000,
                "threads": threads},
    })
    return train(config)


def step_times(train_manifest: Path, rounds: int = 5) -> dict[str, float]:
    """Median seconds of one training step (forward, loss, backward, AdamW) per head on the
    same batch (the first 16 training utterances); the heads take turns, so a busy machine
    slows them alike."""
    import numpy as np
    import torch.nn.functional as F

    from harken.model import new_model

    items = [json.loads(line) for line in train_manifest.read_text().splitlines()][:16]
    waves = [load_audio(train_manifest.parent / item["audio"]) for item in items]
    lengths = torch.tensor([len(w) for w in waves])
    audio = torch.zeros(len(waves), int(lengths.max()))
    for i, w in enumerate(waves):
        audio[i, : len(w)] = torch.from_numpy(w)
    models = {}
    for head in ("ctc", "transducer", "hybrid"):
        torch.manual_seed(0)
        if head == "ctc":
            models[head] = new_model("conformer", "tiny", **ENCODER)
        else:
            models[head] = new_model("transducer", "tiny", encoder="conformer", head=head,
                                     encoder_overrides=ENCODER, predictor_dim=64, joint_dim=64)
    tokenizer = models["ctc"].tokenizer
    encoded = [tokenizer.encode(item["text"]) for item in items]
    tokens = torch.zeros(len(items), max(map(len, encoded)), dtype=torch.long)
    for i, ids in enumerate(encoded):
        tokens[i, : len(ids)] = torch.tensor(ids)
    token_lengths = torch.tensor([len(ids) for ids in encoded])
    times: dict[str, list[float]] = {head: [] for head in models}
    optimizers = {h: torch.optim.AdamW(m.network.parameters(), 1e-4) for h, m in models.items()}
    for _ in range(rounds + 1):
        for head, model in models.items():
            model.network.train()
            began = time.perf_counter()
            features, frames = model.featurizer(audio, lengths)
            if head == "ctc":
                log_probs, out_lengths = model.network(features, frames)
                loss = F.ctc_loss(log_probs.transpose(0, 1), tokens, out_lengths, token_lengths,
                                  zero_infinity=True)
            else:
                loss = model.network(features, frames, tokens, token_lengths).mean()
            optimizers[head].zero_grad()
            loss.backward()
            optimizers[head].step()
            times[head].append(time.perf_counter() - began)
    return {head: float(np.median(t[1:])) for head, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("/tmp/harken-rnnt-bench"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = args.out / "data"
    train_manifest = make_corpus(data, sentences(60, 0), TRAIN_VOICES, "train")
    dev_manifest = make_corpus(data, sentences(30, 1), (DEV_VOICE,), "dev")
    dev = [json.loads(line) for line in dev_manifest.read_text().splitlines()]
    waves = [load_audio(data / item["audio"]) for item in dev]
    references = [item["text"] for item in dev]
    dev_seconds = sum(len(w) for w in waves) / 16000
    steps = step_times(train_manifest)
    print("training step, same batch of 16 utterances, heads in turn:",
          ", ".join(f"{h} {1000 * t:.0f} ms ({t / steps['ctc']:.2f}x CTC)"
                    for h, t in steps.items()))
    models, rows = {}, {}
    for head in ("ctc", "transducer", "hybrid"):
        path = run(head, train_manifest, args.out / head, args.steps, args.threads)
        models[head] = model = load_model(path)
        meta = model.config.training
        rows[head] = {"head": head,
                      "params": sum(p.numel() for p in model.network.parameters()),
                      "step ms": 1000 * steps[head],
                      "steps/s": meta["steps"] / max(meta["train_seconds"], 1e-9),
                      "train x RT": meta["audio_seconds"] / max(meta["train_seconds"], 1e-9)}
    decodings = [("ctc", "greedy", {}), ("transducer", "greedy", {}),
                 ("transducer", "beam 4", {"beam_width": 4}), ("hybrid", "greedy", {}),
                 ("hybrid", "beam 4", {"beam_width": 4}), ("hybrid", "ctc head", {"head": "ctc"})]
    seconds: dict[tuple[str, str], list[float]] = {(h, label): [] for h, label, _ in decodings}
    for _ in range(DECODE_ROUNDS):  # the decodings take turns (a busy machine slows all alike)
        for head, label, options in decodings:
            began = time.perf_counter()
            hypotheses = [t.text for t in models[head].transcribe_batch(waves, **options)]
            seconds[(head, label)].append(time.perf_counter() - began)
            rows[head][f"WER {label}"] = error_rates(references, hypotheses)["wer"]
    for (head, label), times in seconds.items():
        rows[head][f"RTF {label}"] = sorted(times)[len(times) // 2] / dev_seconds
    for row in rows.values():
        print(json.dumps(row))
    rows = list(rows.values())
    print()
    keys = ["head", "params", "step ms", "steps/s", "train x RT"] + sorted(
        {k for r in rows for k in r if k.startswith(("WER", "RTF"))})
    print(" | ".join(f"{k:>14}" for k in keys))
    for r in rows:
        cells = []
        for k in keys:
            v = r.get(k, "")
            cells.append(f"{v:>14.3f}" if isinstance(v, float) else f"{v!s:>14}")
        print(" | ".join(cells))


if __name__ == "__main__":
    main()

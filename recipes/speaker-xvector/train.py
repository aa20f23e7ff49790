"""Train the x-vector speaker encoder on the training speakers of the local corpora.

    python recipes/speaker-xvector/train.py --corpora /work/shared/corpora --out exp/xvector \
        --minutes 35

Training speakers: speechocean762 train (125), AN4 train (74), FSDD (6). The test speakers of
speechocean762 and AN4, LJ and kathleen are never read here: they score the encoders
(benchmarks/speaker_eer.py) and the diarization benchmark. Features are cached in
``<out>/train-mels.npz``; a checkpoint folder is written every ``--save-every`` steps.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

from harken.audio import load_audio
from harken.training.speakers import SpeakerTrainOptions, train_speaker_encoder
from harken.diarization.speakers import MelPower, SpeakerEncoder, xvector_config

log = logging.getLogger("speaker-xvector")
TRAIN_SETS = (("speechocean762", "train.jsonl"), ("an4", "train.jsonl"), ("fsdd", "train.jsonl"))


def load_mels(corpora: Path, cache: Path) -> tuple[list[np.ndarray], list[int], list[str]]:
    if cache.is_file():
        data = np.load(cache)
        bounds = data["offsets"]
        mels = [data["mels"][a:b].astype(np.float32) for a, b in itertools.pairwise(bounds)]
        return mels, data["labels"].tolist(), data["names"].tolist()
    featurize = MelPower()
    mels, labels, names = [], [], []
    index: dict[str, int] = {}
    for corpus, manifest in TRAIN_SETS:
        for line in (corpora / corpus / manifest).read_text().splitlines():
            row = json.loads(line)
            name = f"{corpus}/{row['speaker']}"
            wave = load_audio(corpora / corpus / row["audio"])
            with torch.inference_mode():
                mel = featurize(torch.from_numpy(wave)[None])[0].numpy()
            mels.append(mel)
            labels.append(index.setdefault(name, len(index)))
        names = list(index)
    offsets = np.cumsum([0] + [len(m) for m in mels])
    np.savez(cache, mels=np.concatenate(mels).astype(np.float16), offsets=offsets,
             labels=np.asarray(labels), names=np.asarray(names))
    return mels, labels, names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpora", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--size", default="small")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--minutes", type=float, default=35.0)
    parser.add_argument("--save-every", type=int, default=200)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    mels, labels, names = load_mels(args.corpora, args.out / "train-mels.npz")
    log.info("%d utterances, %d speakers, features in %.0f s", len(mels), len(names),
                 time.monotonic() - began)
    config = xvector_config(args.size)
    options = SpeakerTrainOptions(steps=args.steps, max_seconds=args.minutes * 60)

    def on_step(step: int, loss: float, network: torch.nn.Module) -> None:
        if step % 20 == 0:
            log.info("step %d loss %.3f", step, loss)
        if step and step % args.save_every == 0:
            network.eval()
            SpeakerEncoder(config, network).save(args.out / "checkpoint")
            network.train()

    encoder: SpeakerEncoder = train_speaker_encoder(config, mels, labels, options, on_step)
    encoder.save(args.out / "final")
    (args.out / "final" / "training.json").write_text(json.dumps(
        {"speakers": names, "options": repr(options), "seconds": time.monotonic() - began},
        indent=2) + "\n")
    log.info("saved %s", args.out / "final")


if __name__ == "__main__":
    main()

"""Package the en-small model into the harken package (src/harken/assets).

Takes the run's best model (lowest dev WER), stores its weights as float16, attaches the
decoding defaults (and the language model when one was built), writes
src/harken/assets/en-small.harken and records its SHA-256 in src/harken/assets/models.json,
which `harken.load_model()` checks at every load.

Usage: python recipes/en-small/package.py [--run exp/en-small/run] [--lm exp/en-small/lm/en-small.bin]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
from pathlib import Path

import torch

from harken.decoding.lm import read_lm_info
from harken.modelfile import ASSETS, REGISTRY_FILE, sha256_file
from harken.model import load_model

NAME = "en-small"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=Path("exp/en-small/run"))
    parser.add_argument("--model", type=Path, default=None, help="model folder (default: RUN/best)")
    parser.add_argument("--lm", type=Path, default=None, help="KenLM binary to ship beside it")
    parser.add_argument("--decoding", type=Path, default=None,
                        help="JSON of decoding defaults (alpha, beta, beam width) from `harken lm tune`")
    parser.add_argument("--average", type=int, default=0, metavar="N",
                        help="ship the average of the run's last N checkpoints (0: the model as is)")
    args = parser.parse_args()
    source = args.model or (args.run / "best" if (args.run / "best").exists() else args.run / "model")
    model = load_model(source)
    if args.average:
        from harken.training.checkpoints import average_checkpoints

        state, used = average_checkpoints(args.run, args.average)
        model.network.load_state_dict(state)
        model.config = dataclasses.replace(model.config, training={
            **model.config.training, "averaged_checkpoints": [p.name for p in used]})
        source = f"the average of {', '.join(p.name for p in used)}"
    decoding: dict = {}
    ASSETS.mkdir(parents=True, exist_ok=True)
    if args.lm is not None:
        lm_name = f"{NAME}{args.lm.suffix}"
        shutil.copyfile(args.lm, ASSETS / lm_name)
        decoding["lm"] = lm_name  # resolved against the model file's folder
        info = read_lm_info(args.lm)  # weights stored by `harken lm tune --write`
        decoding.update({k: v for k, v in (("lm_weight", info.lm_weight),
                                           ("word_score", info.word_score)) if v is not None})
        if args.decoding is not None:
            decoding.update(json.loads(args.decoding.read_text()))
    model.config = dataclasses.replace(model.config, decoding=decoding)
    training = {k: v for k, v in model.config.training.items() if k != "config"}
    target = ASSETS / f"{NAME}.harken"
    model.save(target, training=training, dtype=torch.float16)
    registry = json.loads(REGISTRY_FILE.read_text()) if REGISTRY_FILE.exists() else {}
    registry[NAME] = {"file": target.name, "sha256": sha256_file(target)}
    if args.lm is not None:
        registry[NAME]["lm"] = {"file": decoding["lm"], "sha256": sha256_file(ASSETS / decoding["lm"])}
    REGISTRY_FILE.write_text(json.dumps(registry, indent=2) + "\n")
    print(f"{target}: {target.stat().st_size / 1e6:.1f} MB from {source}")


if __name__ == "__main__":
    main()

"""Score every checkpoint of a run on a dev set (greedy, and with an LM) and keep the best.

Writes RUN/pick.json (one record per checkpoint: step, greedy WER/CER, WER/CER with the LM) and
RUN/picked (the checkpoint with the lowest WER with the LM, or greedy with --by greedy, as a
harken model). Checkpoints hold
network weights only; the model around them (tokenizer, feature statistics) is the run's
initial model, which fine-tuning keeps.

Usage: python recipes/en-small/pick.py RUN --dev DEV.jsonl [--lm LM.bin] [--init MODEL]
       [--every N] [--limit N] [--average K]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from harken.decoding import GREEDY
from harken.training.evaluate import evaluate_manifests
from harken.model import load_model
from harken.training.loop import CHECKPOINT_DIR, checkpoint_problem


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--dev", required=True)
    parser.add_argument("--lm", default=None)
    parser.add_argument("--init", default="src/harken/assets/en-small.harken")
    parser.add_argument("--every", type=int, default=1, help="score every Nth checkpoint")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--steps", type=int, nargs="*", default=None, help="only these steps")
    parser.add_argument("--from-step", type=int, default=0, help="only checkpoints from this step")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--by", choices=("lm", "greedy"), default="lm",
                        help="pick by WER with the LM (default) or greedy (when the LM's text "
                        "holds the dev transcripts)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(args.init)
    lm_options = model.decode_options(lm=args.lm) if args.lm else model.decode_options()
    root = args.run / CHECKPOINT_DIR
    found = sorted((p for p in root.glob("step-*") if checkpoint_problem(p) is None),
                   key=lambda p: int(p.name.split("-")[1]))
    if args.steps:
        found = [p for p in found if int(p.name.split("-")[1]) in args.steps]
    found = [p for p in found if int(p.name.split("-")[1]) >= args.from_step]
    found = found[:: -args.every][::-1]  # the newest always scored
    records_path = args.run / "pick.json"
    records = {r["checkpoint"]: r for r in json.loads(records_path.read_text())} \
        if records_path.exists() else {}
    initial = {k: v.clone() for k, v in model.network.state_dict().items()}
    for path in [None, *found]:
        name = "initial" if path is None else path.name
        if name in records:
            continue
        state = initial if path is None else load_file(str(path / "model.safetensors"))
        model.network.load_state_dict(state)
        greedy = evaluate_manifests(model, [args.dev], GREEDY, limit=args.limit)
        with_lm = evaluate_manifests(model, [args.dev], lm_options, limit=args.limit)
        records[name] = {"checkpoint": name, "greedy_wer": greedy.wer, "greedy_cer": greedy.cer,
                         "lm_wer": with_lm.wer, "lm_cer": with_lm.cer}
        print(json.dumps(records[name]), flush=True)
        records_path.write_text(json.dumps(list(records.values()), indent=1))
    best = min((r for r in records.values() if r["checkpoint"] != "initial"),
               key=lambda r: (r["lm_wer"], r["greedy_wer"]) if args.by == "lm"
               else (r["greedy_wer"], r["lm_wer"]))
    model.network.load_state_dict(load_file(str(root / best["checkpoint"] / "model.safetensors")))
    model.config = dataclasses.replace(model.config, training={
        **model.config.training, "picked_checkpoint": best["checkpoint"], "picked_on": args.dev})
    model.save(args.run / "picked")
    print(f"picked {best['checkpoint']}: dev WER {100 * best['lm_wer']:.1f}% with the LM, "
          f"{100 * best['greedy_wer']:.1f}% greedy (initial: "
          f"{100 * records['initial']['lm_wer']:.1f}% / {100 * records['initial']['greedy_wer']:.1f}%)")


if __name__ == "__main__":
    main()

"""`harken import nemo|hf`: converting other toolkits' models."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(sub: Any) -> None:
    """Add `harken import nemo|hf` to the CLI's subcommands."""
    p = sub.add_parser("import", help="convert NeMo or Hugging Face CTC models to harken models",
                       description="Convert a pretrained CTC model into a harken model folder "
                                   "(or a single .harken file when OUT ends in .harken).")
    isub = p.add_subparsers(title="sources", metavar="SOURCE")
    n = isub.add_parser("nemo", help="a NeMo .nemo archive (Jasper, QuartzNet, Citrinet, "
                                     "Conformer CTC)")
    n.add_argument("source", type=Path, help=".nemo file")
    n.add_argument("out", type=Path, help="output model folder or .harken file")
    n.set_defaults(func=_run_import, importer="nemo")
    h = isub.add_parser("hf", help="a Hugging Face Wav2Vec2ForCTC / HubertForCTC folder")
    h.add_argument("source", type=Path, help="folder with config.json, weights, vocab.json")
    h.add_argument("out", type=Path, help="output model folder or .harken file")
    h.add_argument("--keep-case", action="store_true",
                   help="keep the vocabulary's letter case (default: lowercase letters, as "
                        "harken's text normaliser and language models expect)")
    h.set_defaults(func=_run_import, importer="hf")


def _run_import(args: argparse.Namespace) -> int:
    # imported when the command runs: it loads torch, `harken --help` does not
    from harken.models.registry import count_parameters

    if args.importer == "nemo":
        # imported when the command runs: it loads torch, `harken --help` does not
        from harken.interop.import_nemo import import_nemo

        model = import_nemo(args.source, args.out)
    else:
        # imported when the command runs: it loads torch, `harken --help` does not
        from harken.interop.import_hf import import_hf

        model = import_hf(args.source, args.out, lowercase=not args.keep_case)
    print(f"{args.out}: {model.config.architecture}, "
          f"{count_parameters(model.network) / 1e6:.1f}M parameters, "
          f"{model.tokenizer.vocab_size} tokens (blank included)")
    return 0

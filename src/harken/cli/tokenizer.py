"""`harken tokenizer train`: SentencePiece tokenizers."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any
from harken.text import read_texts, train_sentencepiece



def register(sub: Any) -> None:
    p = sub.add_parser("tokenizer", help="tokenizer tools")
    tsub = p.add_subparsers(title="tokenizer commands", metavar="COMMAND")
    t = tsub.add_parser("train", help="train a SentencePiece tokenizer on text files or manifests")
    t.add_argument("sources", nargs="+", help="text files (one sentence a line, .gz ok) or JSONL manifests")
    t.add_argument("--vocab-size", type=int, default=128)
    t.add_argument("--model-type", choices=("unigram", "bpe"), default="unigram")
    t.add_argument("--language", default="en",
                   help="transcript normaliser: en, or any code for the default one (es, ru, ...)")
    t.add_argument("--out", type=Path, required=True, help="output tokenizer.model")
    t.set_defaults(func=_run_tokenizer_train)


def _run_tokenizer_train(args: argparse.Namespace) -> int:
    texts = (t for s in args.sources for t in read_texts(s))
    tokenizer = train_sentencepiece(texts, args.vocab_size, model_type=args.model_type,
                                    language=args.language)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(tokenizer.serialized())
    print(f"{args.out}: {tokenizer.vocab_size} tokens (blank included)")
    return 0

"""`harken lm build|tune`: n-gram language models."""

from __future__ import annotations

import sys
from typing import Any

from harken.decoding.lm import ESTIMATORS, KENLM_BIN_ENV, UNITS, build_lm, info_path, read_lm_info, write_lm_info
from harken.errors import ConfigError
from harken.model import load_model
from harken.training.lm_tune import LM_WEIGHTS, WORD_SCORES, tune_lm


def register(subparsers: Any) -> None:
    """Add `harken lm build|tune` to the `harken` command's subparsers."""
    lm = subparsers.add_parser("lm", help="n-gram language models: build, tune")
    sub = lm.add_subparsers(dest="lm_command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("build", help="build an n-gram LM (ARPA, KenLM binary) from text",
                       description="Normalise text as transcripts are normalised and estimate "
                                   "a modified Kneser-Ney LM (KenLM's lmplz when found in "
                                   f"${KENLM_BIN_ENV} or on PATH, else the built-in "
                                   "estimator).")
    p.add_argument("texts", nargs="+", help="text files (one sentence a line, .gz too) or "
                                            "manifests")
    p.add_argument("--order", type=int, default=4, help="n-gram order (default 4)")
    p.add_argument("--out", required=True, help="output name: writes OUT.arpa, OUT.bin "
                                                "(with build_binary) and OUT.lm.json")
    p.add_argument("--unit", choices=UNITS, default="word",
                   help="word (lexicon decoding), char or token (lexicon-free decoding)")
    p.add_argument("--model", "-m", help="model whose tokenizer splits text (--unit token)")
    p.add_argument("--prune", type=int, nargs="+", metavar="COUNT",
                   help="drop n-grams seen at most COUNT times, one per order, e.g. 0 0 1")
    p.add_argument("--vocab-size", type=int, help="keep only the most frequent words")
    p.add_argument("--no-normalize", action="store_true", help="the text is normalised already")
    p.add_argument("--language", default="en", help="normaliser language (default en)")
    p.add_argument("--estimator", choices=ESTIMATORS, default="auto")
    p.set_defaults(func=_run_build)

    p = sub.add_parser("tune", help="choose lm_weight/word_score on a dev manifest",
                       description="Decode a dev set with a grid of LM weights and word scores "
                                   "(the acoustic model runs once) and print the WER of each.")
    p.add_argument("manifests", nargs="+", help="dev manifests (JSONL, CSV)")
    p.add_argument("--model", "-m", default=None, help="model folder, .harken file or name")
    p.add_argument("--device", default="cpu")
    p.add_argument("--lm", required=True, help="the LM (ARPA or KenLM binary)")
    p.add_argument("--lm-weights", type=float, nargs="+", metavar="ALPHA")
    p.add_argument("--word-scores", type=float, nargs="+", metavar="BETA")
    p.add_argument("--beam-widths", type=int, nargs="+", default=[32], metavar="WIDTH")
    p.add_argument("--limit", type=int, help="use only the first N utterances")
    p.add_argument("--workers", type=int, default=1,
                   help="decoding processes (default 1; 0: one per core)")
    p.add_argument("--write", action="store_true",
                   help="store the best values with the LM: decoding's new defaults")
    p.set_defaults(func=_run_tune)


def _run_build(args: Any) -> int:
    import time

    tokenizer = None
    if args.unit == "token":
        if not args.model:
            raise ConfigError("--unit token needs --model (its tokenizer splits the text)")

        tokenizer = load_model(args.model).tokenizer
    started = time.perf_counter()
    try:
        files = build_lm(args.texts, args.order, args.out, unit=args.unit, tokenizer=tokenizer,
                         prune=args.prune, vocab_size=args.vocab_size,
                         normalize=not args.no_normalize, language=args.language,
                         estimator=args.estimator)
    except (ValueError, FileNotFoundError) as exc:
        raise ConfigError(f"lm build: {exc}") from exc
    info = read_lm_info(files.arpa)
    counts = ", ".join(f"{info.details[k]:,} {k[-1]}-grams" for k in sorted(info.details)
                       if k.startswith("ngrams_"))
    print(f"{info.details['sentences']:,} sentences, {info.details['tokens']:,} {args.unit}s -> "
          f"{counts} ({info.details['estimator']}, {time.perf_counter() - started:.1f} s)")
    for path in (files.arpa, files.binary, files.info):
        if path is not None:
            print(f"wrote {path}")
    if files.binary is None:
        print("no KenLM binary (build_binary not found): decoding will load the ARPA file, "
              "slower to start; scripts/build_kenlm.sh builds the KenLM tools")
    return 0


def _run_tune(args: Any) -> int:
    model = load_model(args.model, device=args.device)
    result = tune_lm(model, args.manifests, args.lm, lm_weights=args.lm_weights or LM_WEIGHTS,
                     word_scores=args.word_scores or WORD_SCORES, beam_widths=args.beam_widths,
                     limit=args.limit, workers=args.workers or None)
    print(result.table())
    best = result.best
    print(f"\n{result.utterances} utterances: greedy WER {100 * result.greedy_wer:.2f}%, best "
          f"{100 * best.wer:.2f}% with lm_weight {best.lm_weight} word_score {best.word_score} "
          f"beam {best.beam_width}")
    if best.wer > result.greedy_wer:  # the LM makes this model worse on this dev set
        print(f"warning: every setting tried is worse than greedy decoding without the LM "
              f"(best {100 * best.wer:.2f}% vs greedy {100 * result.greedy_wer:.2f}%): the LM "
              "does not suit this model or dev set (another LM, or wider grids); decode with "
              "--no-lm", file=sys.stderr)
        if args.write:
            print(f"harken: not writing {info_path(args.lm)}: these weights would make decoding "
                  "worse than no LM", file=sys.stderr)
            return 1
        return 0
    if args.write:
        path = write_lm_info(args.lm, lm_weight=best.lm_weight, word_score=best.word_score,
                             details={"tuned": {"manifests": [str(m) for m in args.manifests],
                                                "wer": best.wer, "greedy_wer": result.greedy_wer,
                                                "beam_width": best.beam_width,
                                                "utterances": result.utterances}})
        print(f"wrote {path}: decoding uses these values by default")
    return 0

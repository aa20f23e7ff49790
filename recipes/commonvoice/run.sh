#!/usr/bin/env bash
# Common Voice, any language -> a Conformer-CTC model, an n-gram LM from the training sentences
# (plus any text you add), WER/CER on the official test split. Run from the repository root:
#   CV=data/cv-corpus-17.0-2024-03-15 CV_LANG=es bash recipes/commonvoice/run.sh STAGE [train options]
#   STAGE: prepare | train | lm | tune | evaluate | all
# Settings (environment):
#   CV         the extracted Common Voice release, holding one folder per language
#   CV_LANG    the language folder and code (es, ru, de, zh-CN, ...); LANG is left to the locale
#   TOKENIZER  char (default: the alphabet of the training text) or sentencepiece (for languages
#              with thousands of characters, e.g. zh-CN, ja: also --set tokenizer.vocab_size=5000
#              --set tokenizer.character_coverage=0.9995)
#   LM_TEXT    extra text for the LM (one sentence a line, .gz too), optional
#   EXP        output folder (default exp/commonvoice/$CV_LANG)
#   NGPU       GPUs for torchrun (default: all that nvidia-smi lists)
#   HARKEN     how to run harken (default: harken)
set -euo pipefail
here=$(dirname "$0")
CV=${CV:-data/cv-corpus}
CV_LANG=${CV_LANG:?set CV_LANG to a Common Voice language code, e.g. CV_LANG=es}
TOKENIZER=${TOKENIZER:-char}
LM_TEXT=${LM_TEXT:-}
EXP=${EXP:-exp/commonvoice/$CV_LANG}
NGPU=${NGPU:-$(nvidia-smi -L 2>/dev/null | wc -l || echo 0)}
HARKEN=${HARKEN:-harken}
DATA=$EXP/data
RUN=$EXP/conformer-ctc
LM=$EXP/lm/3gram
stage=${1:?usage: run.sh prepare|train|lm|tune|evaluate|all [train options]}
shift

best_model() { if [ -d "$RUN/best" ]; then echo "$RUN/best"; else echo "$RUN/model"; fi; }
lm_file() { if [ -f "$LM.bin" ]; then echo "$LM.bin"; else echo "$LM.arpa"; fi; }

run_stage() {
  local name=$1
  shift
  case "$name" in
    prepare)    # train/dev/test from the release's TSVs, client_id as the speaker; MP3 read in place
      $HARKEN data prepare commonvoice "$CV/$CV_LANG" --out "$DATA" ;;
    train)      # resumes from the latest checkpoint when there is one
      local resume=() launch=($HARKEN)
      [ -f "$RUN/checkpoints/latest" ] && resume=(--resume)
      [ "$NGPU" -gt 1 ] && launch=(torchrun --standalone --nproc-per-node "$NGPU" -m harken.cli)
      "${launch[@]}" train "$here/conformer-ctc.toml" "${resume[@]}" \
        --set "data.train=[{ manifest = \"$DATA/train.jsonl\" }]" \
        --set "data.dev=[\"$DATA/dev.jsonl\"]" --set "data.language=\"$CV_LANG\"" \
        --set "tokenizer.kind=\"$TOKENIZER\"" --set "run.out_dir=\"$RUN\"" "$@" ;;
    lm)         # 3-gram from the training sentences (+ LM_TEXT), normalised as the transcripts
      mkdir -p "$(dirname "$LM")"
      $HARKEN lm build "$DATA/train.jsonl" ${LM_TEXT:+"$LM_TEXT"} --order 3 --language "$CV_LANG" \
        --out "$LM" ;;
    tune)       # LM weight and word score on the dev set, stored with the LM
      $HARKEN lm tune "$DATA/dev.jsonl" --model "$(best_model)" --lm "$(lm_file)" --write ;;
    evaluate)   # WER and CER on the official test split, greedy and (when built) with the LM
      local lm=()
      [ -f "$LM.arpa" ] && lm=(--lm "$(lm_file)")
      {
        echo "test greedy: $($HARKEN evaluate "$DATA/test.jsonl" --model "$(best_model)" --greedy --json)"
        [ ${#lm[@]} -eq 0 ] || echo "test with LM: $($HARKEN evaluate "$DATA/test.jsonl" --model "$(best_model)" "${lm[@]}" --json)"
      } | tee "$RUN/results.txt" ;;
    *) echo "unknown stage $name" >&2; exit 2 ;;
  esac
}

if [ "$stage" = all ]; then
  for s in prepare train lm tune evaluate; do run_stage "$s" "$@"; done
else
  run_stage "$stage" "$@"
fi

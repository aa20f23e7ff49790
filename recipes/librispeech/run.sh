#!/usr/bin/env bash
# LibriSpeech 960 h -> a Conformer-CTC or Citrinet model, a 4-gram LM, WER on test-clean/other.
# One command per stage, run from the repository root; each can be re-run after an interruption:
#   bash recipes/librispeech/run.sh STAGE [harken train options, e.g. --set optim.lr=1e-3]
#   STAGE: prepare | tokenizer | train | lm | tune | evaluate | all
# Settings (environment):
#   LIBRISPEECH  the extracted corpus, holding train-clean-100/ ... test-other/ (openslr.org/12)
#   LM_TEXT      librispeech-lm-norm.txt.gz, the 800 M-word LM corpus (openslr.org/11)
#   MODEL        conformer-ctc (default) or citrinet: the config recipes/librispeech/$MODEL.toml
#   EXP          output folder (default exp/librispeech)
#   NGPU         GPUs for torchrun (default: all that nvidia-smi lists; 0 or 1: no torchrun)
#   VOCAB        SentencePiece tokens (default 256)
#   HARKEN       how to run harken (default: harken)
set -euo pipefail
here=$(dirname "$0")
LIBRISPEECH=${LIBRISPEECH:-data/LibriSpeech}
LM_TEXT=${LM_TEXT:-data/librispeech-lm-norm.txt.gz}
MODEL=${MODEL:-conformer-ctc}
EXP=${EXP:-exp/librispeech}
NGPU=${NGPU:-$(nvidia-smi -L 2>/dev/null | wc -l || echo 0)}
VOCAB=${VOCAB:-256}
HARKEN=${HARKEN:-harken}
DATA=$EXP/data
RUN=$EXP/$MODEL
LM=$EXP/lm/4gram
stage=${1:?usage: run.sh prepare|tokenizer|train|lm|tune|evaluate|all [train options]}
shift

# toml_list ITEM FILES...: a TOML list (for --set) of ITEM (a printf format) per existing file.
toml_list() {
  local item=$1 list="" f
  shift
  for f in "$@"; do [ -f "$f" ] && list+="${list:+, }$(printf "$item" "$f")"; done
  [ -n "$list" ] || { echo "no manifests $* (run the prepare stage first)" >&2; return 1; }
  echo "[$list]"
}
best_model() { if [ -d "$RUN/best" ]; then echo "$RUN/best"; else echo "$RUN/model"; fi; }
lm_file() { if [ -f "$LM.bin" ]; then echo "$LM.bin"; else echo "$LM.arpa"; fi; }

run_stage() {
  local name=$1
  shift
  case "$name" in
    prepare)    # one manifest per official split; FLAC is read in place
      $HARKEN data prepare librispeech "$LIBRISPEECH" --out "$DATA" ;;
    tokenizer)  # SentencePiece on the training transcripts; train reuses $RUN/tokenizer.model
      mkdir -p "$RUN"
      [ -f "$RUN/tokenizer.model" ] || $HARKEN tokenizer train "$DATA"/train-*.jsonl \
        --vocab-size "$VOCAB" --out "$RUN/tokenizer.model" ;;
    train)      # resumes from the latest checkpoint when there is one
      local resume=() launch=($HARKEN) train dev
      train=$(toml_list '{ manifest = "%s" }' "$DATA"/train-*.jsonl)
      dev=$(toml_list '"%s"' "$DATA"/dev-*.jsonl)
      [ -f "$RUN/checkpoints/latest" ] && resume=(--resume)
      if [ "$NGPU" -gt 1 ]; then
        launch=(torchrun --standalone --nproc-per-node "$NGPU" -m harken.cli)
      fi
      "${launch[@]}" train "$here/$MODEL.toml" "${resume[@]}" \
        --set "data.train=$train" --set "data.dev=$dev" \
        --set "run.out_dir=\"$RUN\"" --set "tokenizer.vocab_size=$VOCAB" "$@" ;;
    lm)         # 4-gram word LM from the LibriSpeech LM corpus (pruned singletons of orders 3-4)
      mkdir -p "$(dirname "$LM")"
      $HARKEN lm build "$LM_TEXT" --order 4 --prune 0 0 1 1 --out "$LM" ;;
    tune)       # LM weight and word score on the dev sets, stored with the LM
      $HARKEN lm tune "$DATA"/dev-*.jsonl --model "$(best_model)" --lm "$(lm_file)" --write ;;
    evaluate)   # WER on every test split, greedy and (when built) with the LM
      local f lm=()
      [ -f "$LM.arpa" ] && lm=(--lm "$(lm_file)")
      for f in "$DATA"/test-*.jsonl; do
        echo "$(basename "$f" .jsonl) greedy: $($HARKEN evaluate "$f" --model "$(best_model)" --greedy --json)"
        [ ${#lm[@]} -eq 0 ] || echo "$(basename "$f" .jsonl) with LM: $($HARKEN evaluate "$f" --model "$(best_model)" "${lm[@]}" --json)"
      done | tee "$RUN/results.txt" ;;
    *) echo "unknown stage $name" >&2; exit 2 ;;
  esac
}

if [ "$stage" = all ]; then
  for s in prepare tokenizer train lm tune evaluate; do run_stage "$s" "$@"; done
else
  run_stage "$stage" "$@"
fi

#!/usr/bin/env bash
# BM25 top-100 (the UPR/Q-PEFT papers' depth) reranked by UPR, UPR-instruct and the three trained modules
# (Q-PEFT-A, Q-PEFT-R, prompt tuning), with the same `pyserini-qpeft` commands as `repro`, at a training budget
# that needs an accelerator (or many CPU hours). Steps are skipped when their output exists, so it resumes.
#
#   DEVICE=cuda scripts/rerank_matrix.sh upr upr-instruct attn retr prompt     # then: evaluate / repro --profile gpu
#
# Inputs: runs/bm25-flat.beir-$DATASET-{train,test}.trec (`pyserini-qpeft repro beir --condition bm25` and the
# bm25-train artifact make them). Env: DATASET (scifact), DEVICE (cuda), DTYPE (fp32), DEPTH (100), PQ (the CLI).
set -euo pipefail
PQ=${PQ:-pyserini-qpeft}
DATASET=${DATASET:-scifact}
DEVICE=${DEVICE:-cuda}
DTYPE=${DTYPE:-fp32}
DEPTH=${DEPTH:-100}
SEED=${SEED:-0}
BUDGET=${BUDGET:-"--epochs 4 --batch-size 8 --lr 1e-3 --margin 0.2 --dev-size 80 --dev-depth 20"}
TEST=runs/bm25-flat.beir-$DATASET-test.trec
TRAIN=runs/bm25-flat.beir-$DATASET-train.trec
LM="--device $DEVICE --dtype $DTYPE"
TOPICS=beir-v1.0.0-$DATASET-test

timed() {  # timed NAME DONE_PATH CMD...: run CMD unless DONE_PATH exists, print its wall time
  local name=$1 done=$2; shift 2
  if [ -e "$done" ]; then echo "# [$name] reuse $done"; return; fi
  echo "$PQ $*"
  local t0=$SECONDS
  $PQ "$@"
  echo "# [$name] done in $((SECONDS - t0)) s"
}

rerank() {  # rerank NAME RERANKER [CHECKPOINT]
  local out=runs/bm25-flat+$1.beir-$DATASET-test-d$DEPTH.$DEVICE.trec
  local ckpt=()
  [ -n "${3:-}" ] && ckpt=(--reranker-checkpoint "$3") && out=${out%.trec}-s$SEED.trec
  timed "$1" "$out" rerank --run "$TEST" --topics "$TOPICS" --corpus "$DATASET" --reranker "$2" "${ckpt[@]}" \
    --rerank-depth "$DEPTH" --output "$out" $LM --quiet
}

train() {  # train VARIANT
  local out=checkpoints/$1.beir-$DATASET.$DEVICE-s$SEED
  timed "train-$1" "$out/best/qpeft_config.json" train qpeft --variant "$1" --dataset "$DATASET" --split train \
    --negatives "$TRAIN" --output "$out" $BUDGET --seed "$SEED" $LM --quiet
}

for step in "$@"; do
  case $step in
    upr|upr-instruct) rerank "$step" "$step" ;;
    attn|retr) train "$step"; rerank "qpeft-$step" "qpeft-$step" "checkpoints/$step.beir-$DATASET.$DEVICE-s$SEED/best" ;;
    prompt) train prompt; rerank prompt-tuning prompt-tuning "checkpoints/prompt.beir-$DATASET.$DEVICE-s$SEED/best" ;;
    *) echo "unknown step $step (upr, upr-instruct, attn, retr, prompt)" >&2; exit 2 ;;
  esac
done

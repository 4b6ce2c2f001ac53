#!/bin/bash
# Dev-only check of `make demo`'s (profile demo-bf16) Q-PEFT-R training on 400 instead of 200 training queries (one
# epoch, the same recipe otherwise), 2026-12-05, 2-core AMD EPYC with avx512_bf16 (docs/results.md, "What each change
# measured"). Run from a checkout where docs/experiments/demo-bf16-schedule.sh ran (it needs the three 200-query
# constant-rate checkpoints and runs/bm25-flat.beir-scifact-train.trec); ~20 + ~12 minutes on 2 cores.
set -euo pipefail
source "$(dirname "$0")/heldout-eval.sh"
export PYSERINI_QPEFT_DATA=${PYSERINI_QPEFT_DATA:-../shared/data/beir}
Q=${Q:-.venv/bin/pyserini-qpeft}
PY=${PY:-.venv/bin/python}
DEMO="--variant retr --dataset scifact --split train --negatives runs/bm25-flat.beir-scifact-train.trec --epochs 1
  --batch-size 4 --margin 1.0 --pointwise-weight 0.1 --dev-size 40 --dev-depth 10 --dev-seed 0
  --seed 0 --dtype bf16 --max-passage-tokens 256 --token-filter content --query-proj --lr 1e-2"
L=checkpoints/qpeft-retr.beir-scifact-demo-bf16-lrsched
W=checkpoints/qpeft-retr.beir-scifact-demo-bf16-q400
# 1. 400 training queries, seeds 0-2
printf 'seed: [0, 1, 2]\n' > /tmp/demo-bf16-q400.yaml
$Q train qpeft $DEMO --max-train-queries 400 --output $W --sweep /tmp/demo-bf16-q400.yaml
# 2. a held-out set no checkpoint compared here trained on: the training queries that are neither among the 40 dev
#    queries, nor among the 200 of seeds 0-2, nor among the 400 of seeds 0-2 (the 400 of a seed contain its 200);
#    93 of the 809 remain
heldout_run runs/bm25-flat.beir-scifact-train-heldout-q400.trec 40 10 400 all
# 3. UPR, the three 200-query checkpoints and the three 400-query ones on those queries' BM25 top-20, in one pass
B=runs/bm25-flat.beir-scifact-train-heldout-q400.trec
args=()
for s in 0 1 2; do args+=(--also-rerank qpeft-retr "$L/sweep/0$s-seed=${s}_lr-schedule=constant/best" "runs/heldoutq400-q200-$s.trec"); done
for s in 0 1 2; do args+=(--also-rerank qpeft-retr "$W/sweep/0$s-seed=$s/best" "runs/heldoutq400-q400-$s.trec"); done
$Q rerank --run $B --topics beir-v1.0.0-scifact-train --corpus scifact --reranker upr --rerank-depth 20 \
  --output runs/heldoutq400-upr.trec --dtype bf16 --max-passage-tokens 256 "${args[@]}"
# 4. each alone and interpolated with BM25 at weight 0.5 (no selection), against the training qrels
heldout_eval "$B" 'runs/heldoutq400-*.trec'

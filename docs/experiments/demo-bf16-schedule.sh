#!/bin/bash
# The dev-only check of `make demo`'s (profile demo-bf16) learning-rate schedule and of --eval-every, 2026-12-05,
# 2-core AMD EPYC with avx512_bf16 (docs/results.md, "What each change measured"). Run from a checkout where `make demo` ran
# (it needs runs/bm25-flat.beir-scifact-train.trec); ~27 + ~14 + ~10 minutes on 2 cores.
set -euo pipefail
source "$(dirname "$0")/heldout-eval.sh"
export PYSERINI_QPEFT_DATA=${PYSERINI_QPEFT_DATA:-../shared/data/beir}
Q=.venv/bin/pyserini-qpeft
DEMO="--variant retr --dataset scifact --split train --negatives runs/bm25-flat.beir-scifact-train.trec --epochs 1
  --max-train-queries 200 --batch-size 4 --margin 1.0 --pointwise-weight 0.1 --dev-size 40 --dev-depth 10 --dev-seed 0
  --seed 0 --dtype bf16 --max-passage-tokens 256 --token-filter content --query-proj --lr 1e-2"
L=checkpoints/qpeft-retr.beir-scifact-demo-bf16-lrsched
E=checkpoints/qpeft-retr.beir-scifact-demo-bf16-evalevery
# 1. constant vs linear, seeds 0-2 (in-training dev on the demo's 40 dev queries)
$Q train qpeft $DEMO --output $L --sweep docs/sweeps/demo-bf16-lr-schedule.yaml
# 2. linear with a dev evaluation every 10 steps (the training is the same; only the selection sees more points)
printf 'lr-schedule: [linear]\neval-every: [10]\nseed: [0, 1, 2]\n' > /tmp/demo-bf16-eval-every.yaml
$Q train qpeft $DEMO --output $E --sweep /tmp/demo-bf16-eval-every.yaml
# 3. a second held-out set: 80 training queries that are neither among the 40 dev queries nor among any seed's 200
#    training queries (ordered by sha256("heldout:<qid>")), their BM25 top-20
heldout_run runs/bm25-flat.beir-scifact-train-heldout80.trec 40 10 200 80
# 4. UPR and every checkpoint (the six end-of-run ones, seed 1's step-30 pick) on those queries in one pass
args=()
for d in $L/sweep/0*; do args+=(--also-rerank qpeft-retr "$d/best" "runs/heldout80-lrsched-$(basename "$d" | cut -c1-2).trec"); done
args+=(--also-rerank qpeft-retr "$E/sweep/01-seed=1_lr-schedule=linear_eval-every=10/best" runs/heldout80-ee-01-step30.trec)
$Q rerank --run runs/bm25-flat.beir-scifact-train-heldout80.trec --topics beir-v1.0.0-scifact-train --corpus scifact \
  --reranker upr --rerank-depth 20 --output runs/heldout80-upr.trec --dtype bf16 --max-passage-tokens 256 "${args[@]}"
# 5. each alone and interpolated with BM25 at weight 0.5 (no selection), against the training qrels
B=runs/bm25-flat.beir-scifact-train-heldout80.trec
heldout_eval "$B" 'runs/heldout80-*.trec'

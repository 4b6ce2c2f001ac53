#!/bin/bash
# Query-likelihood with IDF-weighted query tokens instead of their plain mean (beyond the papers; token-weights.py
# says how). A dev-only measurement on the fp32 demo's footing (SmolLM2, fp32, 64-token passages, BM25 top-20) over
# both held-out sets of 80 SciFact training queries (demo-fp32-retr.sh's and demo-fp32-first-stage.sh's; run after
# them in the same checkout, which holds their BM25 runs), each alone and interpolated with BM25 at 0.5 (no
# selection), then IDF against the mean paired query by query. The rule, fixed before the first run: keep IDF weighting
# only if it beats the mean on both sets alone and interpolated, by >= 0.005 interpolated on average.
# 2-core Intel Xeon with avx512_bf16 but no AMX, 2026-12-06.
source "$(dirname "$0")/demo-fp32-common.sh"
B2=runs/bm25-flat.beir-scifact-train-heldout80-q200-demofp32.trec
[ -f runs/tw-set2-idf.trec ] || PYTHONPATH=${PYTHONPATH:-.} ${PY:-.venv/bin/python} \
  "$(dirname "$0")/token-weights.py" $B runs/tw-set1 $B2 runs/tw-set2
for set in 1 2; do
  base=$B; [ $set = 2 ] && base=$B2
  echo "set $set"
  heldout_eval $base "runs/tw-set$set-*.trec"
  for suffix in .trec .interp.trec; do
    $Q evaluate --run runs/tw-set$set-idf$suffix --compare-to runs/tw-set$set-mean$suffix \
      --qrels beir-v1.0.0-scifact-train --only-run-queries -m ndcg@10 | tail -1
  done
done

#!/bin/bash
# The dev-only check of `make demo`'s fp32 profile (`demo`: 64-token passages, 64 training queries, one epoch) with
# demo-bf16's trained reranker and recipe (Q-PEFT-R: content-token selection, trainable query side, lr 1e-2) instead
# of Q-PEFT-A at lr 1e-3, which the profile has trained since before that recipe was found. 2-core Intel Xeon with
# avx512_bf16 but no AMX (fp32), 2026-12-06 (docs/results.md, "What each change measured"). Run from a checkout where
# `make demo` ran (it needs runs/bm25-flat.beir-scifact-train.trec); ~35 minutes on 2 cores, nothing else on them.
#
# Rule, fixed before any run: `demo` switches to Q-PEFT-R only if, over seeds 0-2, its mean nDCG@10 on the held-out
# training queries below, interpolated with BM25 at weight 0.5 (the demo's headline row; no selection), is above
# Q-PEFT-A's, and its mean training time here is at most 1.15x Q-PEFT-A's (the AVX2 EPYC ran `demo` in 18:52 of its
# 20 minutes, so the profile cannot afford a slower training). No test query is touched.
source "$(dirname "$0")/demo-fp32-common.sh"
ATTN="--variant attn --lr 1e-3"
RETR="--variant retr --token-filter content --query-proj --lr 1e-2"
# 1. three seeds of each, one after the other (their wall times are the cost measure)
for seed in 0 1 2; do
  for v in attn retr; do
    flags=$ATTN; [ $v = retr ] && flags=$RETR
    train_demo $v $seed $flags
  done
done
# 2. held-out queries: 80 training queries that are neither among the 16 dev queries nor among any seed's 64 training
#    queries (ordered by sha256("heldout:<qid>")), their BM25 top-20
heldout_run $B 16 3 64 80
# 3. UPR and the six checkpoints on those queries in one pass (64-token passages, fp32, as the demo reranks)
args=()
for seed in 0 1 2; do
  for v in attn retr; do
    args+=(--also-rerank qpeft-$v checkpoints/qpeft-$v.beir-scifact-demofp32-s$seed/best runs/heldout80fp32-$v-s$seed.trec)
  done
done
timed_rerank runs/heldout80fp32-upr.trec "${args[@]}"
# 4. each alone and interpolated with BM25 at weight 0.5 (no selection), against the training qrels
heldout_eval $B 'runs/heldout80fp32-*.trec'

#!/bin/bash
# The held-out half of the fp32 demo's lr question (2026-12-08, AVX2 EPYC; the dev-only half is
# demo-fp32-lr-stability.sh, whose six checkpoints this reuses when present): at the demo's recipe (Q-PEFT-R,
# content-token selection, trainable query side, one epoch x 64 queries) lr 1e-2 collapsed on seed 2 after the hint
# tie-break fix, lr 3e-3 did not. This reranks demo-fp32-retr.sh's 80 held-out training queries (BM25 top-20,
# 64-token passages, fp32) with zero-shot UPR and the six checkpoints in one pass, then prints each alone and
# interpolated with BM25 at weight 0.5, and lr 3e-3 minus lr 1e-2 seed by seed and averaged over seeds.
#
# Rule, fixed before any run: `demo` (and only it) moves to lr 3e-3 if, over seeds 0-2, the mean interpolated
# nDCG@10 (the demo's headline row, weight 0.5, no selection) at 3e-3 is at least that at 1e-2. No test query is
# touched. Run from a checkout where `make demo` ran; ~25 minutes on 2 cores alone when the checkpoints exist (65
# minutes on 2026-12-08, sharing the cores with an audit).
source "$(dirname "$0")/demo-fp32-common.sh"
RETR="--variant retr --token-filter content --query-proj --no-select-interpolation"
args=()
for lr in 1e-2 3e-3; do
  for seed in 0 1 2; do
    ckpt=checkpoints/qpeft-retr-lr$lr.beir-scifact-demofp32-s$seed
    [ -f $ckpt/best/qpeft_config.json ] || train_demo retr-lr$lr $seed $RETR --lr $lr
    args+=(--also-rerank qpeft-retr $ckpt/best runs/heldout80lr-retr$lr-s$seed.trec)
  done
done
heldout_run $B 16 3 64 80
timed_rerank runs/heldout80lr-upr.trec "${args[@]}"
heldout_eval $B 'runs/heldout80lr-*.trec'
compare_seeds heldout80lr-retr3e-3 heldout80lr-retr1e-2

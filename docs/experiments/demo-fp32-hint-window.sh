#!/bin/bash
# The fp32 demo's Q-PEFT-R with its hint module reading more of each passage than the LM does (beyond the papers;
# dev only): `demo` cuts passages at 64 tokens, so the LM sees a SciFact abstract's title and background and never
# its findings. With `train qpeft --hint-passage-tokens 256` the content-token selection picks its 16 hint tokens
# from the first 256 tokens instead (SciFact's median abstract is ~200 words), while the LM's prompt and its cost per
# pair stay those of 64 tokens. 2-core AMD EPYC with AVX2 only (fp32), 2026-12-07 (docs/results.md, "What each change
# measured"). Run from a checkout where `make demo` ran (runs/bm25-flat.beir-scifact-train.trec); ~40 minutes on 2
# cores, nothing else on them.
#
# Rule, fixed before any run: `demo`'s Q-PEFT-R switches to --hint-passage-tokens 256 only if, over seeds 0-2, its
# mean nDCG@10 on the held-out training queries below, interpolated with BM25 at weight 0.5 (the demo's headline row;
# no selection), is at least 0.01 above both the control's (the demo's recipe, trained here) and interpolated
# zero-shot UPR's, its mean alone is not below the control's, and its mean training time is at most 1.15x the
# control's. No test query is touched.
source "$(dirname "$0")/demo-fp32-common.sh"
RETR="--variant retr --token-filter content --query-proj --lr 1e-2"
# 1. three seeds of each, one after the other (their wall times are the cost measure); the control is the demo's
#    Q-PEFT-R, as demo-fp32-retr.sh trained it
for seed in 0 1 2; do train_demo retr $seed $RETR; done
for seed in 0 1 2; do train_demo retrwide $seed $RETR --hint-passage-tokens 256; done
# 2. demo-fp32-retr.sh's 80 held-out training queries (none of them dev or in any seed's 64 training queries)
heldout_run $B 16 3 64 80
# 3. UPR and the six checkpoints in one pass (64-token prompts, fp32, as the demo reranks; the wide modules share
#    the LM's prefixes and read their own 256 passage tokens)
args=()
for seed in 0 1 2; do
  for v in retr retrwide; do
    args+=(--also-rerank qpeft-retr checkpoints/qpeft-$v.beir-scifact-demofp32-s$seed/best runs/heldout80hw-$v-s$seed.trec)
  done
done
timed_rerank runs/heldout80hw-upr.trec "${args[@]}"
# 4. each alone and interpolated with BM25 at weight 0.5 (no selection), then wide minus control seed by seed and
#    seed-averaged (paired randomization test)
heldout_eval $B 'runs/heldout80hw-*.trec'
compare_seeds heldout80hw-retrwide heldout80hw-retr

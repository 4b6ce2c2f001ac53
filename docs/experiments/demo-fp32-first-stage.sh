#!/bin/bash
# `train qpeft --first-stage-weight` (beyond the papers): does training Q-PEFT-R on the score it will be used with --
# the LM's fused with BM25's z-score -- raise the interpolated row? A dev-only check at the fp32 demo's footing (64-token
# passages, fp32, BM25 top-20, Q-PEFT-R with demo-bf16's module recipe) on 200 training queries for one epoch (50
# steps; the demo's 16 steps move the module too little to tell anything). 2-core Intel Xeon with avx512_bf16 but no
# AMX, 2026-12-06. Run from a checkout where `make demo` ran; ~40 minutes on 2 cores.
#
# Fixed before any run. Both arms use hinge margin 0.2 (at the recorded margin 1.0 every pair is inside the hinge, so
# a fixed offset could not change a gradient); the treatment adds --first-stage-weight 0.3 --first-stage-depth 20:
# interpolating z-scores at weight 0.5 ranks as LM + sigma * z(BM25), and sigma, the per-query spread of the LM scores
# over BM25's top-20, has median 0.30 on the demo's held-out UPR rerank. Rule: the option earns a full-scale trial
# (GPU) only if, over seeds 0-2, its mean nDCG@10 interpolated at 0.5 on the held-out queries below is at least 0.01
# above the control's and it is not below the control on any seed. Nothing in the package changes either way.
source "$(dirname "$0")/demo-fp32-common.sh"
RECIPE="--variant retr --token-filter content --query-proj --lr 1e-2 --max-train-queries 200 --margin 0.2"
# held-out: 80 training queries that are neither dev nor in any seed's 200 training queries, their BM25 top-20
B=runs/bm25-flat.beir-scifact-train-heldout80-q200-demofp32.trec
heldout_run $B 16 3 200 80
args=()
for seed in 0 1 2; do
  train_demo retr-m02 $seed $RECIPE
  train_demo retr-m02-fs03 $seed $RECIPE --first-stage-weight 0.3 --first-stage-depth 20
  for v in retr-m02 retr-m02-fs03; do
    args+=(--also-rerank qpeft-retr checkpoints/qpeft-$v.beir-scifact-demofp32-s$seed/best runs/heldout80q200-$v-s$seed.trec)
  done
done
timed_rerank runs/heldout80q200-upr.trec "${args[@]}"
heldout_eval $B 'runs/heldout80q200-*.trec'
# treatment minus control, seed by seed and seed-averaged (paired randomization test), alone and interpolated
compare_seeds heldout80q200-retr-m02-fs03 heldout80q200-retr-m02

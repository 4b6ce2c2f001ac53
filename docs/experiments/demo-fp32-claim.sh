#!/bin/bash
# Zero-shot UPR with the claim wording (`--prompt claim`: "... Please write a claim based on this passage." /
# "Claim: <query>") at the fp32 demo's footing (64-token passages, BM25 top-20, fp32): SciFact's queries are claims,
# not questions. Measured before at 128 tokens (profile full: better on dev, level on test); not at 64 tokens, where
# the LM sees less of the passage. Dev only, a measurement on held-out training queries (the two sets of
# demo-fp32-retr.sh and demo-fp32-first-stage.sh; with the question wording UPR scores 0.6423 / 0.7130 and
# 0.6344 / 0.7482 there, alone / interpolated at 0.5). 2-core AMD EPYC with AVX2 only (fp32), 2026-12-07. Run from a
# checkout where `make demo` ran; ~15 minutes on 2 cores.
#
# Rule, fixed before any run: the claim wording earns a trained check of the demo's Q-PEFT-R (a later session) only
# if its interpolated UPR is at least 0.01 above the question wording's on both sets and alone not below on either.
source "$(dirname "$0")/demo-fp32-common.sh"
B2=runs/bm25-flat.beir-scifact-train-heldout80-q200-demofp32.trec
heldout_run $B 16 3 64 80
heldout_run $B2 16 3 200 80
for set in 1 2; do
  base=$B; [ $set = 2 ] && base=$B2
  for wording in question claim; do
    start=$(date +%s)
    $Q rerank --run $base --topics beir-v1.0.0-scifact-train --corpus scifact --reranker upr --rerank-depth 20 \
      --output runs/heldout80claim-set$set-$wording.trec --dtype fp32 --max-passage-tokens 64 --prompt $wording -q
    echo "set $set, $wording: $(( $(date +%s) - start )) s"
  done
  heldout_eval $base "runs/heldout80claim-set$set-*.trec"
  $Q evaluate --run runs/heldout80claim-set$set-claim.trec --compare-to runs/heldout80claim-set$set-question.trec \
    --qrels beir-v1.0.0-scifact-train --only-run-queries -m ndcg@10 | tail -1
  $Q evaluate --run runs/heldout80claim-set$set-claim.interp.trec \
    --compare-to runs/heldout80claim-set$set-question.interp.trec \
    --qrels beir-v1.0.0-scifact-train --only-run-queries -m ndcg@10 | tail -1
done

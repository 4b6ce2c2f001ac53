#!/bin/bash
# Could the fp32 demo's interpolated rows gain from a longer passage, a shallower depth or a seed ensemble at the same
# cost? A dev-only measurement on demo-fp32-retr.sh's 80 held-out training queries (nothing is selected by it): zero-shot
# UPR with 128-token passages instead of 64 (2x the cost per pair), every run also cut to BM25's top-10 (half the
# pairs: 128 tokens at depth 10 costs what 64 tokens at depth 20 costs), and the three seeds of each trained demo
# variant averaged as one reranker (`fuse` with three reranks; 3x the training, ~1.4x one rerank with --also-rerank).
# 2-core Intel Xeon with avx512_bf16 but no AMX, fp32, 2026-12-06. Run after demo-fp32-retr.sh and demo-fp32-prompt.sh
# in the same checkout (it reuses their held-out run and reranks); ~5 minutes on 2 cores.
source "$(dirname "$0")/demo-fp32-common.sh"
# 1. zero-shot UPR with 128-token passages (the only new LM work)
[ -f runs/heldout80fp32-upr-p128.trec ] || rerank_heldout runs/heldout80fp32-upr-p128.trec --max-passage-tokens 128
# 2. each run alone / interpolated at 0.5 at depth 20 and at depth 10 (the rerank cut to BM25's top-10: the scores of
#    a pair do not depend on the other pairs, so this is the depth-10 rerank)
awk '$4 <= 10' $B > runs/heldout80fp32-bm25-d10.trec
echo "BM25: $(ndcg $B)"
for f in runs/heldout80fp32-upr.trec runs/heldout80fp32-upr-p128.trec runs/heldout80fp32-{retr,attn,prompt}-s{0,1,2}.trec; do
  awk 'NR == FNR { top[$1 " " $3] = 1; next } ($1 " " $3) in top' runs/heldout80fp32-bm25-d10.trec "$f" > /tmp/d10.trec
  $Q fuse --method rerank-interpolation --run $B --run "$f" --depth 20 --alpha 0.5 --output /tmp/i20.trec > /dev/null
  $Q fuse --method rerank-interpolation --run runs/heldout80fp32-bm25-d10.trec --run /tmp/d10.trec --depth 10 \
    --alpha 0.5 --output /tmp/i10.trec > /dev/null
  echo "$f: depth 20 $(ndcg "$f") / $(ndcg /tmp/i20.trec); depth 10 $(ndcg /tmp/d10.trec) / $(ndcg /tmp/i10.trec)"
done
# 3. each variant's three seeds as one reranker (the mean of their per-query z-scores), alone (weight 0) / at 0.5
for v in retr attn prompt; do
  for a in 0.0 0.5; do
    $Q fuse --method rerank-interpolation --run $B --run runs/heldout80fp32-$v-s0.trec --run runs/heldout80fp32-$v-s1.trec \
      --run runs/heldout80fp32-$v-s2.trec --depth 20 --alpha $a --output /tmp/ens-$a.trec > /dev/null
  done
  echo "$v, seeds 0-2 as one reranker: $(ndcg /tmp/ens-0.0.trec) / $(ndcg /tmp/ens-0.5.trec)"
done

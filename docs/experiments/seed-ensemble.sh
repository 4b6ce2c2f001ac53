#!/bin/bash
# Seed ensembles of the r1e2 rerankers (beyond the papers; docs/results.md, "What each change measured"): the three
# training seeds of Q-PEFT-R and of prompt tuning rerank the same BM25 hits; `fuse --method rerank-interpolation`
# with the three reranks averages their per-query z-scores into one reranker, alone (--alpha 0) and interpolated
# with BM25 at a weight that `select-interpolation` chose for the ensemble on SciFact's 80 dev queries, reranked by
# each seed's checkpoint (`repro`'s dev runs for the interpolated rows; as a single checkpoint's weight is selected).
# No LM runs here: every input run exists after the `repro beir` commands of the three seeds. Then each ensemble
# against its own seeds averaged query by query, and the two ensembles against each other (`evaluate`).
# Run from the checkout whose runs/ holds those runs:
#   bash docs/experiments/seed-ensemble.sh scifact   # profile full256-bf16-all-r1e2, --seed-offset 0 / 1 / 2
#   bash docs/experiments/seed-ensemble.sh arguana   # profile top5-r1e2 --checkpoint-from scifact, the same seeds
set -euo pipefail
export PYSERINI_QPEFT_DATA=${PYSERINI_QPEFT_DATA:-../shared/data/beir}
Q=${Q:-pyserini-qpeft}
R=runs/bm25-flat
case "${1:?scifact or arguana}" in
  scifact) S=beir-scifact-test-d20-p256-bf16-all-r1e2; T=; D=beir-scifact-train-dev80-d20-p256-bf16-all-r1e2
           DEPTH=20; DATA=scifact ;;
  arguana) S=beir-arguana-test-d5-p256-bf16-r1e2; T=.from-scifact; D=beir-scifact-train-dev80-d5-p256-bf16-r1e2
           DEPTH=5; DATA=arguana ;;
  *) echo "usage: $0 scifact|arguana" >&2; exit 2 ;;
esac
for m in qpeft-retr prompt-tuning; do
  dev=() test=()
  for s in "" .seed+1 .seed+2; do
    dev+=(--reranked "$R+$m.$D$s.trec")
    test+=(--run "$R+$m.$S$s$T.trec")
  done
  $Q select-interpolation --first-stage $R.beir-scifact-train-dev80.trec "${dev[@]}" \
    --qrels beir-v1.0.0-scifact-train --depth $DEPTH --output runs/interp-$m-ensemble3.$D.json
  $Q fuse --method rerank-interpolation --run $R.beir-$DATA-test.trec "${test[@]}" --depth $DEPTH --alpha 0 \
    --output $R+$m-ensemble3.$S$T.trec
  $Q fuse --method rerank-interpolation --run $R.beir-$DATA-test.trec "${test[@]}" --depth $DEPTH \
    --alpha runs/interp-$m-ensemble3.$D.json --output $R+$m-ensemble3+interp.$S$T.trec
done
for K in "" +interp; do
  for m in qpeft-retr prompt-tuning; do
    echo "# $m ensemble$K vs its three seeds averaged query by query"
    $Q evaluate --run $R+$m-ensemble3$K.$S$T.trec --qrels beir-v1.0.0-$DATA-test -m ndcg@10 \
      --compare-to $R+$m$K.$S$T.trec --compare-to $R+$m$K.$S.seed+1$T.trec --compare-to $R+$m$K.$S.seed+2$T.trec
  done
  echo "# qpeft-retr ensemble$K vs prompt-tuning ensemble$K"
  $Q evaluate --run $R+qpeft-retr-ensemble3$K.$S$T.trec --qrels beir-v1.0.0-$DATA-test -m ndcg@10 \
    --compare-to $R+prompt-tuning-ensemble3$K.$S$T.trec
done

#!/usr/bin/env bash
# The seed-averaged comparisons of docs/results.md (`evaluate` with --run / --compare-to repeated): Q-PEFT-R's three
# seeds against prompt tuning's three and against zero-shot UPR, and prompt tuning's against UPR, alone and
# BM25-interpolated. Run from the checkout whose runs/ holds the `repro beir` runs of the three seeds:
#   bash docs/experiments/seed-averaged.sh scifact   # profile full256-bf16-all-r1e2, --seed-offset 0 / 1 / 2
#   bash docs/experiments/seed-averaged.sh arguana   # profile top5-r1e2 --checkpoint-from scifact, the same seeds
set -euo pipefail
Q=${Q:-pyserini-qpeft}
R=runs/bm25-flat
case "${1:?scifact or arguana}" in
  scifact) S=beir-scifact-test-d20-p256-bf16-all-r1e2; T=; QRELS=beir-v1.0.0-scifact-test ;;
  arguana) S=beir-arguana-test-d5-p256-bf16-r1e2; T=.from-scifact; QRELS=beir-v1.0.0-arguana-test ;;
  *) echo "usage: $0 scifact|arguana" >&2; exit 2 ;;
esac
seeds() { echo "$1 $R+$2.$S$T.trec $1 $R+$2.$S.seed+1$T.trec $1 $R+$2.$S.seed+2$T.trec"; }
for K in "" "+interp"; do
  upr=$R+upr$K.$S.trec
  [ -n "$K" ] && upr=$R+upr$K.$S$T.trec  # the interpolated UPR run carries the transfer suffix, UPR alone does not
  echo "# qpeft-retr$K vs prompt-tuning$K"
  $Q evaluate --qrels $QRELS -m ndcg@10 $(seeds --run qpeft-retr$K) $(seeds --compare-to prompt-tuning$K)
  echo "# qpeft-retr$K vs upr$K"
  $Q evaluate --qrels $QRELS -m ndcg@10 $(seeds --run qpeft-retr$K) --compare-to $upr
  echo "# prompt-tuning$K vs upr$K"
  $Q evaluate --qrels $QRELS -m ndcg@10 $(seeds --run prompt-tuning$K) --compare-to $upr
done

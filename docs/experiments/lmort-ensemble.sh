#!/bin/bash
# LMORT seed ensembles (beyond the LMORT paper; docs/results.md, "Dense retrieval"): three tuners trained with
# `full`'s LMORT command on three seeds that share one dev carve (--dev-seed), encoded as ONE index by
# `encode --encoder lmort:A,B,C` (one frozen-LM pass per text; vectors concatenated x 1/sqrt(3), so a document's
# score is the mean of the three tuners' inner products). Each member and the ensemble: its test run, its run of the
# training queries, a BM25 hybrid whose weight `select-interpolation` picks on the shared dev queries (as `repro`
# does for one checkpoint), then `evaluate` with paired tests: ensemble vs its members averaged query by query,
# vs MiniLM (`repro ... --condition minilm`). Two ensembles = two "seeds" of the row:
#   bash docs/experiments/lmort-ensemble.sh 13 14 15   # dev carve of seed 13 (member 13 is `full`'s seed-13 run)
#   bash docs/experiments/lmort-ensemble.sh 16 17 18   # dev carve of seed 16
# Rule fixed before any run: both ensembles are reported whatever they score; the only selection is the hybrid's
# BM25 weight, on the dev queries no member trained on. Makes what it needs (BM25 runs, MiniLM, the layer analysis,
# the state cache `full` shares: ~30 min once); then ~12 min of training per member on 2 cores, ~2 min per index.
set -euo pipefail
export PYSERINI_QPEFT_DATA=${PYSERINI_QPEFT_DATA:-../shared/data/beir}
Q=${Q:-.venv/bin/pyserini-qpeft}
PY=${PY:-.venv/bin/python}
D=${1:?usage: $0 SEED SEED SEED (the first is the dev carve)}
SEEDS=("$@")
[ ${#SEEDS[@]} -ge 2 ] || { echo "an ensemble needs at least two seeds" >&2; exit 2; }
CK=checkpoints/lmort-ens.beir-scifact IX=indexes/faiss-lmort-ens.beir-scifact R=runs/lmort-ens.beir-scifact
STATES=checkpoints/lmort-states.beir-scifact
BM25_TEST=runs/bm25-flat.beir-scifact-test.trec BM25_TRAIN=runs/bm25-flat.beir-scifact-train.trec
DEVBM25=runs/bm25-flat.beir-scifact-train-lmortdev-ens.dev$D.trec
$Q repro beir --dataset scifact --profile full --condition bm25 --condition minilm  # also builds the Lucene index
[ -f $BM25_TRAIN ] || $Q search --bm25 --index indexes/lucene-beir-scifact-flat --topics beir-v1.0.0-scifact-train \
  --output $BM25_TRAIN --hits 1000 --remove-query
[ -f runs/lmort-layers.beir-scifact/layer_report.json ] || \
  $Q lmort analyze --dataset scifact --split train --output runs/lmort-layers.beir-scifact --dtype fp32
members=()
for S in "${SEEDS[@]}"; do
  [ -f $CK/dev$D-seed$S/training_done.json ] || \
    $Q train lmort --dataset scifact --split train --negatives $BM25_TRAIN --layers auto \
      --analysis runs/lmort-layers.beir-scifact/layer_report.json --output $CK/dev$D-seed$S --resume --epochs 8 \
      --negative-depth 20 --hard-negatives 3 --seed $S --dev-seed $D --dtype fp32 --cache-dir $STATES
  members+=($CK/dev$D-seed$S)
  # every member holds out the same dev queries (the BM25 dev run dev-split writes for it is the same file)
  $Q dev-split --dataset scifact --negatives $BM25_TRAIN --checkpoint $CK/dev$D-seed$S --output $DEVBM25.seed$S
  cmp -s $DEVBM25.seed$S $DEVBM25.seed$D || { echo "seed $S has another dev carve than seed $D" >&2; exit 1; }
done
mv $DEVBM25.seed$D $DEVBM25 && rm -f $DEVBM25.seed*
ens=$(IFS=,; echo "${members[*]}")
systems=()
for S in "${SEEDS[@]}"; do systems+=("dev$D-seed$S=lmort:$CK/dev$D-seed$S"); done
systems+=("dev$D-ens${#SEEDS[@]}=lmort:$ens")
for sys in "${systems[@]}"; do
  name=${sys%%=*}; spec=${sys#*=}
  [ -f $IX/$name/meta.json ] || $Q encode --encoder "$spec" --dataset scifact --output $IX/$name --dtype fp32 \
    --state-cache $STATES
  for split in test train; do
    [ -f $R-$split.$name.trec ] || $Q search --dense --index $IX/$name --topics beir-v1.0.0-scifact-$split \
      --output $R-$split.$name.trec --hits 1000 --remove-query
  done
  $Q select-interpolation --method interpolation --normalization zscore --first-stage $DEVBM25 \
    --dense $R-train.$name.trec --qrels beir-v1.0.0-scifact-train --output $R-dev-alpha.$name.json
  $Q fuse --run $BM25_TEST --run $R-test.$name.trec --method interpolation --alpha $R-dev-alpha.$name.json \
    --output $R-hybrid-test.$name.trec
done
E=dev$D-ens${#SEEDS[@]}
alone=() hybrid=()
for S in "${SEEDS[@]}"; do alone+=(--compare-to $R-test.dev$D-seed$S.trec); hybrid+=(--compare-to $R-hybrid-test.dev$D-seed$S.trec); done
for sys in "${systems[@]}"; do
  name=${sys%%=*}
  echo "# $name: test alone, then BM25 hybrid (dev weight: $($PY -c "import json; print(json.load(open('$R-dev-alpha.$name.json'))['alpha'])"))"
  $Q evaluate --run $R-test.$name.trec --qrels beir-v1.0.0-scifact-test -m ndcg@10 -m recall@100
  $Q evaluate --run $R-hybrid-test.$name.trec --qrels beir-v1.0.0-scifact-test -m ndcg@10 -m recall@100
done
echo "# ensemble alone vs its members averaged query by query; vs MiniLM"
$Q evaluate --run $R-test.$E.trec --qrels beir-v1.0.0-scifact-test -m ndcg@10 "${alone[@]}"
$Q evaluate --run $R-test.$E.trec --qrels beir-v1.0.0-scifact-test -m ndcg@10 \
  --compare-to runs/minilm.beir-scifact-test.trec
echo "# ensemble hybrid vs its members' hybrids averaged query by query; vs BM25"
$Q evaluate --run $R-hybrid-test.$E.trec --qrels beir-v1.0.0-scifact-test -m ndcg@10 "${hybrid[@]}"
$Q evaluate --run $R-hybrid-test.$E.trec --qrels beir-v1.0.0-scifact-test -m ndcg@10 --compare-to $BM25_TEST

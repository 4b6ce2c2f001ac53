#!/bin/bash
# LMORT snapshot ensembles (beyond the LMORT paper; docs/results.md, "Dense retrieval"): does ONE training give the
# seed ensemble's gain? Each training keeps every epoch's tuner (epoch-N/), so the last three epochs (6, 7, 8; fixed
# before any run, nothing else tried on test) of one training are encoded as one index (`encode --encoder
# lmort:E6,E7,E8`, one LM pass, the mean of their inner products) and compared with that training's own best epoch
# and with the three-seed ensemble. Reads the three members `repro beir --dataset scifact --profile full --condition
# lmort-ens3` trains (seeds 13 / 14 / 15 on dev carve 13); run that first. Per system: test run, run of the training
# queries, a BM25 hybrid weighted on the shared dev queries (as repro's hybrid-interp conditions), then `evaluate`
# with paired tests. The dev grid JSON's weight 0 is the system alone on the dev queries. Follow-up rule, also fixed
# before any result: if every seed's snapshot ensemble is above its best epoch on the dev queries alone, the nine
# tuners (epochs 6-8 of the three members) run once as one index next to the seed ensemble (it was, and they did).
set -euo pipefail
export PYSERINI_QPEFT_DATA=${PYSERINI_QPEFT_DATA:-../shared/data/beir}
Q=${Q:-.venv/bin/pyserini-qpeft}
PY=${PY:-.venv/bin/python}
C=checkpoints/lmort-auto.beir-scifact
declare -A M=([13]=$C [14]=$C.member-seed14 [15]=$C.member-seed15)
for s in 13 14 15; do
  [ -f "${M[$s]}/training_done.json" ] || { echo "missing ${M[$s]}: run the repro command first" >&2; exit 1; }
done
STATES=checkpoints/lmort-states.beir-scifact
DEVBM25=runs/bm25-flat.beir-scifact-train-lmortdev.trec BM25_TEST=runs/bm25-flat.beir-scifact-test.trec
IX=indexes/faiss-lmort-snapshot.beir-scifact R=runs/lmort-snapshot.beir-scifact
systems=()
for s in 13 14 15; do
  systems+=("seed$s-best=lmort:${M[$s]}" "seed$s-ep678=lmort:${M[$s]}/epoch-6,${M[$s]}/epoch-7,${M[$s]}/epoch-8")
done
nine=$(for s in 13 14 15; do for e in 6 7 8; do printf '%s,' "${M[$s]}/epoch-$e"; done; done)
systems+=("seeds-ep678=lmort:${nine%,}")
for sys in "${systems[@]}"; do
  name=${sys%%=*}; spec=${sys#*=}
  [ -f $IX/$name/meta.json ] || $Q encode --encoder "$spec" --dataset scifact --output $IX/$name --dtype fp32 \
    --state-cache $STATES --quiet
  for split in test train; do
    [ -f $R-$split.$name.trec ] || $Q search --dense --index $IX/$name --topics beir-v1.0.0-scifact-$split \
      --output $R-$split.$name.trec --hits 1000 --remove-query
  done
  [ -f $R-dev-alpha.$name.json ] || $Q select-interpolation --method interpolation --normalization zscore \
    --first-stage $DEVBM25 --dense $R-train.$name.trec --qrels beir-v1.0.0-scifact-train \
    --output $R-dev-alpha.$name.json
  [ -f $R-hybrid-test.$name.trec ] || $Q fuse --run $BM25_TEST --run $R-test.$name.trec --method interpolation \
    --alpha $R-dev-alpha.$name.json --output $R-hybrid-test.$name.trec
done
dev() {  # a system's dev nDCG@10 alone (the grid's weight 0) and hybrid at its selected weight
  $PY -c 'import json, sys; d = json.load(open(sys.argv[1])); t, a = d["table"], d["alpha"]
print("alone %.4f, hybrid %.4f at a = %s" % (t["0.00"], t["%.2f" % a], a))' "$R-dev-alpha.$1.json"
}
for s in 13 14 15; do
  for kind in best ep678; do
    name=seed$s-$kind
    echo "# $name: test alone (nDCG@10, R@100), then its BM25 hybrid; dev: $(dev $name)"
    $Q evaluate --run $R-test.$name.trec --qrels beir-v1.0.0-scifact-test -m ndcg@10 -m recall@100
    $Q evaluate --run $R-hybrid-test.$name.trec --qrels beir-v1.0.0-scifact-test -m ndcg@10
  done
  echo "# seed $s: snapshot ensemble vs its own best epoch, alone and hybrid"
  $Q evaluate --run $R-test.seed$s-ep678.trec --qrels beir-v1.0.0-scifact-test -m ndcg@10 \
    --compare-to $R-test.seed$s-best.trec
  $Q evaluate --run $R-hybrid-test.seed$s-ep678.trec --qrels beir-v1.0.0-scifact-test -m ndcg@10 \
    --compare-to $R-hybrid-test.seed$s-best.trec
done
echo "# the seed ensemble (repro's lmort-ens3) vs the three snapshot ensembles averaged query by query"
$Q evaluate --run runs/lmort-ens3.beir-scifact-test.trec --qrels beir-v1.0.0-scifact-test -m ndcg@10 \
  --compare-to $R-test.seed13-ep678.trec --compare-to $R-test.seed14-ep678.trec --compare-to $R-test.seed15-ep678.trec
echo "# nine tuners (three trainings x epochs 6-8) vs the seed ensemble, alone and hybrid; dev: $(dev seeds-ep678)"
$Q evaluate --run $R-test.seeds-ep678.trec --qrels beir-v1.0.0-scifact-test -m ndcg@10 -m recall@100 \
  --compare-to runs/lmort-ens3.beir-scifact-test.trec
$Q evaluate --run $R-hybrid-test.seeds-ep678.trec --qrels beir-v1.0.0-scifact-test -m ndcg@10 \
  --compare-to runs/hybrid-interp-dev-bm25-lmort-ens3.beir-scifact-test.trec

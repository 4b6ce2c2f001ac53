#!/bin/bash
# LMORT seed ensembles of 1, 2, 3 and 6 members (docs/results.md, "Dense retrieval"): how the test gain grows with
# the number of tuners. Reads the six members `repro beir --dataset scifact --profile full --condition lmort-ens3`
# trains at --seed-offset 0 (seeds 13 / 14 / 15, dev carve 13) and 3 (16 / 17 / 18, carve 16); run those first.
# Every pair within a carve and the six together are encoded as one index from the shared state cache and searched
# with the test queries. Nothing is selected: this reports a curve (the ensemble size of the recorded rows, 3, was
# fixed before any ensemble ran). No hybrid: a 6-member ensemble has no dev queries all its members hold out.
set -euo pipefail
export PYSERINI_QPEFT_DATA=${PYSERINI_QPEFT_DATA:-../shared/data/beir}
Q=${Q:-.venv/bin/pyserini-qpeft}
C=checkpoints/lmort-auto.beir-scifact
declare -A M=([13]=$C [14]=$C.member-seed14 [15]=$C.member-seed15
              [16]=$C.seed+3 [17]=$C.seed+3.member-seed17 [18]=$C.seed+3.member-seed18)
for s in "${!M[@]}"; do
  [ -f "${M[$s]}/training_done.json" ] || { echo "missing ${M[$s]}: run the repro commands first" >&2; exit 1; }
done
IX=indexes/faiss-lmort-ens-size.beir-scifact R=runs/lmort-ens-size.beir-scifact-test
for set in 13,14 13,15 14,15 16,17 16,18 17,18 13,14,15,16,17,18; do
  spec=lmort:$(IFS=,; for s in $set; do printf '%s,' "${M[$s]}"; done | sed 's/,$//')
  name=seeds-${set//,/-}
  [ -f $IX/$name/meta.json ] || $Q encode --encoder "$spec" --dataset scifact --output $IX/$name --dtype fp32 \
    --state-cache checkpoints/lmort-states.beir-scifact --quiet
  [ -f $R.$name.trec ] || $Q search --dense --index $IX/$name --topics beir-v1.0.0-scifact-test \
    --output $R.$name.trec --hits 1000 --remove-query
  echo "# $name"
  $Q evaluate --run $R.$name.trec --qrels beir-v1.0.0-scifact-test -m ndcg@10 -m recall@100
done
echo "# six members vs the two 3-member ensembles averaged query by query"
$Q evaluate --run $R.seeds-13-14-15-16-17-18.trec --qrels beir-v1.0.0-scifact-test -m ndcg@10 \
  --compare-to runs/lmort-ens3.beir-scifact-test.trec --compare-to runs/lmort-ens3.beir-scifact-test.seed+3.trec

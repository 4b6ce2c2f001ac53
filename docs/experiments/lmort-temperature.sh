#!/bin/bash
# Dev-only sweep of LMORT's InfoNCE temperature (docs/results.md, "Dense retrieval"): `full`'s LMORT training (seed
# 13, 3 hard negatives from BM25's top 20, 8 epochs, layers from the analysis) at temperature 0.1 and 0.02 instead of
# the default 0.05, nothing else changed. 0.05's best dev-pool MRR@10 with this command is recorded: 0.675 (the
# `full` seed-13 checkpoint, AMX Xeon, fp32; fp32 LMORT trainings reproduced to 4 decimals across CPUs). Rule fixed
# before the runs: a temperature goes to test (three seeds, `repro beir` with `full`'s commands plus --temperature)
# only if its best dev-pool MRR@10 on seed 13's 81 dev queries reaches 0.685 (0.05's + 0.01). Run from a checkout
# with runs/bm25-flat.beir-scifact-train.trec; ~30 min to store the training texts' layer states once (shared with
# `full`'s LMORT rows), then ~15 min per temperature on 2 cores.
set -euo pipefail
export PYSERINI_QPEFT_DATA=${PYSERINI_QPEFT_DATA:-../shared/data/beir}
Q=${Q:-.venv/bin/pyserini-qpeft}
PY=${PY:-.venv/bin/python}
[ -f runs/lmort-layers.beir-scifact/layer_report.json ] || \
  $Q lmort analyze --dataset scifact --split train --output runs/lmort-layers.beir-scifact --dtype fp32
for t in 0.1 0.02; do
  $Q train lmort --dataset scifact --split train --negatives runs/bm25-flat.beir-scifact-train.trec --layers auto \
    --analysis runs/lmort-layers.beir-scifact/layer_report.json --output checkpoints/lmort-temp$t.beir-scifact \
    --resume --epochs 8 --negative-depth 20 --hard-negatives 3 --seed 13 --dtype fp32 \
    --cache-dir checkpoints/lmort-states.beir-scifact --temperature $t
done
for t in 0.1 0.02; do
  echo "temperature $t: $($PY -c "import json; s = json.load(open('checkpoints/lmort-temp$t.beir-scifact/trainer_state.json')); print('best epoch', s['best_epoch'], 'dev-pool MRR@10', round(s['best_value'], 4))")"
done

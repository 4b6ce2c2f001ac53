#!/bin/bash
# Dev-only check of `train qpeft --dev-pool run` on the recorded r1e2 checkpoints (docs/results.md, "What each change
# measured"): would choosing the epoch on a rerank of each dev query's BM25 top-10 alone (a test rerank's footing)
# instead of the default pool (positives + BM25 top-10) pick other epochs? Every r1e2 training kept both of its
# epochs, so no retraining is needed: epochs 1 and 2 of Q-PEFT-R and prompt tuning, seeds 0-2 (the checkpoints of
# `repro beir --dataset scifact --profile full256-bf16-all-r1e2 [--seed-offset 1|2]`), rerank the 80 dev queries'
# BM25 top-10 in one pass (next to zero-shot UPR) and are scored against SciFact's training qrels. Run from a
# checkout where those checkpoints and runs/bm25-flat.beir-scifact-train.trec exist; ~9 min on 2 cores for steps
# 1-3, ~20 min for step 4.
set -euo pipefail
export PYSERINI_QPEFT_DATA=${PYSERINI_QPEFT_DATA:-../shared/data/beir}
Q=${Q:-.venv/bin/pyserini-qpeft}
PY=${PY:-.venv/bin/python}
C=checkpoints
R=qpeft-retr.beir-scifact-p256-bf16-all-r1e2
P=prompt-tuning.beir-scifact-p256-bf16-all-r1e2
B=runs/bm25-flat.beir-scifact-train-r1e2dev-d10.trec
# 1. the dev queries every r1e2 training carved (the same 80 for every seed: --dev-seed 0), their BM25 top-10
$PY - "$C/$R/trainer_state.json" "$B" <<'PY'
import json, sys
qids = set(json.load(open(sys.argv[1]))["dev_qids"])
lines = [l for l in open("runs/bm25-flat.beir-scifact-train.trec") if l.split()[0] in qids and int(l.split()[3]) <= 10]
open(sys.argv[2], "w").writelines(lines)
print(f"{len(qids)} dev queries, {len(lines)} hits")
PY
# 2. zero-shot UPR and the twelve epoch checkpoints in one pass
args=()
for s in "" .seed+1 .seed+2; do
  for e in 1 2; do
    args+=(--also-rerank qpeft-retr "$C/$R$s/epoch-$e" "runs/r1e2dev-qpeft-retr$s-epoch-$e.trec")
    args+=(--also-rerank prompt-tuning "$C/$P$s/epoch-$e" "runs/r1e2dev-prompt-tuning$s-epoch-$e.trec")
  done
done
$Q rerank --run $B --topics beir-v1.0.0-scifact-train --corpus scifact --reranker upr --rerank-depth 10 \
  --output runs/r1e2dev-upr.trec --dtype bf16 --max-passage-tokens 256 "${args[@]}"
# 3. nDCG@10 of each against the training qrels (the judged dev queries only), and the epoch each training kept
for f in $B runs/r1e2dev-*.trec; do
  echo "$f $($Q evaluate --run "$f" --qrels beir-v1.0.0-scifact-train --only-run-queries -m ndcg@10 | tail -1)"
done
for s in "" .seed+1 .seed+2; do
  for m in $R $P; do
    echo "$m$s kept epoch $($PY -c "import json; print(json.load(open('$C/$m$s/trainer_state.json'))['best_epoch'])")"
  done
done
# 4. where the pick changed (2026-12-06: prompt tuning's seeds 1 and 2, epoch 1 instead of 2; every Q-PEFT-R seed
#    and prompt tuning's seed 0 keep their epoch), those epochs through `repro`'s steps for a trained row, both
#    checkpoints in one pass each: the test queries' BM25 top-20, and the interpolation weight selected on the
#    same 80 dev queries' BM25 top-20 (`repro`'s bm25-dev run), applied to the test rerank
E=beir-scifact-test-d20-p256-bf16-all-r1e2
D=runs/bm25-flat.beir-scifact-train-dev80.trec
for split in test dev; do
  if [ $split = test ]; then run=runs/bm25-flat.beir-scifact-test.trec topics=beir-v1.0.0-scifact-test out=$E
  else run=$D topics=beir-v1.0.0-scifact-train out=beir-scifact-train-dev80-d20-p256-bf16-all-r1e2; fi
  $Q rerank --run $run --topics $topics --corpus scifact --reranker prompt-tuning --rerank-depth 20 --dtype bf16 \
    --reranker-checkpoint $C/$P.seed+1/epoch-1 --output runs/bm25-flat+prompt-tuning-devpoolrun.$out.seed+1.trec \
    --also-rerank prompt-tuning $C/$P.seed+2/epoch-1 runs/bm25-flat+prompt-tuning-devpoolrun.$out.seed+2.trec
done
for s in .seed+1 .seed+2; do
  $Q select-interpolation --first-stage $D --qrels beir-v1.0.0-scifact-train --depth 20 \
    --reranked runs/bm25-flat+prompt-tuning-devpoolrun.beir-scifact-train-dev80-d20-p256-bf16-all-r1e2$s.trec \
    --output runs/interp-prompt-tuning-devpoolrun.beir-scifact-train-dev80-d20-p256-bf16-all-r1e2$s.json
  $Q fuse --method rerank-interpolation --run runs/bm25-flat.beir-scifact-test.trec --depth 20 \
    --run runs/bm25-flat+prompt-tuning-devpoolrun.$E$s.trec \
    --alpha runs/interp-prompt-tuning-devpoolrun.beir-scifact-train-dev80-d20-p256-bf16-all-r1e2$s.json \
    --output runs/bm25-flat+prompt-tuning-devpoolrun+interp.$E$s.trec
  for i in "" +interp; do
    echo "prompt tuning$i, seed ${s#.seed+}: epoch 1 (run pool) vs epoch 2 (kept):" \
      "$($Q evaluate --run runs/bm25-flat+prompt-tuning-devpoolrun$i.$E$s.trec --qrels beir-v1.0.0-scifact-test -m ndcg@10 | tail -1)" \
      "$($Q evaluate --run runs/bm25-flat+prompt-tuning$i.$E$s.trec --qrels beir-v1.0.0-scifact-test -m ndcg@10 | tail -1)"
  done
done

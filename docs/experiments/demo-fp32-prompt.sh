#!/bin/bash
# Q-PEFT-R against the query-independent prompt-tuning baseline at the fp32 demo's budget (profile `demo`: 64-token
# passages, 1 epoch x 64 training queries, fp32), on demo-fp32-retr.sh's 80 held-out training queries (dev only, a
# measurement: nothing is selected by it). Prompt tuning with its recorded recipe (lr 1e-3, the baseline beside every
# Q-PEFT row). 2-core Intel Xeon with avx512_bf16 but no AMX, 2026-12-06. Run after demo-fp32-retr.sh in the same
# checkout (it reuses that script's held-out run and Q-PEFT-R reranks); ~12 minutes on 2 cores.
source "$(dirname "$0")/demo-fp32-common.sh"
args=()
for seed in 0 1 2; do
  train_demo prompt $seed --variant prompt --lr 1e-3
  args+=(--also-rerank prompt-tuning checkpoints/qpeft-prompt.beir-scifact-demofp32-s$seed/best runs/heldout80fp32-prompt-s$seed.trec)
done
# UPR again as the pass's lead reranker: its run must equal demo-fp32-retr.sh's byte for byte
rerank_heldout runs/heldout80fp32pt-upr.trec "${args[@]}"
cmp runs/heldout80fp32pt-upr.trec runs/heldout80fp32-upr.trec && echo "UPR run identical to demo-fp32-retr.sh's"
heldout_eval $B 'runs/heldout80fp32-prompt-*.trec'
# Q-PEFT-R minus prompt tuning, seed by seed and seed-averaged, alone and interpolated (paired randomization test)
compare_seeds heldout80fp32-retr heldout80fp32-prompt

#!/bin/bash
# Does a query-biased passage (the sentences that share the query's words) help the fp32 demo's 64-token budget?
# A dev-only measurement on demo-fp32-retr.sh's 80 held-out training queries (nothing on test): zero-shot UPR at the
# demo's footing (BM25 top-20, 64-token passages, fp32) with the demo's way and three others to fill the 64 tokens
# (passage-window.py: first, best, window, tail),
# each alone and interpolated with BM25 at weight 0.5. Run from a checkout where `make demo` ran; ~30 min on 2 cores
# (four reranks of 1,600 pairs: 6.5-7 min each on a 2-core AVX2 EPYC, 2026-12-07).
#
# Rule, fixed before any run: a variant earns a trained check (Q-PEFT-R with the same passages in training) only if
# its interpolated nDCG@10 is >= first's + 0.01 and its nDCG@10 alone is not below first's.
source "$(dirname "$0")/demo-fp32-common.sh"
[ -f $B ] || heldout_run $B 16 3 64 80
start=$(date +%s)
[ $# -gt 0 ] || set -- first best window tail
.venv/bin/python "$(dirname "$0")/passage-window.py" $B runs/heldout80fp32-window "$@"
echo "reranks: $(( $(date +%s) - start )) s"
heldout_eval $B 'runs/heldout80fp32-window-*.trec'

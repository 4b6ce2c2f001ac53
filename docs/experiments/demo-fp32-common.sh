# Sourced by the fp32-demo held-out experiments (demo-fp32-retr.sh, demo-fp32-prompt.sh): the `demo` profile's
# training budget and reranking footing, and the held-out queries they are measured on.
#   train_demo NAME SEED FLAGS...  trains checkpoints/qpeft-NAME.beir-scifact-demofp32-sSEED with the demo's budget
#                                  plus FLAGS and prints its wall time
#   rerank_heldout OUTPUT ARGS...  reranks the held-out queries' BM25 top-20 with UPR into OUTPUT as the demo does
#                                  (64-token passages, fp32), ARGS (e.g. --also-rerank ...) in the same pass
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/heldout-eval.sh"
export PYSERINI_QPEFT_DATA=${PYSERINI_QPEFT_DATA:-../shared/data/beir}
Q=.venv/bin/pyserini-qpeft
DEMO="--dataset scifact --split train --negatives runs/bm25-flat.beir-scifact-train.trec --epochs 1
  --max-train-queries 64 --batch-size 4 --margin 1.0 --pointwise-weight 0.1 --dev-size 16 --dev-depth 3 --dev-seed 0
  --dtype fp32 --max-passage-tokens 64"
B=runs/bm25-flat.beir-scifact-train-heldout80-demofp32.trec
train_demo() {
  local name=$1 seed=$2 start
  shift 2
  start=$(date +%s)
  $Q train qpeft $DEMO "$@" --seed $seed --output checkpoints/qpeft-$name.beir-scifact-demofp32-s$seed -q
  echo "train $name seed $seed: $(( $(date +%s) - start )) s"
}
rerank_heldout() {
  local output=$1
  shift
  $Q rerank --run $B --topics beir-v1.0.0-scifact-train --corpus scifact --reranker upr --rerank-depth 20 \
    --output "$output" --dtype fp32 --max-passage-tokens 64 "$@"
}

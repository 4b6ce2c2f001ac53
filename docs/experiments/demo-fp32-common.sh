# Sourced by the fp32-demo held-out experiments (demo-fp32-{retr,prompt,budget,docprior,first-stage}.sh): the `demo`
# profile's training budget and reranking footing, and the held-out queries they are measured on.
#   train_demo NAME SEED FLAGS...  trains checkpoints/qpeft-NAME.beir-scifact-demofp32-sSEED with the demo's budget
#                                  plus FLAGS and prints its wall time
#   rerank_heldout OUTPUT ARGS...  reranks the held-out queries' BM25 top-20 with UPR into OUTPUT as the demo does
#                                  (64-token passages, fp32), ARGS (e.g. --also-rerank ...) in the same pass
#   timed_rerank OUTPUT ARGS...    rerank_heldout, then its wall time
#   compare_seeds A B              runs/A-sSEED[.interp].trec minus runs/B-sSEED[...] for seeds 0-2, seed by seed and
#                                  the seeds averaged query by query, alone and interpolated (paired randomization test)
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
timed_rerank() {
  local start
  start=$(date +%s)
  rerank_heldout "$@"
  echo "rerank: $(( $(date +%s) - start )) s"
}
compare_seeds() {
  local a=$1 b=$2 suffix seed
  for suffix in .trec .interp.trec; do
    for seed in 0 1 2; do
      $Q evaluate --run runs/$a-s$seed$suffix --compare-to runs/$b-s$seed$suffix \
        --qrels beir-v1.0.0-scifact-train --only-run-queries -m ndcg@10 | tail -2
    done
    $Q evaluate --qrels beir-v1.0.0-scifact-train --only-run-queries -m ndcg@10 \
      $(for s in 0 1 2; do echo --run runs/$a-s$s$suffix; done) \
      $(for s in 0 1 2; do echo --compare-to runs/$b-s$s$suffix; done) | tail -2
  done
}

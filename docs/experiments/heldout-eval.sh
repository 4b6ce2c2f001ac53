# Sourced by the held-out experiments in this folder (needs $Q = the pyserini-qpeft command):
#   heldout_eval FIRST_STAGE_RUN 'runs/PREFIX-*.trec'
# prints the first stage's nDCG@10, then each reranked run's alone and interpolated with the first stage at weight
# 0.5 (no selection; the interpolated run is written next to it as *.interp.trec), against SciFact's training qrels.
heldout_eval() {
  local base=$1 pattern=$2 f
  $Q evaluate --run "$base" --qrels beir-v1.0.0-scifact-train --only-run-queries -m ndcg@10
  for f in $pattern; do
    case "$f" in *.interp.trec) continue;; esac
    $Q fuse --method rerank-interpolation --run "$base" --run "$f" --depth 20 --alpha 0.5 --output "${f%.trec}.interp.trec"
    echo "$f: $($Q evaluate --run "$f" --qrels beir-v1.0.0-scifact-train --only-run-queries -m ndcg@10 | tail -1)" \
         "interpolated: $($Q evaluate --run "${f%.trec}.interp.trec" --qrels beir-v1.0.0-scifact-train --only-run-queries -m ndcg@10 | tail -1)"
  done
}

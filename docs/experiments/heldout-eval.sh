# Sourced by the held-out experiments in this folder (needs $Q = the pyserini-qpeft command):
#   heldout_run OUTPUT DEV_SIZE DEV_DEPTH TRAIN_QUERIES COUNT
# writes the BM25 top-20 (from runs/bm25-flat.beir-scifact-train.trec) of the SciFact training queries that `train
# qpeft` with --dev-size DEV_SIZE --dev-depth DEV_DEPTH --dev-seed 0 holds out as dev for none of its seeds 0-2 and
# trains on in none of their first epochs of --max-train-queries TRAIN_QUERIES: the first COUNT of them by
# sha256("heldout:<qid>"), or all of them with COUNT = all.
#   heldout_eval FIRST_STAGE_RUN 'runs/PREFIX-*.trec'
# prints the first stage's nDCG@10, then each reranked run's alone and interpolated with the first stage at weight
# 0.5 (no selection; the interpolated run is written next to it as *.interp.trec), against SciFact's training qrels.
#   ndcg RUN
# prints RUN's nDCG@10 on its own queries against SciFact's training qrels (the number alone).
ndcg() { $Q evaluate --run "$1" --qrels beir-v1.0.0-scifact-train --only-run-queries -m ndcg@10 | tail -1 | awk '{print $3}'; }
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

heldout_run() {
  ${PY:-.venv/bin/python} - "$@" <<'PY'
import hashlib
import sys
from pyserini_qpeft.data import BeirDataset
from pyserini_qpeft.qpeft.step import QPeftTrainConfig
from pyserini_qpeft.training.data import load_training_data, split_dev
from pyserini_qpeft.training.trainer import epoch_order
from pyserini_qpeft.types import read_run

output, dev_size, dev_depth, train_queries, count = sys.argv[1:]
path = "runs/bm25-flat.beir-scifact-train.trec"
examples, _, _ = load_training_data(BeirDataset.find("scifact"), "train", read_run(path),
                                    negative_depth=max(10, int(dev_depth)), candidate_depth=int(dev_depth))
used: set[str] = set()
for seed in (0, 1, 2):
    cfg = QPeftTrainConfig.build(seed=seed, dev_seed=0, dev_size=int(dev_size), max_train_queries=int(train_queries),
                                 epochs=1, batch_size=4)
    train, dev = split_dev(examples, cfg.dev_size, cfg.carve_seed, cfg.dev_carve)
    used |= {train[i].qid for i in epoch_order(len(train), cfg, 1)} | {e.qid for e in dev}
rest = sorted((e.qid for e in examples if e.qid not in used),
              key=lambda q: hashlib.sha256(f"heldout:{q}".encode()).hexdigest())
keep = set(rest if count == "all" else rest[:int(count)])
lines = [line for line in open(path) if line.split()[0] in keep and int(line.split()[3]) <= 20]
open(output, "w").writelines(lines)
print(f"{len(rest)} unused training queries; {len(keep)} kept, {len(lines)} hits")
PY
}

#!/bin/bash
# Does a document prior hurt query-likelihood ranking? A small LM may find any question likely after some passages;
# subtracting each document's mean score under unrelated questions, s(q, d) - lambda * mean_q' s(q', d), would remove
# that offset (beyond the papers). A dev-only measurement on demo-fp32-retr.sh's 80 held-out training queries (BM25
# top-20, 64 tokens, fp32; nothing selected by it): q' = 4 training queries outside the held-out set (the first by
# sha256("background:<qid>")), each scored by UPR against all 1,304 documents of the held-out top-20s (one rerank,
# 540 s on 2 cores while another job ran), applied to UPR and to the three Q-PEFT-R reranks, alone / interpolated with
# BM25 at 0.5. 2-core Intel Xeon with avx512_bf16 but no AMX, 2026-12-06. Run after demo-fp32-retr.sh in the same
# checkout (it reuses that script's held-out run and reranks).
source "$(dirname "$0")/demo-fp32-common.sh"
BG=runs/heldout80fp32-background4.trec
${PY:-.venv/bin/python} - $B $BG <<'PY'
import csv, hashlib, sys
from pyserini_qpeft.data.beir import find_dataset
heldout, background = sys.argv[1:]
held, docs = set(), {}
for line in open(heldout):
    qid, _, docid = line.split()[:3]
    held.add(qid)
    docs.setdefault(docid, None)
with open(find_dataset("scifact") / "qrels" / "train.tsv") as f:
    train = {row[0] for row in list(csv.reader(f, delimiter="\t"))[1:]} - held
picked = sorted(train, key=lambda q: hashlib.sha256(f"background:{q}".encode()).hexdigest())[:4]
with open(background, "w") as f:
    for qid in picked:
        f.writelines(f"{qid} Q0 {d} {i + 1} {-i} bg\n" for i, d in enumerate(docs))
print(f"background queries {picked} x {len(docs)} documents")
PY
[ -f runs/heldout80fp32-background4-upr.trec ] || \
  rerank_heldout runs/heldout80fp32-background4-upr.trec --run $BG --rerank-depth 2000
prior() {  # prior RUN LAMBDA OUT: each score minus LAMBDA x its document's mean background score, re-sorted
  ${PY:-.venv/bin/python} - "$@" runs/heldout80fp32-background4-upr.trec <<'PY'
import collections, sys
run, lam, out, background = sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.argv[4]
scores = collections.defaultdict(list)
for line in open(background):
    scores[line.split()[2]].append(float(line.split()[4]))
mean = {d: sum(v) / len(v) for d, v in scores.items()}
hits = collections.defaultdict(list)
for line in open(run):
    qid, _, docid, _, score = line.split()[:5]
    hits[qid].append((float(score) - lam * mean[docid], docid))
with open(out, "w") as f:
    for qid, scored in hits.items():
        f.writelines(f"{qid} Q0 {d} {i + 1} {s:.6f} prior\n" for i, (s, d) in enumerate(sorted(scored, reverse=True)))
PY
}
for f in runs/heldout80fp32-upr.trec runs/heldout80fp32-retr-s{0,1,2}.trec; do
  for lam in 0 0.25 0.5 0.75 1.0; do
    prior "$f" $lam /tmp/prior.trec
    $Q fuse --method rerank-interpolation --run $B --run /tmp/prior.trec --depth 20 --alpha 0.5 --output /tmp/prior-i.trec > /dev/null
    echo "$f, lambda $lam: $(ndcg /tmp/prior.trec) / $(ndcg /tmp/prior-i.trec)"
  done
done

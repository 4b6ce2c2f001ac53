#!/bin/bash
# Does a query-dependent interpolation weight beat the fixed 0.5 (beyond the papers)? A dev-only measurement on runs
# that exist already (no LM work): demo-fp32-retr.sh's 80 held-out training queries (UPR and the three fp32-demo
# Q-PEFT-R seeds) and demo-fp32-first-stage.sh's other 80 (UPR and its three control seeds). Each query's weight on
# BM25's z-score is one of two values, by whether BM25 is sure of its top hit (the gap between its first two scores,
# in standard deviations of its top-20 scores, above the set's median) -- both directions, three pairs each.
# Nothing is selected by it. 2-core Intel Xeon without AMX, 2026-12-06; seconds.
source "$(dirname "$0")/demo-fp32-common.sh"
${PY:-.venv/bin/python} - <<'PY'
import statistics as st
from pyserini_qpeft.data import BeirDataset
from pyserini_qpeft.evaluation import evaluate
from pyserini_qpeft.search.fusion import zscore_params
from pyserini_qpeft.types import Hit, Run, read_run

qrels = BeirDataset.find("scifact").qrels("train")
SETS = {"runs/bm25-flat.beir-scifact-train-heldout80-demofp32.trec":
        ["runs/heldout80fp32-upr.trec"] + [f"runs/heldout80fp32-retr-s{s}.trec" for s in range(3)],
        "runs/bm25-flat.beir-scifact-train-heldout80-q200-demofp32.trec":
        ["runs/heldout80q200-upr.trec"] + [f"runs/heldout80q200-retr-m02-s{s}.trec" for s in range(3)]}


def z(scores: dict[str, float]) -> dict[str, float]:
    mean, std = zscore_params(list(scores.values()))
    return {d: (s - mean) / std for d, s in scores.items()}


def ndcg(bm25: Run, reranked: Run, weight) -> float:
    fused = {}
    for q in reranked.hits:
        b = {h.docid: h.score for h in bm25.hits[q][:20]}
        r = {h.docid: h.score for h in reranked.hits[q] if h.docid in b}
        zb, zr, a = z(b), z(r), weight(q)
        fused[q] = sorted((Hit(d, a * zb[d] + (1 - a) * zr[d]) for d in b), key=lambda h: -h.score)
    return evaluate(Run(fused, tag="adaptive"), {q: qrels[q] for q in fused}, ["ndcg@10"])["ndcg@10"]


for first, reranks in SETS.items():
    bm25 = read_run(first)
    for path in reranks:
        reranked = read_run(path)
        gap = {}
        for q in reranked.hits:
            top = [h.score for h in bm25.hits[q][:20]]
            gap[q] = (top[0] - top[1]) / (st.pstdev(top) or 1.0)
        median = st.median(gap.values())
        cells = [f"fixed 0.5: {ndcg(bm25, reranked, lambda q: 0.5):.4f}"]
        for sure, unsure in ((0.6, 0.4), (0.7, 0.3), (0.4, 0.6), (0.3, 0.7)):
            cells.append(f"{sure}/{unsure}: {ndcg(bm25, reranked, lambda q: sure if gap[q] > median else unsure):.4f}")
        print(f"{path}: " + "; ".join(cells))
PY

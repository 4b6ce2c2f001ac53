"""Query-likelihood with IDF-weighted query tokens (beyond the papers; a dev-only measurement).

UPR scores a pair by the mean log-probability of the query's tokens given the passage, so "the", "of" and "-" count
as much as "mitochondria". Classic query likelihood weights terms by rarity through its smoothing; this probe asks
whether the same helps the LM: score = sum_t idf(t) * log p(q_t | d, q_<t) / sum_t idf(t), with idf(t) =
log(1 + (N - df + 0.5) / (df + 0.5)) over the corpus' documents tokenized by the LM's tokenizer (the same token ids
the query is scored in). Both scores come from the same forward pass, so the comparison is paired and exact.

For each first-stage run given, every (query, document) pair in it is scored on the `demo` profile's footing
(SmolLM2, fp32, 64-token passages, UPR's prompt) and two runs are written next to OUT_PREFIX: ``-mean.trec`` (UPR's
score; checked against the scorer's own on the first pairs) and ``-idf.trec``. docs/experiments/token-weights.sh
evaluates them. Run from a checkout (its package first on the path):

    PYTHONPATH=. PYSERINI_QPEFT_DATA=../shared/data/beir .venv/bin/python docs/experiments/token-weights.py \
        RUN OUT_PREFIX [RUN OUT_PREFIX ...]
"""
import collections
import math
import sys

import torch

from pyserini_qpeft.data import BeirDataset
from pyserini_qpeft.lm.backbone import FrozenLM, LMConfig
from pyserini_qpeft.lm.scoring import QueryLikelihoodScorer, ScorerConfig
from pyserini_qpeft.types import Run, read_run

BATCH = 16

lm = FrozenLM.load(LMConfig(model="smollm2", device="cpu", dtype="fp32"))
scorer = QueryLikelihoodScorer(lm, ScorerConfig(max_passage_tokens=64))
dataset = BeirDataset.find("scifact")
corpus = dataset.load_corpus()
queries = dataset.queries()

df: collections.Counter = collections.Counter()
for doc in corpus.values():
    df.update(set(lm.tokenizer(doc.contents(), add_special_tokens=False)["input_ids"]))
N = len(corpus)


def idf(token: int) -> float:
    return math.log(1 + (N - df[token] + 0.5) / (df[token] + 0.5))


def token_logprobs(pairs):
    """Per pair: the query tokens' log-probabilities (a list), from one right-padded forward per batch."""
    out = []
    for start in range(0, len(pairs), BATCH):
        batch = pairs[start:start + BATCH]
        ids = [scorer.prompt_ids(queries[q], corpus[d]) for q, d in batch]
        nq = [len(scorer.query_tokens(queries[q])) for q, _ in batch]
        width = max(map(len, ids))
        x = torch.full((len(ids), width), scorer.pad_id)
        mask = torch.zeros((len(ids), width), dtype=torch.long)
        for i, row in enumerate(ids):
            x[i, :len(row)] = torch.tensor(row)
            mask[i, :len(row)] = 1
        with torch.no_grad():
            logits = lm.model(input_ids=x, attention_mask=mask).logits.float()
        for i, row in enumerate(ids):
            positions = range(len(row) - nq[i], len(row))
            logp = torch.log_softmax(logits[i, [t - 1 for t in positions]], dim=-1)
            out.append([(row[t], logp[k, row[t]].item()) for k, t in enumerate(positions)])
    return out


for run_path, prefix in zip(sys.argv[1::2], sys.argv[2::2]):
    run = read_run(run_path)
    pairs = [(qid, hit.docid) for qid in run.qids() for hit in run[qid]]
    scored = token_logprobs(pairs)
    check = scorer.score([queries[q] for q, _ in pairs[:8]], [corpus[d] for _, d in pairs[:8]])
    mean = [sum(lp for _, lp in toks) / len(toks) for toks in scored]
    assert max(abs(a - b) for a, b in zip(mean, check)) < 1e-3, (mean[:8], check)
    weighted = [sum(idf(t) * lp for t, lp in toks) / sum(idf(t) for t, _ in toks) for toks in scored]
    for label, values in (("mean", mean), ("idf", weighted)):
        hits = collections.defaultdict(list)
        for (qid, docid), value in zip(pairs, values):
            hits[qid].append((value, docid))
        ranked = {qid: {d: v for v, d in sorted(scored_hits, reverse=True)} for qid, scored_hits in hits.items()}
        Run.from_dict(ranked).write(f"{prefix}-{label}.trec", tag=f"upr-{label}")
    print(f"{run_path}: {len(pairs)} pairs scored -> {prefix}-mean.trec, {prefix}-idf.trec", flush=True)

"""How fast this machine runs the frozen LM on a query-likelihood workload: fresh-prefix pairs per second.

The matmul probe of :mod:`.precision` says which precision is faster; it does not size a job: two 2-core
avx512_bf16 EPYCs that probed 806 and 223 bf16 GFLOP/s (3.6x apart) ran the same bf16 demo in 13 and 24 min (1.9x
apart). :func:`scoring_rate` times the real scorer on the real LM instead: synthetic
documents of exactly ``passage_tokens`` tokens, each with its own query, so every pair pays a prefix forward (the
cost that dominates reranking and training alike). It takes a few seconds (4-8 s for SmolLM2 at 256
tokens in bf16 on 2 cores).
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .backbone import FrozenLM

_WORDS = ("protein", "cell", "expression", "patients", "risk", "increased", "study", "analysis", "gene", "tumor",
          "response", "clinical", "levels", "mice", "treatment", "model", "human", "effect", "receptor", "signal")
QUERY = "Increased expression of the receptor in tumor cells reduces the clinical response to treatment."


def synthetic_passage(index: int, words: int) -> str:
    """A deterministic pseudo-abstract of ``words`` words; ``index`` makes each one (and its prefix) distinct."""
    return f"Document {index}. " + " ".join(_WORDS[(index * 7 + 3 * k + k * k) % len(_WORDS)] for k in range(words))


def scoring_rate(lm: "FrozenLM", passage_tokens: int, pairs: int = 8, rounds: int = 3, warmup: int = 4) -> float:
    """Pairs per second of :class:`~.scoring.QueryLikelihoodScorer` on ``lm`` (its device and dtype) when every
    pair has its own ``passage_tokens``-token passage: ``warmup`` pairs first (not timed), then ``rounds`` rounds of
    ``pairs`` new pairs; the fastest round counts (a busy moment slows one round, not the machine)."""
    from ..data import Document
    from .scoring import QueryLikelihoodScorer, ScorerConfig

    if pairs < 1 or rounds < 1 or warmup < 0:
        raise ValueError(f"pairs and rounds must be >= 1 and warmup >= 0, got {pairs}, {rounds}, {warmup}")
    scorer = QueryLikelihoodScorer(lm, ScorerConfig(max_passage_tokens=passage_tokens))
    # about 1.3 tokens per word: twice the budget in words is always cut to exactly the budget
    docs = [Document(f"probe-{i}", "", synthetic_passage(i, 2 * passage_tokens))
            for i in range(warmup + rounds * pairs)]
    if warmup:
        scorer.score([QUERY] * warmup, docs[:warmup])
    best = 0.0
    for r in range(rounds):
        batch = docs[warmup + r * pairs: warmup + (r + 1) * pairs]
        start = time.perf_counter()
        scorer.score([QUERY] * pairs, batch)
        best = max(best, pairs / max(time.perf_counter() - start, 1e-9))
    return best

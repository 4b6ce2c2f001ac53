"""First-stage scores for training a reranker that will be interpolated with its first stage (beyond the papers).

Every headline reranking row is ``a*z(first stage) + (1-a)*z(LM)`` over the reranked depth, which ranks documents as
``LM + lambda * z(first stage)`` does, with ``lambda = a/(1-a)`` times the LM scores' per-query spread. A loss on the
LM score alone also spends its effort on pairs the first stage already orders; with ``train qpeft
--first-stage-weight LAMBDA`` the pairwise hinge compares the fused scores, so a pair the first stage separates by
more than the margin stops contributing and training concentrates on what BM25 gets wrong.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from ..types import Run


@dataclass(frozen=True)
class FirstStageScores:
    """One query's first-stage z-scores: each retrieved document's score standardised by the mean and (population)
    standard deviation of the query's top ``depth`` scores, as ``fuse --method rerank-interpolation`` normalises them.

    Attributes:
        z: docid -> z-score, for every retrieved document (also below the depth).
        floor: the z-score of a document the run did not retrieve: its last hit's (a lower bound of its score).
    """

    z: Mapping[str, float]
    floor: float

    def __call__(self, docid: str) -> float:
        return self.z.get(docid, self.floor)


def first_stage_zscores(run: Run, depth: int) -> dict[str, FirstStageScores]:
    """:class:`FirstStageScores` for every query of ``run`` (hits in rank order); all zero where the top ``depth``
    scores do not vary."""
    from ..search.fusion import zscore_params

    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    out = {}
    for qid in run.qids():
        hits = run[qid]
        if not hits:
            continue
        mean, std = zscore_params([h.score for h in hits[:depth]])
        z = {h.docid: (h.score - mean) / std if std > 0 else 0.0 for h in hits}
        out[qid] = FirstStageScores(z, z[hits[-1].docid])
    return out

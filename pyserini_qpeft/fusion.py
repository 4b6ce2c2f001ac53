"""Fusing runs: reciprocal rank fusion and sparse/dense score interpolation (Pyserini's hybrid style).

Both are deterministic: inputs are read in rank order (``(-score, docid)``), outputs ranked the same way, queries
kept in order of first appearance across the inputs. Neither mutates its inputs.
"""
from __future__ import annotations

import logging
import statistics
from typing import Sequence

from .types import Hit, Run

logger = logging.getLogger(__name__)

NORMALIZATIONS = ("minmax", "zscore", "none")


def _qids(runs: Sequence[Run]) -> list[str]:
    return list(dict.fromkeys(qid for run in runs for qid in run.qids()))


def rrf(runs: Sequence[Run], k: int = 60, depth: int = 1000, tag: str = "rrf") -> Run:
    """Reciprocal rank fusion: ``score(d) = sum_runs 1 / (k + rank_run(d))`` over each run's top ``depth``.

    Ranks start at 1 (as in Cormack et al. and ``pyserini.fusion``); the fused run keeps the top ``depth``.
    """
    if not runs:
        raise ValueError("rrf needs at least one run")
    if k < 0:
        raise ValueError(f"rrf k must be >= 0, got {k}")
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    fused = Run(tag=tag)
    for qid in _qids(runs):
        scores: dict[str, float] = {}
        for run in runs:
            if qid not in run:
                continue
            for rank, hit in enumerate(run[qid][:depth], start=1):
                scores[hit.docid] = scores.get(hit.docid, 0.0) + 1.0 / (k + rank)
        fused.set(qid, [Hit(d, s) for d, s in scores.items()])
        fused.hits[qid] = fused.hits[qid][:depth]
    return fused


def _normalize(scores: dict[str, float], method: str) -> dict[str, float]:
    if method == "none" or not scores:
        return dict(scores)
    values = list(scores.values())
    if method == "minmax":
        lo, hi = min(values), max(values)
        if hi == lo:  # one hit, or all tied: every document is equally the best
            return {d: 1.0 for d in scores}
        return {d: (s - lo) / (hi - lo) for d, s in scores.items()}
    mean = statistics.fmean(values)
    std = statistics.pstdev(values) if len(values) > 1 else 0.0
    if std == 0:
        return {d: 0.0 for d in scores}
    return {d: (s - mean) / std for d, s in scores.items()}


def interpolate(sparse: Run, dense: Run, alpha: float = 0.5, normalization: str = "minmax", depth: int = 1000,
                tag: str = "hybrid") -> Run:
    """Hybrid score ``alpha * sparse + (1 - alpha) * dense`` per document, over each run's top ``depth``.

    Scores are first normalised per query and run (``minmax`` to [0, 1], ``zscore``, or ``none``). As in Pyserini's
    ``HybridSearcher``, a document missing from one run gets that run's minimum score for the query.
    """
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    fused = Run(tag=tag)
    for qid in _qids([sparse, dense]):
        s = _normalize({h.docid: h.score for h in sparse[qid][:depth]} if qid in sparse else {}, normalization)
        d = _normalize({h.docid: h.score for h in dense[qid][:depth]} if qid in dense else {}, normalization)
        s_min = min(s.values()) if s else 0.0
        d_min = min(d.values()) if d else 0.0
        docs = list(dict.fromkeys([*s, *d]))
        fused.set(qid, [Hit(doc, alpha * s.get(doc, s_min) + (1.0 - alpha) * d.get(doc, d_min)) for doc in docs])
        fused.hits[qid] = fused.hits[qid][:depth]
    return fused

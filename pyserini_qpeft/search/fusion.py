"""Fusing runs: reciprocal rank fusion and sparse/dense score interpolation (Pyserini's hybrid style); a rerank's
interpolation with its first stage, and several reranks of one first stage averaged as one.

All are deterministic: inputs are read in rank order (``(-score, docid)``), outputs ranked the same way, queries
kept in order of first appearance across the inputs. None mutates its inputs.
"""
from __future__ import annotations

import logging
import statistics
from typing import Sequence

from ..types import Hit, Run, merge_reranked

logger = logging.getLogger(__name__)

NORMALIZATIONS = ("minmax", "zscore", "none")


def _qids(runs: Sequence[Run]) -> list[str]:
    return list(dict.fromkeys(qid for run in runs for qid in run.qids()))


def rrf(runs: Sequence[Run], rrf_k: int = 60, depth: int = 1000, tag: str = "rrf", *, k: int | None = None) -> Run:
    """Reciprocal rank fusion: ``score(d) = sum_runs 1 / (rrf_k + rank_run(d))`` over each run's top ``depth``.

    As ``pyserini.fusion.reciprocal_rank_fusion``: ranks start at 1, ties are broken by docid, the fused run keeps
    the top ``k`` per query (None: ``depth``).
    """
    if not runs:
        raise ValueError("rrf needs at least one run")
    if rrf_k < 0:
        raise ValueError(f"rrf_k must be >= 0, got {rrf_k}")
    _check_depths(depth, k)
    fused = Run(tag=tag)
    for qid in _qids(runs):
        scores: dict[str, float] = {}
        for run in runs:
            if qid not in run:
                continue
            for rank, hit in enumerate(run[qid][:depth], start=1):
                scores[hit.docid] = scores.get(hit.docid, 0.0) + 1.0 / (rrf_k + rank)
        fused.set(qid, [Hit(d, s) for d, s in scores.items()])
        fused.hits[qid] = fused.hits[qid][:k or depth]
    return fused


def _check_depths(depth: int, k: int | None) -> None:
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    if k is not None and k < 1:
        raise ValueError(f"k must be >= 1, got {k}")


def zscore_params(values: Sequence[float]) -> tuple[float, float]:
    """``(mean, population std)`` of ``values`` (std 0 for a single value): what ``zscore`` standardises by."""
    return statistics.fmean(values), statistics.pstdev(values) if len(values) > 1 else 0.0


def _normalize(scores: dict[str, float], method: str) -> dict[str, float]:
    if method == "none" or not scores:
        return dict(scores)
    values = list(scores.values())
    if method == "minmax":
        lo, hi = min(values), max(values)
        if hi == lo:  # one hit, or all tied: every document is equally the best
            return {d: 1.0 for d in scores}
        return {d: (s - lo) / (hi - lo) for d, s in scores.items()}
    mean, std = zscore_params(values)
    if std == 0:
        return {d: 0.0 for d in scores}
    return {d: (s - mean) / std for d, s in scores.items()}


def _check_interpolation(alpha: float, normalization: str, depth: int, k: int | None = None) -> None:
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    _check_depths(depth, k)


def interpolate(sparse: Run, dense: Run, alpha: float = 0.5, normalization: str = "minmax", depth: int = 1000,
                tag: str = "hybrid", *, k: int | None = None) -> Run:
    """Hybrid score ``alpha * sparse + (1 - alpha) * dense`` per document, over each run's top ``depth``; the top
    ``k`` per query are kept (None: ``depth``).

    Scores are first normalised per query and run (``minmax`` to [0, 1], ``zscore``, or ``none``). As in Pyserini's
    ``HybridSearcher``, a document missing from one normalised run gets that run's minimum score for the query;
    with ``none`` it gets 0, so raw scores are summed as ``python -m pyserini.fusion --method interpolation`` sums
    them.
    """
    _check_interpolation(alpha, normalization, depth, k)
    fused = Run(tag=tag)
    for qid in _qids([sparse, dense]):
        s = _normalize({h.docid: h.score for h in sparse[qid][:depth]} if qid in sparse else {}, normalization)
        d = _normalize({h.docid: h.score for h in dense[qid][:depth]} if qid in dense else {}, normalization)
        raw = normalization == "none"  # pyserini.fusion's interpolation: a missing document scores 0
        s_min = min(s.values()) if s and not raw else 0.0
        d_min = min(d.values()) if d and not raw else 0.0
        docs = list(dict.fromkeys([*s, *d]))
        fused.set(qid, [Hit(doc, alpha * s.get(doc, s_min) + (1.0 - alpha) * d.get(doc, d_min)) for doc in docs])
        fused.hits[qid] = fused.hits[qid][:k or depth]
    return fused


# ------------------------------------------------------------------------------------------------------------
# First-stage interpolation of a rerank (beyond the papers: the LM score and BM25 are complementary)

ALPHA_GRID = tuple(round(0.05 * i, 2) for i in range(21))
"""Weights of the first stage tried by :func:`select_alpha`: 0.0, 0.05, ..., 1.0."""


def interpolate_rerank(first_stage: Run, reranked: Run, alpha: float, depth: int, normalization: str = "zscore",
                       tag: str = "interpolated") -> Run:
    """``alpha * norm(first-stage score) + (1 - alpha) * norm(reranker score)`` over each query's top ``depth``
    first-stage hits; hits below ``depth`` keep their first-stage order under them.

    Args:
        first_stage: the run that was reranked (BM25, dense, hybrid).
        reranked: the reranker's run over the same queries; its scores of the top ``depth`` documents are used.
        alpha: weight of the first stage in [0, 1] (0 = the reranker alone, 1 = the first stage alone).
        normalization: per-query normalisation of both score lists over the reranked depth (``zscore``,
            ``minmax`` or ``none``).
    """
    _check_interpolation(alpha, normalization, depth)
    fused = Run(tag=tag)
    for qid in first_stage.qids():
        hits = first_stage[qid]
        top = hits[:depth]
        first = _normalize({h.docid: h.score for h in top}, normalization)
        lm = _normalize(_reranker_scores(qid, top, reranked, depth), normalization)
        scores = {d: alpha * first[d] + (1.0 - alpha) * lm[d] for d in first}
        fused.set(qid, merge_reranked(hits, scores, depth))
    return fused


def _reranker_scores(qid: str, top: Sequence[Hit], reranked: Run, depth: int) -> dict[str, float]:
    """``{docid: reranker score}`` of the first stage's ``top`` hits of ``qid``; ValueError when one is missing."""
    scores = {h.docid: h.score for h in reranked[qid]} if qid in reranked else {}
    missing = [h.docid for h in top if h.docid not in scores]
    if missing:
        raise ValueError(f"query {qid}: document {missing[0]} of the first stage's top {depth} has no reranker "
                         f"score (was the rerank depth smaller?)")
    return {h.docid: scores[h.docid] for h in top}


def check_rerank_covers(first_stage: Run, reranked: Run, depth: int) -> None:
    """ValueError unless ``reranked`` scores every document of each query's first-stage top ``depth``."""
    for qid in first_stage.qids():
        _reranker_scores(qid, first_stage[qid][:depth], reranked, depth)


def average_reranks(first_stage: Run, reranks: Sequence[Run], depth: int, normalization: str = "zscore",
                    tag: str = "ensemble") -> Run:
    """Several reranks of the same first stage as one (e.g. a reranker's training seeds; beyond the papers): a
    document's score is the mean over ``reranks`` of its per-query normalised score among the first stage's top
    ``depth``; hits below ``depth`` keep their first-stage order under them (as :func:`interpolate_rerank`).

    Averaging normalised scores rather than raw log-likelihoods keeps one reranker whose scores spread wider from
    outvoting the others. ``interpolate_rerank(first_stage, average_reranks(...), alpha, depth)`` interpolates the
    ensemble with the first stage (``fuse --method rerank-interpolation`` with several reranks).
    """
    _check_interpolation(0.0, normalization, depth)
    if not reranks:
        raise ValueError("average_reranks needs at least one rerank")
    fused = Run(tag=tag)
    for qid in first_stage.qids():
        hits = first_stage[qid]
        top = hits[:depth]
        each = [_normalize(_reranker_scores(qid, top, run, depth), normalization) for run in reranks]
        scores = {h.docid: statistics.fmean(scores[h.docid] for scores in each) for h in top}
        fused.set(qid, merge_reranked(hits, scores, depth))
    return fused


FUSION_METHODS = ("rerank-interpolation", "interpolation")
"""What a weight is selected for: ``rerank-interpolation`` (:func:`interpolate_rerank`, a rerank of the first
stage's top ``depth``) or ``interpolation`` (:func:`interpolate`, a hybrid of two full runs such as BM25 + dense)."""


def select_alpha(first_stage: Run, reranked: Run, qrels, depth: int, normalization: str = "zscore",
                 metric: str = "ndcg@10", grid: Sequence[float] = ALPHA_GRID, method: str = "rerank-interpolation"
                 ) -> tuple[float, dict[float, float]]:
    """The first-stage (sparse) weight that maximises ``metric`` on (dev) ``qrels``; ties go to the weight nearest
    0.5.

    Only queries of ``first_stage`` judged in ``qrels`` count (so ``first_stage`` holding only the dev queries
    restricts a second run over all training queries to them); call this on dev queries carved from a training
    split, never on test. ``method`` is the fusion the weight is for (:data:`FUSION_METHODS`); for
    ``interpolation`` the runs are ``(sparse, dense)`` and ``depth`` is the fused depth.

    Returns:
        ``(alpha, {alpha: metric value})`` over ``grid``.
    """
    if method not in FUSION_METHODS:
        raise ValueError(f"method must be one of {FUSION_METHODS}, got {method!r}")
    from ..evaluation import evaluate

    judged = [qid for qid in first_stage.qids() if qid in qrels]
    if not judged:
        raise ValueError("no query of the first-stage run is judged in the dev qrels")
    sub_first = Run(tag=first_stage.tag)
    for qid in judged:
        sub_first.set(qid, first_stage[qid])
    sub_qrels = {qid: qrels[qid] for qid in judged}
    table = {}
    for alpha in grid:
        if method == "interpolation":
            run = interpolate(sub_first, _only(reranked, judged), alpha, normalization, depth)
        else:
            run = interpolate_rerank(sub_first, reranked, alpha, depth, normalization)
        table[float(alpha)] = evaluate(run, sub_qrels, [metric])[metric]
    best = max(table.values())
    alpha = min((a for a, v in table.items() if v == best), key=lambda a: (abs(a - 0.5), a))
    return alpha, table


SELECTION_FORMAT = "pyserini_qpeft.interpolation/1"


def _only(run: Run, qids: Sequence[str]) -> Run:
    """``run`` restricted to ``qids`` (those it holds)."""
    return Run({q: run[q] for q in qids if q in run}, tag=run.tag)


def selection_record(alpha: float, table: dict[float, float], metric: str, depth: int, normalization: str,
                     queries: int, method: str = "rerank-interpolation", **sources: str | list[str]) -> dict:
    """The JSON record of a dev selection (what ``--interpolate FILE`` and ``fuse --alpha FILE`` read)."""
    return {"format": SELECTION_FORMAT, "alpha": alpha, "method": method, "metric": metric, "depth": depth,
            "normalization": normalization, "dev_queries": queries,
            "table": {f"{a:.2f}": round(v, 6) for a, v in sorted(table.items())}, **sources}


def covered_depth(first_stage: Run, depth: int) -> int:
    """The depth a rerank of ``first_stage``'s top ``depth`` really covers: ``depth``, or fewer when no query has as
    many hits (what a selection records and what its weight is compared at)."""
    return min(depth, max(map(len, first_stage.hits.values()), default=depth))


def other_depth_note(selected_at: object, depth: int | None) -> str:
    """The clause a warning adds when a weight selected reranking the top ``selected_at`` is applied to a rerank
    of the top ``depth`` ("" when they agree or either is unknown)."""
    if depth is None or not isinstance(selected_at, int) or isinstance(selected_at, bool) or selected_at == depth:
        return ""
    return (f"it was selected reranking the top {selected_at}, this rerank covers the top {depth}: the best weight "
            f"can differ with the depth (select one at this depth with `pyserini-qpeft select-interpolation` and "
            f"pass that file)")


def read_selection(path: str) -> dict:
    """A selection record written by ``pyserini-qpeft select-interpolation``; InputError when it is not one."""
    from ..artifacts import read_json
    from ..errors import InputError

    data = read_json(path, "not an interpolation selection file")
    if not isinstance(data, dict) or data.get("format") != SELECTION_FORMAT or \
            not isinstance(data.get("alpha"), (int, float)) or not 0.0 <= data["alpha"] <= 1.0:
        raise InputError(f"not an interpolation selection file (format {SELECTION_FORMAT!r} with an alpha in "
                         f"[0, 1])", str(path))
    return data


def selection_method(record: dict) -> str:
    """The fusion a selection record's weight is for (records written before hybrids had one: a rerank's)."""
    return record.get("method", "rerank-interpolation")


def check_selection_method(record: dict, method: str, path: str) -> None:
    """ValueError unless the record's weight was selected for ``method`` (the one check of `fuse --alpha FILE`
    and `rerank --interpolate FILE`)."""
    selected = selection_method(record)
    if selected != method:
        kind = "a rerank" if method == "rerank-interpolation" else "a hybrid of two runs"
        raise ValueError(f"{path} was selected for --method {selected}, not for {kind} (--method {method})")


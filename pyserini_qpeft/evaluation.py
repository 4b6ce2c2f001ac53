"""Retrieval metrics that equal ``trec_eval -c`` (version 9.0.x, the one Pyserini ships) to the last digit.

Conventions copied from trec_eval, because published BEIR numbers come from it:

* Each query's documents are re-ranked by score descending, ties broken by docid *descending* (byte order); the
  rank column of a run file plays no part.
* ``-c``: the mean is over every query id in the qrels, including queries without any relevant document (they
  score 0) and queries missing from the run (they score 0). Run queries absent from the qrels are ignored.
* A document is relevant when its judgment is >= 1, or >= ``relevance_level`` (trec_eval ``-l``; TREC DL's
  passage MAP and recall use ``-l 2``). nDCG ignores the level: it uses the judgment as gain (graded), discount
  ``log2(rank + 1)``, and the ideal ranking built from the qrels' positive judgments.

Metric names are ``name@k`` (any k >= 1) or a bare name:

============== ====================== =======================================
name           trec_eval              meaning
============== ====================== =======================================
ndcg@k         ``-m ndcg_cut.k``      nDCG of the top k
ndcg           ``-m ndcg``            nDCG of the whole ranked list
recall@k       ``-m recall.k``        relevant in top k / all relevant
precision@k    ``-m P.k``             relevant in top k / k (also ``p@k``)
hit@k          ``-m success.k``       1 if any relevant in top k (also ``success@k``)
mrr@k          ``-M k -m recip_rank`` 1 / rank of the first relevant in top k
mrr            ``-m recip_rank``      same over the whole list
map            ``-m map``             average precision over the whole list
map@k          ``-m map_cut.k``       average precision of the top k
============== ====================== =======================================
"""
from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence, Union

from .errors import InputError
from .types import Hit, Run

logger = logging.getLogger(__name__)

DEFAULT_METRICS = ("ndcg@10", "recall@100", "recall@1000", "mrr@10", "map", "hit@10", "recall@10")
METRICS = frozenset(DEFAULT_METRICS) | {
    "ndcg@5", "ndcg@20", "ndcg@100", "ndcg", "recall@5", "recall@20", "recall@50", "mrr@100", "mrr", "hit@1",
    "hit@5", "hit@20", "hit@100", "precision@1", "precision@5", "precision@10", "map@10", "map@100", "map@1000",
}
"""Common names; any ``ndcg@k``, ``recall@k``, ``mrr@k``, ``hit@k``, ``precision@k``, ``map@k`` is accepted."""

_KINDS_WITH_OPTIONAL_K = ("ndcg", "mrr", "map")
_KINDS_NEEDING_K = ("recall", "precision", "hit")
_ALIASES = {"p": "precision", "r": "recall", "success": "hit", "recip_rank": "mrr", "ndcg_cut": "ndcg",
            "map_cut": "map"}
_NAME = re.compile(r"^(?P<kind>[a-z_]+)(?:[@.](?P<k>\d+))?$")  # ndcg@10, or trec_eval's ndcg_cut.10

RunLike = Union[Run, Mapping[str, Sequence[Hit]], Mapping[str, Mapping[str, float]]]
Qrels = Mapping[str, Mapping[str, int]]


@dataclass(frozen=True)
class Metric:
    """A parsed metric name: ``kind`` in ndcg/recall/precision/hit/mrr/map, ``k`` the cutoff (None: no cutoff)."""

    kind: str
    k: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in _KINDS_WITH_OPTIONAL_K + _KINDS_NEEDING_K:
            raise InputError(f"unknown metric kind {self.kind!r}")
        if self.k is None and self.kind in _KINDS_NEEDING_K:
            raise InputError(f"metric {self.kind!r} needs a cutoff, e.g. {self.kind}@10")
        if self.k is not None and self.k < 1:
            raise InputError(f"metric cutoff must be >= 1, got {self.kind}@{self.k}")

    @property
    def name(self) -> str:
        return self.kind if self.k is None else f"{self.kind}@{self.k}"


def parse_metric(name: str) -> Metric:
    """``'ndcg@10'`` -> ``Metric('ndcg', 10)``. Case-insensitive; aliases ``p@k``, ``r@k``, ``success@k``, and
    trec_eval's spellings (``ndcg_cut.10``, ``P.5``, ``recall.100``, ``map_cut.10``, ``success.10``, ``recip_rank``).

    Raises:
        InputError: an unknown name or a bad cutoff (the message lists the accepted forms).
    """
    match = _NAME.match(str(name).strip().lower())
    kind = match.group("kind") if match else None
    kind = _ALIASES.get(kind, kind)
    if match is None or kind not in _KINDS_WITH_OPTIONAL_K + _KINDS_NEEDING_K:
        raise InputError(f"unknown metric {name!r}; use ndcg@k, recall@k, precision@k, hit@k, mrr@k, map@k, "
                         "or ndcg, mrr, map (or trec_eval's names: ndcg_cut.k, P.k, recall.k, map_cut.k, "
                         "success.k, recip_rank)")
    return Metric(kind, int(match.group("k")) if match.group("k") else None)


def metric_list(metrics: str | Iterable[str]) -> list[str]:
    """The metric names in ``metrics`` (names, or comma-separated lists of them); a bare number continues the
    cutoffs of the name before it, as trec_eval's ``-m P.5,10`` (``ndcg@10,100`` = ``ndcg@10``, ``ndcg@100``)."""
    names: list[str] = []
    for spec in [metrics] if isinstance(metrics, str) else metrics:
        stem = None
        for part in (p.strip() for p in str(spec).split(",")):
            if not part:
                continue
            if part.isdigit() and stem:
                part = stem + part
            names.append(part)
            cut = re.match(r"^(.*?[@.])\d+$", part)
            stem = cut.group(1) if cut else None
    if not names:
        raise InputError("no metrics requested")
    return names


def trec_eval_name(metric: str) -> list[str]:
    """The trec_eval arguments computing ``metric``: ``'ndcg@10'`` -> ``['-m', 'ndcg_cut.10']``,
    ``'mrr@10'`` -> ``['-M', '10', '-m', 'recip_rank']`` (``-M`` applies to a whole trec_eval call)."""
    m = parse_metric(metric)
    if m.kind == "mrr":
        return (["-M", str(m.k)] if m.k else []) + ["-m", "recip_rank"]
    base = {"ndcg": "ndcg_cut" if m.k else "ndcg", "recall": "recall", "precision": "P", "hit": "success",
            "map": "map_cut" if m.k else "map"}[m.kind]
    return ["-m", f"{base}.{m.k}" if m.k else base]


def trec_eval_measure(metric: str) -> str:
    """The label trec_eval prints for ``metric``: ``'ndcg@10'`` -> ``'ndcg_cut_10'``, ``'mrr@10'`` ->
    ``'recip_rank'``."""
    measure = trec_eval_name(metric)[-1]
    return measure.replace(".", "_")


# --------------------------------------------------------------------------------------------------------------
# Per-query computation


def _scored_docs(run: RunLike) -> dict[str, list[tuple[str, float]]]:
    """qid -> [(docid, score)] from a Run, qid -> [Hit], or qid -> {docid: score}."""
    hits = run.hits if isinstance(run, Run) else run
    out: dict[str, list[tuple[str, float]]] = {}
    for qid, docs in hits.items():
        if isinstance(docs, Mapping):
            out[str(qid)] = [(str(d), float(s)) for d, s in docs.items()]
        else:
            out[str(qid)] = [(h.docid, float(h.score)) for h in docs]
    return out


def trec_eval_order(docs: Iterable[tuple[str, float]]) -> list[str]:
    """Docids ranked as trec_eval ranks them: score descending, ties by docid descending (byte order)."""
    by_docid_desc = sorted(docs, key=lambda d: d[0].encode("utf-8"), reverse=True)
    return [docid for docid, _ in sorted(by_docid_desc, key=lambda d: -d[1])]  # stable: keeps the docid order


def _dcg(gains: Iterable[int]) -> float:
    total = 0.0
    for i, gain in enumerate(gains):
        if gain > 0:
            total += gain / math.log2(i + 2)
    return total


def _score(metric: Metric, rels: list[int], judged: Mapping[str, int], level: int = 1) -> float:
    """One query's value; ``rels`` holds the judgment of each ranked doc (-1 when unjudged); a document is relevant
    when its judgment is >= ``level`` (nDCG's graded gains ignore it, as trec_eval's do)."""
    k = metric.k
    top = rels[:k] if k else rels
    num_rel = sum(1 for r in judged.values() if r >= level)
    if metric.kind == "ndcg":
        ideal = _dcg(sorted((r for r in judged.values() if r > 0), reverse=True)[:k] if k else
                     sorted((r for r in judged.values() if r > 0), reverse=True))
        return _dcg(top) / ideal if ideal > 0 else 0.0
    if metric.kind == "recall":
        return sum(1 for r in top if r >= level) / num_rel if num_rel else 0.0
    if metric.kind == "precision":
        return sum(1 for r in top if r >= level) / k
    if metric.kind == "hit":
        return 1.0 if any(r >= level for r in top) else 0.0
    if metric.kind == "mrr":
        return next((1.0 / rank for rank, r in enumerate(top, start=1) if r >= level), 0.0)
    if metric.kind == "map":
        if not num_rel:
            return 0.0
        found, total = 0, 0.0
        for rank, r in enumerate(top, start=1):
            if r >= level:
                found += 1
                total += found / rank
        return total / num_rel
    raise AssertionError(metric)  # parse_metric admits no other kind


def evaluate_per_query(run: RunLike, qrels: Qrels, metrics: str | Iterable[str] = DEFAULT_METRICS,
                       relevance_level: int = 1) -> dict[str, dict[str, float]]:
    """qid -> metric name -> value for every query in ``qrels`` (0 for queries missing from the run).

    The mean of each column is :func:`evaluate`'s value. Run queries without judgments are left out.
    ``relevance_level``: the lowest judgment that counts as relevant (trec_eval ``-l``; not used by nDCG).

    Raises:
        InputError: unknown metric, empty qrels, or a docid listed twice for one query.
    """
    names = metric_list(metrics)
    parsed = [parse_metric(n) for n in names]
    if relevance_level < 1:
        raise InputError(f"relevance level must be >= 1, got {relevance_level}")
    if not qrels:
        raise InputError("qrels are empty: nothing to evaluate against")
    scored = _scored_docs(run)
    unjudged_queries = [qid for qid in scored if qid not in qrels]
    if unjudged_queries:
        logger.debug("%d run queries have no judgments and are ignored", len(unjudged_queries))
    result: dict[str, dict[str, float]] = {}
    for qid, judged in qrels.items():
        docs = scored.get(str(qid), [])
        ranked = trec_eval_order(docs)
        if len(set(ranked)) != len(ranked):
            dup = next(d for i, d in enumerate(ranked) if d in ranked[:i])
            raise InputError(f"docid {dup} appears twice in the run for query {qid}")
        rels = [judged.get(docid, -1) for docid in ranked]
        result[qid] = {name: _score(m, rels, judged, relevance_level) for name, m in zip(names, parsed)}
    return result


def evaluate(run: RunLike, qrels: Qrels, metrics: str | Iterable[str] = DEFAULT_METRICS,
             relevance_level: int = 1) -> dict[str, float]:
    """Metric name -> mean over all qrels queries, equal to ``trec_eval -c [-l relevance_level]`` (see the module
    docstring).

    Args:
        run: a :class:`Run`, qid -> [Hit], or qid -> {docid: score} (BEIR ``results``).
        qrels: qid -> docid -> relevance (graded; >= ``relevance_level`` is relevant).
        metrics: names like ``'ndcg@10'`` (a list, or one comma-separated string).
        relevance_level: trec_eval's ``-l`` (TREC DL passage MAP / recall: 2); nDCG does not use it.
    """
    return mean_metrics(evaluate_per_query(run, qrels, metrics, relevance_level), metrics)


def mean_metrics(per_query: Mapping[str, Mapping[str, float]], metrics: str | Iterable[str],
                 qids: Iterable[str] | None = None) -> dict[str, float]:
    """Metric name -> mean of :func:`evaluate_per_query`'s values over ``qids`` (default: every query in it)."""
    rows = [per_query[q] for q in qids] if qids is not None else list(per_query.values())
    return {name: math.fsum(values[name] for values in rows) / len(rows) for name in metric_list(metrics)}


def average_per_query(results: Sequence[Mapping[str, Mapping[str, float]]]) -> dict[str, dict[str, float]]:
    """qid -> metric -> mean over several :func:`evaluate_per_query` results of the same queries and metrics (e.g.
    one system's runs over training seeds: the seed-averaged system that :func:`paired_randomization_test` can then
    compare query by query). InputError when the results cover different queries or metrics."""
    if not results:
        raise InputError("no per-query results to average")
    first = results[0]
    for other in results[1:]:
        if set(other) != set(first):
            raise InputError(f"the runs to average cover different queries ({len(first)} vs {len(other)})")
    out: dict[str, dict[str, float]] = {}
    for qid, values in first.items():
        if any(set(r[qid]) != set(values) for r in results[1:]):
            raise InputError(f"the runs to average have different metrics for query {qid}")
        out[qid] = {name: math.fsum(r[qid][name] for r in results) / len(results) for name in values}
    return out


def split_by_seen_documents(qrels: Qrels, seen: Qrels) -> dict[str, Qrels]:
    """``qrels`` in two groups: ``"seen"`` = queries with a relevant document that is also relevant to some query
    of ``seen`` (e.g. the training split a model learnt from), ``"unseen"`` = the rest; relevance >= 1. A query's
    own judgments in ``seen`` do not count (dev queries split by the other queries of their training split)."""
    known = {docid for qid, rels in seen.items() if qid not in qrels for docid, rel in rels.items() if rel > 0}
    out: dict[str, dict] = {"seen": {}, "unseen": {}}
    for qid, rels in qrels.items():
        group = "seen" if any(rel > 0 and docid in known for docid, rel in rels.items()) else "unseen"
        out[group][qid] = rels
    return out


RANDOMIZATION_TRIALS = 10_000
"""Sign flips of :func:`paired_randomization_test` (Monte Carlo error of p: at most 0.005)."""
RANDOMIZATION_SEED = 0
"""Seed of those sign flips: the same inputs give the same p on any machine."""
TIE_TOLERANCE = 1e-9
"""Per-query differences within this are ties (:func:`per_query_comparison`)."""


def paired_differences(base: Mapping[str, Mapping[str, float]], other: Mapping[str, Mapping[str, float]],
                       metric: str) -> dict[str, float]:
    """qid -> ``other - base`` on one metric, over the queries of either :func:`evaluate_per_query` result, sorted by
    qid; a query missing on one side counts as 0 there. InputError when a listed query lacks the metric."""
    out: dict[str, float] = {}
    for qid in sorted(set(base) | set(other)):
        if qid in base and metric not in base[qid] or qid in other and metric not in other[qid]:
            raise InputError(f"metric {metric!r} missing from the per-query results of query {qid}")
        out[qid] = other.get(qid, {}).get(metric, 0.0) - base.get(qid, {}).get(metric, 0.0)
    return out


def paired_randomization_test(base: Mapping[str, Mapping[str, float]], other: Mapping[str, Mapping[str, float]],
                              metric: str, trials: int = RANDOMIZATION_TRIALS,
                              seed: int = RANDOMIZATION_SEED) -> dict[str, float]:
    """Two-sided paired randomization test (Smucker et al., CIKM 2007) of ``other`` against ``base`` on one metric,
    from two :func:`evaluate_per_query` results over the same queries (:func:`paired_differences`).

    Under the null hypothesis each query's difference is as likely negated; ``p`` = (1 + the number of ``trials``
    random sign flips whose |mean difference| reaches the observed one) / (1 + ``trials``), seeded, so the same
    inputs give the same p on any machine.

    Returns:
        ``{"delta": mean(other - base), "p": ..., "queries": n, "trials": trials}``.
    """
    return _sign_flip_test(paired_differences(base, other, metric), trials, seed)


def _sign_flip_test(diffs: Mapping[str, float], trials: int, seed: int) -> dict[str, float]:
    """:func:`paired_randomization_test` on the :func:`paired_differences` already computed."""
    import numpy as np

    if trials < 1:
        raise ValueError(f"trials must be >= 1, got {trials}")
    if not diffs:
        raise InputError("no queries to compare")
    diff = np.array(list(diffs.values()))
    observed = abs(diff.mean())
    rng = np.random.default_rng(seed)
    reached = 0
    for start in range(0, trials, 1000):
        signs = rng.choice(np.array([-1.0, 1.0]), size=(min(1000, trials - start), len(diff)))
        reached += int((np.abs(signs @ diff) / len(diff) >= observed - 1e-12).sum())
    return {"delta": float(diff.mean()), "p": (1 + reached) / (1 + trials), "queries": len(diff), "trials": trials}


def compare_per_query(base: Mapping[str, Mapping[str, float]], other: Mapping[str, Mapping[str, float]],
                      metric: str) -> dict[str, float]:
    """``other`` against ``base`` on one metric: the counts of :func:`per_query_comparison` (``improved`` / ``hurt``
    / ``tied``) with :func:`paired_randomization_test`'s ``delta``, ``p``, ``queries`` and ``trials``."""
    diffs = paired_differences(base, other, metric)  # aligned and validated once for the counts and the test
    counts = {k: len(v) for k, v in _outcomes(diffs, TIE_TOLERANCE).items()}
    return {**_sign_flip_test(diffs, RANDOMIZATION_TRIALS, RANDOMIZATION_SEED), **counts}


def per_query_comparison(base: Mapping[str, Mapping[str, float]], other: Mapping[str, Mapping[str, float]],
                         metric: str, tolerance: float = TIE_TOLERANCE) -> dict[str, list[str]]:
    """Win/tie/loss of ``other`` against ``base`` on one metric, from two :func:`evaluate_per_query` results.

    Returns:
        ``{"improved": [qids], "hurt": [qids], "tied": [qids]}``, each sorted; a query missing on one side counts
        as 0 there. Differences within ``tolerance`` are ties.
    """
    return _outcomes(paired_differences(base, other, metric), tolerance)


def _outcomes(diffs: Mapping[str, float], tolerance: float) -> dict[str, list[str]]:
    """:func:`per_query_comparison` on the :func:`paired_differences` already computed."""
    out: dict[str, list[str]] = {"improved": [], "hurt": [], "tied": []}
    for qid, diff in diffs.items():
        out["tied" if abs(diff) <= tolerance else ("improved" if diff > 0 else "hurt")].append(qid)
    return out

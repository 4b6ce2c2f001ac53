"""Training examples for Q-PEFT: (query, positives, ranked hard negatives) from qrels and a first-stage run.

Positives come from the qrels of a *training* split (relevance > 0). Hard negatives are the top-ranked documents
of a first-stage run (e.g. BM25) that are not judged relevant. Queries without a positive, or without any
negative in the run, are skipped and counted. The dev set used for checkpoint selection is carved out of the
training queries (seeded); the test split is never read here.
"""
from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from typing import Mapping, Sequence

from ..errors import InputError
from ..types import Run

logger = logging.getLogger(__name__)

FORBIDDEN_SPLITS = ("test",)


@dataclass(frozen=True)
class TrainingExample:
    """One training query.

    Attributes:
        qid, query: the query.
        positives: judged-relevant docids (relevance > 0), in qrels order; at least one.
        negatives: non-relevant docids of the first-stage run in rank order (up to ``negative_depth``).
        candidates: the run's top ``candidate_depth`` docids (relevant or not), for dev reranking.
    """

    qid: str
    query: str
    positives: tuple[str, ...]
    negatives: tuple[str, ...]
    candidates: tuple[str, ...] = ()


@dataclass
class BuildStats:
    """What :func:`build_examples` kept and skipped."""

    queries: int = 0
    kept: int = 0
    no_positive: int = 0
    no_negative: int = 0
    not_in_run: int = 0
    positives_missing_from_corpus: int = 0
    skipped_qids: list[str] = field(default_factory=list)


def check_split(split: str) -> None:
    """Refuse to train (or select checkpoints) on an evaluation split."""
    if split in FORBIDDEN_SPLITS:
        raise InputError(f"refusing to train on the {split!r} split: it is for evaluation only "
                         f"(use train; the dev set is carved from the training queries)")


def build_examples(queries: Mapping[str, str], qrels: Mapping[str, Mapping[str, int]], run: Run,
                   corpus: Mapping[str, object] | None = None, negative_depth: int = 30,
                   candidate_depth: int = 20) -> tuple[list[TrainingExample], BuildStats]:
    """Examples for every judged query that has a positive and a hard negative.

    Args:
        queries: qid -> text (all queries of the dataset may be passed; only judged ones are used).
        qrels: qid -> docid -> relevance of the training split.
        run: the first-stage run over the same queries (hard negatives).
        corpus: when given, docids missing from it are dropped (a run over another corpus is an error).
        negative_depth: keep this many top-ranked non-relevant docids per query.
        candidate_depth: keep this many top-ranked docids per query as dev rerank candidates.

    Returns:
        ``(examples, stats)``, examples in qrels order.
    """
    if negative_depth < 1 or candidate_depth < 1:
        raise ValueError(f"negative_depth and candidate_depth must be >= 1, got {negative_depth}, {candidate_depth}")
    stats = BuildStats()
    examples = []
    for qid, judged in qrels.items():
        stats.queries += 1
        if qid not in queries:
            raise InputError(f"query {qid} of the qrels has no text")
        positives = [d for d, rel in judged.items() if rel > 0]
        if corpus is not None:
            present = [d for d in positives if d in corpus]
            stats.positives_missing_from_corpus += len(positives) - len(present)
            positives = present
        if not positives:
            stats.no_positive += 1
            stats.skipped_qids.append(qid)
            continue
        if qid not in run:
            stats.not_in_run += 1
            stats.skipped_qids.append(qid)
            continue
        hits = run[qid]
        if corpus is not None:
            unknown = [h.docid for h in hits[:negative_depth] if h.docid not in corpus]
            if unknown:
                raise InputError(f"run docid {unknown[0]} (query {qid}) is not in the corpus: run and dataset differ")
        negatives = [h.docid for h in hits if judged.get(h.docid, 0) <= 0][:negative_depth]
        if not negatives:
            stats.no_negative += 1
            stats.skipped_qids.append(qid)
            continue
        examples.append(TrainingExample(qid, queries[qid], tuple(positives), tuple(negatives),
                                        tuple(h.docid for h in hits[:candidate_depth])))
    stats.kept = len(examples)
    skipped = stats.queries - stats.kept
    if skipped:
        logger.info("skipped %d of %d training queries (no positive: %d, not in run: %d, no negative: %d)",
                    skipped, stats.queries, stats.no_positive, stats.not_in_run, stats.no_negative)
    if not examples:
        raise InputError("no usable training query: every query lacks a positive or a run negative")
    return examples, stats


def split_dev(examples: Sequence[TrainingExample], dev_size: int | float, seed: int
              ) -> tuple[list[TrainingExample], list[TrainingExample]]:
    """Carve a seeded dev set out of the training examples.

    Args:
        dev_size: a count (int >= 0) or a fraction in (0, 1).

    Returns:
        ``(train, dev)``, each in the input order; disjoint by qid.
    """
    n = len(examples)
    if isinstance(dev_size, float) and not isinstance(dev_size, bool) and 0 < dev_size < 1:
        count = max(1, round(n * dev_size))
    elif isinstance(dev_size, int) and dev_size >= 0:
        count = dev_size
    else:
        raise ValueError(f"dev_size must be a count >= 0 or a fraction in (0, 1), got {dev_size!r}")
    if count >= n:
        raise ValueError(f"dev_size {dev_size!r} leaves no training queries out of {n}")
    chosen = set(random.Random(seed).sample(range(n), count))
    train = [e for i, e in enumerate(examples) if i not in chosen]
    dev = [e for i, e in enumerate(examples) if i in chosen]
    return train, dev


@dataclass(frozen=True)
class Pair:
    """One (query, positive, negative) comparison; ``kind`` is ``hard`` or ``in_batch``."""

    query_index: int
    positive: str
    negative: str
    kind: str


def sample_step(batch: Sequence[TrainingExample], rng: random.Random, negatives_per_query: int = 1,
                in_batch: bool = True, hard_pool: int = 10) -> tuple[list[tuple[int, str]], list[Pair]]:
    """The documents to score and the pairs to compare for one step.

    Per query: one positive sampled from its positives; ``negatives_per_query`` hard negatives sampled without
    replacement from its top ``hard_pool`` run negatives; with ``in_batch``, the other queries' sampled positives
    as extra negatives (skipping any that are judged relevant for this query).

    Returns:
        ``(rows, pairs)``: ``rows`` are distinct (query index, docid) to score; ``pairs`` refer to them.
    """
    chosen_pos = [rng.choice(ex.positives) for ex in batch]
    rows: dict[tuple[int, str], None] = {}
    pairs: list[Pair] = []
    for i, ex in enumerate(batch):
        pos = chosen_pos[i]
        rows[(i, pos)] = None
        pool = list(ex.negatives[:hard_pool])
        for neg in rng.sample(pool, min(negatives_per_query, len(pool))):
            rows[(i, neg)] = None
            pairs.append(Pair(i, pos, neg, "hard"))
        if in_batch:
            relevant = set(ex.positives)
            for j, other in enumerate(chosen_pos):
                if j != i and other not in relevant and other != pos:
                    rows[(i, other)] = None
                    pairs.append(Pair(i, pos, other, "in_batch"))
    return list(rows), pairs

"""Training examples from qrels + a first-stage run, the split check, and the dev split (shared by both methods).

Positives come from the qrels of a *training* split (relevance > 0, and present in the corpus when one is given),
in qrels order. Hard negatives are the top-ranked documents of a first-stage run (e.g. BM25) that pass the
negative policy, truncated to ``negative_depth`` *after* filtering:

* ``"non-relevant"`` (Q-PEFT's default): any run document not judged relevant; a document judged 0 (or below)
  is a fine negative.
* ``"unjudged"`` (LMORT's default): only run documents the qrels do not mention at all; a judged non-relevant
  document is left out too, because sparse judgments often mark near-misses.

The dev set used for checkpoint selection is carved out of the training queries by :func:`split_dev` (seeded);
:func:`check_split` refuses the test split in every training and analysis command.
"""
from __future__ import annotations

import logging
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from ..errors import InputError
from ..types import Run

if TYPE_CHECKING:
    from ..data import BeirDataset, Document

logger = logging.getLogger(__name__)

FORBIDDEN_SPLITS = ("test",)
NEGATIVE_POLICIES = ("non-relevant", "unjudged")


@dataclass(frozen=True)
class TrainingExample:
    """One training query.

    Attributes:
        qid, query: the query.
        positives: judged-relevant docids (relevance > 0), in qrels order; at least one.
        negatives: run docids passing the negative policy, in rank order (up to ``negative_depth``; may be
            empty when negatives are optional).
        candidates: the run's top ``candidate_depth`` docids (relevant or not), for dev reranking.
        grades: each positive's judged relevance, parallel to ``positives`` (empty: all 1). Dev metrics use them
            (graded nDCG, as `evaluate` scores a test run); training samples every positive alike.
    """

    qid: str
    query: str
    positives: tuple[str, ...]
    negatives: tuple[str, ...]
    candidates: tuple[str, ...] = ()
    grades: tuple[int, ...] = ()


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

    def summary(self) -> str:
        """One line for the user: kept and skipped counts."""
        line = (f"{self.kept} training queries kept ({self.queries - self.kept} skipped: {self.no_positive} without "
                f"positive, {self.not_in_run} not in the run, {self.no_negative} without negative)")
        if self.positives_missing_from_corpus:  # judged documents the corpus lacks: counted, never said
            line += f"; {self.positives_missing_from_corpus} judged positives are not in the corpus and were left out"
        return line


def check_split(split: str) -> None:
    """Refuse to train, analyse or select checkpoints on an evaluation split (:class:`InputError`, exit 3)."""
    if split in FORBIDDEN_SPLITS:
        raise InputError(f"refusing to train on the {split!r} split: it is for evaluation only "
                         f"(use train; the dev set is carved from the training queries)")


def build_examples(queries: Mapping[str, str], qrels: Mapping[str, Mapping[str, int]], run: Run | None,
                   corpus: Mapping[str, object] | None = None, negative_depth: int = 30,
                   candidate_depth: int = 20, negative_policy: str = "non-relevant",
                   require_negative: bool = True) -> tuple[list[TrainingExample], BuildStats]:
    """Examples for every judged query that has a positive (and a hard negative when ``require_negative``).

    Args:
        queries: qid -> text (all queries of the dataset may be passed; only judged ones are used).
        qrels: qid -> docid -> relevance of the training split.
        run: the first-stage run over the same queries (hard negatives); None = no hard negatives (only
            allowed without ``require_negative``).
        corpus: when given, positives missing from it are dropped, and a run docid missing from it is an error
            (the run was made over another corpus).
        negative_depth: keep this many top-ranked negatives (after the policy filter) per query.
        candidate_depth: keep this many top-ranked docids per query as dev rerank candidates.
        negative_policy: ``"non-relevant"`` or ``"unjudged"`` (see the module docstring).
        require_negative: skip queries without a hard negative (Q-PEFT); LMORT keeps them (in-batch negatives).

    Returns:
        ``(examples, stats)``, examples in qrels order.
    """
    if negative_depth < 1 or candidate_depth < 1:
        raise ValueError(f"negative_depth and candidate_depth must be >= 1, got {negative_depth}, {candidate_depth}")
    if negative_policy not in NEGATIVE_POLICIES:
        raise ValueError(f"negative_policy must be one of {NEGATIVE_POLICIES}, got {negative_policy!r}")
    if run is None and require_negative:
        raise InputError("hard negatives are required: pass a first-stage run (--negatives)")
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
        if run is None or qid not in run:
            stats.not_in_run += 1
            if require_negative:
                stats.skipped_qids.append(qid)
                continue
            hits = []
        else:
            hits = run[qid]
        if corpus is not None:
            unknown = [h.docid for h in hits[:negative_depth] if h.docid not in corpus]
            if unknown:
                raise InputError(f"run docid {unknown[0]} (query {qid}) is not in the corpus: run and dataset differ")
        if negative_policy == "non-relevant":
            negatives = [h.docid for h in hits if judged.get(h.docid, 0) <= 0]
        else:
            negatives = [h.docid for h in hits if h.docid not in judged]
        if corpus is not None:
            negatives = [d for d in negatives if d in corpus]
        negatives = negatives[:negative_depth]
        if not negatives and require_negative:
            stats.no_negative += 1
            stats.skipped_qids.append(qid)
            continue
        examples.append(TrainingExample(qid, queries[qid], tuple(positives), tuple(negatives),
                                        tuple(h.docid for h in hits[:candidate_depth]),
                                        tuple(int(judged[d]) for d in positives)))
    stats.kept = len(examples)
    skipped = stats.queries - stats.kept
    if skipped:
        logger.info("skipped %d of %d training queries (no positive: %d, not in run: %d, no negative: %d)",
                    skipped, stats.queries, stats.no_positive, stats.not_in_run, stats.no_negative)
    if not examples:
        raise InputError("no usable training query: every query lacks a positive in the corpus"
                         + (" or a run negative" if require_negative else ""))
    return examples, stats


def dev_count(n: int, dev_size: int | float) -> int:
    """How many of ``n`` examples :func:`split_dev` puts in dev (``ValueError`` for a malformed ``dev_size``)."""
    if isinstance(dev_size, float) and not isinstance(dev_size, bool) and 0 < dev_size < 1:
        return max(1, round(n * dev_size))
    if isinstance(dev_size, (int, float)) and not isinstance(dev_size, bool) and dev_size == 0:
        return 0
    if isinstance(dev_size, int) and not isinstance(dev_size, bool) and dev_size > 0:
        return dev_size
    raise ValueError(f"dev_size must be a count >= 0 or a fraction in [0, 1), got {dev_size!r}")


DEV_CARVES = ("random", "unseen")
"""How :func:`split_dev` draws dev queries: ``random`` from all examples (the recorded carve); ``unseen`` only from
examples whose positives are positives of no other example, so that no training query ever saw a dev query's
relevant documents as relevant (what a test query of SciFact whose relevant documents were never relevant in
training looks like: the "unseen" group of ``evaluate --seen-qrels``)."""


def unseen_positions(examples: Sequence[TrainingExample]) -> list[int]:
    """Positions of the examples whose every positive is a positive of no other example (in input order)."""
    owners: dict[str, int] = {}
    for example in examples:
        for docid in set(example.positives):
            owners[docid] = owners.get(docid, 0) + 1
    return [i for i, e in enumerate(examples) if all(owners[d] == 1 for d in e.positives)]


def split_dev(examples: Sequence[TrainingExample], dev_size: int | float, seed: int, carve: str = "random"
              ) -> tuple[list[TrainingExample], list[TrainingExample]]:
    """Carve a seeded dev set out of the training examples (the one dev split of both methods).

    Args:
        dev_size: a count (int >= 0), a fraction in (0, 1) of all examples (at least one query), or 0 / 0.0 for no
            dev set.
        seed: ``random.Random(seed).sample`` picks the dev positions.
        carve: ``DEV_CARVES``: ``random`` samples among all examples; ``unseen`` only among
            :func:`unseen_positions` (their positives leave training with them).

    Returns:
        ``(train, dev)``, each in the input order; disjoint by qid.

    Raises:
        ValueError: a malformed ``dev_size`` or ``carve``.
        InputError: the dev set would leave no training query, or (``unseen``) fewer queries qualify than asked.
    """
    if carve not in DEV_CARVES:
        raise ValueError(f"carve must be one of {DEV_CARVES}, got {carve!r}")
    n = len(examples)
    count = dev_count(n, dev_size)
    if count >= n:
        raise InputError(f"a dev set of {dev_size!r} would leave no training query out of {n}: choose a smaller "
                         f"dev size")
    if carve == "random":
        chosen = set(random.Random(seed).sample(range(n), count))
    else:
        pool = unseen_positions(examples)
        if count > len(pool):
            raise InputError(f"--dev-carve unseen: only {len(pool)} of the {n} training queries have positives that "
                             f"no other query shares, fewer than the {count} dev queries asked for")
        chosen = set(random.Random(seed).sample(pool, count))
    train = [e for i, e in enumerate(examples) if i not in chosen]
    dev = [e for i, e in enumerate(examples) if i in chosen]
    return train, dev


def load_training_data(dataset: "BeirDataset", split: str, negatives: Run | None, negative_depth: int,
                       candidate_depth: int = 20, negative_policy: str = "non-relevant",
                       require_negative: bool = True, progress: bool = False
                       ) -> tuple[list[TrainingExample], BuildStats, dict[str, "Document"]]:
    """Refuse the test split, read the dataset and build examples (what both ``train`` commands need).

    Returns:
        ``(examples, stats, corpus)`` with ``corpus`` the dataset's docid -> Document.
    """
    check_split(split)
    corpus = dataset.load_corpus(progress=progress)
    examples, stats = build_examples(dataset.queries(), dataset.qrels(split), negatives, corpus,
                                     negative_depth=negative_depth, candidate_depth=candidate_depth,
                                     negative_policy=negative_policy, require_negative=require_negative)
    return examples, stats, corpus


def dev_qrels(dev: Sequence[TrainingExample]) -> dict[str, dict[str, int]]:
    """Dev qrels: every positive of a dev example at its judged grade (1 when the example has no grades); what the
    dev metrics (epoch and weight selection) judge against, graded as `evaluate` judges a test run."""
    return {e.qid: dict(zip(e.positives, e.grades)) if e.grades else {d: 1 for d in e.positives} for e in dev}


def example_meta(train: Sequence[TrainingExample], dev: Sequence[TrainingExample]) -> dict[str, Any]:
    """Counts and dev qids for checkpoint metadata."""
    return {"train_queries": len(train), "dev_queries": len(dev), "dev_qids": [e.qid for e in dev]}


def dev_first_stage(dataset: "BeirDataset", split: str, run: Run, dev_size: int | float, seed: int,
                    negative_depth: int = 20, candidate_depth: int = 20, negative_policy: str = "non-relevant",
                    progress: bool = False, carve: str = "random") -> Run:
    """``run`` restricted to the dev queries that training with the same ``dev_size``/``seed``/``carve`` (and the same
    example settings; the defaults are ``train qpeft``'s) carves out of ``split``: the queries on which to select
    anything that must not be selected on test (e.g. an interpolation weight)."""
    examples, _, _ = load_training_data(dataset, split, run, negative_depth=negative_depth,
                                        candidate_depth=candidate_depth, negative_policy=negative_policy,
                                        progress=progress)
    _, dev = split_dev(examples, dev_size, seed, carve)
    if not dev:
        raise InputError("the dev split is empty: give --dev-size >= 1")
    return Run({e.qid: run[e.qid] for e in dev}, tag=run.tag)



CHECKPOINT_CONFIGS = ("qpeft_config.json", "lmort_config.json")
"""The config files of the two trained artifacts; both record ``training.dev_qids`` (:func:`example_meta`)."""


def checkpoint_training(path: str | os.PathLike) -> tuple[dict[str, Any], Path]:
    """The ``training`` record of a trained checkpoint (a ``train qpeft``/``train lmort`` output folder or a checkpoint
    folder such as its ``best/`` or ``epoch-N/``): train config, dev qids, epoch; and the config file it came from.

    Raises:
        InputError: no checkpoint config there, or an unreadable one.
    """
    import json

    from ..artifacts import resolve_best

    for name in CHECKPOINT_CONFIGS:
        config = Path(resolve_best(path, name)) / name
        if config.is_file():
            try:
                training = json.loads(config.read_text(encoding="utf-8")).get("training", {})
            except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError) as exc:
                raise InputError(f"unreadable checkpoint config: {exc}", str(config)) from None
            return (training if isinstance(training, dict) else {}), config
    raise InputError(f"not a trained checkpoint (no {' or '.join(CHECKPOINT_CONFIGS)} here or in best/)", str(path))


def checkpoint_dev_qids(path: str | os.PathLike) -> list[str]:
    """The dev queries a trained checkpoint held out (a ``train qpeft``/``train lmort`` output folder or a
    checkpoint folder such as its ``best/``), in their recorded order.

    Raises:
        InputError: no checkpoint config there, or one without recorded dev queries.
    """
    training, config = checkpoint_training(path)
    qids = training.get("dev_qids")
    if not isinstance(qids, list) or not qids or not all(isinstance(q, str) for q in qids):
        raise InputError("the checkpoint records no dev queries (training.dev_qids)", str(config))
    return qids

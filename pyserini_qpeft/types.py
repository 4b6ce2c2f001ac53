"""The plain currency of the package: queries, hits and runs, with TREC run-file I/O.

A :class:`Run` maps query ids to ranked :class:`Hit` lists. Ranking is always by score descending with ties
broken by docid ascending, so writing a run is deterministic whatever order hits were added in.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Sequence

from .errors import InputError
from .artifacts import atomic_write


@dataclass(frozen=True)
class Query:
    """A query id and its text."""

    qid: str
    text: str


@dataclass(frozen=True)
class Hit:
    """One retrieved document for a query."""

    docid: str
    score: float


def sort_hits(hits: Iterable[Hit]) -> list[Hit]:
    """Rank hits by (-score, docid): the package-wide deterministic tie-break."""
    return sorted(hits, key=lambda h: (-h.score, h.docid))


def merge_reranked(hits: Sequence[Hit], scores: Mapping[str, float], depth: int) -> list[Hit]:
    """Top ``depth`` hits with their new scores, then the rest in their original order with scores strictly
    below the lowest new score (``min - 1, min - 2, ...``)."""
    top = [Hit(h.docid, scores[h.docid]) for h in hits[:depth]]
    if not top:
        return []
    floor = min(h.score for h in top)
    rest = [Hit(h.docid, floor - float(k)) for k, h in enumerate(hits[depth:], start=1)]
    return sort_hits(top + rest)


@dataclass
class Run:
    """Ranked hits per query id. ``hits[qid]`` is kept in rank order."""

    hits: dict[str, list[Hit]] = field(default_factory=dict)
    tag: str = "pyserini_qpeft"

    def __post_init__(self) -> None:
        self.hits = {qid: sort_hits(h) for qid, h in self.hits.items()}

    def __len__(self) -> int:
        return len(self.hits)

    def __iter__(self) -> Iterator[str]:
        return iter(self.hits)

    def __getitem__(self, qid: str) -> list[Hit]:
        return self.hits[qid]

    def __contains__(self, qid: object) -> bool:
        return qid in self.hits

    def set(self, qid: str, hits: Iterable[Hit]) -> None:
        """Store ``hits`` for ``qid``, ranked by (-score, docid)."""
        self.hits[qid] = sort_hits(hits)

    def qids(self) -> list[str]:
        return list(self.hits)

    def to_dict(self) -> dict[str, dict[str, float]]:
        """BEIR ``results`` shape: qid -> docid -> score."""
        return {qid: {h.docid: h.score for h in hits} for qid, hits in self.hits.items()}

    @classmethod
    def from_dict(cls, results: Mapping[str, Mapping[str, float]], tag: str = "pyserini_qpeft") -> "Run":
        return cls({qid: [Hit(d, float(s)) for d, s in docs.items()] for qid, docs in results.items()}, tag=tag)

    def write(self, path: str | os.PathLike, tag: str | None = None, depth: int | None = None,
              output_format: str = "trec", exact_scores: bool = False) -> None:
        """Write the run atomically: TREC (``qid Q0 docid rank score tag``) or MS MARCO (``qid<TAB>docid<TAB>rank``)."""
        write_run(self, path, tag=tag, depth=depth, output_format=output_format, exact_scores=exact_scores)

    @classmethod
    def read(cls, path: str | os.PathLike) -> "Run":
        return read_run(path)


# Run file formats written (and read back) here, by Pyserini's --output-format names
OUTPUT_FORMATS = ("trec", "msmarco")


def score_text(score: float, exact: bool = False) -> str:
    """A TREC run's score column: 6 decimals (as Pyserini's searchers write it), or with ``exact`` the float's
    shortest repr (as ``pyserini.fusion`` writes fused scores)."""
    return repr(float(score)) if exact else f"{score:.6f}"


def format_run_lines(qid: str, hits: Iterable[Hit], tag: str, output_format: str = "trec",
                     exact_scores: bool = False) -> Iterator[str]:
    """One query's hits (already ranked) as TREC lines, or as MS MARCO's ``qid<TAB>docid<TAB>rank``."""
    for rank, hit in enumerate(hits, start=1):
        if output_format == "msmarco":
            yield f"{qid}\t{hit.docid}\t{rank}\n"
        else:
            yield f"{qid} Q0 {hit.docid} {rank} {score_text(hit.score, exact_scores)} {tag}\n"


def is_trec_word(text: str) -> bool:
    """Whether ``text`` can be a TREC run column (a qid, docid or tag): non-empty, no whitespace."""
    return bool(text) and not any(c.isspace() for c in text)


def check_writable_run(run: Run, tag: str) -> None:
    """Refuse what :func:`read_run` would refuse, before anything is written: a run tag, qid or docid that is
    empty or holds whitespace, a score that is NaN or infinite (e.g. from a checkpoint with broken weights)."""
    if not is_trec_word(tag):
        raise InputError(f"run tag must be one non-empty word, got {tag!r}")
    for qid, hits in run.hits.items():
        if not is_trec_word(qid):
            raise InputError(f"query id {qid!r} is empty or contains whitespace; a TREC run cannot hold it")
        for hit in hits:
            if not is_trec_word(hit.docid):
                raise InputError(f"docid {hit.docid!r} (query {qid}) is empty or contains whitespace; a TREC run "
                                 "cannot hold it")
            if not math.isfinite(hit.score):
                raise InputError(f"score of query {qid}, docid {hit.docid} is {hit.score}; nothing was written "
                                 "(a model or checkpoint produced non-finite scores)")


def write_run(run: Run, path: str | os.PathLike, tag: str | None = None, depth: int | None = None,
              output_format: str = "trec", exact_scores: bool = False) -> None:
    """Write ``run`` to ``path`` atomically in ``output_format`` (:data:`OUTPUT_FORMATS`; MS MARCO's keeps ranks, not
    scores); queries in insertion order, hits in rank order. Everything written reads back with :func:`read_run`
    (:func:`check_writable_run` refuses the rest, and nothing is written). ``exact_scores``: scores as their float
    repr (``pyserini.fusion``'s way: fused scores that differ past the 6th decimal keep their order) instead of 6
    decimals."""
    if output_format not in OUTPUT_FORMATS:
        raise ValueError(f"output_format must be one of {OUTPUT_FORMATS}, got {output_format!r}")
    tag = tag or run.tag
    check_writable_run(run, tag)
    with atomic_write(path) as out:
        for qid, hits in run.hits.items():
            if output_format == "trec":  # ranked as the printed scores read back (hits that tie at 6 decimals: by
                hits = printed_order(hits, exact_scores)  # docid), so the rank column and a reader's order agree
            out.writelines(format_run_lines(qid, hits[:depth] if depth else hits, tag, output_format, exact_scores))


def printed_order(hits: Sequence[Hit], exact: bool = False) -> list[Hit]:
    """``hits`` (ranked) in the order their TREC lines read back: by the score as printed (:func:`score_text`), ties
    by docid (:func:`sort_hits` on the printed values); unchanged where no two printed scores tie."""
    printed = [float(score_text(hit.score, exact)) for hit in hits]
    if len(set(printed)) == len(printed):
        return list(hits)
    order = sorted(range(len(hits)), key=lambda i: (-printed[i], hits[i].docid))
    return [hits[i] for i in order]


MSMARCO_TAG = "msmarco"


def _rank(text: str) -> int:
    """A run's rank column: an integer, also written as one (``1.0``, as some tools write it; trec_eval ignores the
    column); ValueError otherwise."""
    try:
        return int(text)
    except ValueError:
        number = float(text)
        if not number.is_integer():
            raise ValueError(text) from None
        return int(number)


def run_line(path: str | os.PathLike, qid: str, docid: str) -> int | None:
    """The line number of ``qid``'s hit ``docid`` in the run file ``path`` (TREC or MS MARCO), None when absent: an
    error about one hit can name its line (a :class:`Run` keeps no line numbers)."""
    from .textio import iter_lines

    for lineno, line in iter_lines(path):
        parts = line.split()
        if len(parts) == 3 and parts[:2] == [qid, docid] or len(parts) == 6 and (parts[0], parts[2]) == (qid, docid):
            return lineno
    return None


def read_run(path: str | os.PathLike) -> Run:
    """Read a TREC run file (6 whitespace-separated columns), or an MS MARCO run (``qid<TAB>docid<TAB>rank``, as
    Pyserini's ``--output-format msmarco`` writes it; score = -rank, tag ``msmarco``), told apart by the first line.
    Errors name file and line."""
    from .textio import iter_lines

    path = Path(path)
    if not path.is_file():
        raise InputError("run file not found", str(path))
    hits: dict[str, list[Hit]] = {}
    seen: set[tuple[str, str]] = set()
    tag = None
    msmarco = None  # decided by the first line
    for lineno, line in iter_lines(path):
        parts = line.split()
        if not parts:
            continue
        if msmarco is None:
            msmarco = len(parts) == 3 and line.count("\t") == 2
        if msmarco:
            if len(parts) != 3 or line.count("\t") != 2:
                raise InputError(f"expected MS MARCO's 3 tab-separated columns 'qid docid rank' (as line 1), got "
                                 f"{len(parts)}", str(path), lineno)
            (qid, docid, rank), tag = parts, MSMARCO_TAG
            score = None  # ranked by rank: the score is -rank
        elif len(parts) != 6:
            raise InputError(f"expected 6 columns 'qid Q0 docid rank score tag' (or MS MARCO's 'qid<TAB>docid<TAB>"
                             f"rank' throughout), got {len(parts)}", str(path), lineno)
        else:
            qid, _, docid, rank, score, tag = parts
        try:
            position = _rank(rank)
            value = -float(position) if score is None else float(score)
        except ValueError:
            raise InputError(f"non-numeric rank or score: {rank!r} {score!r}", str(path), lineno) from None
        if score is None and position < 1:
            raise InputError(f"rank {position} (an MS MARCO run ranks from 1)", str(path), lineno)
        if math.isnan(value):
            raise InputError("score is NaN", str(path), lineno)
        if (qid, docid) in seen:
            raise InputError(f"docid {docid} appears twice for query {qid}", str(path), lineno)
        seen.add((qid, docid))
        hits.setdefault(qid, []).append(Hit(docid, value))
    if not hits:
        raise InputError("run file is empty", str(path))
    return Run(hits, tag=tag or "pyserini_qpeft")

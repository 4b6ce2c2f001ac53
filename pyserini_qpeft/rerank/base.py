"""The reranking contract: document stores, the :class:`Reranker` protocol, shared rules, the identity reranker.

Every reranker rescores the top ``depth`` hits of each query and keeps every hit:

* hits ranked below ``depth`` keep their original order beneath all reranked hits (their new scores are
  ``min(reranked) - 1, - 2, ...``);
* a query whose run is empty stays empty; a query in the run without topic text, or with empty text, is an
  :class:`~pyserini_qpeft.errors.InputError` naming the qid; so is an unknown docid;
* ranking ties break by docid (:func:`pyserini_qpeft.types.sort_hits`), so output is deterministic.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Protocol, Sequence

from ..errors import InputError
from ..types import Query, Run
from .api import InProcessAPI

if TYPE_CHECKING:
    from ..data import Document
    from ..lm.backbone import FrozenLM, LMConfig


class DocStore(Protocol):
    """Documents by id."""

    def get(self, docid: str) -> "Document":
        """The document ``docid``; raises :class:`InputError` when unknown."""
        ...


class DictDocStore:
    """A :class:`DocStore` over an in-memory ``dict[str, Document]``."""

    def __init__(self, docs: Mapping[str, "Document"], source: str | None = None):
        self.docs = docs
        self.source = source

    def get(self, docid: str) -> "Document":
        try:
            return self.docs[docid]
        except KeyError:
            raise InputError(f"unknown docid {docid!r} (not in the corpus)", self.source) from None

    def __len__(self) -> int:
        return len(self.docs)


class Reranker(Protocol):
    """Anything that reorders a run."""

    name: str

    def rerank(self, queries: Sequence[Query], run: Run, docs: DocStore, depth: int = 100, progress: bool = True,
               state_path: Path | None = None) -> Run: ...


def query_texts(queries: Sequence[Query], run: Run) -> dict[str, str]:
    """Text of every query in ``run``; InputError for a qid without topic text or with empty text."""
    texts = {q.qid: q.text for q in queries}
    for qid in run:
        if qid not in texts:
            raise InputError(f"query {qid!r} is in the run but not in the topics")
        if not texts[qid] or not texts[qid].strip():
            raise InputError(f"query {qid!r} has empty text")
    return texts


def check_depth(depth: int) -> None:
    """InputError unless ``depth`` is a positive integer."""
    if not isinstance(depth, int) or isinstance(depth, bool) or depth < 1:
        raise InputError(f"rerank depth must be a positive integer, got {depth!r}")


class IdentityReranker(InProcessAPI):
    """Keeps the first-stage ranking (for pipelines and tests without a model)."""

    name = "identity"

    def rerank(self, queries: Sequence[Query], run: Run, docs: DocStore, depth: int = 100, progress: bool = True,
               state_path: Path | None = None) -> Run:
        check_depth(depth)
        query_texts(queries, run)
        return Run({qid: list(hits) for qid, hits in run.hits.items()}, tag=run.tag)


def make_identity(*, lm: "FrozenLM | LMConfig | str | None" = None, checkpoint: str | os.PathLike | None = None,
                  scorer_overrides: Mapping[str, Any] | None = None) -> IdentityReranker:
    """Factory of ``identity``: needs no model, so every argument is ignored (nothing is loaded)."""
    return IdentityReranker()

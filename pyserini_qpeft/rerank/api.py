"""The in-process API every built-in reranker has, shaped like the rerankers people already call in Python.

* ``reranker.rank(query, documents, top_k=None, batch_size=None)`` -> ``[{"corpus_id": i, "score": s, "text": ...},
  ...]`` best first, as sentence-transformers' ``CrossEncoder.rank`` returns (with the text unless
  ``return_documents=False``);
* ``reranker.score(pairs, batch_size=None)`` -> one float per ``(query, document)`` pair, as FlagEmbedding's
  ``compute_score`` (one pair, not in a list: one float, as there and in ``CrossEncoder.predict``); also under that
  name, ``reranker.compute_score(pairs)``;
* ``reranker.rerank_hits(query, hits, docs=None)`` -> the hits of a Pyserini ``LuceneSearcher`` / ``FaissSearcher``
  (anything with ``.docid`` and ``.score``) reranked, as :class:`~pyserini_qpeft.types.Hit` objects. Lucene hits
  carry their stored raw document; for FAISS hits pass ``docs`` (a ``{docid: text | Document}`` dict or a DocStore).

Example::

    from pyserini_qpeft.jvm import start_jvm
    start_jvm()                                            # Java 21 for Pyserini, before its first import
    from pyserini.search.lucene import LuceneSearcher
    from pyserini_qpeft.rerank import build_reranker

    reranker = build_reranker("upr")                       # SmolLM2-135M-Instruct, frozen
    reranker.rank("does aspirin help the heart", ["Aspirin reduces ...", "Cells divide ..."], top_k=1)
    reranker.score([("what causes lung cancer", "Smoking causes lung cancer.")])
    hits = LuceneSearcher("indexes/lucene-beir-scifact-flat").search("vitamin d and bone loss", k=20)
    reranked = reranker.rerank_hits("vitamin d and bone loss", hits)

A plugin reranker gets all three by inheriting :class:`InProcessAPI` (they are built on its ``rerank``).
"""
from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

from ..errors import InputError
from ..types import Hit, Query, Run

if TYPE_CHECKING:
    from ..data import Document
    from .base import DocStore


def as_document(docid: str, value: Any) -> "Document":
    """A :class:`~pyserini_qpeft.data.Document` from a string, a Document, or a mapping with ``title``/``text``
    (BEIR), ``contents`` (Pyserini) or ``segment`` (rank_llm's MS MARCO v2 candidates)."""
    from ..data import Document
    from ..data.corpus import record_fields

    if isinstance(value, Document):
        return value
    if isinstance(value, str):
        return Document(docid, "", value)
    if isinstance(value, Mapping):
        title, text = record_fields(value)
        if text is None:
            raise InputError(f"document {docid!r} has no 'text', 'contents' or 'segment' field")
        return Document(docid, title, text)
    raise InputError(f"document {docid!r}: expected a string, a Document or a mapping, got {type(value).__name__}")


def as_pairs(pairs: Any) -> tuple[list[tuple[str, Any]], bool]:
    """``score``'s argument as a list of ``(query, document)`` pairs, and whether it was one pair (``("q", "d")``,
    answered with one float as FlagEmbedding's ``compute_score`` and ``CrossEncoder.predict`` do)."""
    single = isinstance(pairs, (tuple, list)) and len(pairs) == 2 and isinstance(pairs[0], str)
    pairs = [tuple(pairs)] if single else list(pairs)
    for i, pair in enumerate(pairs):
        if isinstance(pair, str) or not isinstance(pair, Sequence) or len(pair) != 2 or not isinstance(pair[0], str):
            raise TypeError(f"score() takes (query, document) pairs; pair {i} is {pair!r:.80}")
    return pairs, single


def _store(docs: Mapping[str, Any]) -> "DocStore":
    from .base import DictDocStore

    return DictDocStore({docid: as_document(docid, value) for docid, value in docs.items()})


def _raw(hit: Any) -> str | None:
    """The stored raw document of a Pyserini Lucene hit (Pyserini 1.x: ``hit.lucene_document.get("raw")``; older
    releases: ``hit.raw``), or None (FAISS hits carry no text)."""
    raw = getattr(hit, "raw", None)
    if raw is None and getattr(hit, "lucene_document", None) is not None:
        raw = hit.lucene_document.get("raw")
    return raw


class InProcessAPI:
    """``rank`` / ``score`` / ``rerank_hits`` for any class with the :class:`~pyserini_qpeft.rerank.Reranker`
    ``rerank`` method (see the module docstring)."""

    def rank(self, query: str, documents: Sequence[Any], top_k: int | None = None,
             return_documents: bool = True, batch_size: int | None = None) -> list[dict[str, Any]]:
        """Rank ``documents`` (strings, Documents or mappings) for ``query``: ``[{"corpus_id", "score", "text"}]``
        best first (ties: input order), ``top_k`` of them (None: all). Unlike ``CrossEncoder.rank``, the text is
        included unless ``return_documents=False``. ``batch_size``: pairs per forward, as :meth:`score`'s."""
        if top_k is not None and top_k < 0:
            raise ValueError(f"top_k must be None or >= 0, got {top_k}")
        if not documents:
            return []
        scores = self.score([(query, document) for document in documents], batch_size=batch_size)
        order = sorted(range(len(documents)), key=lambda i: (-scores[i], i))
        out = []
        for i in order[:top_k]:
            row: dict[str, Any] = {"corpus_id": i, "score": scores[i]}
            if return_documents:
                row["text"] = as_document(str(i), documents[i]).contents()
            out.append(row)
        return out

    def compute_score(self, sentence_pairs: Sequence[tuple[str, Any]] | tuple[str, Any],
                      batch_size: int | None = None) -> list[float] | float:
        """:meth:`score` under FlagEmbedding's name (``FlagReranker.compute_score``)."""
        return self.score(sentence_pairs, batch_size=batch_size)

    def score(self, pairs: Sequence[tuple[str, Any]] | tuple[str, Any], batch_size: int | None = None
              ) -> list[float] | float:
        """The reranker's score of each ``(query, document)`` pair, in input order (one pair: one float)."""
        pairs, single = as_pairs(pairs)
        scores = self._score_pairs(pairs)
        return scores[0] if single else scores

    def _score_pairs(self, pairs: list[tuple[str, Any]]) -> list[float]:
        queries: dict[str, str] = {}
        run_hits: dict[str, list[Hit]] = {}
        docs: dict[str, Any] = {}
        keys = []
        for i, (query, document) in enumerate(pairs):
            qid = queries.setdefault(query, f"q{len(queries)}")
            docid = f"d{i}"
            docs[docid] = document
            run_hits.setdefault(qid, []).append(Hit(docid, 0.0))
            keys.append((qid, docid))
        if not keys:
            return []
        run = Run(run_hits)
        depth = max(len(h) for h in run.hits.values())
        reranked = self.rerank([Query(q, text) for text, q in queries.items()], run, _store(docs), depth=depth,
                               progress=False)
        scores = {(qid, h.docid): h.score for qid in reranked for h in reranked[qid]}
        return [scores[key] for key in keys]

    def rerank_hits(self, query: str, hits: Iterable[Any], docs: "Mapping[str, Any] | DocStore | None" = None,
                    depth: int | None = None) -> list[Hit]:
        """Pyserini hits (``.docid``, ``.score``) reranked; Lucene hits bring their raw document text."""
        hits = list(hits)
        if not hits:
            return []
        if docs is None:
            found = {}
            for hit in hits:
                raw = _raw(hit)
                if raw is None:
                    raise InputError(f"hit {hit.docid!r} carries no document text (a FAISS hit?): pass docs=")
                try:
                    found[hit.docid] = json.loads(raw)
                except (TypeError, json.JSONDecodeError):
                    found[hit.docid] = str(raw)
            store = _store(found)
        elif isinstance(docs, Mapping):
            store = _store(docs)
        else:
            store = docs
        run = Run({"q": [Hit(str(h.docid), float(h.score)) for h in hits]})
        return self.rerank([Query("q", query)], run, store, depth=depth or len(hits), progress=False)["q"]

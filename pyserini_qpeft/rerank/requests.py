"""rank_llm interop: read its ``Request`` JSONL, write its ``Result`` JSONL.

A line is ``{"query": {"text": ..., "qid": ...}, "candidates": [{"docid": ..., "score": ..., "doc": {...}}, ...]}``
(rank_llm's ``rank_llm.data.Request``; a ``Result`` has the same shape, candidates in the new order with the new
scores). Candidate documents may be ``{"title", "text"}``, ``{"contents"}`` or ``{"segment"}`` (see
:func:`~pyserini_qpeft.rerank.api.as_document`); ids keep their JSON type (rank_llm allows integers).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ..artifacts import atomic_write
from ..errors import InputError
from ..types import Hit, Query, Run
from .api import as_document


@dataclass(frozen=True)
class Requests:
    """What a requests file holds, in the package's currency (queries, a first-stage run, documents) plus the
    original records (for writing results in rank_llm's shape)."""

    queries: list[Query]
    run: Run
    docs: dict[str, Any]
    records: list[dict[str, Any]]


def read_requests(path: str | os.PathLike) -> Requests:
    """Parse a rank_llm ``Request`` JSONL file (errors name file and line)."""
    from ..data.formats import iter_jsonl

    path = Path(path)
    queries, hits, docs, records = [], {}, {}, []
    for lineno, record in iter_jsonl(path):
        query = record.get("query")
        candidates = record.get("candidates")
        if not isinstance(query, dict) or "text" not in query or "qid" not in query:
            raise InputError("expected {'query': {'text': ..., 'qid': ...}, 'candidates': [...]}", str(path), lineno)
        if not isinstance(candidates, list):
            raise InputError("'candidates' must be a list", str(path), lineno)
        qid = str(query["qid"])
        if qid in hits:
            raise InputError(f"query {qid} appears twice", str(path), lineno)
        ranked = []
        for c in candidates:
            if not isinstance(c, dict) or "docid" not in c or "doc" not in c:
                raise InputError("a candidate needs 'docid' and 'doc' (and 'score')", str(path), lineno)
            docid = str(c["docid"])
            try:
                document = as_document(docid, c["doc"])
            except InputError as exc:
                raise InputError(str(exc), str(path), lineno) from None
            if docid in docs and docs[docid].contents() != document.contents():
                raise InputError(f"docid {docid} has two different texts", str(path), lineno)
            docs[docid] = document
            try:
                ranked.append(Hit(docid, float(c.get("score", -len(ranked)))))
            except (TypeError, ValueError):
                raise InputError(f"candidate {docid}: score {c.get('score')!r} is not a number", str(path),
                                 lineno) from None
        if len({h.docid for h in ranked}) != len(ranked):
            raise InputError(f"query {qid} lists a candidate twice", str(path), lineno)
        queries.append(Query(qid, str(query["text"])))
        hits[qid] = ranked
        records.append(record)
    if not records:
        raise InputError("no requests", str(path))
    return Requests(queries, Run(hits), docs, records)


def write_results(requests: Requests, reranked: Run, path: str | os.PathLike) -> None:
    """rank_llm ``Result`` JSONL: each request's candidates in ``reranked`` order with its scores (atomic)."""
    with atomic_write(path) as out:
        for record in requests.records:
            qid = str(record["query"]["qid"])
            by_id = {str(c["docid"]): c for c in record["candidates"]}
            candidates = [{"docid": by_id[h.docid]["docid"], "score": h.score, "doc": by_id[h.docid]["doc"]}
                          for h in reranked.hits.get(qid, [])]
            out.write(json.dumps({"query": record["query"], "candidates": candidates}, ensure_ascii=False) + "\n")


def results_from_run(queries: Sequence[Query], run: Run, docs: "Any") -> Requests:
    """The ``Requests`` view of an ordinary rerank (TREC run + topics + a DocStore), to write it as rank_llm
    results."""
    texts = {q.qid: q.text for q in queries}
    records = []
    for qid, hits in run.hits.items():
        cands = []
        for hit in hits:
            doc = docs.get(hit.docid)
            cands.append({"docid": hit.docid, "score": hit.score, "doc": {"title": doc.title, "text": doc.text}})
        records.append({"query": {"text": texts.get(qid, ""), "qid": qid}, "candidates": cands})
    return Requests(list(queries), run, {}, records)

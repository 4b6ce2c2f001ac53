"""Plain-text formats: JSONL records, BEIR queries, TREC/BEIR qrels, Pyserini TSV topics, TREC qrels writing.

Every reader names the file and line of a malformed record (:class:`~pyserini_qpeft.errors.InputError`, exit
code 3), reads through :func:`pyserini_qpeft.textio.iter_lines` (UTF-8, BOM dropped, undecodable bytes refused)
and reads ``.gz`` files transparently.
"""
from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Iterator, Mapping

from ..artifacts import atomic_write
from ..errors import InputError
from ..textio import first_line, iter_lines
from ..types import Query

logger = logging.getLogger(__name__)

_INTEGER = re.compile(r"[-+]?\d+")


def iter_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-blank line; malformed JSON -> InputError(file, line)."""
    path = Path(path)
    for lineno, line in iter_lines(path):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"malformed JSON: {exc.msg}", str(path), lineno) from None
        if not isinstance(obj, dict):
            raise InputError("expected a JSON object", str(path), lineno)
        yield lineno, obj


def record_id(obj: dict, path: Path, lineno: int) -> str:
    """The id of a JSONL record: BEIR's ``_id``, else Pyserini's ``id`` (or ``docid``)."""
    for key in ("_id", "id", "docid"):
        value = obj.get(key)
        if value is not None and str(value) != "":
            return str(value)
    raise InputError("record has no '_id' (BEIR) or 'id' (Pyserini) field", str(path), lineno)


def read_queries_jsonl(path: str | os.PathLike) -> dict[str, str]:
    """qid -> text from a BEIR ``queries.jsonl`` (``_id``, ``text``); ``id``/``contents`` also accepted."""
    path = Path(path)
    queries: dict[str, str] = {}
    for lineno, obj in iter_jsonl(path):
        qid = record_id(obj, path, lineno)
        text = obj.get("text", obj.get("contents", obj.get("title")))
        if text is None:
            raise InputError(f"query {qid} has no 'text' field", str(path), lineno)
        if qid in queries:
            raise InputError(f"query id {qid} appears twice", str(path), lineno)
        queries[qid] = str(text)
    return queries


def _parse_rel(value: str, path: Path, lineno: int) -> int:
    try:
        return int(value)
    except ValueError:
        pass
    try:
        number = float(value)
    except ValueError:
        raise InputError(f"relevance {value!r} is not an integer", str(path), lineno) from None
    if not number.is_integer():
        raise InputError(f"relevance {value!r} is not an integer", str(path), lineno)
    return int(number)


def read_qrels_file(path: str | os.PathLike) -> dict[str, dict[str, int]]:
    """qid -> docid -> relevance from a TREC qrels file (``qid 0 docid rel``) or a BEIR qrels TSV
    (``query-id<TAB>corpus-id<TAB>score`` with a header line). CRLF line ends are fine; blank lines are skipped.
    The first line fixes the layout for the whole file, so a TREC line that lost a column is not read as BEIR's.

    Raises:
        InputError: a line with another layout than the first (a BEIR line needs its two tabs), a non-integer
            relevance, or a document judged twice with different relevance (names file and line); a repeat with
            the same relevance is counted once, with a warning.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("qrels file not found", str(path))
    qrels: dict[str, dict[str, int]] = {}
    columns = 0  # 4 (TREC) or 3 (BEIR), set by the first line
    repeated = 0  # judgments that repeat an earlier one with the same relevance
    expected = "expected 'qid 0 docid rel' (TREC) or 'qid<TAB>docid<TAB>rel' (BEIR)"
    for lineno, line in iter_lines(path):
        if not line.strip():
            continue
        beir = line.count("\t") == 2
        parts = [p.strip() for p in (line.split("\t") if beir else line.split())]
        if not (len(parts) == 4 or (len(parts) == 3 and beir)):
            raise InputError(f"{expected}, got {len(parts)} columns"
                             + (" (a BEIR line is tab-separated)" if len(parts) == 3 else ""), str(path), lineno)
        if not columns:
            columns = len(parts)
            if columns == 3 and not _is_number(parts[2]):
                continue  # BEIR header: query-id corpus-id score (a number there is a judgment, checked below)
        elif len(parts) != columns:
            raise InputError(f"{len(parts)} columns, but the file's first line has {columns} "
                             f"({'TREC' if columns == 4 else 'BEIR'}); {expected}", str(path), lineno)
        qid, docid, rel = parts if columns == 3 else (parts[0], parts[2], parts[3])
        if not qid or not docid:
            raise InputError("empty query or document id", str(path), lineno)
        judged = qrels.setdefault(qid, {})
        value = _parse_rel(rel, path, lineno)
        if docid in judged:
            if judged[docid] != value:  # which one counts? trec_eval refuses any repeat
                raise InputError(f"query {qid} judges document {docid} twice, {judged[docid]} and now {value}",
                                 str(path), lineno)
            repeated += 1
        judged[docid] = value
    if repeated:
        logger.warning("%s: %d judgments repeat an earlier line with the same relevance (counted once)", path,
                       repeated)
    return qrels


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def is_trec_qrels(path: Path) -> bool:
    """Whether the first non-blank line of ``path`` has TREC's four columns with an integer relevance."""
    parts = first_line(path).split()
    return len(parts) == 4 and _INTEGER.fullmatch(parts[3]) is not None


def write_trec_qrels(qrels: Mapping[str, Mapping[str, int]], path: str | os.PathLike) -> None:
    """Write 4-column TREC qrels (``qid 0 docid rel``) atomically, sorted by qid then docid."""
    with atomic_write(path) as out:
        for qid in sorted(qrels):
            for docid in sorted(qrels[qid]):
                out.write(f"{qid} 0 {docid} {int(qrels[qid][docid])}\n")


def read_topics_tsv(path: str | os.PathLike) -> list[Query]:
    """Queries from a ``qid<TAB>text`` file (Pyserini's TSV topics); further columns are ignored, as Anserini's TSV
    topic readers ignore them (with a warning here)."""
    path = Path(path)
    topics: list[Query] = []
    seen: set[str] = set()
    extra = 0  # lines with more than two columns
    for lineno, line in iter_lines(path):
        if not line.strip():
            continue
        if "\t" not in line:
            raise InputError("expected 'qid<TAB>query text', found no tab", str(path), lineno)
        columns = line.split("\t")
        qid, text = columns[0], columns[1]
        extra += len(columns) > 2
        qid = qid.strip()
        if not qid:
            raise InputError("empty query id", str(path), lineno)
        if qid in seen:
            raise InputError(f"query id {qid} appears twice", str(path), lineno)
        seen.add(qid)
        topics.append(Query(qid, text.strip()))
    if extra:
        logger.warning("%s: %d lines have more than two tab-separated columns; the query is the second column (as "
                       "Pyserini reads TSV topics)", path, extra)
    return topics

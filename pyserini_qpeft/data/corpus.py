"""Documents and the one corpus opener.

:func:`iter_documents` / :func:`open_corpus` accept every corpus the package reads: a BEIR folder or dataset
name (found on the data search path), a BEIR or Pyserini JSONL file (``.gz`` too), a ``docid<TAB>text`` TSV file
(MS MARCO's ``collection.tsv``), or a TREC CAR paragraph ``.cbor`` file. :func:`corpus_dict` is the one
duplicate-docid policy.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Collection, Iterable, Iterator, Mapping

from ..errors import InputError
from .formats import iter_jsonl, record_id

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Document:
    """One corpus document (BEIR shape)."""

    docid: str
    title: str
    text: str

    def contents(self) -> str:
        """Title and text joined by one space, as Anserini's BeirFlatCollection indexes them; text alone if no title."""
        return f"{self.title} {self.text}" if self.title else self.text


# Where a JSON document record keeps its text: BEIR, Pyserini's JsonCollection, rank_llm's MS MARCO v2 candidates,
# and other collections' raw records, in this order.
TEXT_FIELDS = ("text", "contents", "segment", "body")


def record_fields(record: Mapping[str, Any]) -> tuple[str, str | None]:
    """``(title, text)`` of a JSON document record: the text is the first of :data:`TEXT_FIELDS` present and not
    null (None when there is none), the title its ``title`` ("" when absent). The one reading of a record, for
    corpus files, a Lucene index's stored raw documents and the Python API's document mappings."""
    title = str(record.get("title") or "")
    for key in TEXT_FIELDS:
        if record.get(key) is not None:
            return title, str(record[key])
    return title, None


def read_corpus_jsonl(path: str | os.PathLike) -> Iterator[Document]:
    """Documents of a BEIR ``corpus.jsonl`` (``_id``, ``title``, ``text``) or a Pyserini JsonCollection file
    (``id``, ``contents``). ``.gz`` files are read transparently."""
    path = Path(path)
    if not path.is_file():  # checked now, not at the first next()
        raise InputError("file not found", str(path))
    return _corpus_records(path)


def _corpus_records(path: Path) -> Iterator[Document]:
    for lineno, obj in iter_jsonl(path):
        docid = record_id(obj, path, lineno)
        title, text = record_fields(obj)
        if text is None and not ("text" in obj or "title" in obj):  # a title-only record is an empty document
            raise InputError(f"document {docid} has no 'text' or 'contents' field (nor 'segment', 'body', 'title')",
                             str(path), lineno)
        yield Document(docid, title, text or "")


def read_corpus_tsv(path: str | os.PathLike) -> Iterator[Document]:
    """Documents of a ``docid<TAB>text`` file, as MS MARCO's passage ``collection.tsv`` is (``.gz`` too); blank
    lines are skipped, a line without a tab or with an empty docid is an InputError naming file and line."""
    path = Path(path)
    if not path.is_file():
        raise InputError("file not found", str(path))
    return _tsv_records(path)


def _tsv_records(path: Path) -> Iterator[Document]:
    from ..textio import iter_lines

    for lineno, line in iter_lines(path):
        if not line.strip():
            continue
        docid, tab, text = line.partition("\t")
        if not tab:
            raise InputError("expected 'docid<TAB>text' (a TSV corpus), found no tab", str(path), lineno)
        if not docid.strip():
            raise InputError("empty docid", str(path), lineno)
        yield Document(docid.strip(), "", text)


def is_tsv_corpus(path: Path) -> bool:
    """Whether ``path`` is named as a TSV corpus (``.tsv`` / ``.tsv.gz``)."""
    return path.name.lower().endswith((".tsv", ".tsv.gz"))


def unique_documents(docs: Iterable[Document], source: str | os.PathLike) -> Iterator[Document]:
    """``docs`` unchanged, but a docid seen twice is an :class:`InputError` naming ``source`` and both positions.

    The one duplicate-docid policy of the package: every consumer (``index``, ``encode``, reranking, training)
    refuses a corpus that repeats a docid, because an index would return it twice and no run could hold it.
    """
    seen: dict[str, int] = {}
    for position, doc in enumerate(docs, start=1):
        first = seen.setdefault(doc.docid, position)
        if first != position:
            lines = _lines_of(Path(source), doc.docid)
            if lines and len(lines) >= 2:
                raise InputError(f"docid {doc.docid} appears twice (first on line {lines[0]}); every docid must be "
                                 "unique", str(source), lines[1])
            raise InputError(f"docid {doc.docid} appears twice (documents #{first} and #{position}); every docid "
                             "must be unique", str(source))
        yield doc


def _lines_of(path: Path, docid: str) -> list[int] | None:
    """The line numbers of ``docid``'s records in a JSONL or TSV corpus file (read again: an error path only);
    None for other sources (a CBOR file has no lines)."""
    if not path.is_file() or path.suffix == ".cbor":
        return None
    try:
        if is_tsv_corpus(path):
            from ..textio import iter_lines

            return [n for n, line in iter_lines(path) if line.partition("\t")[0].strip() == docid]
        return [n for n, obj in iter_jsonl(path) if record_id(obj, path, n) == docid]
    except InputError:
        return None


def corpus_dict(docs: Iterable[Document], source: str | os.PathLike, progress: bool = False,
                desc: str = "corpus", keep: Collection[str] | None = None) -> dict[str, Document]:
    """docid -> Document from a stream, duplicates refused (:func:`unique_documents`); with ``keep``, only those
    docids are held (every document is still read, so a duplicate anywhere is still refused)."""
    if progress:
        from tqdm.auto import tqdm

        docs = tqdm(docs, desc=desc, unit="doc")
    docs = unique_documents(docs, source)
    if keep is not None:
        keep = set(keep)
        docs = (doc for doc in docs if doc.docid in keep)
    return {doc.docid: doc for doc in docs}


def iter_documents(spec: str | os.PathLike) -> tuple[Path, Iterator[Document]]:
    """The one corpus opener: ``(source path, document stream)`` for a BEIR folder or dataset name (on the
    search path), a BEIR/Pyserini JSONL file (``.gz`` too), a ``docid<TAB>text`` ``.tsv`` file (MS MARCO's
    ``collection.tsv``; ``.gz`` too), or a TREC CAR paragraph ``.cbor`` file."""
    # beir and car build on Document and the readers above, so they are imported here, not at the top.
    from .beir import BeirDataset, find_dataset
    from .car import read_car_paragraphs

    from .pyserini_names import FILE_SUFFIXES

    path = Path(spec)
    if not path.exists() and path.name.lower().endswith(FILE_SUFFIXES):
        raise InputError("no such corpus file", str(spec))  # mistyped: not a dataset name (no download URL)
    if path.is_file():
        if path.suffix == ".cbor":
            return path, read_car_paragraphs(path)
        return path, (read_corpus_tsv(path) if is_tsv_corpus(path) else read_corpus_jsonl(path))
    dataset = BeirDataset(path if path.is_dir() else find_dataset(spec))
    return dataset.corpus_path, dataset.iter_corpus()


def open_corpus(spec: str | os.PathLike, progress: bool = False,
                keep: Collection[str] | None = None) -> dict[str, Document]:
    """docid -> Document for any corpus :func:`iter_documents` accepts (only ``keep``'s when given); duplicate
    docids are refused."""
    source, docs = iter_documents(spec)
    return corpus_dict(docs, source, progress, keep=keep)

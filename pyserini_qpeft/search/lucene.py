"""The only module that touches Anserini (lazily, through pyjnius): Lucene indexing, BM25 search, raw documents.

Indexes are BEIR "flat" (title and text in one ``contents`` field, raw JSON stored), built with Anserini's
``BeirFlatCollection`` exactly as Pyserini's BEIR regressions do, so BM25 scores reproduce Pyserini's.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..artifacts import MetaSpec, check_replaceable, read_meta, staging_dir, temp_prefix, write_meta
from ..errors import InputError
from ..jvm import java_message
from ..types import Hit, Query, Run

logger = logging.getLogger(__name__)

INDEX_META = "pyserini_qpeft_index.json"
# Indexes written before the type field existed have none; they are still accepted.
META = MetaSpec(file=INDEX_META, type_field="type", type="lucene-index", label="pyserini_qpeft Lucene index",
                error=InputError, untyped_ok=True)


@dataclass(frozen=True)
class BM25Config:
    """Pyserini's BM25 defaults for BEIR flat indexes."""

    k1: float = 0.9
    b: float = 0.4
    hits: int = 1000
    threads: int = 2
    batch_size: int = 64
    remove_query: bool = False

    def __post_init__(self) -> None:
        if self.k1 < 0 or not 0 <= self.b <= 1:
            raise ValueError(f"BM25 needs k1 >= 0 and 0 <= b <= 1, got k1={self.k1} b={self.b}")
        if self.hits < 1:
            raise ValueError(f"hits must be >= 1, got {self.hits}")
        if self.threads < 1 or self.batch_size < 1:
            raise ValueError(f"threads and batch_size must be >= 1, got {self.threads}, {self.batch_size}")


def is_lucene_index(path: str | os.PathLike) -> bool:
    path = Path(path)
    return path.is_dir() and any(path.glob("segments_*"))


def _is_beir_jsonl(path: Path) -> bool:
    """Whether ``path`` is a plain (not gzipped) JSONL file whose first record has BEIR's ``_id``."""
    if path.suffix in (".cbor", ".gz"):
        return False
    from ..textio import first_line

    try:
        record = json.loads(first_line(path))
    except json.JSONDecodeError:
        return False  # the conversion below reports the bad line
    return isinstance(record, dict) and "_id" in record


def _flat_records(path: Path) -> bool:
    """Whether every record of the BEIR file ``path`` has the string ``title`` and ``text`` that Anserini's
    ``BeirFlatCollection`` reads (a missing key stopped indexing at that record, exit 0; a null title was indexed as
    the word "null")."""
    from ..data.formats import iter_jsonl

    return all(isinstance(obj.get("title"), str) and isinstance(obj.get("text"), str) for _, obj in iter_jsonl(path))


def _corpus_stamp(source: Path, digest: bool = True) -> dict:
    """What an index records of the corpus file it was built from: size, mtime and (``digest``) sha256."""
    from ..artifacts import file_sha256

    stat = source.stat()
    stamp = {"bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    if digest:
        stamp["sha256"] = file_sha256(source)
    return stamp


def _check_corpus_unchanged(index_dir: Path, recorded: dict | None, corpus: str | os.PathLike) -> None:
    """Refuse to reuse an index whose corpus file changed since it was built (a corpus completed after an
    interrupted download or copy was indexed half; the index was reused whatever the file held). Same size and
    mtime: unchanged; another mtime at the same size: the sha256 decides (a re-download of the same file)."""
    from ..data import iter_documents

    if not recorded:
        return  # an index built before the record existed
    source, _ = iter_documents(corpus)
    if not source.is_file():
        return
    now = _corpus_stamp(source, digest=False)
    if now["bytes"] == recorded.get("bytes") and (now["mtime_ns"] == recorded.get("mtime_ns")
                                                  or _corpus_stamp(source)["sha256"] == recorded.get("sha256")):
        return
    raise InputError(f"the corpus {source} changed since this index was built from it ({recorded.get('bytes'):,} "
                     f"bytes then, {now['bytes']:,} now{'' if now['bytes'] != recorded.get('bytes') else ', other content'}"
                     f"): pass --force to rebuild it, or choose another --index", str(index_dir))


def _prepare_collection(corpus: str | os.PathLike, workdir: Path) -> tuple[Path, int]:
    """A folder holding one BEIR-style ``corpus.jsonl`` for ``BeirFlatCollection``, and how many of its documents
    Anserini will index (all but the blank ones, which it skips by design, as Pyserini's indexes do); every record
    is read first.

    ``corpus`` is anything :func:`pyserini_qpeft.data.iter_documents` opens. A BEIR corpus file is validated (a
    malformed line or a repeated docid is an InputError naming file and line, before Lucene sees anything) and
    linked as is (byte-identical input = Pyserini's regression numbers) when every record has a string title and
    text; any other corpus (a BEIR file with a record lacking one, or with a null, Pyserini JsonCollection JSONL,
    gzipped JSONL, TREC CAR paragraph CBOR) is converted to BEIR JSONL as the package reads it.
    """
    from ..data import iter_documents, unique_documents

    source, documents = iter_documents(corpus)
    documents = unique_documents(documents, source)
    target = workdir / "corpus.jsonl"
    count = blank = 0
    linked = _is_beir_jsonl(source) and _flat_records(source)
    with contextlib.ExitStack() as stack:
        out = None if linked else stack.enter_context(open(target, "w", encoding="utf-8"))
        for doc in documents:
            count += 1
            blank += all(c <= " " for c in doc.contents())  # Java's trim(): what Anserini calls blank
            if out is not None:
                out.write(json.dumps({"_id": doc.docid, "title": doc.title, "text": doc.text}) + "\n")
    if linked:
        os.symlink(source.resolve(), target)
    if count == 0:
        raise InputError("corpus has no documents", str(source))
    if blank:
        logger.warning("%s: %d of %d documents are blank (no title, no text); Anserini does not index them",
                       source, blank, count)
    return workdir, count - blank


LANGUAGE = re.compile(r"[a-z]{2}(?:-[a-z]+)?")


def index_language(index_dir: str | os.PathLike) -> str | None:
    """The analyzer language an index of ours was built with (``en`` for one built before the record existed);
    None for any other index (a prebuilt name, another tool's folder: its language is the user's to give)."""
    path = Path(index_dir) / INDEX_META
    if not path.is_file():
        return None
    return str(read_meta(index_dir, META).get("language", "en"))


def build_index(corpus: str | os.PathLike, index_dir: str | os.PathLike, threads: int = 2, force: bool = False,
                language: str = "en") -> Path:
    """Build a BEIR-flat Lucene index of ``corpus`` at ``index_dir`` (idempotent; ``force`` rebuilds).

    The corpus is read in full first (a bad line or a repeated docid fails before Lucene runs); Anserini then runs
    in a child JVM (Ctrl-C stops it at once) and writes into a temporary sibling folder that is renamed into place,
    so an interrupted or failed build leaves nothing half-written. ``language``: Anserini's analyzer
    (``-language``, e.g. ``de``, ``fr``, ``zh``; ``en`` = Porter-stemmed English, Pyserini's default), recorded in
    the index so that :func:`bm25_search` analyses queries the same way. Returns ``index_dir``.
    """
    index_dir = Path(index_dir)
    if not LANGUAGE.fullmatch(language):
        raise ValueError(f"language {language!r}: expected a code such as en, de, zh (Anserini's -language)")
    if not force and (index_dir / INDEX_META).is_file():
        meta = read_meta(index_dir, META)  # ours and complete (else a named error): building is idempotent
        _check_same_corpus(index_dir, meta.get("corpus"), corpus)  # another existing corpus: refused
        _check_corpus_unchanged(index_dir, meta.get("corpus_file"), corpus)  # this one (or a moved one) as then
        if meta.get("language", "en") != language:
            raise InputError(f"this index was built with the {meta.get('language', 'en')!r} analyzer, not "
                             f"{language!r}: pass --force to rebuild it, or choose another --index", str(index_dir))
        logger.info("index %s exists (use --force to rebuild)", index_dir)
        return index_dir
    check_replaceable(index_dir, META, force)  # never replaces a user's folder, a file or another tool's index
    from ..jvm import java_verbose, run_java_main, start_jvm

    index_dir.parent.mkdir(parents=True, exist_ok=True)
    start = time.time()
    with tempfile.TemporaryDirectory(prefix=temp_prefix(index_dir), suffix=".tmp", dir=index_dir.parent) as work:
        from ..data import iter_documents

        source = iter_documents(corpus)[0]
        stamp = _corpus_stamp(source) if source.is_file() else None  # before reading: a change while indexing shows
        collection, expected = _prepare_collection(corpus, Path(work))
        if expected == 0:
            raise InputError("every document of the corpus is blank (no title, no text): nothing to index", str(corpus))
        with staging_dir(index_dir) as tmp_index:
            args = ["-collection", "BeirFlatCollection", "-generator", "DefaultLuceneDocumentGenerator",
                    "-input", str(collection), "-index", str(tmp_index), "-threads", str(threads),
                    "-storePositions", "-storeDocvectors", "-storeRaw"]
            if language != "en":
                args += ["-language", language]
            if not java_verbose():
                args.append("-quiet")  # else Anserini resets its level to INFO ("Setting log level to INFO")
            run_java_main("io.anserini.index.IndexCollection", args, "Anserini indexing")
            start_jvm()  # in this process, to count what was indexed
            count = _count_docs(tmp_index)
            if count != expected:  # Anserini skips what it cannot read with a log line, and exits 0
                raise InputError(f"Anserini indexed {count:,} of the corpus's {expected:,} documents (run with -v "
                                 f"for its log)", str(corpus))
            meta = {"corpus": str(Path(corpus).resolve()), "collection": "BeirFlatCollection", "documents": count,
                    "language": language, "seconds": round(time.time() - start, 1)}
            if stamp is not None:
                meta["corpus_file"] = stamp
            write_meta(tmp_index, META, meta)
    logger.info("indexed %d documents into %s in %.1fs", count, index_dir, time.time() - start)
    return index_dir


def _check_same_corpus(index_dir: Path, recorded: str | None, corpus: str | os.PathLike) -> None:
    """Reuse an existing index only for the corpus it was built from: another existing corpus is an InputError
    (``--force`` rebuilds); a recorded corpus that no longer exists (the data moved) is reused with a warning."""
    wanted = str(Path(corpus).resolve())
    if recorded is None or recorded == wanted:
        return
    if Path(recorded).exists():
        raise InputError(f"this index was built from {recorded}, not {wanted}: pass --force to rebuild it, or "
                         f"choose another --index", str(index_dir))
    logger.warning("index %s was built from %s, which no longer exists; reusing it for %s (--force rebuilds)",
                   index_dir, recorded, wanted)


def _count_docs(index_dir: Path) -> int:
    from jnius import autoclass

    reader = autoclass("io.anserini.index.IndexReaderUtils").getReader(str(index_dir))
    try:
        return int(reader.numDocs())
    finally:
        reader.close()


class _Searcher:
    """Anserini's ``io.anserini.search.SimpleSearcher``, called exactly as Pyserini's ``LuceneSearcher`` calls it
    (same class, same arguments: the same scores), without importing Pyserini's Python layer, whose import differs
    between releases (Pyserini 2.x fetches prebuilt-index lists from the network at import time)."""

    def __init__(self, index_dir: str | os.PathLike):
        from jnius import autoclass

        self._java = autoclass("io.anserini.search.SimpleSearcher")(str(index_dir))
        self._list = autoclass("java.util.ArrayList")

    def set_bm25(self, k1: float, b: float) -> None:
        self._java.set_bm25(float(k1), float(b))

    def set_language(self, language: str) -> None:
        """Analyse queries with ``language``'s analyzer (as Pyserini's ``--language``)."""
        self._java.set_language(language)

    def batch_search(self, queries: Sequence[str], qids: Sequence[str], k: int, threads: int) -> dict:
        """qid -> Anserini ``ScoredDoc`` array (``.docid``, ``.score``)."""
        query_strings, qid_strings = self._list(), self._list()
        for query in queries:
            query_strings.add(query)
        for qid in qids:
            qid_strings.add(qid)
        results = self._java.batch_search(query_strings, qid_strings, int(k), int(threads))
        return {r.getKey(): r.getValue() for r in results.entrySet().toArray()}

    def doc(self, docid: str):
        """The Lucene document of ``docid`` (None when unknown)."""
        return self._java.doc(docid)

    def close(self) -> None:
        self._java.close()


def _searcher(index_dir: str | os.PathLike) -> _Searcher:
    """Anserini's searcher over a Lucene index folder or a Pyserini prebuilt index name (:mod:`.prebuilt`)."""
    from .prebuilt import resolve_lucene_index

    index_dir = resolve_lucene_index(index_dir)
    if not is_lucene_index(index_dir):
        from .dense import is_dense_index

        if is_dense_index(index_dir):
            raise InputError("is a FAISS index of `pyserini-qpeft encode`, not a Lucene one: search it with --dense",
                             str(index_dir))
        raise InputError("not a Lucene index (build one with `pyserini-qpeft index`) nor a Pyserini prebuilt index "
                         "name (e.g. msmarco-v1-passage)", str(index_dir))
    from ..jvm import start_jvm

    start_jvm()
    from jnius import JavaException

    try:
        return _Searcher(index_dir)
    except JavaException as exc:
        raise InputError(f"damaged Lucene index, Lucene cannot open it ({java_message(exc)}); rebuild it with "
                         "`pyserini-qpeft index --force`", str(index_dir)) from None


MAX_CLAUSES = 1024  # Lucene's IndexSearcher.maxClauseCount: a BM25 query is one clause per distinct term


def _too_long(queries: Sequence[Query]) -> list[Query]:
    """Queries over Lucene's clause limit (distinct whitespace tokens: an upper bound of the analysed terms)."""
    return [q for q in queries if len(set(q.text.lower().split())) > MAX_CLAUSES]


def bm25_search(index_dir: str | os.PathLike, queries: Sequence[Query], config: BM25Config = BM25Config(),
                progress: bool = True) -> Run:
    """BM25 top-``config.hits`` for every query, as Pyserini's ``pyserini.search.lucene --bm25`` computes it.

    Scores are rounded to 6 decimals, as Pyserini's TREC writer prints them, so runs and metrics match
    Pyserini's own output; ties are then broken by docid.
    """
    from tqdm import tqdm

    if not queries:
        raise InputError("no queries to search")
    for query in queries:
        if not query.text.strip():
            raise InputError(f"query {query.qid} is empty")
    searcher = _searcher(index_dir)
    from jnius import JavaException

    searcher.set_bm25(config.k1, config.b)
    language = index_language(index_dir) if Path(index_dir).is_dir() else None
    if language not in (None, "en"):  # queries are analysed as the index's documents were
        searcher.set_language(language)
    run = Run(tag="bm25")
    with tqdm(total=len(queries), desc="bm25", unit="q", disable=not progress) as bar:
        for start in range(0, len(queries), config.batch_size):
            batch = queries[start:start + config.batch_size]
            try:
                results = searcher.batch_search([q.text for q in batch], [q.qid for q in batch], config.hits,
                                                config.threads)
            except JavaException as exc:
                long = _too_long(batch)
                if long:
                    raise InputError(f"query {long[0].qid} has {len(set(long[0].text.lower().split()))} distinct "
                                     f"terms; Lucene's BM25 takes at most {MAX_CLAUSES} (maxClauseCount); shorten "
                                     "it") from None
                raise InputError(f"Lucene failed on queries {batch[0].qid}..{batch[-1].qid}: "
                                 f"{java_message(exc)}") from None
            for query in batch:
                hits = [Hit(h.docid, round(float(h.score), 6)) for h in results[query.qid]]
                if config.remove_query:
                    hits = [h for h in hits if h.docid != query.qid]
                run.set(query.qid, hits)
            bar.update(len(batch))
    searcher.close()
    return run


class LuceneDocStore:
    """Documents from a Lucene index's stored raw JSON (``-storeRaw``): a folder, a Pyserini prebuilt index name, or
    a prebuilt FAISS index's name (its texts' Lucene index, :func:`.prebuilt.resolve_lucene_index`)."""

    def __init__(self, index_dir: str | os.PathLike):
        from .prebuilt import resolve_lucene_index

        self.index_dir = resolve_lucene_index(index_dir, for_text=True)
        self._searcher = _searcher(self.index_dir)

    def get(self, docid: str):
        from ..data import Document
        from ..data.corpus import record_fields

        doc = self._searcher.doc(docid)
        if doc is None:
            raise InputError(f"docid {docid!r} is not in the index", str(self.index_dir))
        raw = doc.get("raw")
        try:
            record = json.loads(raw)
        except (TypeError, json.JSONDecodeError):
            return Document(docid, "", doc.get("contents") or raw or "")
        if not isinstance(record, dict):
            return Document(docid, "", doc.get("contents") or raw or "")
        title, text = record_fields(record)
        return Document(docid, title, text or "")

"""Datasets: BEIR folders, topics, qrels, TREC CAR files, and finding/downloading BEIR datasets.

A BEIR dataset is a folder with ``corpus.jsonl``, ``queries.jsonl`` and ``qrels/<split>.tsv``. Datasets are found
by path, or by name on a search path: the folders in ``$PYSERINI_QPEFT_DATA`` (``os.pathsep``-separated), then
``<cache_dir>/beir`` where :func:`download_beir` puts the official zips. Pyserini's names for BEIR topics and
qrels (``beir-v1.0.0-<dataset>-<split>``) resolve against the same search path, so they work offline whenever
the dataset is present. Nothing heavy is imported here (no pyserini, no torch).
"""
from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterable, Iterator, Mapping

from .backbone import cache_dir
from .errors import InputError
from .fileio import atomic_write
from .types import Query

logger = logging.getLogger(__name__)

ENV_VAR = "PYSERINI_QPEFT_DATA"
BEIR_URL = "https://public.ukp.informatik.tu-darmstadt.de/thakur/BEIR/datasets/{name}.zip"
SPLITS = ("test", "train", "dev")
# BEIR zips that hold several datasets, one sub-folder each (Pyserini: beir-v1.0.0-cqadupstack-android-test).
NESTED_DATASETS = ("cqadupstack",)
_PYSERINI_NAME = re.compile(r"^beir-v1\.0\.0-(?P<dataset>[A-Za-z0-9][A-Za-z0-9_.-]*?)-(?P<split>test|train|dev)$")
_DATASET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class Document:
    """One corpus document (BEIR shape)."""

    docid: str
    title: str
    text: str

    def contents(self) -> str:
        """Title and text joined by one space, as Anserini's BeirFlatCollection indexes them; text alone if no title."""
        return f"{self.title} {self.text}" if self.title else self.text


# --------------------------------------------------------------------------------------------------------------
# Finding datasets


def data_search_path() -> list[Path]:
    """Folders searched for BEIR datasets by name: ``$PYSERINI_QPEFT_DATA`` entries, then ``cache_dir()/beir``."""
    entries = [Path(p).expanduser() for p in os.environ.get(ENV_VAR, "").split(os.pathsep) if p.strip()]
    return entries + [cache_dir() / "beir"]


def _is_beir_folder(path: Path) -> bool:
    return path.is_dir() and ((path / "corpus.jsonl").is_file() or (path / "corpus.jsonl.gz").is_file())


def _candidates(root: Path, name: str) -> list[Path]:
    """Where dataset ``name`` may lie under ``root`` (``cqadupstack-android`` is ``cqadupstack/android`` in BEIR)."""
    out = [root / name]
    for nested in NESTED_DATASETS:
        if name.startswith(nested + "-"):
            out.append(root / nested / name[len(nested) + 1:])
    return out


def find_dataset(name_or_path: str | os.PathLike, download: bool = False) -> Path:
    """A BEIR dataset folder given its path or its name on :func:`data_search_path`.

    Args:
        name_or_path: a folder holding ``corpus.jsonl``, or a BEIR dataset name such as ``scifact``.
        download: fetch the official BEIR zip into ``cache_dir()/beir`` when the name is not found.

    Raises:
        InputError: the path is not a BEIR folder, or the name is nowhere on the search path (the message lists
            the folders searched).
    """
    text = os.fspath(name_or_path)
    path = Path(text).expanduser()
    if _is_beir_folder(path):
        return path
    looks_like_path = os.sep in text or (os.altsep is not None and os.altsep in text) or path.exists()
    if looks_like_path:
        raise InputError("not a BEIR dataset folder (no corpus.jsonl)", text)
    if not _DATASET_NAME.match(text):
        raise InputError(f"invalid dataset name {text!r}")
    searched = []
    for root in data_search_path():
        for candidate in _candidates(root, text):
            searched.append(str(candidate))
            if _is_beir_folder(candidate):
                return candidate
    if download:
        zip_name = next((n for n in NESTED_DATASETS if text.startswith(n + "-")), text)
        folder = download_beir(zip_name)
        for candidate in _candidates(folder.parent, text):
            if _is_beir_folder(candidate):
                return candidate
        raise InputError(f"downloaded {zip_name}.zip but found no dataset {text!r} in it", str(folder))
    raise InputError(
        f"BEIR dataset {text!r} not found; looked in: {', '.join(searched)}. Put the dataset folder in one of "
        f"the folders of ${ENV_VAR} ({os.pathsep}-separated), pass its path, or download it "
        f"(`index --download` or `repro --download` on the CLI, download=True in Python, fetches "
        f"{BEIR_URL.format(name=text)})"
    )


# --------------------------------------------------------------------------------------------------------------
# Downloading


def _fetch(url: str, dest: IO[bytes], progress: bool) -> None:
    """Stream ``url`` into ``dest`` (http(s) or file://), with a progress bar when the size is known."""
    import urllib.error
    import urllib.request

    try:
        response = urllib.request.urlopen(url, timeout=60)  # noqa: S310 (URL is the user's choice or BEIR's)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise InputError(f"could not download {url}: {exc}") from exc
    with response:
        total = response.headers.get("Content-Length") if getattr(response, "headers", None) else None
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=int(total) if total and total.isdigit() else None, unit="B", unit_scale=True,
                       desc=url.rsplit("/", 1)[-1])
        try:
            while True:
                chunk = response.read(1 << 20)
                if not chunk:
                    break
                dest.write(chunk)
                if bar is not None:
                    bar.update(len(chunk))
        except OSError as exc:
            raise InputError(f"download of {url} failed: {exc}") from exc
        finally:
            if bar is not None:
                bar.close()


def _safe_extract(archive: zipfile.ZipFile, target: Path, source: str) -> None:
    """Extract every member below ``target``; refuse the whole archive if any member would land outside it."""
    root = target.resolve()
    for info in archive.infolist():
        name = info.filename
        dest = (root / name).resolve()
        if os.path.isabs(name) or name.startswith(("/", "\\")) or ".." in Path(name.replace("\\", "/")).parts \
                or (dest != root and root not in dest.parents):
            raise InputError(f"refusing zip member {name!r}: it would be written outside {target}", source)
    archive.extractall(root)


def download_beir(name: str, url: str | None = None, target_dir: str | os.PathLike | None = None,
                  progress: bool = True) -> Path:
    """Download and unpack a BEIR dataset zip; returns ``target_dir/name``.

    The zip is streamed to a temp file, checked member by member (a member that would land outside the target,
    e.g. ``../evil``, aborts the whole extraction), extracted into a temp folder beside the target and renamed
    into place, so an interrupted or refused download leaves nothing behind. An existing ``target_dir/name``
    is returned as is.

    Args:
        name: BEIR dataset name (``scifact``); also the folder name created.
        url: where to fetch the zip (default: the official BEIR URL); ``file://`` URLs work.
        target_dir: folder that receives the dataset (default ``cache_dir()/beir``).
        progress: show a download progress bar.
    """
    if not _DATASET_NAME.match(name):
        raise InputError(f"invalid dataset name {name!r}")
    url = url or BEIR_URL.format(name=name)
    target_root = Path(target_dir) if target_dir is not None else cache_dir() / "beir"
    final = target_root / name
    if final.is_dir():
        return final
    target_root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".partial", dir=target_root))
    try:
        zip_path = work / f"{name}.zip"
        logger.info("downloading %s", url)
        with open(zip_path, "wb") as out:
            _fetch(url, out, progress)
        if not zipfile.is_zipfile(zip_path):
            raise InputError("downloaded file is not a zip archive", url)
        extracted = work / "x"
        extracted.mkdir()
        with zipfile.ZipFile(zip_path) as archive:
            _safe_extract(archive, extracted, url)
        zip_path.unlink()
        entries = [p for p in extracted.iterdir() if p.name != "__MACOSX"]
        if (extracted / name).is_dir():
            folder = extracted / name
        elif any(p.name in ("corpus.jsonl", "corpus.jsonl.gz") for p in entries):
            folder = extracted
        elif len(entries) == 1 and entries[0].is_dir():
            folder = entries[0]
        else:
            raise InputError(f"zip holds no folder {name!r} and no corpus.jsonl", url)
        try:
            os.rename(folder, final)
        except OSError:
            if not final.is_dir():  # not a concurrent download that won the race
                raise
        return final
    finally:
        shutil.rmtree(work, ignore_errors=True)


# --------------------------------------------------------------------------------------------------------------
# Reading files


def _open_text(path: Path) -> IO[str]:
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def _iter_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-blank line; malformed JSON -> InputError(file, line)."""
    path = Path(path)
    if not path.is_file():
        raise InputError("file not found", str(path))
    with _open_text(path) as handle:
        for lineno, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"malformed JSON: {exc.msg}", str(path), lineno) from None
            if not isinstance(obj, dict):
                raise InputError("expected a JSON object", str(path), lineno)
            yield lineno, obj


def _record_id(obj: dict, path: Path, lineno: int) -> str:
    for key in ("_id", "id", "docid"):
        value = obj.get(key)
        if value is not None and str(value) != "":
            return str(value)
    raise InputError("record has no '_id' (BEIR) or 'id' (Pyserini) field", str(path), lineno)


def read_corpus_jsonl(path: str | os.PathLike) -> Iterator[Document]:
    """Documents of a BEIR ``corpus.jsonl`` (``_id``, ``title``, ``text``) or a Pyserini JsonCollection file
    (``id``, ``contents``). ``.gz`` files are read transparently."""
    path = Path(path)
    if not path.is_file():  # checked now, not at the first next()
        raise InputError("file not found", str(path))
    return _corpus_records(path)


def _corpus_records(path: Path) -> Iterator[Document]:
    for lineno, obj in _iter_jsonl(path):
        docid = _record_id(obj, path, lineno)
        if "text" in obj or "title" in obj:
            text, title = obj.get("text") or "", obj.get("title") or ""
        elif "contents" in obj:
            text, title = obj.get("contents") or "", ""
        else:
            raise InputError(f"document {docid} has no 'text' or 'contents' field", str(path), lineno)
        yield Document(docid, str(title), str(text))


def read_queries_jsonl(path: str | os.PathLike) -> dict[str, str]:
    """qid -> text from a BEIR ``queries.jsonl`` (``_id``, ``text``); ``id``/``contents`` also accepted."""
    path = Path(path)
    queries: dict[str, str] = {}
    for lineno, obj in _iter_jsonl(path):
        qid = _record_id(obj, path, lineno)
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

    Raises:
        InputError: a line with another number of columns or a non-integer relevance (names file and line).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("qrels file not found", str(path))
    qrels: dict[str, dict[str, int]] = {}
    with _open_text(path) as handle:
        first = True
        for lineno, line in enumerate(handle, start=1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            parts = line.split("\t") if line.count("\t") == 2 else line.split()
            parts = [p.strip() for p in parts]
            if len(parts) == 3:
                qid, docid, rel = parts
            elif len(parts) == 4:
                qid, _, docid, rel = parts
            else:
                raise InputError(f"expected 'qid 0 docid rel' (TREC) or 'qid<TAB>docid<TAB>rel' (BEIR), "
                                 f"got {len(parts)} columns", str(path), lineno)
            if first:
                first = False
                if len(parts) == 3 and not re.fullmatch(r"[-+]?\d+(\.0*)?", rel):
                    continue  # BEIR header: query-id corpus-id score
            if not qid or not docid:
                raise InputError("empty query or document id", str(path), lineno)
            qrels.setdefault(qid, {})[docid] = _parse_rel(rel, path, lineno)
    return qrels


def read_topics_tsv(path: str | os.PathLike) -> list[Query]:
    """Queries from a ``qid<TAB>text`` file (Pyserini's TSV topics)."""
    path = Path(path)
    topics: list[Query] = []
    seen: set[str] = set()
    with _open_text(path) as handle:
        for lineno, line in enumerate(handle, start=1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            if "\t" not in line:
                raise InputError("expected 'qid<TAB>query text', found no tab", str(path), lineno)
            qid, text = line.split("\t", 1)
            qid = qid.strip()
            if not qid:
                raise InputError("empty query id", str(path), lineno)
            if qid in seen:
                raise InputError(f"query id {qid} appears twice", str(path), lineno)
            seen.add(qid)
            topics.append(Query(qid, text.strip()))
    return topics


# --------------------------------------------------------------------------------------------------------------
# BEIR datasets


class BeirDataset:
    """A BEIR dataset folder: ``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.is_dir():
            raise InputError("BEIR dataset folder not found", str(self.path))
        corpus = self.path / "corpus.jsonl"
        if not corpus.is_file() and (self.path / "corpus.jsonl.gz").is_file():
            corpus = self.path / "corpus.jsonl.gz"
        if not corpus.is_file():
            raise InputError("not a BEIR dataset folder (no corpus.jsonl)", str(self.path))
        self.corpus_path = corpus
        self.name = self.path.name
        self._corpus: dict[str, Document] | None = None
        self._queries: dict[str, str] | None = None

    @classmethod
    def find(cls, name_or_path: str | os.PathLike, download: bool = False) -> "BeirDataset":
        """The dataset at a path or with a name on the search path (see :func:`find_dataset`)."""
        return cls(find_dataset(name_or_path, download=download))

    def __repr__(self) -> str:
        return f"BeirDataset({str(self.path)!r})"

    def iter_corpus(self) -> Iterator[Document]:
        """Stream the corpus in file order."""
        return read_corpus_jsonl(self.corpus_path)

    def load_corpus(self, progress: bool = False) -> dict[str, Document]:
        """docid -> Document, read once and cached on this instance. Duplicate docids are an error."""
        if self._corpus is None:
            docs = self.iter_corpus()
            if progress:
                from tqdm.auto import tqdm

                docs = tqdm(docs, desc=f"{self.name} corpus", unit="doc")
            corpus: dict[str, Document] = {}
            for doc in docs:
                if doc.docid in corpus:
                    raise InputError(f"docid {doc.docid} appears twice", str(self.corpus_path))
                corpus[doc.docid] = doc
            self._corpus = corpus
        return self._corpus

    def queries(self) -> dict[str, str]:
        """qid -> query text, all queries of the dataset (every split)."""
        if self._queries is None:
            self._queries = read_queries_jsonl(self.path / "queries.jsonl")
        return dict(self._queries)

    def splits(self) -> list[str]:
        """Split names with a qrels file, sorted."""
        folder = self.path / "qrels"
        return sorted(p.stem for p in folder.glob("*.tsv")) if folder.is_dir() else []

    def qrels_path(self, split: str) -> Path:
        path = self.path / "qrels" / f"{split}.tsv"
        if not path.is_file():
            available = ", ".join(self.splits()) or "none"
            raise InputError(f"dataset {self.name} has no split {split!r} (splits: {available})", str(self.path))
        return path

    def qrels(self, split: str) -> dict[str, dict[str, int]]:
        """qid -> docid -> relevance for ``split``."""
        return read_qrels_file(self.qrels_path(split))

    def topics(self, split: str) -> list[Query]:
        """The queries judged in ``split``, in order of first appearance in its qrels file."""
        qrels = self.qrels(split)
        queries = self.queries()
        missing = [qid for qid in qrels if qid not in queries]
        if missing:
            raise InputError(f"{len(missing)} query ids of qrels/{split}.tsv are not in queries.jsonl "
                             f"(first: {missing[0]})", str(self.path))
        return [Query(qid, queries[qid]) for qid in qrels]


# --------------------------------------------------------------------------------------------------------------
# Topics and qrels by name or file


def parse_pyserini_name(spec: str) -> tuple[str, str] | None:
    """``'beir-v1.0.0-scifact-test'`` -> ``('scifact', 'test')``; None if ``spec`` is not such a name.

    The split is the last dash-separated part (test, train or dev); the dataset may contain dashes
    (``beir-v1.0.0-cqadupstack-android-test`` -> ``('cqadupstack-android', 'test')``).
    """
    match = _PYSERINI_NAME.match(str(spec))
    return (match.group("dataset"), match.group("split")) if match else None


def _not_found(spec: str, what: str) -> InputError:
    return InputError(f"{what} {spec!r}: no such file, and not a Pyserini BEIR name like "
                      f"'beir-v1.0.0-<dataset>-<split>' (split: {', '.join(SPLITS)})")


def load_topics(spec: str | os.PathLike, download: bool = False) -> list[Query]:
    """Queries from a Pyserini BEIR name or a file.

    Args:
        spec: ``beir-v1.0.0-<dataset>-<split>`` (resolved on the data search path), or a file: ``.tsv``
            (``qid<TAB>text``), BEIR ``queries.jsonl``, or a TREC CAR outlines ``.cbor``.
        download: allow downloading the BEIR dataset a Pyserini name refers to.

    Raises:
        InputError: unknown name or file, malformed line, or no topics at all.
    """
    text = os.fspath(spec)
    path = Path(text).expanduser()
    if path.is_file():
        name = path.name.lower()
        if name.endswith(".cbor") or "cbor-outlines" in name:
            topics = read_car_outlines(path)
        elif name.endswith((".jsonl", ".jsonl.gz", ".json")):
            topics = [Query(q, t) for q, t in read_queries_jsonl(path).items()]
        else:
            topics = read_topics_tsv(path)
        where = str(path)
    else:
        parsed = parse_pyserini_name(text)
        if parsed is None:
            raise _not_found(text, "topics")
        dataset, split = parsed
        topics = BeirDataset(find_dataset(dataset, download=download)).topics(split)
        where = text
    if not topics:
        raise InputError("no topics found", where)
    return topics


def load_qrels(spec: str | os.PathLike, download: bool = False) -> dict[str, dict[str, int]]:
    """qid -> docid -> relevance from a Pyserini BEIR name, a TREC qrels file or a BEIR qrels TSV."""
    text = os.fspath(spec)
    path = Path(text).expanduser()
    if path.is_file():
        qrels, where = read_qrels_file(path), str(path)
    else:
        parsed = parse_pyserini_name(text)
        if parsed is None:
            raise _not_found(text, "qrels")
        dataset, split = parsed
        qrels, where = BeirDataset(find_dataset(dataset, download=download)).qrels(split), text
    if not qrels:
        raise InputError("no relevance judgments found", where)
    return qrels


def write_trec_qrels(qrels: Mapping[str, Mapping[str, int]], path: str | os.PathLike) -> None:
    """Write 4-column TREC qrels (``qid 0 docid rel``) atomically, sorted by qid then docid."""
    with atomic_write(path) as out:
        for qid in sorted(qrels):
            for docid in sorted(qrels[qid]):
                out.write(f"{qid} 0 {docid} {int(qrels[qid][docid])}\n")


def _is_trec_qrels(path: Path) -> bool:
    with _open_text(path) as handle:
        for line in handle:
            if line.strip():
                parts = line.split()
                return len(parts) == 4 and re.fullmatch(r"[-+]?\d+", parts[3]) is not None
    return False


def qrels_file_for_trec_eval(spec: str | os.PathLike, download: bool = False) -> Path:
    """A 4-column TREC qrels file for trec_eval.

    A TREC qrels file is returned as is. BEIR qrels (a ``.tsv`` or a Pyserini name) are converted once into
    ``cache_dir()/qrels/<name>.<hash>.txt`` (hash of the source path, so two copies of a dataset never share a
    cache entry) and reconverted when the source is newer.
    """
    text = os.fspath(spec)
    path = Path(text).expanduser()
    if path.is_file():
        if path.suffix != ".gz" and _is_trec_qrels(path):
            return path
        source, name = path, path.name.split(".")[0]
    else:
        parsed = parse_pyserini_name(text)
        if parsed is None:
            raise _not_found(text, "qrels")
        dataset, split = parsed
        source, name = BeirDataset(find_dataset(dataset, download=download)).qrels_path(split), text
    digest = hashlib.sha1(str(source.resolve()).encode("utf-8")).hexdigest()[:8]
    out = cache_dir() / "qrels" / f"{name}.{digest}.txt"
    if out.is_file() and out.stat().st_mtime >= source.stat().st_mtime:
        return out
    qrels = read_qrels_file(source)
    if not qrels:
        raise InputError("no relevance judgments found", str(source))
    write_trec_qrels(qrels, out)
    return out


# --------------------------------------------------------------------------------------------------------------
# TREC CAR (CBOR files read with trec-car-tools)


def _car_error(path: Path, exc: Exception) -> InputError:
    return InputError(f"not a readable TREC CAR file: {type(exc).__name__}: {exc}", str(path))


def read_car_paragraphs(path: str | os.PathLike) -> Iterator[Document]:
    """Documents of a TREC CAR paragraph CBOR file: docid = para_id, text = visible text, title = ''."""
    path = Path(path)
    if not path.is_file():  # checked now, not at the first next()
        raise InputError("file not found", str(path))
    return _car_paragraphs(path)


def _car_paragraphs(path: Path) -> Iterator[Document]:
    from trec_car.read_data import iter_paragraphs

    with open(path, "rb") as handle:
        try:
            for paragraph in iter_paragraphs(handle):
                yield Document(paragraph.para_id, "", paragraph.get_text())
        except Exception as exc:  # trec-car-tools raises plain and cbor errors on bad input
            raise _car_error(path, exc) from exc


def _outline_queries(page) -> Iterable[Query]:
    yield Query(page.page_id, page.page_name)
    for sections in page.flat_headings_list():
        qid = page.page_id + "/" + "/".join(section.headingId for section in sections)
        text = " ".join([page.page_name] + [section.heading for section in sections])
        yield Query(qid, text)


def read_car_outlines(path: str | os.PathLike) -> list[Query]:
    """Queries of a TREC CAR outlines CBOR file: one per page (qid = page id, text = page name) and one per
    section path (qid = ``page_id/heading_id/...``, the standard CAR query id; text = page name and headings)."""
    from trec_car.read_data import iter_outlines

    path = Path(path)
    if not path.is_file():
        raise InputError("file not found", str(path))
    with open(path, "rb") as handle:
        try:
            return [query for page in iter_outlines(handle) for query in _outline_queries(page)]
        except Exception as exc:  # trec-car-tools raises plain and cbor errors on bad input
            raise _car_error(path, exc) from exc

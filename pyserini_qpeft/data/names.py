"""Topics and qrels given as "a file path or a Pyserini name", resolved in one place.

Pyserini's names for BEIR topics and qrels (``beir-v1.0.0-<dataset>-<split>``) resolve against the data search
path (:func:`~pyserini_qpeft.data.beir.data_search_path`), so they work offline whenever the dataset is present.
Every other Pyserini name (``dl19-passage``, ``msmarco-passage-dev-subset``, ...), and a BEIR name whose dataset
is not on the search path, is read as Pyserini reads it (:mod:`.pyserini_names`: Anserini's cache, downloaded on
first use).
:func:`resolve_source` is the one resolver; :func:`load_topics`, :func:`load_qrels` and
:func:`qrels_file_for_trec_eval` read what it finds.
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError, QPeftError
from ..paths import cache_dir
from ..types import Query
from .beir import BeirDataset, find_dataset
from .car import is_car_outlines, read_car_outlines
from .formats import is_trec_qrels, read_qrels_file, read_queries_jsonl, read_topics_tsv, write_trec_qrels
from .pyserini_names import (EXAMPLES, is_name, is_trec_topics, load_pyserini_topics, pyserini_qrels_file,
                             read_trec_topics)

logger = logging.getLogger(__name__)

SPLITS = ("test", "train", "dev")
_PYSERINI_NAME = re.compile(r"^beir-v1\.0\.0-(?P<dataset>[A-Za-z0-9][A-Za-z0-9_.-]*?)-(?P<split>test|train|dev)$")


def parse_pyserini_name(spec: str) -> tuple[str, str] | None:
    """``'beir-v1.0.0-scifact-test'`` -> ``('scifact', 'test')``; None if ``spec`` is not such a name.

    The split is the last dash-separated part (test, train or dev); the dataset may contain dashes
    (``beir-v1.0.0-cqadupstack-android-test`` -> ``('cqadupstack-android', 'test')``).
    """
    match = _PYSERINI_NAME.match(str(spec))
    return (match.group("dataset"), match.group("split")) if match else None


@dataclass(frozen=True)
class Source:
    """Where a topics or qrels spec points: a file, or one split of a BEIR dataset (a Pyserini name).

    Attributes:
        spec: the spec as given.
        file: the file, when ``spec`` names one.
        dataset, split: the BEIR dataset and split, when ``spec`` is a Pyserini BEIR name.
        pyserini: True when ``spec`` is one of Pyserini's other names (:mod:`.pyserini_names`).
    """

    spec: str
    file: Path | None = None
    dataset: BeirDataset | None = None
    split: str | None = None
    pyserini: bool = False

    @property
    def where(self) -> str:
        """What error messages name: the file, or the Pyserini name."""
        return str(self.file) if self.file is not None else self.spec

    def qrels_path(self) -> Path:
        """The qrels file: the file itself, Pyserini's TREC qrels file, or the dataset's ``qrels/<split>.tsv``."""
        if self.file is not None:
            return self.file
        if self.pyserini:
            return pyserini_qrels_file(self.spec)
        return self.dataset.qrels_path(self.split)


def resolve_source(spec: str | os.PathLike, what: str, download: bool = False) -> Source:
    """Resolve a file path or a Pyserini name (the one resolver of the package).

    Args:
        spec: an existing file, ``beir-v1.0.0-<dataset>-<split>`` (found on the data search path), or another
            Pyserini ``what`` name (``dl19-passage``; Anserini's cache, downloaded on first use).
        what: ``topics`` or ``qrels``.
        download: allow downloading the BEIR dataset a Pyserini BEIR name refers to.

    Raises:
        InputError: neither an existing file nor a Pyserini name, or the named dataset cannot be found.
    """
    text = os.fspath(spec)
    path = Path(text).expanduser()
    if path.is_file():
        return Source(text, file=path)
    parsed = parse_pyserini_name(text)
    if parsed is None:
        if is_name(text, what):
            return Source(text, pyserini=True)
        raise InputError(f"{what} {text!r}: no such file, and not a Pyserini {what} name: BEIR's "
                         f"'beir-v1.0.0-<dataset>-<split>' (split: {', '.join(SPLITS)}) or another of Pyserini's "
                         f"(e.g. {EXAMPLES})")
    dataset, split = parsed
    try:
        return Source(text, dataset=BeirDataset(find_dataset(dataset, download=download)), split=split)
    except InputError:
        # not on the search path: Pyserini's own copy of these topics/qrels (Anserini's cache, a small download)
        # serves a search over a prebuilt index, as in Pyserini; the dataset's error stands when that fails too
        if not download and _anserini_has(text, what):
            logger.info("BEIR dataset %s not on the data search path: %s %s read through Anserini", dataset, what,
                        text)
            return Source(text, pyserini=True)
        raise


def _anserini_has(name: str, what: str) -> bool:
    """Whether Pyserini names ``name`` (False when its name table cannot be loaded)."""
    try:
        return is_name(name, what)
    except QPeftError:  # no name table, no Java: the dataset's own error is the one to show
        return False


def load_topics(spec: str | os.PathLike, download: bool = False) -> list[Query]:
    """Queries from a Pyserini name or a file.

    Args:
        spec: ``beir-v1.0.0-<dataset>-<split>`` (resolved on the data search path), another Pyserini topics name
            (``dl19-passage``), or a file: ``.tsv`` (``qid<TAB>text``), BEIR ``queries.jsonl``, a TREC-format
            topics file (``<top>`` blocks; the title is the query), or a TREC CAR outlines ``.cbor``.
        download: allow downloading the BEIR dataset a Pyserini name refers to.

    Raises:
        InputError: unknown name or file, malformed line, or no topics at all.
    """
    source = resolve_source(spec, "topics", download)
    path = source.file
    if source.pyserini:
        topics = load_pyserini_topics(source.spec)
    elif path is None:
        topics = source.dataset.topics(source.split)
    elif is_car_outlines(path):
        topics = read_car_outlines(path)
    elif path.name.lower().endswith((".jsonl", ".jsonl.gz", ".json")):
        topics = [Query(q, t) for q, t in read_queries_jsonl(path).items()]
    elif is_trec_topics(path):
        topics = read_trec_topics(path)
    else:
        topics = read_topics_tsv(path)
    if not topics:
        raise InputError("no topics found", source.where)
    return topics


def sample_topics(topics: list[Query], n: int, seed: int = 0) -> list[Query]:
    """``n`` of ``topics``, in their original order: the ``n`` whose ``sha256("<seed>:<qid>")`` is smallest.

    The sample depends only on the query ids and the seed (no RNG whose algorithm may change between Python
    versions), so anyone can rebuild it; ``n`` equal to the number of topics keeps them all.

    Raises:
        InputError: ``n`` < 1, more than there are topics, or repeated query ids.
    """
    qids = [q.qid for q in topics]
    if len(set(qids)) != len(qids):
        raise InputError("cannot sample topics with repeated query ids")
    if not 1 <= n <= len(topics):
        raise InputError(f"cannot sample {n} of {len(topics)} topics")
    key = {qid: hashlib.sha256(f"{seed}:{qid}".encode()).hexdigest() for qid in qids}
    chosen = set(sorted(qids, key=key.__getitem__)[:n])
    return [q for q in topics if q.qid in chosen]


def load_qrels(spec: str | os.PathLike, download: bool = False) -> dict[str, dict[str, int]]:
    """qid -> docid -> relevance from a Pyserini BEIR name, a TREC qrels file or a BEIR qrels TSV."""
    source = resolve_source(spec, "qrels", download)
    qrels = read_qrels_file(source.qrels_path())
    if not qrels:
        raise InputError("no relevance judgments found", source.where)
    return qrels


def qrels_file_for_trec_eval(spec: str | os.PathLike, download: bool = False) -> Path:
    """A 4-column TREC qrels file for trec_eval.

    A TREC qrels file is returned as is. BEIR qrels (a ``.tsv`` or a Pyserini name) are converted once into
    ``cache_dir()/qrels/<name>.<hash>.txt`` (hash of the source path, so two copies of a dataset never share a
    cache entry) and reconverted when the source is newer.
    """
    source = resolve_source(spec, "qrels", download)
    if source.pyserini:
        return source.qrels_path()  # Anserini's file is TREC qrels already
    if source.file is not None:
        if source.file.suffix != ".gz" and is_trec_qrels(source.file):
            return source.file
        name = source.file.name.split(".")[0]
    else:
        name = source.spec
    qrels_path = source.qrels_path()
    digest = hashlib.sha1(str(qrels_path.resolve()).encode("utf-8")).hexdigest()[:8]
    out = cache_dir() / "qrels" / f"{name}.{digest}.txt"
    if out.is_file() and out.stat().st_mtime >= qrels_path.stat().st_mtime:
        return out
    qrels = read_qrels_file(qrels_path)
    if not qrels:
        raise InputError("no relevance judgments found", str(qrels_path))
    write_trec_qrels(qrels, out)
    logger.info("converted %s to TREC qrels at %s", source.where, out)
    return out

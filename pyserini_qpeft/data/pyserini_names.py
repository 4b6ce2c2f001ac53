"""Pyserini's topic and qrels names beyond BEIR (``dl19-passage``, ``msmarco-passage-dev-subset``, ``robust04``, ...),
and TREC-format topic files, read as Pyserini reads them (through Anserini's topic readers).

Pyserini maps each name to an Anserini resource; Anserini reads ``~/.cache/pyserini/topics-and-qrels/<file>`` and
downloads the file from ``castorini/anserini-tools`` the first time (so the first use needs the network, later ones
do not). A BEIR name (``beir-v1.0.0-<dataset>-<split>``) comes here only when :mod:`.names` does not find its
dataset on the data search path (where it is read offline). Everything here starts the JVM, so :mod:`.names` asks
only about specs that are not a file and do not look like a file path.
"""
from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from ..errors import InputError
from ..types import Query

# What Pyserini's DefaultQueryIterator searches with (``topics[qid]['title']``), for every non-KILT topic set.
TOPIC_FIELD = "title"
# Suffixes that mark a spec as a file path the user meant, not a name (names may contain dots: 'dl19-passage.unicoil').
FILE_SUFFIXES = (".tsv", ".txt", ".jsonl", ".json", ".gz", ".cbor", ".trec", ".xml", ".csv", ".qrels")
EXAMPLES = "'dl19-passage', 'dl20', 'msmarco-passage-dev-subset', 'robust04'"
CACHE_HINT = "~/.cache/pyserini/topics-and-qrels"


def looks_like_path(spec: str) -> bool:
    """Whether ``spec`` names a file (a separator, or a file suffix) rather than a Pyserini name."""
    return os.sep in spec or "/" in spec or spec.lower().endswith(FILE_SUFFIXES)


def _mapping(what: str) -> dict:
    """Pyserini's name -> Anserini resource table for ``what`` (``topics`` or ``qrels``); starts the JVM."""
    from ..jvm import start_jvm

    start_jvm()
    try:
        from pyserini.search import _base

        return getattr(_base, "topics_mapping" if what == "topics" else "qrels_mapping")
    except Exception as exc:  # a Pyserini release that fetches lists at import time, or keeps them elsewhere
        raise InputError(f"Pyserini {what} names (e.g. {EXAMPLES}) need Pyserini's name table, which could not be "
                         f"loaded ({type(exc).__name__}: {exc}); pass a file instead") from None


def is_name(spec: str, what: str) -> bool:
    """Whether Pyserini knows ``spec`` as a ``what`` (``topics`` or ``qrels``) name."""
    return not looks_like_path(spec) and spec in _mapping(what)


def _fetch(what: str, name: str, call):
    """``call()`` (a Pyserini fetch that may download through Anserini), a failed download as an InputError."""
    from jnius import JavaException

    from ..jvm import java_message

    try:
        return call()
    except (JavaException, OSError, ValueError) as exc:
        raise InputError(f"Anserini could not read or download the {what} {name!r} ({java_message(exc)}); it "
                         f"downloads them once into {CACHE_HINT} (is the network reachable?), or pass a file "
                         "instead") from None


def load_pyserini_topics(name: str) -> list[Query]:
    """The topics Pyserini's searchers use for ``name``: each topic's ``title``, in Pyserini's order (numeric
    when every id is a number).

    Raises:
        InputError: unknown name, a failed download, or a topic without a ``title`` field.
    """
    if not is_name(name, "topics"):
        raise InputError(f"topics {name!r}: not a Pyserini topics name (e.g. {EXAMPLES})")
    from pyserini.search import get_topics

    return _queries(_fetch("topics", name, lambda: get_topics(name)), name)


def _queries(topics: dict, where: str) -> list[Query]:
    """Pyserini's ``{qid: {field: text}}`` as queries: each topic's ``title``, numeric order when every id is one."""
    out = []
    for qid in sorted(topics) if all(isinstance(q, int) for q in topics) else list(topics):
        fields = topics[qid]
        text = fields.get(TOPIC_FIELD)
        if text is None:
            raise InputError(f"topic {qid} has no {TOPIC_FIELD!r} field (it has {', '.join(sorted(fields)) or 'none'});"
                             " pass a TSV topics file instead", where)
        out.append(Query(str(qid), str(text).strip()))
    return out


def is_trec_topics(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a TREC-format topics file (``<top> <num> ... <title> ...``, e.g. Robust04's, whatever its
    extension): its first non-blank line starts with ``<top>``."""
    from ..textio import first_line

    return first_line(path).lstrip().lower().startswith("<top>")


def read_trec_topics(path: str | os.PathLike) -> list[Query]:
    """Topics of a TREC-format file, read by Anserini's ``TrecTopicReader`` as Pyserini reads ``.trec`` topics
    (each topic's title is the query). Starts the JVM."""
    from ..jvm import java_message, start_jvm

    start_jvm()
    from jnius import JavaException
    from pyserini.search import get_topics_with_reader

    where = str(path)
    expected = "a TREC topics file holds <top> <num> Number: N <title> TEXT ... </top> blocks"
    with tempfile.TemporaryDirectory(prefix="pyserini_qpeft-topics-") as work:
        readable = _checked_trec_topics(Path(path), Path(work))
        try:
            topics = get_topics_with_reader("io.anserini.search.topicreader.TrecTopicReader", str(readable))
        except (JavaException, ValueError) as exc:
            raise InputError(f"Anserini's TrecTopicReader could not read it ({java_message(exc)}); {expected}",
                             where) from None
    if not topics:
        raise InputError(f"no topics found; {expected}", where)
    return _queries(topics, where)


_NUM = re.compile(r"<num>\s*(?:number:\s*)?(\S+)", re.IGNORECASE)


def _checked_trec_topics(path: Path, work: Path) -> Path:
    """``path`` checked as this package checks every text file before Anserini reads it: UTF-8 (a bad byte names
    file and line; Anserini would read it as U+FFFD) and each ``<num>`` once (Anserini keeps the last of a repeated
    one). A file starting with a UTF-8 BOM (Anserini then finds no topic) is handed over as a copy in ``work``
    without it."""
    from ..textio import BOM, iter_lines

    seen: dict[str, int] = {}
    lines = []
    for lineno, line in iter_lines(path):  # drops line 1's BOM
        lines.append(line)
        found = _NUM.search(line)
        if found:
            number = found.group(1)
            if number in seen:
                raise InputError(f"topic {number} appears twice (first on line {seen[number]})", str(path), lineno)
            seen[number] = lineno
    with open(path, "rb") as handle:
        starts_with_bom = handle.read(3) == BOM.encode("utf-8")
    if starts_with_bom and not path.name.endswith(".gz"):
        copy = work / path.name
        copy.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        return copy
    return path


def pyserini_qrels_file(name: str) -> Path:
    """The TREC qrels file Pyserini evaluates ``name`` with (Anserini's cached copy, downloaded on first use).

    Raises:
        InputError: unknown name or a failed download.
    """
    if not is_name(name, "qrels"):
        raise InputError(f"qrels {name!r}: not a Pyserini qrels name (e.g. {EXAMPLES})")
    from pyserini.search import get_qrels_file

    return Path(_fetch("qrels", name, lambda: get_qrels_file(name)))

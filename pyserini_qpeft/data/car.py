"""TREC CAR: paragraph and outline CBOR files, read with trec-car-tools (imported on first use)."""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Iterable, Iterator

from ..errors import InputError
from ..types import Query
from .corpus import Document

logger = logging.getLogger(__name__)


def _car_error(path: Path, exc: Exception) -> InputError:
    if isinstance(exc, _Truncated):
        return InputError("truncated TREC CAR file: it ends inside a record", str(path))
    return InputError(f"not a readable TREC CAR file: {type(exc).__name__}: {exc}", str(path))


class _Truncated(Exception):
    """A CBOR record ends before its bytes do."""


class _TruncationGuard:
    """The binary file trec-car-tools reads, failing on a short read: cbor 1.0's C decoder retries a read that
    returns nothing forever (a truncated file spun at 100 % CPU). One empty 1-byte read is the end of the file
    between records (the decoder's EOFError, which ends the iteration); a short multi-byte read, or a second empty
    read, is a record cut off."""

    def __init__(self, handle):
        self._handle = handle
        self._empty = False

    def peek(self, size: int = 1) -> bytes:
        return self._handle.peek(size)

    def read(self, size: int = -1) -> bytes:
        data = self._handle.read(size)
        if size is not None and size > 0 and len(data) < size:
            if data or size > 1 or self._empty:
                raise _Truncated()
            self._empty = True
        return data


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
            for paragraph in iter_paragraphs(_TruncationGuard(handle)):
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
            return [query for page in iter_outlines(_TruncationGuard(handle)) for query in _outline_queries(page)]
        except Exception as exc:  # trec-car-tools raises plain and cbor errors on bad input
            raise _car_error(path, exc) from exc


def is_car_outlines(path: Path) -> bool:
    """Whether a topics file is a TREC CAR outlines file (by name: ``.cbor`` or ``*cbor-outlines*``)."""
    name = path.name.lower()
    return name.endswith(".cbor") or "cbor-outlines" in name

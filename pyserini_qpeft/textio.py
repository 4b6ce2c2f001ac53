"""Reading users' text files: UTF-8, a byte-order mark ignored, undecodable bytes named by file and line.

Every line-oriented reader of the package (runs, qrels, topics, JSONL corpora, FAISS docid lists, rerank state
files) reads through :func:`iter_lines`, so a stray Latin-1 byte is an :class:`~pyserini_qpeft.errors.InputError`
(exit code 3) and a BOM written by a Windows editor never becomes part of the first query id.
"""
from __future__ import annotations

import gzip
import os
from pathlib import Path
from typing import BinaryIO, Iterator

from .errors import InputError

BOM = "\ufeff"


def _open_binary(path: Path) -> BinaryIO:
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")  # type: ignore[return-value]


def decode_line(raw: bytes, path: str | os.PathLike, lineno: int) -> str:
    """``raw`` as UTF-8 without its line end (``\\n`` or ``\\r\\n``); a BOM is dropped from line 1."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        bad = raw[exc.start:exc.start + 1]
        raise InputError(f"not UTF-8 text (byte {bad!r} at column {exc.start + 1}); re-save the file as UTF-8",
                         str(path), lineno) from None
    if lineno == 1 and text.startswith(BOM):
        text = text[1:]
    return text.rstrip("\r\n")


def iter_lines(path: str | os.PathLike) -> Iterator[tuple[int, str]]:
    """(line number from 1, text without its line end) for each line of ``path`` (gunzipped if ``.gz``).

    Raises:
        InputError: the file is missing, or a line is not UTF-8 (names file and line).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("file not found", str(path))
    try:
        with _open_binary(path) as handle:
            for lineno, raw in enumerate(handle, start=1):
                yield lineno, decode_line(raw, path, lineno)
    except (OSError, EOFError) as exc:  # gzip: truncated or not gzip at all
        raise InputError(f"cannot read: {exc}", str(path)) from None


def first_line(path: str | os.PathLike) -> str:
    """The first non-blank line of ``path`` ('' for an empty file), decoded as :func:`iter_lines` does."""
    for _, line in iter_lines(path):
        if line.strip():
            return line
    return ""

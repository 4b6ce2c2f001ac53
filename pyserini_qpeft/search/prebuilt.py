"""Pyserini's prebuilt Lucene indexes by name (``msmarco-v1-passage``, ``beir-v1.0.0-scifact.flat``, ...).

An ``--index`` that is not a folder but one of Pyserini's prebuilt inverted-index names is fetched exactly as
Pyserini fetches it (``pyserini.util.download_prebuilt_index``): downloaded and unpacked once into
``$PYSERINI_CACHE/indexes/<file>.<md5>`` (default ``~/.cache/pyserini``), found there afterwards. Only single-field
inverted (BM25) indexes are searched here; for document text any prebuilt name stands for the Lucene index that
Pyserini lists as holding its texts (a FAISS or impact index's corpus index, the full index behind a ``-slim``
one). Pyserini's download messages go to standard error (stdout carries results).
"""
from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

from ..data.pyserini_names import looks_like_path
from ..errors import InputError

# Pyserini's prebuilt tables (pyserini.prebuilt_index_info) that are not inverted BM25 indexes, by what they hold
OTHER_KINDS = {"IMPACT_INDEX_INFO": "learned-sparse (impact)", "LUCENE_HNSW_INDEX_INFO": "dense HNSW",
               "LUCENE_FLAT_INDEX_INFO": "dense flat", "FAISS_INDEX_INFO": "FAISS"}


def _info():
    """``pyserini.prebuilt_index_info`` (its tables are built from Anserini's classes: starts the JVM)."""
    from ..jvm import start_jvm

    start_jvm()
    try:
        from pyserini import prebuilt_index_info
    except Exception as exc:  # e.g. a Pyserini release that fetches its lists from the network at import time
        raise InputError(f"Pyserini's prebuilt-index list could not be loaded ({type(exc).__name__}: {exc}); pass "
                         "an index folder instead") from None
    return prebuilt_index_info


def _entry(info, name: str) -> tuple[str, dict] | None:
    """(table, entry) of Pyserini's prebuilt index ``name`` in any of its tables, else None."""
    for table in ("TF_INDEX_INFO", *OTHER_KINDS):
        entry = getattr(info, table, {}).get(name)
        if entry is not None:
            return table, entry
    return None


def resolve_lucene_index(spec: str | os.PathLike, for_text: bool = False) -> Path:
    """The Lucene index folder ``spec`` stands for: ``spec`` itself when it exists (or looks like a path), else
    Pyserini's prebuilt inverted index of that name, downloaded on first use.

    Args:
        spec: an index folder or a Pyserini prebuilt index name.
        for_text: the index is wanted for its stored document text: a prebuilt name then means the Lucene index
            Pyserini lists as holding its texts (``"texts"`` in its entry: a FAISS, HNSW or impact index's corpus
            index, the full index behind a ``-slim`` one).

    Raises:
        InputError: a prebuilt name of another kind (impact, HNSW, FAISS without texts) or a multi-field index
            (searched here as one field, it would score differently from Pyserini), or a failed download.
    """
    text = os.fspath(spec)
    path = Path(text).expanduser()
    if path.exists() or looks_like_path(text):
        return path
    info = _info()
    found = _entry(info, text)
    if found is None:
        return path  # neither a folder nor a name: the caller says "not a Lucene index"
    name = text
    if for_text and found[1].get("texts"):
        name = found[1]["texts"]
        found = _entry(info, name) or found
    table = found[0]
    if table != "TF_INDEX_INFO":
        instead = ("pass --corpus for the document text" if for_text else "search it with Pyserini's own flags "
                   "through `python -m pyserini_qpeft.search lucene|faiss`, or give a folder")
        raise InputError(f"{name!r} is one of Pyserini's prebuilt {OTHER_KINDS[table]} indexes; this command needs a "
                         f"BM25 (inverted) index: {instead}")
    if name.endswith(".multifield") and not for_text:
        raise InputError(f"{name!r} indexes title and text as two fields, which Pyserini searches with --fields; this "
                         f"BM25 searches one: use {name[:-len('.multifield')]}.flat, or `python -m "
                         "pyserini_qpeft.search lucene --fields contents=1.0 title=1.0`")
    from pyserini.util import download_prebuilt_index

    try:
        with contextlib.redirect_stdout(sys.stderr):  # Pyserini prints its progress to stdout
            return Path(download_prebuilt_index(name))
    except (OSError, ValueError) as exc:
        raise InputError(f"could not download Pyserini's prebuilt index {name!r} into "
                         f"{_cache_home()}/indexes ({exc}); is the network reachable?") from None


def _cache_home() -> str:
    from pyserini.util import get_cache_home

    return get_cache_home()

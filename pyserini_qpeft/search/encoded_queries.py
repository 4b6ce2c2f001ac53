"""Pre-encoded queries in Pyserini's format, so stock ``python -m pyserini.search.faiss`` searches our indexes.

Pyserini reads ``DIR/embedding.pkl``: a pandas DataFrame with columns ``id``, ``text`` and ``embedding`` (one
float32 vector per row), looked up by query text (``pyserini.encode.QueryEncoder``). That pickle is Pyserini's
interchange format; this package writes it for Pyserini and never reads pickles itself. ``meta.json`` next to
it records the encoder.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from ..artifacts import MetaSpec, dump_json, library_versions, staging_dir
from ..errors import InputError
from ..types import Query

if TYPE_CHECKING:
    from .encoders import DenseEncoder

EMBEDDINGS = "embedding.pkl"
META = MetaSpec(file="meta.json", type_field="type", type="encoded-queries", label="pyserini_qpeft encoded queries",
                error=InputError)


def write_encoded_queries(encoder: "DenseEncoder", queries: Sequence[Query], output: str | os.PathLike,
                          batch_size: int = 32, progress: bool = True, source: str | None = None) -> Path:
    """Encode ``queries`` and write Pyserini's pre-encoded query folder at ``output`` (atomically).

    Pyserini looks vectors up by query text, so two queries with the same text share a vector (as they would).

    Raises:
        InputError: no queries.
    """
    import pandas as pd

    if not queries:
        raise InputError("no queries to encode")
    vectors = encoder.encode_queries([q.text for q in queries], batch_size=batch_size, progress=progress)
    frame = pd.DataFrame({"id": [q.qid for q in queries], "text": [q.text for q in queries],
                          "embedding": [row for row in vectors]})
    with staging_dir(output) as tmp:
        frame.to_pickle(tmp / EMBEDDINGS)
        (tmp / META.file).write_text(dump_json({
            "type": META.type, "encoder": encoder.meta(), "queries": len(queries), "dim": int(vectors.shape[1]),
            "topics": source, "created_with": library_versions(extra=("pyserini", "pandas"))}), encoding="utf-8")
    return Path(output)

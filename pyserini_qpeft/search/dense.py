"""Dense index folders (FAISS) and exact dense search.

An index folder is what Pyserini's ``FaissSearcher`` reads (``index`` = ``faiss.IndexFlatIP``, ``docid`` = one
docid per line) plus ``meta.json`` recording the encoder that built it (``type: dense-index``), so
:func:`dense_search` needs only the folder. Encoders live in :mod:`pyserini_qpeft.search.encoders`.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from ..artifacts import MetaSpec, library_versions, read_meta, staging_dir, write_meta
from ..errors import InputError, ModelError
from ..types import Hit, Query, Run

if TYPE_CHECKING:
    import numpy as np

    from .encoders import DenseEncoder

logger = logging.getLogger(__name__)

META_NAME = "meta.json"
INDEX_NAME = "index"
DOCID_NAME = "docid"
# Indexes written before the type field existed have none; they are still accepted.
META = MetaSpec(file=META_NAME, type_field="type", type="dense-index", label="pyserini_qpeft dense index",
                error=InputError, untyped_ok=True)


def _versions() -> dict:
    """The library versions a dense index records (``created_with``)."""
    return library_versions(extra=("faiss-cpu", "pyserini"))


def write_faiss_index(output: str | os.PathLike, docids: Sequence[str], vectors: "np.ndarray", meta: dict,
                      overwrite: bool = False) -> Path:
    """Write ``index`` (IndexFlatIP), ``docid`` and ``meta.json`` into ``output`` atomically (temp dir + rename).

    Raises:
        InputError: ``output`` exists and ``overwrite`` is false, or a docid is empty or holds a line break.
    """
    import faiss
    import numpy as np

    output = Path(output)
    if len(docids) != vectors.shape[0]:
        raise ValueError(f"{len(docids)} docids but {vectors.shape[0]} vectors")
    if any(not d or any(c in d for c in "\r\n") for d in docids):
        raise InputError("docids must be non-empty and free of line breaks (one docid per line in the index)")
    if output.exists() and not overwrite:
        raise InputError("index folder exists (pass --overwrite to replace it)", str(output))
    with staging_dir(output) as tmp:
        index = faiss.IndexFlatIP(int(vectors.shape[1]))
        index.add(np.ascontiguousarray(vectors, dtype=np.float32))
        faiss.write_index(index, str(tmp / INDEX_NAME))
        (tmp / DOCID_NAME).write_text("".join(f"{d}\n" for d in docids), encoding="utf-8")
        write_meta(tmp, META, {**meta, "num_docs": len(docids), "faiss_index": "IndexFlatIP",
                               "created_with": _versions()})
    return output


def read_index_meta(index_dir: str | os.PathLike) -> dict:
    """The ``meta.json`` of a dense index folder (InputError when missing, corrupt or of another type)."""
    return read_meta(index_dir, META)


def read_docids(index_dir: str | os.PathLike) -> list[str]:
    """The docids of a dense index, in vector order."""
    with open(Path(index_dir) / DOCID_NAME, encoding="utf-8") as handle:
        return [line.rstrip("\n") for line in handle]


def search_vectors(index_dir: str | os.PathLike, qids: Sequence[str], vectors: "np.ndarray", k: int,
                   tag: str = "dense") -> Run:
    """Exact inner-product search of query vectors ``[Q, dim]`` in a FAISS index folder."""
    import faiss
    import numpy as np

    index = faiss.read_index(str(Path(index_dir) / INDEX_NAME))
    docids = read_docids(index_dir)
    if index.ntotal != len(docids):
        raise InputError(f"index holds {index.ntotal} vectors but docid lists {len(docids)}", str(index_dir))
    if vectors.shape[1] != index.d:
        raise ModelError(f"query vectors have dim {vectors.shape[1]}, index has {index.d}")
    scores, ids = index.search(np.ascontiguousarray(vectors, dtype=np.float32), min(k, index.ntotal))
    run = Run(tag=tag)
    for qid, row_scores, row_ids in zip(qids, scores, ids):
        run.set(qid, [Hit(docids[i], float(s)) for s, i in zip(row_scores, row_ids) if i != -1])
    return run


def dense_search(index_dir: str | os.PathLike, queries: Sequence[Query], k: int = 1000, batch_size: int = 32,
                 progress: bool = True, encoder: "DenseEncoder | None" = None, device: str = "auto",
                 dtype: str = "auto", tag: str | None = None, remove_query: bool = False) -> Run:
    """Search a dense index: rebuild its query encoder from ``meta.json`` (unless given), encode, search.

    ``remove_query`` drops a hit whose docid equals the query id (BEIR convention) and still returns ``k`` hits.
    """
    from .encoders import encoder_from_meta  # encoders imports this module for the index files

    if not queries:
        raise InputError("no queries to search")
    meta = read_index_meta(index_dir)
    encoder = encoder or encoder_from_meta(meta, device=device, dtype=dtype, source=index_dir)
    vectors = encoder.encode_queries([q.text for q in queries], batch_size=batch_size, progress=progress)
    run = search_vectors(index_dir, [q.qid for q in queries], vectors, k + int(remove_query),
                         tag=tag or f"dense-{meta['encoder']}")
    if remove_query:
        for qid in run.qids():
            run.set(qid, [h for h in run[qid] if h.docid != qid][:k])
    return run

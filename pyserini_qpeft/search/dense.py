"""Dense index folders (FAISS) and exact dense search.

An index folder is what Pyserini's ``FaissSearcher`` reads (``index`` = ``faiss.IndexFlatIP``, ``docid`` = one
docid per line) plus ``meta.json`` recording the encoder that built it (``type: dense-index``), so
:func:`dense_search` needs only the folder. Encoders live in :mod:`pyserini_qpeft.search.encoders`.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from ..artifacts import MetaSpec, check_replaceable, library_versions, read_meta, staging_dir, write_meta
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
        InputError: ``output`` exists and is not a dense index (never replaced) or ``overwrite`` is false, or a docid
            is empty or holds whitespace.
    """
    import faiss
    import numpy as np

    output = Path(output)
    if len(docids) != vectors.shape[0]:
        raise ValueError(f"{len(docids)} docids but {vectors.shape[0]} vectors")
    bad = next((d for d in docids if not d or any(c.isspace() for c in d)), None)
    if bad is not None:
        raise InputError(f"docid {bad!r} is empty or contains whitespace (one docid per line in the index, and a "
                         "TREC run cannot hold it)")
    check_replaceable(output, META, overwrite, flag="--overwrite")
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


def is_dense_index(path: str | os.PathLike) -> bool:
    """True when ``path`` is a folder holding this package's dense-index ``meta.json``."""
    try:
        read_index_meta(path)
    except InputError:
        return False
    return True


def index_corpus(index_dir: str | os.PathLike) -> str:
    """The corpus a dense index was encoded from (``meta.json``'s ``corpus``, which ``encode`` records): the
    document text for reranking its hits. InputError when it records none or that file is gone."""
    corpus = read_index_meta(index_dir).get("corpus")
    if not corpus:
        raise InputError("a dense index holds no document text and this one records no corpus: pass --corpus",
                         str(index_dir))
    if not Path(corpus).exists():
        raise InputError(f"a dense index holds no document text and the corpus it was encoded from ({corpus}) is "
                         f"gone: pass --corpus", str(index_dir))
    return str(corpus)


def read_docids(index_dir: str | os.PathLike) -> list[str]:
    """The docids of a dense index, in vector order (InputError: missing file, blank or spaced docid)."""
    from ..textio import iter_lines

    path = Path(index_dir) / DOCID_NAME
    if not path.is_file():
        raise InputError(f"damaged dense index: no {DOCID_NAME} file (re-run `pyserini-qpeft encode`)", str(index_dir))
    docids = []
    for lineno, docid in iter_lines(path):
        if not docid or docid != docid.strip() or any(c.isspace() for c in docid):
            raise InputError(f"docid {docid!r} is blank or contains whitespace (a TREC run cannot hold it)",
                             str(path), lineno)
        docids.append(docid)
    return docids


def read_faiss_index(index_dir: str | os.PathLike) -> Any:
    """The FAISS index of a dense index folder (InputError when missing, empty or truncated)."""
    import faiss

    path = Path(index_dir) / INDEX_NAME
    if not path.is_file() or path.stat().st_size == 0:
        raise InputError(f"damaged dense index: {INDEX_NAME} is {'empty' if path.is_file() else 'missing'} "
                         "(re-run `pyserini-qpeft encode`)", str(index_dir))
    try:
        return faiss.read_index(str(path))
    except RuntimeError as exc:  # faiss reports truncation/corruption as RuntimeError
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"damaged dense index: FAISS cannot read {INDEX_NAME} ({first})", str(index_dir)) from None


def search_vectors(index_dir: str | os.PathLike, qids: Sequence[str], vectors: "np.ndarray", k: int,
                   tag: str = "dense") -> Run:
    """Exact inner-product search of query vectors ``[Q, dim]`` in a FAISS index folder."""
    import numpy as np

    index = read_faiss_index(index_dir)
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
                 dtype: str = "auto", tag: str | None = None, remove_query: bool = False,
                 model: str | None = None, checkpoints: Sequence[str | os.PathLike] | None = None) -> Run:
    """Search a dense index: rebuild its query encoder from ``meta.json`` (unless given), encode, search.

    ``remove_query`` drops a hit whose docid equals the query id from the top ``k`` (BEIR convention), as Pyserini's
    Lucene and FAISS searchers do: such a query then has ``k - 1`` hits, on the BM25 path as here. ``model``: load
    the encoder's frozen LM from there instead of the recorded place, ``checkpoints``: an LMORT index's checkpoint
    folders likewise (:func:`~.encoders.encoder_from_meta`).
    """
    from .encoders import encoder_from_meta  # encoders imports this module for the index files

    if not queries:
        raise InputError("no queries to search")
    meta = read_index_meta(index_dir)
    encoder = encoder or encoder_from_meta(meta, device=device, dtype=dtype, source=index_dir, model=model,
                                          checkpoints=checkpoints)
    vectors = encoder.encode_queries([q.text for q in queries], batch_size=batch_size, progress=progress)
    run = search_vectors(index_dir, [q.qid for q in queries], vectors, k, tag=tag or f"dense-{meta['encoder']}")
    if remove_query:
        for qid in run.qids():
            run.set(qid, [h for h in run[qid] if h.docid != qid])
    return run

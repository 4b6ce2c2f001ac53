"""First-stage search: ``lucene`` (BM25; the only module importing Pyserini's Lucene side, lazily), ``prebuilt``
(Pyserini's prebuilt index names), ``dense`` (FAISS index folders and exact search), ``encoders`` (texts -> vectors),
``fusion`` (hybrid runs).

``python -m pyserini_qpeft.search lucene|faiss <Pyserini's own flags> --reranker NAME ...`` runs Pyserini's
search with its own argument definitions, then reranks (see :mod:`pyserini_qpeft.search.compat`).
"""
from .dense import dense_search, read_index_meta, write_faiss_index
from .lucene import INDEX_META, BM25Config, LuceneDocStore, bm25_search, build_index, is_lucene_index

__all__ = ["INDEX_META", "BM25Config", "LuceneDocStore", "bm25_search", "build_index", "dense_search",
           "is_lucene_index", "read_index_meta", "write_faiss_index"]

"""First-stage search. ``lucene`` is the only module importing Pyserini's Lucene side (lazily).

``python -m pyserini_qpeft.search lucene|faiss <Pyserini's own flags> --reranker NAME ...`` runs Pyserini's
search with its own argument definitions, then reranks (see :mod:`pyserini_qpeft.search.compat`).
"""
from .lucene import INDEX_META, BM25Config, LuceneDocStore, bm25_search, build_index, is_lucene_index

__all__ = ["INDEX_META", "BM25Config", "LuceneDocStore", "bm25_search", "build_index", "is_lucene_index"]

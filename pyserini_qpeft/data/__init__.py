"""Datasets: BEIR folders, topics, qrels, TREC CAR files, and finding/downloading BEIR datasets.

This package only re-exports; the code lives in focused modules:

* :mod:`.beir`: BEIR dataset folders, the search path for dataset names (``$PYSERINI_QPEFT_DATA``), safe download.
* :mod:`.formats`: JSONL, BEIR queries, TREC/BEIR qrels and TSV topics parsing; TREC qrels writing.
* :mod:`.names`: Pyserini names (``beir-v1.0.0-scifact-test``) and the one "file path or Pyserini name" resolver.
* :mod:`.pyserini_names`: Pyserini's other topic and qrels names (``dl19-passage``), read through Anserini.
* :mod:`.corpus`: :class:`Document` and the one corpus opener (:func:`iter_documents`, :func:`open_corpus`).
* :mod:`.car`: TREC CAR paragraph and outline CBOR files.

Nothing heavy is imported here (no pyserini, no torch). To patch a module-level setting in a test, patch it
where it lives (``pyserini_qpeft.data.beir.BEIR_URL``).
"""
from __future__ import annotations

from .beir import (BEIR_URL, ENV_VAR, NESTED_DATASETS, BeirDataset, data_search_path, download_beir,
                   find_dataset)
from .car import read_car_outlines, read_car_paragraphs
from .corpus import Document, corpus_dict, iter_documents, open_corpus, read_corpus_jsonl, unique_documents
from .formats import read_qrels_file, read_queries_jsonl, read_topics_tsv, write_trec_qrels
from .names import (SPLITS, Source, load_qrels, load_topics, parse_pyserini_name, qrels_file_for_trec_eval,
                    resolve_source, sample_topics)

__all__ = [
    "BEIR_URL", "ENV_VAR", "NESTED_DATASETS", "SPLITS", "BeirDataset", "Document", "Source", "corpus_dict",
    "data_search_path", "download_beir", "find_dataset", "iter_documents", "load_qrels", "load_topics",
    "open_corpus", "parse_pyserini_name", "qrels_file_for_trec_eval", "read_car_outlines", "read_car_paragraphs",
    "read_corpus_jsonl", "read_qrels_file", "read_queries_jsonl", "read_topics_tsv", "resolve_source",
    "sample_topics", "unique_documents", "write_trec_qrels",
]

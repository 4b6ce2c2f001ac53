"""Rerankers: a Run in, a Run out.

* :mod:`.base`: the :class:`Reranker` protocol, document stores, the rules every reranker keeps, ``identity``;
* :mod:`.api`: the in-process API every built-in reranker has (``rank``, ``score``, ``rerank_hits``);
* :mod:`.requests`: rank_llm ``Request`` JSONL in, ``Result`` JSONL out;
* :mod:`.lm`: query-likelihood rerankers on a frozen LM (UPR; Q-PEFT adds a hint module), resumable, and
  ``rerank_together`` (several of them in one pass, sharing each document's prefix forward);
* :mod:`.registry`: rerankers by name, with one factory signature, built-ins loaded lazily and third-party
  plugins from the entry point group ``pyserini_qpeft.rerankers``;
* :mod:`.pipeline`: document text, reranker from flag values, rerank + atomic write (both CLIs use it);
* :mod:`.flags`: the reranking flags, declared once for the click and the argparse front ends.

Importing this package imports no torch: models load when a reranker is built.
"""
from __future__ import annotations

from .api import InProcessAPI, as_document
from ..types import merge_reranked  # a Run operation; kept importable from here
from .base import DictDocStore, DocStore, IdentityReranker, Reranker, check_depth, make_identity, query_texts
from .lm import (STATE_FORMAT, UPR_INSTRUCTION, LMReranker, UPRReranker, load_lm, make_upr, make_upr_instruct,
                 rerank_together, upr_instruct)
from .pipeline import (check_topics_cover_run, make_reranker, open_docstore, rerank_and_write,
                       rerank_and_write_together)
from .registry import (BUILTIN_RERANKERS, ENTRY_POINT_GROUP, RerankerFactory, build_reranker, get_reranker_factory,
                       register_reranker, reranker_names, unregister_reranker)

__all__ = [
    "BUILTIN_RERANKERS", "ENTRY_POINT_GROUP", "as_document", "STATE_FORMAT", "UPR_INSTRUCTION", "DictDocStore", "DocStore",
    "IdentityReranker", "InProcessAPI", "LMReranker", "Reranker", "RerankerFactory", "UPRReranker", "build_reranker",
    "check_depth", "check_topics_cover_run", "get_reranker_factory", "load_lm", "make_identity", "make_reranker",
    "make_upr", "make_upr_instruct", "merge_reranked", "open_docstore", "query_texts", "register_reranker",
    "rerank_and_write", "rerank_and_write_together", "rerank_together", "reranker_names", "unregister_reranker",
    "upr_instruct",
]

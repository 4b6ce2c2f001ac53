"""Glue shared by `search` and `rerank`: document stores, reranker construction, resumable rerank + write."""
from __future__ import annotations

import logging
import os
from pathlib import Path

from ..errors import InputError

logger = logging.getLogger(__name__)


def open_docstore(corpus: str | None = None, index: str | None = None):
    """Document text for reranking: a corpus file/dataset (preferred) or a Lucene index's stored raw JSON."""
    from ..rerank import DictDocStore

    if corpus:
        from ..data import BeirDataset, find_dataset, read_car_paragraphs, read_corpus_jsonl

        path = Path(corpus)
        if path.is_file():
            docs = read_car_paragraphs(path) if path.suffix == ".cbor" else read_corpus_jsonl(path)
            return DictDocStore({d.docid: d for d in docs})
        return DictDocStore(BeirDataset(find_dataset(corpus)).load_corpus())
    if index:
        from ..search import LuceneDocStore, is_lucene_index

        if is_lucene_index(index):
            return LuceneDocStore(index)
        raise InputError("no document text: this index stores none; pass --corpus (JSONL, CBOR or dataset)", index)
    raise InputError("reranking needs document text: pass --corpus or a Lucene --index")


def make_reranker(name: str, checkpoint: str | None, model: str, device: str, dtype: str,
                  max_passage_tokens: int | None = None, batch_size: int | None = None):
    """Build a registered reranker; loads the frozen LLM only when the reranker needs one."""
    from .. import qpeft_rerank  # noqa: F401  (registers qpeft-retr, qpeft-attn, prompt-tuning)
    from ..rerank import RERANKERS, build_reranker

    if name not in RERANKERS:
        raise InputError(f"unknown reranker {name!r}; choose from {', '.join(sorted(RERANKERS))}")
    if name == "identity":
        return build_reranker(name)
    if checkpoint is not None and name not in qpeft_rerank.NAME_TO_VARIANT:
        raise InputError(f"--reranker-checkpoint is only for trained rerankers "
                         f"({', '.join(qpeft_rerank.NAME_TO_VARIANT)}), not {name!r}")
    from ..backbone import FrozenLM, LMConfig

    lm = FrozenLM.load(LMConfig(model=model, device=device, dtype=dtype))
    overrides = {}
    if max_passage_tokens is not None:
        overrides["max_passage_tokens"] = max_passage_tokens
    if batch_size is not None:
        overrides["batch_size"] = batch_size
    if name in qpeft_rerank.NAME_TO_VARIANT:
        return build_reranker(name, lm=lm, checkpoint=checkpoint, scorer_overrides=overrides)
    from ..scoring import ScorerConfig

    return build_reranker(name, lm=lm, config=ScorerConfig(**overrides) if overrides else None)


def rerank_and_write(reranker, queries, run, docs, depth: int, output: str | os.PathLike, progress: bool,
                     tag: str | None = None) -> None:
    """Rerank and write the run atomically; a ``<output>.partial`` state file makes an interrupted job resume."""
    output = Path(output)
    state = output.with_name(output.name + ".partial")
    if state.exists():
        logger.warning("resuming from %s", state)
    reranked = reranker.rerank(queries, run, docs, depth=depth, progress=progress, state_path=state)
    reranked.write(output, tag=tag or reranker.name.replace(" ", "-"))
    if state.exists():
        state.unlink()


def check_topics_cover_run(queries, run) -> None:
    missing = [qid for qid in run.qids() if qid not in {q.qid for q in queries}]
    if missing:
        raise InputError(f"{len(missing)} run queries have no topic text (e.g. {missing[:3]}); wrong --topics?")

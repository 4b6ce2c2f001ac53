"""The first-stage interpolation weight a trained checkpoint carries for ``--interpolate auto``.

After training, ``best/`` reranks the first stage of the run's own dev queries (carved from the training split,
never test) at the dev depth; :func:`~pyserini_qpeft.search.fusion.select_alpha` picks the BM25 weight that
maximises dev nDCG@10, and the record goes into the checkpoint's ``qpeft_config.json`` under ``interpolation``.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from ..types import Query, Run
from .config import RERANKER_NAMES

if TYPE_CHECKING:
    from ..lm.backbone import FrozenLM
    from ..training.data import TrainingExample

def select_checkpoint_interpolation(lm: "FrozenLM", checkpoint: str | os.PathLike, variant: str,
                                    dev: Sequence["TrainingExample"], first_stage: Run,
                                    qrels: Mapping[str, Mapping[str, int]], corpus: Mapping[str, Any], depth: int,
                                    progress: bool = False) -> dict[str, Any]:
    """Select and store the interpolation weight of ``checkpoint`` (a ``best/`` folder) on the ``dev`` queries.

    Args:
        first_stage: the training run's first stage (BM25 negatives run); its top ``depth`` hits of each dev query
            are reranked and interpolated, as ``rerank --rerank-depth depth --interpolate`` would on test.
        corpus: docid -> Document for those hits (the training data's corpus holds them).

    Returns:
        The stored record: ``alpha``, ``source`` and the selection table.
    """
    from ..rerank.base import DictDocStore
    from ..search.fusion import covered_depth, select_alpha, selection_record
    from .checkpoint import META, resolve_checkpoint
    from .rerankers import build_qpeft_reranker
    from ..artifacts import read_meta, write_meta

    folder = resolve_checkpoint(checkpoint)
    # the whole first stage: a rerank keeps the hits below ``depth`` under the reranked ones, and with ``depth`` < 10
    # they count in nDCG@10 (cut to ``depth``, the stored table was not what `rerank --interpolate auto` ranks)
    dev_run = Run({e.qid: first_stage[e.qid] for e in dev if e.qid in first_stage}, tag=first_stage.tag)
    queries = [Query(e.qid, e.query) for e in dev if e.qid in dev_run]
    reranker = build_qpeft_reranker(RERANKER_NAMES[variant], lm, folder)
    reranked = reranker.rerank(queries, dev_run, DictDocStore(corpus), depth=depth, progress=progress)
    alpha, table = select_alpha(dev_run, reranked, qrels, depth)
    judged = sum(1 for q in dev_run.qids() if q in qrels)
    record = {"alpha": alpha,
              "source": f"selected on the {judged} dev queries of this training run (first stage reranked to {depth}, "
                        f"z-scores, nDCG@10: {table[alpha]:.4f} interpolated vs {table[0.0]:.4f} reranker alone, "
                        f"{table[1.0]:.4f} first stage alone)",
              "selection": selection_record(alpha, table, "ndcg@10", covered_depth(dev_run, depth), "zscore", judged)}
    meta = read_meta(folder, META)
    meta["interpolation"] = record
    write_meta(folder, META, meta)
    return record

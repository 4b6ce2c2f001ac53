"""Encoding a corpus into an index folder: the batch plan, resumable and sharded encoding, the merge of shards.

The plan (:func:`batch_plan`: length-sorted batches, fixed by the input) is the unit of everything here: a resumed
job takes finished batches from ``<output>.partial/``, a shard encodes a round-robin share of them into
``<output>.shard-K-of-N/``, a merge assembles them -- and each result is byte-identical to a serial encode.
"""
from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Sequence

from ..errors import InputError
from .dense import write_faiss_index

if TYPE_CHECKING:
    import numpy as np

    from ..data import Document
    from .encode_state import EncodeState
    from .encoders import DenseEncoder

logger = logging.getLogger(__name__)


def batch_plan(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Text indices per batch: similar lengths together, longest first (memory peaks early); fixed by the input."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    return [order[start:start + batch_size] for start in range(0, len(order), batch_size)]


def _shard_batches(plan: list[list[int]], shard: tuple[int, int] | None, numbered: bool = False) -> list:
    """The batches of ``plan`` that shard ``(k, n)`` encodes (``b % n == k``; all of them when None), in order;
    ``numbered``: as ``(b, batch)`` pairs."""
    mine = [(b, idx) for b, idx in enumerate(plan) if shard is None or b % shard[1] == shard[0]]
    return mine if numbered else [idx for _, idx in mine]


def _by_length(texts: Sequence[str], lengths: Sequence[int], batch_size: int,
               fn: Callable[[list[str]], "np.ndarray"], progress: bool, desc: str,
               state: Callable[[list[list[int]]], "EncodeState"] | None = None,
               shard: tuple[int, int] | None = None) -> "np.ndarray":
    """Run ``fn`` over the batches of :func:`batch_plan`; ``[len(texts), dim]`` float32 in input order.

    ``state`` (given the plan) returns the :class:`~pyserini_qpeft.search.encode_state.EncodeState` of a
    resumable job: finished batches are taken from it and new ones recorded in it. ``shard=(k, n)`` encodes only
    the batches ``b % n == k`` (the other rows stay 0: a shard's result is its state, merged later).
    """
    import numpy as np
    from tqdm.auto import tqdm

    plan = batch_plan(lengths, batch_size)
    store = state(plan) if state else None
    out: np.ndarray | None = None
    mine = dict(_shard_batches(plan, shard, numbered=True))
    try:
        with tqdm(total=sum(map(len, mine.values())), desc=desc, unit="text", disable=not progress) as bar:
            for number, idx in mine.items():
                vecs = store.get(number) if store else None
                if vecs is None:
                    vecs = np.asarray(fn([texts[i] for i in idx]), dtype=np.float32)
                    if store:
                        store.add(number, vecs)
                if out is None:
                    out = np.zeros((len(texts), vecs.shape[1]), dtype=np.float32)
                out[idx] = vecs
                bar.update(len(idx))
    finally:
        if store:
            store.flush()
            store.close()
    if out is None:
        raise InputError("nothing to encode (no texts)")
    return out


def shard_folder(output: str | os.PathLike, shard_id: int, shard_num: int) -> Path:
    """Where shard ``shard_id`` of ``shard_num`` keeps its encoded batches: ``<output>.shard-K-of-N/``."""
    output = Path(output)
    return output.with_name(f"{output.name}.shard-{shard_id}-of-{shard_num}")


def encode_corpus(encoder: "DenseEncoder", docs: Iterable["Document"], output: str | os.PathLike, batch_size: int = 32,
                  progress: bool = True, overwrite: bool = False, extra_meta: dict | None = None,
                  shard: tuple[int, int] | None = None, merge_shards: int | None = None) -> dict | None:
    """Encode documents (``title text``) and write a FAISS index folder; returns its meta (with timings).

    Interrupted jobs resume: finished batches are kept in ``<output>.partial/`` (see
    :mod:`~pyserini_qpeft.search.encode_state`) and the resumed index is byte-identical to an uninterrupted one.
    ``shard=(k, n)`` encodes the k-th round-robin share of the batches into :func:`shard_folder` (resumable) and
    writes no index (returns ``{"shard": folder, "num_docs": documents in the share}``); ``merge_shards=n`` writes
    the index from the n finished shards, byte-identical to a serial encode, computing nothing.
    """
    from .encode_state import EncodeState, MergedStates, encode_fingerprint, legacy_meta

    docs = list(docs)
    if not docs:
        raise InputError("the corpus is empty")
    texts = [d.contents() for d in docs]
    partial = Path(output).with_name(Path(output).name + ".partial")
    fingerprint = encode_fingerprint(encoder.meta(), batch_size, [d.docid for d in docs], texts)
    older = legacy_meta(encoder.meta())  # states written before the LM's weights digest are this job's too
    legacy = encode_fingerprint(older, batch_size, [d.docid for d in docs], texts) if older else None
    if shard is not None:
        folder = shard_folder(output, *shard)
        plans: list[list[list[int]]] = []

        def shard_state(plan: list[list[int]]) -> EncodeState:
            plans.append(plan)
            return EncodeState(folder, fingerprint, [len(b) for b in plan], legacy=legacy)

        encoder.encode_documents(texts, batch_size=batch_size, progress=progress, shard=shard, state=shard_state)
        return {"shard": str(folder), "num_docs": sum(len(b) for b in _shard_batches(plans[0], shard))}
    start = time.time()
    states: list = []  # the state the encode reads: its seconds are the encoding time of every run and shard

    def keep(state):
        states.append(state)
        return state

    if merge_shards:
        folders = [shard_folder(output, k, merge_shards) for k in range(merge_shards)]

        def unfinished(_texts: list[str]) -> "np.ndarray":
            raise InputError("a batch is in none of the shards: a shard has not finished; run it again (it "
                             "resumes), then merge", str(output))

        vectors = _by_length(texts, encoder._lengths(texts), batch_size, unfinished, progress, "merge shards",
                             lambda plan: keep(MergedStates(folders, fingerprint, [len(b) for b in plan], legacy)))
    else:
        if partial.exists():
            logger.warning("resuming from %s", partial)
        folders = [partial]
        vectors = encoder.encode_documents(
            texts, batch_size=batch_size, progress=progress,
            state=lambda plan: keep(EncodeState(partial, fingerprint, [len(b) for b in plan], legacy=legacy)))
    seconds = time.time() - start
    if merge_shards:  # the shards' encoding time (the merge itself computes nothing)
        seconds = states[0].seconds if states else 0.0
    elif states:  # a resumed encode: its earlier runs' time too
        seconds = max(seconds, states[0].seconds)
    meta = {**encoder.meta(), **(extra_meta or {}), "encode_seconds": round(seconds, 1)}
    if states and not merge_shards:
        states[0].mark_complete()  # a kill after the index is published leaves a finished state, not a job's
    write_faiss_index(output, [d.docid for d in docs], vectors, meta, overwrite=overwrite)
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)
    logger.info("encoded %d documents in %.1f s into %s", len(docs), seconds, output)
    return meta

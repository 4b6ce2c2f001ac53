"""Reranking on a Ray cluster (or Ray on one machine): the shards of :func:`~pyserini_qpeft.rerank.pipeline.
rerank_and_write` run as Ray tasks, then the driver merges them.

Each task is one shard (a round-robin share of the document groups, so the per-document prefix cache works as in a
serial job): it loads the frozen LM once, scores its groups into ``<output>.shard-K-of-N`` (so a task that Ray
retries after its worker died resumes where it stopped), and the driver writes the run from the N shard files --
byte-identical to a serial rerank. Tasks carry the document text (workers start no JVM); the output folder must be
on storage every node sees.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ..types import Query, Run


@dataclass(frozen=True)
class RerankJob:
    """Everything a worker needs to rebuild the reranker and score its shard (plain data: Ray ships it)."""

    queries: Sequence[Query]
    run: Run
    docs: dict[str, Any]
    depth: int
    output: str
    reranker: str
    checkpoint: str | None
    model: str
    device: str
    dtype: str
    max_passage_tokens: int | None
    batch_size: int | None


def _score_shard(job: RerankJob, shard_id: int, shard_num: int, threads: int) -> str:
    """One Ray task: score shard ``shard_id`` of ``shard_num`` (resumes from its state file); returns its path."""
    import torch

    from .base import DictDocStore
    from .pipeline import make_reranker, rerank_and_write, shard_state

    torch.set_num_threads(max(1, threads))
    reranker = make_reranker(job.reranker, job.checkpoint, job.model, job.device, job.dtype, job.max_passage_tokens,
                             job.batch_size)
    rerank_and_write(reranker, job.queries, job.run, DictDocStore(job.docs), job.depth, job.output, progress=False,
                     shard=(shard_id, shard_num))
    return str(shard_state(job.output, shard_id, shard_num))


def rerank_on_ray(job: RerankJob, workers: int, address: str | None = None, cpus_per_worker: float | None = None,
                  gpus_per_worker: float = 0.0, max_retries: int = 3) -> list[str]:
    """Run the ``workers`` shards of ``job`` as Ray tasks (retried up to ``max_retries`` times when a worker dies);
    returns the shard files. ``address``: an existing cluster (``ray start --head``), else a local one is started
    with this machine's CPUs. The caller merges (``rerank_and_write(..., merge_shards=workers)``)."""
    import ray

    started = False
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False,
                 num_cpus=None if address else (os.cpu_count() or 1))
        started = True
    try:
        cpus = cpus_per_worker or max(1.0, float(ray.cluster_resources().get("CPU", 1)) / workers)
        task = ray.remote(num_cpus=cpus, num_gpus=gpus_per_worker, max_retries=max_retries)(_score_shard)
        shared = ray.put(job)
        return ray.get([task.remote(shared, k, workers, int(cpus)) for k in range(workers)])
    finally:
        if started:
            ray.shutdown()


def job_from_flags(queries: Sequence[Query], run: Run, docs: Any, depth: int, output: str | os.PathLike,
                   reranker: str, checkpoint: str | None, model: str, device: str, dtype: str,
                   max_passage_tokens: int | None, batch_size: int | None) -> RerankJob:
    """A :class:`RerankJob` with the text of every document the shards will score (fetched here, once)."""
    needed = sorted({hit.docid for hits in run.hits.values() for hit in hits[:depth]})
    return RerankJob(list(queries), run, {d: docs.get(d) for d in needed}, depth, str(Path(output)), reranker,
                     checkpoint, model, device, dtype, max_passage_tokens, batch_size)

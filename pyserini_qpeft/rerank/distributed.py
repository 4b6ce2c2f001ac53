"""Reranking and encoding on a Ray cluster (or Ray on one machine): the shards of :func:`~pyserini_qpeft.rerank.
pipeline.rerank_and_write` (and of ``encode``) run as Ray tasks, then the driver merges them.

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
    return run_shards_on_ray(_score_shard, job, workers, address, cpus_per_worker, gpus_per_worker, max_retries)


@dataclass(frozen=True)
class EncodeJob:
    """What a worker needs to rebuild the encoder and encode its shard of the corpus (plain data)."""

    spec: str
    docs: Sequence[Any]
    output: str
    batch_size: int
    model: str | None
    device: str
    dtype: str
    max_length: int | None
    pooling: str


def _encode_shard(job: EncodeJob, shard_id: int, shard_num: int, threads: int) -> str:
    """One Ray task: encode shard ``shard_id`` of ``shard_num`` of the corpus (resumes from its shard folder)."""
    import torch

    from ..search.encoders import build_encoder, encode_corpus, shard_folder

    torch.set_num_threads(max(1, threads))
    encoder = build_encoder(job.spec, model=job.model, device=job.device, dtype=job.dtype, max_length=job.max_length,
                            pooling=job.pooling)
    encode_corpus(encoder, job.docs, job.output, batch_size=job.batch_size, progress=False,
                  shard=(shard_id, shard_num))
    return str(shard_folder(job.output, shard_id, shard_num))


def encode_on_ray(job: EncodeJob, workers: int, address: str | None = None, cpus_per_worker: float | None = None,
                  gpus_per_worker: float = 0.0, max_retries: int = 3) -> list[str]:
    """:func:`rerank_on_ray` for ``encode``: the shards of the batch plan as Ray tasks; the caller merges
    (``encode_corpus(..., merge_shards=workers)``)."""
    return run_shards_on_ray(_encode_shard, job, workers, address, cpus_per_worker, gpus_per_worker, max_retries)


def run_shards_on_ray(task_fn: Any, job: Any, workers: int, address: str | None, cpus_per_worker: float | None,
                      gpus_per_worker: float, max_retries: int) -> list[str]:
    """``task_fn(job, k, workers, threads)`` for k in 0..workers-1 as Ray tasks (``threads``: the driver's torch
    thread count); their results in shard order."""
    import ray

    started = False
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False,
                 num_cpus=None if address else (os.cpu_count() or 1))
        started = True
    try:
        import torch

        cpus = cpus_per_worker or max(1.0, float(ray.cluster_resources().get("CPU", 1)) / workers)
        task = ray.remote(num_cpus=cpus, num_gpus=gpus_per_worker, max_retries=max_retries)(task_fn)
        shared = ray.put(job)
        # Workers compute with the driver's torch thread count, not their CPU share: on a CPU a float reduction's
        # result depends on how many threads split it, and the merged output must equal the serial one bit for
        # bit (set OMP_NUM_THREADS / torch threads on the driver to choose).
        threads = torch.get_num_threads()
        return ray.get([task.remote(shared, k, workers, threads) for k in range(workers)])
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

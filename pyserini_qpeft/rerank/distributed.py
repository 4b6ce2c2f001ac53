"""Reranking and encoding on a Ray cluster (or Ray on one machine) through Ray Data, then one merge by the driver.

The job is cut into ``workers x SHARDS_PER_WORKER`` shards (round-robin shares of the document groups, so the
per-document prefix cache works as in a serial job; for ``encode``, of the length-sorted batches). A Ray Data
dataset holds one row per shard; ``map_batches`` runs them on an actor pool of ``workers`` class workers, each of
which loads the frozen LM once and then scores (or encodes) every shard Ray Data hands it into
``<output>.shard-K-of-N`` -- so a shard whose actor died is retried on a restarted actor and resumes where it
stopped, and a driver that died finds every finished shard on disk when it runs again. The driver then writes the
run (or index) from the N shard files: byte-identical to the serial command. Rows carry no text; the document
text travels once per actor in the job (workers start no JVM). The output folder must be on storage every node
sees.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ..errors import InputError
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
    model: str | None
    device: str
    dtype: str
    max_passage_tokens: int | None
    batch_size: int | None
    prompt: str | None = None
    max_query_tokens: int | None = None


def _build_reranker(job: RerankJob) -> Any:
    from .pipeline import make_reranker

    return make_reranker(job.reranker, job.checkpoint, job.model, job.device, job.dtype, job.max_passage_tokens,
                         job.batch_size, job.prompt, max_query_tokens=job.max_query_tokens)


def _score_shard(reranker: Any, job: RerankJob, shard_id: int, shard_num: int) -> str:
    """Score shard ``shard_id`` of ``shard_num`` (resumes from its state file); returns its path."""
    from .base import DictDocStore
    from .pipeline import rerank_and_write, shard_state

    rerank_and_write(reranker, job.queries, job.run, DictDocStore(job.docs), job.depth, job.output, progress=False,
                     shard=(shard_id, shard_num))
    return str(shard_state(job.output, shard_id, shard_num))


def rerank_on_ray(job: RerankJob, workers: int, address: str | None = None, cpus_per_worker: float | None = None,
                  gpus_per_worker: float = 0.0) -> list[str]:
    """Run ``job``'s shards on a Ray Data actor pool of ``workers`` (a shard is retried when its actor dies);
    returns the shard files in shard order. ``address``: an existing cluster
    (``ray start --head``), else a local one is started with this machine's CPUs. The caller merges
    (``rerank_and_write(..., merge_shards=len(paths))``)."""
    return run_shards_on_ray("rerank", job, workers, address, cpus_per_worker, gpus_per_worker)


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


def _build_encoder(job: EncodeJob) -> Any:
    from ..search.encoders import build_encoder

    return build_encoder(job.spec, model=job.model, device=job.device, dtype=job.dtype, max_length=job.max_length,
                         pooling=job.pooling)


def _encode_shard(encoder: Any, job: EncodeJob, shard_id: int, shard_num: int) -> str:
    """Encode shard ``shard_id`` of ``shard_num`` of the corpus (resumes from its shard folder)."""
    from ..search.encoders import encode_corpus, shard_folder

    encode_corpus(encoder, job.docs, job.output, batch_size=job.batch_size, progress=False,
                  shard=(shard_id, shard_num))
    return str(shard_folder(job.output, shard_id, shard_num))


def encode_on_ray(job: EncodeJob, workers: int, address: str | None = None, cpus_per_worker: float | None = None,
                  gpus_per_worker: float = 0.0) -> list[str]:
    """:func:`rerank_on_ray` for ``encode``: the shards of the batch plan; the caller merges
    (``encode_corpus(..., merge_shards=len(paths))``)."""
    return run_shards_on_ray("encode", job, workers, address, cpus_per_worker, gpus_per_worker)


SHARDS_PER_WORKER = 4  # more shards than actors: Ray Data balances them, and a dead actor loses one small shard
_KINDS = {"rerank": (_build_reranker, _score_shard), "encode": (_build_encoder, _encode_shard)}


class ShardWorker:
    """A Ray Data class worker: builds the reranker (or encoder) once, then runs every shard it is given.

    Args:
        kind: ``rerank`` or ``encode``.
        job: an ObjectRef of the :class:`RerankJob` / :class:`EncodeJob` (put once by the driver).
        shard_num: the number of shards of the job.
        threads: torch threads (the driver's count; see :func:`run_shards_on_ray`).
    """

    def __init__(self, kind: str, job: Any, shard_num: int, threads: int):
        import ray
        import torch

        torch.set_num_threads(max(1, threads))
        self.job = ray.get(job)
        self.build, self.run = _KINDS[kind]
        self.shard_num = shard_num
        self.model = self.build(self.job)  # the frozen LM, loaded once per actor

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        """``{"shard": [k, ...]}`` -> ``{"shard": [...], "path": [shard file, ...], "error": [...], "message":
        [...]}``: a package error (bad input, a locked shard) is returned as its class name and message, which the
        driver raises again (Ray's wrapper keeps neither, so the exit code would be 1 under a Ray traceback)."""
        from ..errors import QPeftError

        out: dict[str, list] = {"shard": [], "path": [], "error": [], "message": []}
        for k in (int(k) for k in batch["shard"]):
            try:
                path, error, message = self.run(self.model, self.job, k, self.shard_num), "", ""
            except QPeftError as exc:
                path, error, message = "", type(exc).__name__, str(exc)
            for key, value in (("shard", k), ("path", path), ("error", error), ("message", message)):
                out[key].append(value)
        return out


def run_shards_on_ray(kind: str, job: Any, workers: int, address: str | None, cpus_per_worker: float | None,
                      gpus_per_worker: float) -> list[str]:
    """The ``workers x SHARDS_PER_WORKER`` shards of ``job`` through ``ray.data ... map_batches(ShardWorker)`` on
    ``workers`` actors; their files in shard order. Ray Data restarts an actor whose process died and retries its
    shard (its defaults, without limit); a Python exception in a shard is not retried and fails the job."""
    import ray

    started = False
    if not ray.is_initialized():
        from ..lm.backbone import TRUST_REMOTE_CODE_ENV

        _check_reachable(address)
        # workers load the model with the driver's --trust-remote-code (a remote cluster does not share our env)
        trust = os.environ.get(TRUST_REMOTE_CODE_ENV)
        sigterm = _sigterm_handler()
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False,
                     num_cpus=None if address else (os.cpu_count() or 1),
                     runtime_env={"env_vars": {TRUST_REMOTE_CODE_ENV: trust}} if trust is not None else None)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise InputError(f"cannot start or join the Ray cluster (--ray-address {address or 'none: local'}): "
                             f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
        finally:
            _restore_sigterm(sigterm)  # ray.init's own handler exits 15 at once, skipping the clean-up and line
        started = True
    try:
        gpus = float(ray.cluster_resources().get("GPU", 0))
        if gpus_per_worker and gpus < gpus_per_worker:
            raise InputError(f"--gpus-per-worker {gpus_per_worker:g}, but the Ray cluster has {gpus:g} GPUs: no "
                             f"worker could start (it would wait forever)")
        import torch
        from ray.data import DataContext

        context = DataContext.get_current()
        context.enable_progress_bars = False
        context.print_on_execution_start = False
        cpus = cpus_per_worker or max(1.0, float(ray.cluster_resources().get("CPU", 1)) / workers)
        shard_num = workers * SHARDS_PER_WORKER
        # Workers compute with the driver's torch thread count, not their CPU share: on a CPU a float reduction's
        # result depends on how many threads split it, and the merged output must equal the serial one bit for
        # bit (set OMP_NUM_THREADS / torch threads on the driver to choose).
        threads = torch.get_num_threads()
        job_ref = ray.put(job)  # held until the end, so that a restarted actor can still read it
        rows = (ray.data.from_items([{"shard": k} for k in range(shard_num)], override_num_blocks=shard_num)
                .map_batches(ShardWorker, fn_constructor_args=(kind, job_ref, shard_num, threads), batch_size=1,
                             compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=cpus,
                             num_gpus=gpus_per_worker)
                .take_all())
        del job_ref
        failed = next((row for row in sorted(rows, key=lambda row: row["shard"]) if row["error"]), None)
        if failed is not None:
            from .. import errors

            cls = getattr(errors, failed["error"], None)
            if not (isinstance(cls, type) and issubclass(cls, errors.QPeftError)):
                cls = InputError
            raise cls(failed["message"])  # the message already names file and line
        return [row["path"] for row in sorted(rows, key=lambda row: row["shard"])]
    finally:
        if started:
            ray.shutdown()


def _sigterm_handler():
    """The current SIGTERM handler (None outside the main thread, where none can be set)."""
    import signal
    import threading

    return signal.getsignal(signal.SIGTERM) if threading.current_thread() is threading.main_thread() else None


def _restore_sigterm(handler) -> None:
    import signal

    if handler is not None:
        signal.signal(signal.SIGTERM, handler)


def _check_reachable(address: str | None, timeout: float = 5.0) -> None:
    """InputError at once when ``address`` names a ``host:port`` (or ``ray://host:port``) where nothing answers:
    ``ray.init`` would retry without end."""
    if not address or address == "auto":
        return
    import socket

    host, _, port = address.split("://", 1)[-1].rpartition(":")
    if not host or not port.isdigit():
        return  # not host:port: ray.init judges it
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return
    except OSError as exc:
        raise InputError(f"no Ray cluster answers at --ray-address {address} ({exc.strerror or exc}); start one "
                         f"(`ray start --head`) or drop --ray-address for a local one") from None


def job_from_flags(queries: Sequence[Query], run: Run, docs: Any, depth: int, output: str | os.PathLike,
                   reranker: str, checkpoint: str | None, model: str | None, device: str, dtype: str,
                   max_passage_tokens: int | None, batch_size: int | None,
                   prompt: str | None = None, max_query_tokens: int | None = None) -> RerankJob:
    """A :class:`RerankJob` with the text of every document the shards will score (fetched here, once)."""
    from .pipeline import run_docids

    needed = sorted(run_docids(run, depth))
    return RerankJob(list(queries), run, {d: docs.get(d) for d in needed}, depth, str(Path(output)), reranker,
                     checkpoint, model, device, dtype, max_passage_tokens, batch_size, prompt, max_query_tokens)

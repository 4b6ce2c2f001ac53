"""The one training loop: AdamW on a method's trainable parameters, per-epoch dev selection, early stopping, resume.

A method plugs in a :class:`TrainingStep` (Q-PEFT: ``qpeft.step.QPeftStep``; LMORT: ``lmort.step.LMORTStep``)
that owns its parameters, its sampling + loss for one batch, its dev ranking and its checkpoint format. This
module owns everything else: data order, learning-rate schedule, optimizer state, ``trainer_state.json``, the
per-epoch ``epoch-N/`` folders and ``best/`` (see :mod:`.state`), and the dev metrics, computed by
:func:`pyserini_qpeft.evaluation.evaluate` on the step's dev :class:`~pyserini_qpeft.types.Run` against binary
dev qrels (every positive at relevance 1; ties ranked as trec_eval ranks them).

Determinism: the order of epoch ``e`` is ``random.Random(f"{seed}-order-{e}")``, the step's sampling rng is
``random.Random(f"{seed}-sample-{e}")`` and torch is seeded with ``seed * 1000 + e`` (dropout), so
``resume=True`` (continue after the last completed epoch; weights and AdamW state come from that epoch's folder;
an interrupted epoch is redone from its start; a run interrupted in its first epoch keeps its dev evaluation at
start) sees exactly the batches an uninterrupted run would have seen.

Data parallel (``accelerate launch`` / ``torchrun``; :mod:`.parallel`): the step's ``parallel`` attribute says
which slice of each global batch this rank computes; the loop sums the gradients over ranks before clipping, runs
the same dev evaluation on every rank (the step shards its scoring) so that every rank takes the same selection
and early-stopping decisions, and only rank 0 writes.
"""
from __future__ import annotations

import logging
import os
import random
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, Protocol, Sequence

from ..errors import InputError
from .config import LOWER_IS_BETTER, TrainConfig
from .data import TrainingExample, dev_qrels
from .parallel import SINGLE, DataParallel
from .resume import (RESUMABLE_SETTINGS, check_resumed_data, lm_dtype, recorded_settings,  # noqa: F401
                     training_data_fingerprint, training_lock)  # (RESUMABLE_SETTINGS, lm_dtype: importable here)
from .state import (DONE_NAME, STATE_NAME, epoch_dir, load_optimizer, publish_best, read_trainer_state,
                    save_optimizer, write_trainer_state, write_training_done)

if TYPE_CHECKING:
    import torch

    from ..types import Run

logger = logging.getLogger(__name__)


class TrainingStep(Protocol):
    """What a method gives the loop.

    Attributes:
        identity: JSON-able settings that must not change across ``--resume`` (e.g. the module config).
        dev_metrics: evaluation metric names reported on dev (the selection metric is added when missing).
        parallel: this process's data-parallel place (optional; a step without it runs in one process): the step
            computes its rank's slice of each batch and gathers the rest (see :mod:`.parallel`).
    """

    identity: dict[str, Any]
    dev_metrics: tuple[str, ...]

    def parameters(self) -> list["torch.nn.Parameter"]:
        """The trainable parameters (the optimizer's; never the frozen LM's)."""

    def train_mode(self, training: bool) -> None:
        """Switch the trainable module between train (dropout) and eval mode."""

    def begin_epoch(self, epoch: int) -> None:
        """Called before the steps of ``epoch`` (1-based; also on a resumed run), for epoch-dependent sampling."""

    def step(self, batch: Sequence[TrainingExample], rng: random.Random
             ) -> tuple["torch.Tensor", dict[str, float]] | None:
        """Sample and score one batch: ``(scalar loss, {"loss": ..., ...})``, or None when there is nothing to learn."""

    def dev_run(self, dev: Sequence[TrainingExample], progress: bool = False) -> "Run":
        """The current model's ranking of each dev query's candidates."""

    def baseline_run(self, dev: Sequence[TrainingExample], progress: bool = False) -> "Run | None":
        """A zero-shot reference ranking of dev (reported, never selected), or None."""

    def dev_extra(self, dev: Sequence[TrainingExample], run: "Run") -> dict[str, float]:
        """Method-specific dev numbers from the same run (e.g. Q-PEFT's dev loss)."""

    def save(self, folder: Path, extra: dict[str, Any]) -> None:
        """Write the method's checkpoint (``extra``: ``training`` and ``dev_metrics`` metadata)."""

    def load(self, folder: Path) -> None:
        """Load the trainable weights of a checkpoint written by :meth:`save`."""


@dataclass
class TrainResult:
    """What :func:`fit` did."""

    output_dir: Path
    best_dir: Path
    best_epoch: int
    history: list[dict[str, Any]] = field(default_factory=list)
    dev_baseline: dict[str, float] = field(default_factory=dict)
    train_seconds: float = 0.0
    stopped_early: bool = False
    best_step: int | None = None

    @property
    def best_dev(self) -> dict[str, Any]:
        """The dev metrics of ``best/`` (:func:`best_dev`)."""
        return best_dev(self.history, self.best_epoch, self.best_step)


def best_dev(history: Sequence[Mapping[str, Any]], best_epoch: int, best_step: int | None = None) -> dict[str, Any]:
    """The dev metrics of the selected checkpoint: the mid-epoch evaluation at global step ``best_step`` of epoch
    ``best_epoch`` when there is one (``TrainConfig.eval_every``), else that epoch's end."""
    record = next(h for h in history if h["epoch"] == best_epoch)
    for check in record.get("dev_steps", []):
        if check["global_step"] == best_step:
            return check["dev"]
    return record["dev"]


def dev_metrics(run: "Run", dev: Sequence[TrainingExample], metrics: Sequence[str]) -> dict[str, float]:
    """``evaluation.evaluate`` of ``run`` against the dev qrels (graded, :func:`dev_qrels`), plus ``queries``."""
    from ..evaluation import evaluate

    return {**evaluate(run, dev_qrels(dev), list(metrics)), "queries": len(dev)}


def evaluate_step(step: TrainingStep, dev: Sequence[TrainingExample], metrics: Sequence[str], progress: bool = False,
                  baseline: bool = False) -> dict[str, float]:
    """Dev metrics of the step's current model (or of its zero-shot baseline; {} when it has none)."""
    run = step.baseline_run(dev, progress=progress) if baseline else step.dev_run(dev, progress=progress)
    if run is None:
        return {}
    return {**dev_metrics(run, dev, metrics), **step.dev_extra(dev, run)}


def epoch_order(num_train: int, config: TrainConfig, epoch: int) -> list[int]:
    """Indices of the training examples used in ``epoch``, in order (a pure function of seed and epoch)."""
    rng = random.Random(f"{config.seed}-order-{epoch}")
    order = list(range(num_train))
    rng.shuffle(order)
    if config.max_train_queries is not None:
        order = order[:config.max_train_queries]
    return order


def selection_metric(config: TrainConfig, dev: Sequence[TrainingExample]) -> str:
    """The metric that picks ``best/``: the configured one, or ``train_loss`` without a dev set."""
    return config.selection_metric if dev else "train_loss"


def _better(metric: str, new: float, old: float | None) -> bool:
    if old is None:
        return True
    return new < old if metric in LOWER_IS_BETTER else new > old


def _selection_value(metric: str, record: dict[str, Any]) -> float:
    if metric == "train_loss":
        return record["train"]["loss"]
    if metric not in record["dev"]:
        raise InputError(f"selection metric {metric!r} is not among the dev metrics {sorted(record['dev'])}")
    return record["dev"][metric]


def _check_sets(train: Sequence[TrainingExample], dev: Sequence[TrainingExample]) -> None:
    if not train:
        raise InputError("no training examples")
    overlap = {e.qid for e in train} & {e.qid for e in dev}
    if overlap:
        raise InputError(f"{len(overlap)} queries are both in train and dev (e.g. {sorted(overlap)[0]})")


def _start_state(step: TrainingStep, config: TrainConfig, dev: Sequence[TrainingExample], metrics: Sequence[str],
                 progress: bool, settings: Mapping[str, Any]) -> dict[str, Any]:
    state = {"completed_epochs": 0, "global_step": 0, "history": [], "best_epoch": None, "best_step": None,
             "best_value": None,
             "dev_baseline": {}, "dev_untrained": {}, "train_seconds": 0.0, "stopped_early": False,
             "selection_metric": selection_metric(config, dev), "step": step.identity, **settings}
    if config.eval_at_start and dev:
        t0 = time.time()
        state["dev_baseline"] = evaluate_step(step, dev, metrics, progress, baseline=True)
        state["dev_untrained"] = evaluate_step(step, dev, metrics, progress)
        state["dev_eval_seconds_at_start"] = time.time() - t0
        if state["dev_baseline"]:
            logger.info("dev zero-shot baseline: %s", _fmt(state["dev_baseline"]))
        logger.info("dev untrained: %s", _fmt(state["dev_untrained"]))
    return state


def _start_evaluated(state: Mapping[str, Any], config: TrainConfig, dev: Sequence[TrainingExample]) -> bool:
    """Whether a run interrupted before its first epoch ended recorded the dev evaluation at start under a
    recorded configuration, so that ``--resume`` can reuse it instead of scoring the dev queries again (minutes per
    LM pass; the evaluation draws no random numbers, so the training that follows is unchanged)."""
    return bool(config.eval_at_start and dev) and "train_config" in state and bool(state.get("dev_untrained"))


def fit(step: TrainingStep, train_examples: Sequence[TrainingExample], dev_examples: Sequence[TrainingExample],
        config: TrainConfig, output_dir: str | os.PathLike, resume: bool = False, progress: bool = True,
        metadata: Mapping[str, Any] | None = None, on_finish: Callable[[Path], None] | None = None) -> TrainResult:
    """Train ``step``'s parameters in place; write ``epoch-N/``, ``best/``, ``trainer_state.json`` and, at the end,
    ``training_done.json``. A second process training into the same ``output_dir`` meanwhile is refused.

    Args:
        step: the method (see :class:`TrainingStep`).
        train_examples, dev_examples: disjoint example lists (``training.data.split_dev``); without dev
            examples ``best/`` is the epoch with the lowest training loss.
        config: shared hyperparameters (a method's subclass).
        output_dir: must hold no training run unless ``resume``.
        resume: continue after the last completed epoch recorded in ``output_dir``.
        progress: tqdm bars with the running loss.
        metadata: extra JSON for every checkpoint; its ``training`` entry is merged with the loop's.
        on_finish: called by the main process with ``best/`` after the last epoch and before ``training_done.json``
            (e.g. the dev selection of the interpolation weight ``best/`` carries), so that the marker means the
            whole job finished; a ``--resume`` of a run stopped inside it calls it again.

    Returns:
        A :class:`TrainResult`; ``best_dir`` is a loadable checkpoint.
    """
    parallel: DataParallel = getattr(step, "parallel", None) or SINGLE
    with training_lock(Path(output_dir), parallel.is_main):
        return _fit(step, train_examples, dev_examples, config, output_dir, resume, progress, metadata, on_finish)


def _fit(step: TrainingStep, train_examples: Sequence[TrainingExample], dev_examples: Sequence[TrainingExample],
         config: TrainConfig, output_dir: str | os.PathLike, resume: bool, progress: bool,
         metadata: Mapping[str, Any] | None, on_finish: Callable[[Path], None] | None = None) -> TrainResult:
    """:func:`fit`'s loop, inside its lock."""
    import torch
    from tqdm.auto import tqdm

    _check_sets(train_examples, dev_examples)
    parallel: DataParallel = getattr(step, "parallel", None) or SINGLE
    progress = progress and parallel.is_main
    output_dir = Path(output_dir)
    state = read_trainer_state(output_dir)
    parallel.barrier()  # every rank has read the state before rank 0 writes one
    if state is not None and not resume:
        raise InputError("already holds a training run; pass --resume to continue it or choose another --output",
                         str(output_dir))
    saved = state.get("step", step.identity) if state is not None else step.identity
    # a key the saved run did not record yet (a state from before it existed) is not compared
    changed = [key for key in saved if saved[key] != step.identity.get(key)]
    if changed:
        if changed == ["lm_dtype"]:
            from ..lm.backbone import dtype_flag

            flag = dtype_flag(saved["lm_dtype"]) or saved["lm_dtype"]
            raise InputError(f"--resume in {step.identity['lm_dtype']}, but the run in {output_dir} trained in "
                             f"{saved['lm_dtype']}: pass --dtype {flag} (--dtype auto may choose another precision "
                             f"on another CPU)", str(output_dir))
        diffs = []
        for key in changed:
            old, new = saved[key], step.identity.get(key)
            if isinstance(old, dict) and isinstance(new, dict):
                diffs += [f"{key}.{k} {old.get(k)!r} -> {new.get(k)!r}" for k in sorted({*old, *new})
                          if old.get(k) != new.get(k)]
            else:
                diffs.append(f"{key} {old!r} -> {new!r}")
        raise InputError(f"--resume with other model settings than this folder's run: {', '.join(diffs)}; give the "
                         f"same flags, or another --output", str(output_dir))
    if parallel.is_main:
        output_dir.mkdir(parents=True, exist_ok=True)
    selection = selection_metric(config, dev_examples)
    metrics = list(dict.fromkeys([*step.dev_metrics, *([] if selection in LOWER_IS_BETTER else [selection])]))
    params = step.parameters()
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    total_steps = config.planned_steps(len(train_examples))
    train_meta = recorded_settings(config, train_examples, dev_examples)
    settings = {"train_config": train_meta["train_config"], "dev_qids": train_meta["dev_qids"],
                "train_data": training_data_fingerprint(train_examples)}
    # dev metrics judge graded qrels at their grades (binary before): a run judged otherwise cannot be continued
    settings["dev_graded"] = any(g != 1 for e in dev_examples for g in e.grades)
    text_of = getattr(step, "text_fingerprint", None)  # a step that reads document text itself (Q-PEFT)
    if text_of is not None:
        settings["train_text"] = text_of([*train_examples, *dev_examples])

    start_epoch, global_step = 1, 0
    last = state.get("completed_epochs", 0) if state is not None else 0
    if state is not None and (last > 0 or _start_evaluated(state, config, dev_examples)):
        folder = epoch_dir(output_dir, last)
        check_resumed_data(state, folder, settings, config.steps_per_epoch(len(train_examples)))
        if last > 0:
            step.load(folder)
            load_optimizer(optimizer, folder)
            start_epoch, global_step = last + 1, state["global_step"]
            logger.info("resuming after epoch %d (step %d) from %s", last, global_step, folder)
        else:
            logger.info("resuming before epoch 1: the dev evaluation at start comes from %s", output_dir / STATE_NAME)
    else:
        state = _start_state(step, config, dev_examples, metrics, progress, settings)
        if parallel.is_main:
            write_trainer_state(output_dir, state)

    for epoch in range(start_epoch, config.epochs + 1):
        if config.max_steps is not None and global_step >= config.max_steps:
            break
        # judged with this run's --patience (a resume may raise it: an early-stopped run then goes on)
        if (config.patience is not None and state["best_epoch"] is not None
                and state["completed_epochs"] - state["best_epoch"] >= config.patience):
            logger.info("early stop: no better %s for %d epochs", selection, config.patience)
            state["stopped_early"] = True
            if parallel.is_main:
                write_trainer_state(output_dir, state)
            break
        state["stopped_early"] = False
        if parallel.is_main:  # a finished run trains on (--resume with more epochs): it is not finished until then
            (output_dir / DONE_NAME).unlink(missing_ok=True)
        t_epoch = time.time()
        torch.manual_seed(config.seed * 1000 + epoch + parallel.rank * 1_000_003)  # dropout; rank 0 = one process
        rng = random.Random(f"{config.seed}-sample-{epoch}")
        order = epoch_order(len(train_examples), config, epoch)
        steps = [order[i:i + config.batch_size] for i in range(0, len(order), config.batch_size)]
        if config.max_steps is not None:
            steps = steps[:config.max_steps - global_step]
        step.begin_epoch(epoch)
        step.train_mode(True)
        sums: dict[str, float] = {}
        checks: list[dict[str, Any]] = []  # mid-epoch dev evaluations (config.eval_every)
        best_mid: tuple[float, dict[str, Any], list[torch.Tensor]] | None = None  # (value, check, weights)
        bar = tqdm(steps, desc=f"epoch {epoch}/{config.epochs}", unit="step", disable=not progress,
                   dynamic_ncols=True)
        for n, idx in enumerate(bar, start=1):
            out = step.step([train_examples[i] for i in idx], rng)
            if out is None:
                continue
            loss, stats = out
            for group in optimizer.param_groups:
                group["lr"] = config.lr_at(global_step, total_steps)
            optimizer.zero_grad(set_to_none=True)
            if loss.requires_grad:  # a data-parallel rank whose share of a short last batch is empty has no graph
                loss.backward()
            parallel.reduce_gradients(params)
            if config.grad_clip:
                torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
            optimizer.step()
            global_step += 1
            for key, value in stats.items():
                sums[key] = sums.get(key, 0.0) + value
            bar.set_postfix({k: f"{sums[k] / n:.4f}" for k in ("loss", "pair_acc") if k in sums})
            if config.eval_every and dev_examples and n % config.eval_every == 0 and n < len(steps):
                step.train_mode(False)  # evaluation draws no random numbers: the training goes on unchanged
                checks.append({"global_step": global_step, "dev": evaluate_step(step, dev_examples, metrics)})
                step.train_mode(True)
                logger.info("epoch %d, step %d: dev %s", epoch, global_step, _fmt(checks[-1]["dev"]))
                value = _selection_value(selection, checks[-1])
                if _better(selection, value, best_mid[0] if best_mid else None):
                    best_mid = (value, checks[-1], [p.detach().clone() for p in params])
        bar.close()
        train_seconds = time.time() - t_epoch
        step.train_mode(False)
        t_dev = time.time()
        dev = evaluate_step(step, dev_examples, metrics, progress) if dev_examples else {}
        nsteps = max(1, len(steps))
        record = {"epoch": epoch, "steps": len(steps), "global_step": global_step,
                  "train": {k: v / nsteps for k, v in sums.items()}, "dev": dev,
                  "train_seconds": train_seconds, "dev_seconds": time.time() - t_dev,
                  **({"dev_steps": checks} if checks else {}),
                  **({"world_size": parallel.world_size} if parallel.active else {})}
        logger.info("epoch %d: train %s | dev %s | %.0f s train, %.0f s dev", epoch, _fmt(record["train"]),
                    _fmt(dev), train_seconds, record["dev_seconds"])
        value = _selection_value(selection, record)
        improved = _better(selection, value, state["best_value"])
        folder = epoch_dir(output_dir, epoch)
        extra = dict(metadata or {})
        extra["training"] = {**(extra.get("training") or {}), **train_meta, "epoch": epoch,
                             "global_step": global_step, **_data_parallel_record(parallel, state["history"], record)}
        extra["dev_metrics"] = {k: v for k, v in dev.items() if k not in ("queries", "pairs")}
        extra["dev_baseline"] = {k: v for k, v in state["dev_baseline"].items() if k not in ("queries", "pairs")}
        if parallel.is_main:
            step.save(folder, extra)
            save_optimizer(optimizer, folder)
        state["history"].append(record)
        state["completed_epochs"], state["global_step"] = epoch, global_step
        state["train_seconds"] = state.get("train_seconds", 0.0) + train_seconds
        if best_mid is not None and _better(selection, best_mid[0], value) \
                and _better(selection, best_mid[0], state["best_value"]):
            mid_value, check, weights = best_mid
            mid_step = check["global_step"]
            mid_folder = output_dir / f"{folder.name}-step-{mid_step}"
            extra["training"] = {**extra["training"], "global_step": mid_step}
            extra["dev_metrics"] = {k: v for k, v in check["dev"].items() if k not in ("queries", "pairs")}
            if parallel.is_main:
                with swapped_weights(params, weights):
                    step.save(mid_folder, extra)
                publish_best(mid_folder, output_dir)
            state["best_epoch"], state["best_step"], state["best_value"] = epoch, mid_step, mid_value
        elif improved:
            state["best_epoch"], state["best_step"], state["best_value"] = epoch, global_step, value
            if parallel.is_main:
                publish_best(folder, output_dir)
        if parallel.is_main:
            write_trainer_state(output_dir, state)
        parallel.barrier()  # the epoch's files exist before any rank goes on

    if state["best_epoch"] is None:
        raise InputError("training ran no epoch (max_steps reached before the first epoch?)")
    if parallel.is_main:
        if on_finish is not None:
            on_finish(output_dir / "best")
        write_training_done(output_dir, state)
    return TrainResult(output_dir=output_dir, best_dir=output_dir / "best", best_epoch=state["best_epoch"],
                       history=state["history"], dev_baseline=state["dev_baseline"],
                       train_seconds=state["train_seconds"], stopped_early=bool(state.get("stopped_early")),
                       best_step=state.get("best_step"))


def _data_parallel_record(parallel: DataParallel, history: Sequence[Mapping[str, Any]],
                          record: Mapping[str, Any]) -> dict[str, Any]:
    """``{"data_parallel": ...}`` for a checkpoint when any of its epochs ran in several processes (else ``{}``):
    this epoch's processes and backend, and every epoch's process count (a run started in 2 processes and
    resumed in 1 keeps saying so)."""
    sizes = [r.get("world_size", 1) for r in (*history, record)]
    if not parallel.active and all(size == 1 for size in sizes):
        return {}
    return {"data_parallel": {**parallel.describe(), "world_size_by_epoch": sizes}}


@contextmanager
def swapped_weights(params: Sequence["torch.nn.Parameter"], weights: Sequence["torch.Tensor"]) -> Iterator[None]:
    """Inside the block the parameters hold ``weights`` (same shapes); afterwards their own values again."""
    import torch

    with torch.no_grad():
        saved = [p.detach().clone() for p in params]
        for p, w in zip(params, weights):
            p.copy_(w)
    try:
        yield
    finally:
        with torch.no_grad():
            for p, w in zip(params, saved):
                p.copy_(w)


def _fmt(metrics: Mapping[str, Any]) -> str:
    return " ".join(f"{k}={v:.4f}" for k, v in metrics.items() if isinstance(v, float))

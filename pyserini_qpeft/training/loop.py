"""The Q-PEFT training loop: AdamW on the hint module only, per-epoch dev selection, resumable checkpoints.

Output folder layout::

    output_dir/
      trainer_state.json     history (per-epoch train/dev numbers), best epoch, zero-shot dev baseline
      epoch-1/ ...           a full checkpoint per epoch (see checkpoint.py) + optimizer.safetensors +
      epoch-N/                 optimizer.json (AdamW moments and step counts; no pickle)
      best/                  a copy of the epoch with the best dev metric: what reranking loads

``resume=True`` continues after the last completed epoch: module weights and AdamW state come from that epoch's
folder, and the data order is a pure function of ``(seed, epoch)``, so a resumed run sees exactly the batches an
uninterrupted run would have seen (an interrupted epoch is redone from its start).
"""
from __future__ import annotations

import json
import logging
import math
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from ..errors import InputError, ModelError
from ..fileio import atomic_write, replace_dir
from .data import TrainingExample, sample_step
from .losses import qpeft_loss

if TYPE_CHECKING:
    from ..backbone import FrozenLM
    from ..qpeft import QPeftConfig
    from ..scoring import ScorerConfig

logger = logging.getLogger(__name__)

STATE_NAME = "trainer_state.json"
OPTIMIZER_WEIGHTS = "optimizer.safetensors"
OPTIMIZER_JSON = "optimizer.json"
SELECTION_METRICS = ("ndcg@10", "mrr@10", "loss")


@dataclass(frozen=True)
class TrainConfig:
    """Training hyperparameters.

    Args:
        epochs: passes over the training queries.
        batch_size: queries per optimizer step (each brings its positive; the others' positives serve as
            in-batch negatives).
        lr: AdamW learning rate (after ``warmup_steps`` of linear warmup; constant afterwards).
        weight_decay: AdamW weight decay.
        margin: hinge margin on NLL (nats per query token).
        pointwise_weight: weight of the pointwise NLL(q|d+) term (1.0 = the paper).
        negatives_per_query: BM25 hard negatives per query and step.
        hard_pool: hard negatives are sampled from this many top-ranked non-relevant run documents.
        in_batch: also use the other queries' positives as negatives.
        grad_clip: max global gradient norm (0 = off).
        warmup_steps: linear LR warmup.
        seed: seeds data order, sampling and dropout.
        max_steps: stop after this many optimizer steps in total (None = no cap).
        max_train_queries: use at most this many training queries per epoch (a seeded sample; None = all).
        dev_depth: dev reranking candidates = each dev query's positives + its top ``dev_depth`` run documents.
        selection_metric: ``ndcg@10``, ``mrr@10`` (higher is better) or ``loss`` (dev loss, lower is better).
        eval_at_start: also evaluate the untrained module and zero-shot UPR on dev before training.
    """

    epochs: int = 2
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 0.0
    margin: float = 0.2
    pointwise_weight: float = 1.0
    negatives_per_query: int = 1
    hard_pool: int = 10
    in_batch: bool = True
    grad_clip: float = 1.0
    warmup_steps: int = 10
    seed: int = 0
    max_steps: int | None = None
    max_train_queries: int | None = None
    dev_depth: int = 20
    selection_metric: str = "ndcg@10"
    eval_at_start: bool = True

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "negatives_per_query", "hard_pool", "dev_depth"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("max_steps", "max_train_queries"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive integer or None, got {value!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr!r}")
        for name in ("weight_decay", "margin", "pointwise_weight", "grad_clip"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {self.warmup_steps!r}")
        if self.selection_metric not in SELECTION_METRICS:
            raise ValueError(f"selection_metric must be one of {SELECTION_METRICS}, got {self.selection_metric!r}")
        if not self.in_batch and self.negatives_per_query < 1:
            raise ValueError("need in-batch or hard negatives")


@dataclass
class TrainResult:
    """What :func:`train` did."""

    output_dir: Path
    best_dir: Path
    best_epoch: int
    history: list[dict[str, Any]] = field(default_factory=list)
    dev_baseline: dict[str, float] = field(default_factory=dict)
    train_seconds: float = 0.0


# ------------------------------------------------------------------------------------------------------------
# Metrics


def rank_metrics(scores: Mapping[str, float], relevant: set[str], k: int = 10) -> dict[str, float]:
    """MRR@k and binary nDCG@k of one query; ties broken by docid (the package-wide rule)."""
    ranked = sorted(scores, key=lambda d: (-scores[d], d))[:k]
    mrr = next((1.0 / (r + 1) for r, d in enumerate(ranked) if d in relevant), 0.0)
    dcg = sum(1.0 / math.log2(r + 2) for r, d in enumerate(ranked) if d in relevant)
    ideal = sum(1.0 / math.log2(r + 2) for r in range(min(k, len(relevant))))
    return {f"mrr@{k}": mrr, f"ndcg@{k}": dcg / ideal if ideal else 0.0}


def dev_candidates(example: TrainingExample, depth: int) -> list[str]:
    """The example's positives plus its top ``depth`` run documents, deduplicated, deterministic order."""
    out = list(example.positives)
    out += [d for d in example.candidates[:depth] if d not in set(example.positives)]
    return out


def evaluate_dev(scorer, dev: Sequence[TrainingExample], corpus: Mapping[str, Any], depth: int, margin: float,
                 pointwise_weight: float = 1.0, progress: bool = False) -> dict[str, float]:
    """Rerank each dev query's candidates; MRR@10, nDCG@10, and the dev loss from the same scores.

    The dev loss per query uses its first positive and its top-ranked non-relevant candidate, with the training
    loss formula, so it needs no extra forward passes.
    """
    pairs = [(ex, d) for ex in dev for d in dev_candidates(ex, depth)]
    scores = scorer.score([ex.query for ex, _ in pairs], [corpus[d] for _, d in pairs], progress=progress)
    per_query: dict[str, dict[str, float]] = {}
    for (ex, d), s in zip(pairs, scores):
        per_query.setdefault(ex.qid, {})[d] = s
    totals = {"mrr@10": 0.0, "ndcg@10": 0.0, "loss": 0.0}
    for ex in dev:
        sc = per_query[ex.qid]
        for key, value in rank_metrics(sc, set(ex.positives)).items():
            totals[key] += value
        neg = next((d for d in ex.negatives if d in sc), None)
        nll_pos = -sc[ex.positives[0]]
        hinge = max(0.0, nll_pos + sc[neg] + margin) if neg is not None else 0.0
        totals["loss"] += hinge + pointwise_weight * nll_pos
    return {k: v / len(dev) for k, v in totals.items()} | {"queries": len(dev), "pairs": len(pairs)}


def _better(metric: str, new: float, old: float | None) -> bool:
    if old is None:
        return True
    return new < old if metric == "loss" else new > old


# ------------------------------------------------------------------------------------------------------------
# Optimizer state (safetensors + JSON; no pickle)


def save_optimizer(optimizer, folder: Path) -> None:
    from safetensors.torch import save_file

    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for idx, entry in state["state"].items():
        for key, value in entry.items():
            name = f"state.{idx}.{key}"
            if hasattr(value, "detach"):
                tensors[name] = value.detach().cpu().contiguous()
            else:
                scalars[name] = value
    save_file(tensors, str(folder / OPTIMIZER_WEIGHTS))
    (folder / OPTIMIZER_JSON).write_text(json.dumps({"param_groups": state["param_groups"], "scalars": scalars},
                                                    indent=2, sort_keys=True), encoding="utf-8")


def load_optimizer(optimizer, folder: Path) -> None:
    from safetensors.torch import load_file

    meta = json.loads((folder / OPTIMIZER_JSON).read_text(encoding="utf-8"))
    tensors = load_file(str(folder / OPTIMIZER_WEIGHTS))
    state: dict[int, dict[str, Any]] = {}
    for name, value in list(tensors.items()) + list(meta["scalars"].items()):
        _, idx, key = name.split(".", 2)
        state.setdefault(int(idx), {})[key] = value
    groups = meta["param_groups"]
    for group in groups:
        if "betas" in group:
            group["betas"] = tuple(group["betas"])
    optimizer.load_state_dict({"state": state, "param_groups": groups})


# ------------------------------------------------------------------------------------------------------------
# The loop


def _epoch_queries(train_examples: Sequence[TrainingExample], config: TrainConfig, epoch: int) -> list[int]:
    rng = random.Random(f"{config.seed}-order-{epoch}")
    order = list(range(len(train_examples)))
    rng.shuffle(order)
    if config.max_train_queries is not None:
        order = order[:config.max_train_queries]
    return order


def _lr_at(step: int, config: TrainConfig) -> float:
    if config.warmup_steps and step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    return config.lr


def _write_state(output_dir: Path, state: dict) -> None:
    with atomic_write(output_dir / STATE_NAME) as out:
        out.write(json.dumps(state, indent=2, sort_keys=True) + "\n")


def read_trainer_state(output_dir: str | os.PathLike) -> dict | None:
    path = Path(output_dir) / STATE_NAME
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def _copy_dir_atomic(src: Path, dst: Path) -> None:
    """Copy a checkpoint folder (without optimizer state) to ``dst``, replacing it atomically."""
    tmp = dst.with_name(f".{dst.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp, ignore=shutil.ignore_patterns(OPTIMIZER_WEIGHTS, OPTIMIZER_JSON))
    replace_dir(tmp, dst)


def train(lm: "FrozenLM", module, qpeft_config: "QPeftConfig", scorer_config: "ScorerConfig",
          train_examples: Sequence[TrainingExample], dev_examples: Sequence[TrainingExample],
          corpus: Mapping[str, Any], config: TrainConfig, output_dir: str | os.PathLike, resume: bool = False,
          progress: bool = True, metadata: dict[str, Any] | None = None) -> TrainResult:
    """Train ``module`` (in place) and write per-epoch and best checkpoints under ``output_dir``.

    Args:
        lm: the frozen LM (never updated; only ``module``'s parameters go to the optimizer).
        module: a ``QPeftModule`` built for ``lm``.
        qpeft_config, scorer_config: saved into every checkpoint.
        train_examples, dev_examples: disjoint sets of :class:`TrainingExample` (see ``training.data``).
        corpus: docid -> Document for every docid the examples mention.
        config: hyperparameters.
        output_dir: where checkpoints go; must be empty or absent unless ``resume``.
        resume: continue after the last completed epoch recorded in ``output_dir``.
        progress: tqdm bars with the running loss.
        metadata: extra JSON saved in every checkpoint (e.g. ``{"training": {"command": ...}}``).

    Returns:
        A :class:`TrainResult`; ``best_dir`` is a loadable checkpoint.
    """
    import torch
    from tqdm.auto import tqdm

    from ..checkpoint import load_checkpoint, save_checkpoint
    from ..scoring import QueryLikelihoodScorer

    if not train_examples:
        raise InputError("no training examples")
    if not dev_examples:
        raise InputError("no dev examples: checkpoint selection needs a dev set carved from the training queries")
    overlap = {e.qid for e in train_examples} & {e.qid for e in dev_examples}
    if overlap:
        raise InputError(f"{len(overlap)} queries are both in train and dev (e.g. {sorted(overlap)[0]})")
    output_dir = Path(output_dir)
    state = read_trainer_state(output_dir)
    if state is not None and not resume:
        raise InputError(f"{output_dir} already holds a training run; pass --resume to continue it or choose "
                         f"another --output", str(output_dir))
    output_dir.mkdir(parents=True, exist_ok=True)

    params = [p for p in module.parameters() if p.requires_grad]
    lm_params = {id(p) for p in lm.model.parameters()}
    if any(id(p) in lm_params for p in params):
        raise ModelError("the hint module shares parameters with the LM; the LM must stay frozen")
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    scorer = QueryLikelihoodScorer(lm, scorer_config, hint_module=module)
    train_meta = {"train_config": asdict(config), "train_queries": len(train_examples),
                  "dev_queries": len(dev_examples), "dev_qids": [e.qid for e in dev_examples]}

    start_epoch, global_step = 1, 0
    if state is not None and state.get("completed_epochs", 0) > 0:
        last = state["completed_epochs"]
        folder = output_dir / f"epoch-{last}"
        loaded, _, _, _ = load_checkpoint(folder, lm)
        module.load_state_dict(loaded.state_dict())
        load_optimizer(optimizer, folder)
        start_epoch, global_step = last + 1, state["global_step"]
        logger.info("resuming after epoch %d (step %d) from %s", last, global_step, folder)
    else:
        state = {"completed_epochs": 0, "global_step": 0, "history": [], "best_epoch": None, "best_value": None,
                 "dev_baseline": {}, "dev_untrained": {}, "train_seconds": 0.0,
                 "selection_metric": config.selection_metric}
        if config.eval_at_start:
            t0 = time.time()
            upr = QueryLikelihoodScorer(lm, scorer_config)
            state["dev_baseline"] = evaluate_dev(upr, dev_examples, corpus, config.dev_depth, config.margin,
                                                 config.pointwise_weight, progress=progress)
            state["dev_untrained"] = evaluate_dev(scorer, dev_examples, corpus, config.dev_depth, config.margin,
                                                  config.pointwise_weight, progress=progress)
            state["dev_eval_seconds_at_start"] = time.time() - t0
            logger.info("dev zero-shot UPR: %s", _fmt(state["dev_baseline"]))
            logger.info("dev untrained %s: %s", qpeft_config.variant, _fmt(state["dev_untrained"]))
        _write_state(output_dir, state)

    for epoch in range(start_epoch, config.epochs + 1):
        if config.max_steps is not None and global_step >= config.max_steps:
            break
        t_epoch = time.time()
        torch.manual_seed(config.seed * 1000 + epoch)  # dropout
        rng = random.Random(f"{config.seed}-sample-{epoch}")
        order = _epoch_queries(train_examples, config, epoch)
        steps = [order[i:i + config.batch_size] for i in range(0, len(order), config.batch_size)]
        if config.max_steps is not None:
            steps = steps[:config.max_steps - global_step]
        module.train()
        sums = {"loss": 0.0, "hinge": 0.0, "nll_pos": 0.0, "pair_acc": 0.0}
        bar = tqdm(steps, desc=f"epoch {epoch}/{config.epochs}", unit="step", disable=not progress,
                   dynamic_ncols=True)
        for n, idx in enumerate(bar, start=1):
            batch = [train_examples[i] for i in idx]
            rows, pairs = sample_step(batch, rng, config.negatives_per_query, config.in_batch, config.hard_pool)
            if not pairs:
                continue
            encoded = scorer.encode([batch[i].query for i, _ in rows], [corpus[d] for _, d in rows])
            nll = -scorer.forward(encoded)
            where = {row: k for k, row in enumerate(rows)}
            pos = nll[[where[(p.query_index, p.positive)] for p in pairs]]
            neg = nll[[where[(p.query_index, p.negative)] for p in pairs]]
            loss, stats = qpeft_loss(pos, neg, config.margin, config.pointwise_weight)
            for group in optimizer.param_groups:
                group["lr"] = _lr_at(global_step, config)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip:
                torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
            optimizer.step()
            global_step += 1
            for key in sums:
                sums[key] += stats[key]
            bar.set_postfix(loss=f"{sums['loss'] / n:.4f}", acc=f"{sums['pair_acc'] / n:.3f}")
        bar.close()
        train_seconds = time.time() - t_epoch
        module.eval()
        t_dev = time.time()
        dev = evaluate_dev(scorer, dev_examples, corpus, config.dev_depth, config.margin, config.pointwise_weight,
                           progress=progress)
        nsteps = max(1, len(steps))
        record = {"epoch": epoch, "steps": len(steps), "global_step": global_step,
                  "train": {k: v / nsteps for k, v in sums.items()}, "dev": dev,
                  "train_seconds": train_seconds, "dev_seconds": time.time() - t_dev}
        logger.info("epoch %d: train loss %.4f acc %.3f | dev %s | %.0f s train, %.0f s dev", epoch,
                    record["train"]["loss"], record["train"]["pair_acc"], _fmt(dev), train_seconds,
                    record["dev_seconds"])
        value = dev[config.selection_metric]
        improved = _better(config.selection_metric, value, state["best_value"])
        folder = output_dir / f"epoch-{epoch}"
        extra = dict(metadata or {})
        extra["training"] = {**(extra.get("training") or {}), **train_meta, "epoch": epoch,
                             "global_step": global_step}
        extra["dev_metrics"] = {k: dev[k] for k in ("ndcg@10", "mrr@10", "loss")}
        extra["dev_baseline_upr"] = {k: state["dev_baseline"][k] for k in ("ndcg@10", "mrr@10", "loss")} \
            if state["dev_baseline"] else {}
        save_checkpoint(folder, module, qpeft_config, lm, scorer_config, extra)
        save_optimizer(optimizer, folder)
        state["history"].append(record)
        state["completed_epochs"], state["global_step"] = epoch, global_step
        state["train_seconds"] = state.get("train_seconds", 0.0) + train_seconds
        if improved:
            state["best_epoch"], state["best_value"] = epoch, value
            _copy_dir_atomic(folder, output_dir / "best")
        _write_state(output_dir, state)

    if state["best_epoch"] is None:
        raise InputError("training ran no epoch (max_steps reached before the first epoch?)")
    return TrainResult(output_dir=output_dir, best_dir=output_dir / "best", best_epoch=state["best_epoch"],
                       history=state["history"], dev_baseline=state["dev_baseline"],
                       train_seconds=state["train_seconds"])


def _fmt(metrics: Mapping[str, float]) -> str:
    return " ".join(f"{k}={v:.4f}" for k, v in metrics.items() if isinstance(v, float))

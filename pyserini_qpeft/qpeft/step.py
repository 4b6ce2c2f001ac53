"""One Q-PEFT training step: sample (query, positive, negative) pairs, score them with the frozen LM + hint module,
apply the hinge + pointwise loss; plus the dev ranking and checkpoint I/O the shared loop needs.

The loop itself (data order, AdamW, LR schedule, resume, ``epoch-N/`` + ``best/``, early stopping, dev metrics)
is :func:`pyserini_qpeft.training.trainer.fit`; :func:`train_qpeft` wires the two together.
"""
from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from ..errors import InputError, ModelError
from ..training.config import TrainConfig
from ..training.data import TrainingExample
from .loss import qpeft_dev_loss, qpeft_listwise_loss, qpeft_loss

if TYPE_CHECKING:
    import torch

    from ..lm.backbone import FrozenLM
    from ..lm.memo import PrefixMemo
    from ..lm.scoring import ScorerConfig
    from ..training.parallel import DataParallel
    from ..training.trainer import TrainResult
    from ..types import Run
    from .module import QPeftConfig

DEV_METRICS = ("ndcg@10", "mrr@10")
SELECTION_METRICS = ("ndcg@10", "mrr@10", "loss")
# What each dev query's in-training ranking holds: "positives+run" = its positives + the run's top dev_depth (the
# recorded measure: it also rewards lifting positives the first stage never retrieved); "run" = the run's top
# dev_depth only, the footing of a test rerank at that depth.
DEV_POOLS = ("positives+run", "run")
# The training loss (qpeft.loss): the papers' pairwise hinge, or a per-query softmax over the step's negatives.
LOSSES = ("hinge", "listwise")


@dataclass(frozen=True)
class QPeftTrainConfig(TrainConfig):
    """Q-PEFT hyperparameters (shared ones in :class:`~pyserini_qpeft.training.config.TrainConfig`, whose
    defaults are Q-PEFT's: 2 epochs, batch 8, lr 1e-3 with 10 warmup steps then constant, seed 0).

    Args:
        loss: ``LOSSES``: ``hinge`` (the papers') or ``listwise`` (beyond them; see :mod:`.loss`).
        margin: hinge margin on NLL (nats per query token; ``hinge`` only).
        temperature: the listwise softmax's logits are ``-NLL / temperature`` (``listwise`` only).
        pointwise_weight: weight of the pointwise NLL(q|d+) term (1.0 = the paper).
        negatives_per_query: hard negatives per query and step.
        hard_pool: hard negatives are sampled from this many top-ranked run negatives.
        in_batch: also use the other queries' positives as negatives.
        dev_depth: dev reranking candidates = each dev query's top ``dev_depth`` run documents (+ its positives).
        dev_pool: ``DEV_POOLS``: whether the dev ranking adds each query's positives to its run candidates.
        negative_policy: which run documents are negatives (``training.data.NEGATIVE_POLICIES``).
        first_stage_weight: ``lambda`` >= 0 (beyond the papers; ``hinge`` only): the hinge compares
            ``-NLL + lambda * z(first stage)`` (nats per first-stage z unit; :mod:`.first_stage`), 0 = the LM's alone.
        first_stage_depth: the first-stage z-scores are standardised over each query's top this many hits (the
            rerank depth the reranker will be interpolated at).
    """

    loss: str = "hinge"
    margin: float = 0.2
    temperature: float = 1.0
    pointwise_weight: float = 1.0
    negatives_per_query: int = 1
    hard_pool: int = 10
    in_batch: bool = True
    dev_depth: int = 20
    dev_pool: str = "positives+run"
    negative_policy: str = "non-relevant"
    first_stage_weight: float = 0.0
    first_stage_depth: int = 20

    def __post_init__(self) -> None:
        super().__post_init__()
        from ..training.config import positive_int

        for name in ("negatives_per_query", "hard_pool", "dev_depth", "first_stage_depth"):
            positive_int(name, getattr(self, name))
        for name in ("margin", "pointwise_weight", "first_stage_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.first_stage_weight and self.loss != "hinge":
            raise ValueError("first_stage_weight needs the hinge loss")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature!r}")
        if self.dev_pool not in DEV_POOLS:
            raise ValueError(f"dev_pool must be one of {DEV_POOLS}, got {self.dev_pool!r}")
        if self.selection_metric not in SELECTION_METRICS:
            raise ValueError(f"selection_metric must be one of {SELECTION_METRICS}, got {self.selection_metric!r}")
        from ..training.data import NEGATIVE_POLICIES

        if self.negative_policy not in NEGATIVE_POLICIES:
            raise ValueError(f"negative_policy must be one of {NEGATIVE_POLICIES}, got {self.negative_policy!r}")


@dataclass(frozen=True)
class Pair:
    """One (query, positive, negative) comparison; ``kind`` is ``hard`` or ``in_batch``."""

    query_index: int
    positive: str
    negative: str
    kind: str


def sample_step(batch: Sequence[TrainingExample], rng: random.Random, negatives_per_query: int = 1,
                in_batch: bool = True, hard_pool: int = 10) -> tuple[list[tuple[int, str]], list[Pair]]:
    """The documents to score and the pairs to compare for one step.

    Per query: one positive sampled from its positives; ``negatives_per_query`` hard negatives sampled without
    replacement from its top ``hard_pool`` run negatives; with ``in_batch``, the other queries' sampled positives
    as extra negatives (skipping any that are judged relevant for this query).

    Returns:
        ``(rows, pairs)``: ``rows`` are distinct (query index, docid) to score; ``pairs`` refer to them.
    """
    chosen_pos = [rng.choice(ex.positives) for ex in batch]
    rows: dict[tuple[int, str], None] = {}
    pairs: list[Pair] = []
    for i, ex in enumerate(batch):
        pos = chosen_pos[i]
        rows[(i, pos)] = None
        pool = list(ex.negatives[:hard_pool])
        for neg in rng.sample(pool, min(negatives_per_query, len(pool))):
            rows[(i, neg)] = None
            pairs.append(Pair(i, pos, neg, "hard"))
        if in_batch:
            relevant = set(ex.positives)
            for j, other in enumerate(chosen_pos):
                if j != i and other not in relevant and other != pos:
                    rows[(i, other)] = None
                    pairs.append(Pair(i, pos, other, "in_batch"))
    return list(rows), pairs


def _listwise_view(nll: "torch.Tensor", pairs: Sequence[Pair], where: Mapping[tuple[int, str], int]
                   ) -> tuple["torch.Tensor", "torch.Tensor", "torch.Tensor"]:
    """``nll [rows]`` regrouped per (query, positive) of ``pairs``: ``([G] positive NLL, [G, M] negative NLL padded
    with the positive's, [G, M] mask of real negatives)``, groups in first-seen order, negatives in pair order."""
    import torch

    groups: dict[tuple[int, str], list[int]] = {}
    for p in pairs:
        groups.setdefault((p.query_index, p.positive), []).append(where[(p.query_index, p.negative)])
    pos_rows = [where[key] for key in groups]
    width = max(len(negs) for negs in groups.values())
    neg_rows = [negs + [where[key]] * (width - len(negs)) for key, negs in groups.items()]
    mask = torch.tensor([[k < len(negs) for k in range(width)] for negs in groups.values()], device=nll.device)
    return nll[pos_rows], nll[torch.tensor(neg_rows, device=nll.device)], mask


def dev_candidates(example: TrainingExample, depth: int, pool: str = "positives+run") -> list[str]:
    """The example's top ``depth`` run documents, after its positives when ``pool`` is "positives+run";
    deduplicated, deterministic order."""
    if pool == "run":
        return list(example.candidates[:depth])
    out = list(example.positives)
    out += [d for d in example.candidates[:depth] if d not in set(example.positives)]
    return out


class QPeftStep:
    """The trainable hint module in front of a frozen LM (see :class:`~pyserini_qpeft.training.trainer.TrainingStep`).

    Args:
        lm: the frozen LM (never updated).
        module: a ``QPeftModule`` built for ``lm`` by ``qpeft.module.build_module``.
        qpeft_config, scorer_config: saved into every checkpoint.
        corpus: docid -> Document for every docid the examples mention.
        config: the step's hyperparameters (margin, pointwise weight, negatives, dev depth).
        parallel: data-parallel place: this rank scores its slice of each batch's rows and of the dev pairs.
        prefix_memo: keeps the dev pairs' prefix KV caches between dev evaluations (they do not depend on the
            module); None = a memo of a quarter of the free memory (``PrefixMemo(0)``: none).
        first_stage: the training queries' first-stage run (the negatives run); with ``config.first_stage_weight``
            > 0 its z-scores (:func:`.first_stage.first_stage_zscores` at ``config.first_stage_depth``) enter the hinge.
    """

    dev_metrics = DEV_METRICS

    def __init__(self, lm: "FrozenLM", module, qpeft_config: "QPeftConfig", scorer_config: "ScorerConfig",
                 corpus: Mapping[str, Any], config: QPeftTrainConfig, parallel: "DataParallel | None" = None,
                 prefix_memo: "PrefixMemo | None" = None,
                 first_stage: "Run | None" = None):
        from ..lm.memo import PrefixMemo
        from ..lm.scoring import QueryLikelihoodScorer
        from ..training.parallel import SINGLE

        self.lm, self.module, self.qpeft_config, self.scorer_config = lm, module, qpeft_config, scorer_config
        self.corpus, self.config, self.parallel = corpus, config, parallel or SINGLE
        self.first_stage = None
        if config.first_stage_weight:
            if first_stage is None:
                raise ValueError("first_stage_weight > 0 needs the first-stage run")
            from .first_stage import first_stage_zscores

            self.first_stage = first_stage_zscores(first_stage, config.first_stage_depth)
        # what --resume must find unchanged: the module and the prompt it learns to serve (not the batch sizes)
        prompt = {k: v for k, v in scorer_config.to_dict().items()
                  if k not in ("batch_size", "prefix_batch_size", "cache_prefixes")}
        # ... and the precision the LM computes in (a resume on another CPU may resolve --dtype auto otherwise)
        from ..training.resume import lm_dtype

        self.identity = {"qpeft_config": qpeft_config.to_dict(), "scorer_config": prompt, "lm_dtype": lm_dtype(lm)}
        params = [p for p in module.parameters() if p.requires_grad]
        lm_params = {id(p) for p in lm.model.parameters()}
        if any(id(p) in lm_params for p in params):
            raise ModelError("the hint module shares parameters with the LM; the LM must stay frozen")
        self._params = params
        # the dev pairs' prefix caches, kept between dev evaluations (training steps run their own prefixes)
        self.prefix_memo = prefix_memo if prefix_memo is not None else PrefixMemo.for_device(lm.device)
        self.scorer = QueryLikelihoodScorer(lm, scorer_config, hint_module=module, prefix_memo=self.prefix_memo)

    def parameters(self) -> list["torch.nn.Parameter"]:
        return self._params

    def train_mode(self, training: bool) -> None:
        self.module.train(training)

    def step(self, batch: Sequence[TrainingExample], rng: random.Random
             ) -> tuple["torch.Tensor", dict[str, float]] | None:
        """Loss over the batch's pairs: NLL ``[rows]`` from one scorer forward (this rank's slice of the rows,
        gathered over ranks), indexed to ``[P]`` per side (hinge) or to ``[G]`` positives and ``[G, M]`` negatives
        per (query, positive) (listwise)."""
        import torch

        cfg = self.config
        rows, pairs = sample_step(batch, rng, cfg.negatives_per_query, cfg.in_batch, cfg.hard_pool)
        if not pairs:
            return None
        mine = [rows[k] for k in self.parallel.shard(len(rows))]
        if mine:
            encoded = self.scorer.encode([batch[i].query for i, _ in mine], [self.corpus[d] for _, d in mine])
            local = -self.scorer.forward(encoded)
        else:
            local = torch.zeros(0, device=self.lm.device)
        nll = self.parallel.gather_rows(local, len(rows))
        where = {row: k for k, row in enumerate(rows)}
        if cfg.loss == "listwise":
            return qpeft_listwise_loss(*_listwise_view(nll, pairs, where), cfg.temperature, cfg.pointwise_weight)
        pos = nll[[where[(p.query_index, p.positive)] for p in pairs]]
        neg = nll[[where[(p.query_index, p.negative)] for p in pairs]]
        prior = None
        if cfg.first_stage_weight:
            z = [self.first_stage[batch[p.query_index].qid] for p in pairs]
            prior = torch.tensor([cfg.first_stage_weight * (s(p.positive) - s(p.negative)) for s, p in zip(z, pairs)],
                                 dtype=nll.dtype, device=nll.device)
        return qpeft_loss(pos, neg, cfg.margin, cfg.pointwise_weight, prior)

    def _rank(self, scorer, dev: Sequence[TrainingExample], progress: bool) -> "Run":
        from ..types import Hit, Run

        pairs = [(ex, d) for ex in dev for d in dev_candidates(ex, self.config.dev_depth, self.config.dev_pool)]
        mine = [pairs[k] for k in self.parallel.shard(len(pairs))]
        scores = scorer.score([ex.query for ex, _ in mine], [self.corpus[d] for _, d in mine], progress=progress)
        scores = self.parallel.gather_list(scores)
        hits: dict[str, list[Hit]] = {}
        for (ex, d), s in zip(pairs, scores):
            hits.setdefault(ex.qid, []).append(Hit(d, s))
        return Run(hits, tag="qpeft-dev")

    def begin_epoch(self, epoch: int) -> None:
        """Q-PEFT samples the same way in every epoch."""

    def text_fingerprint(self, examples: Sequence[TrainingExample]) -> str:
        """sha256 of the text of every document ``examples`` name (positives, negatives, dev candidates): a
        ``--resume`` on a corpus whose texts changed since would train on both (the trainer refuses it)."""
        import hashlib

        digest = hashlib.sha256()
        for docid in sorted({d for e in examples for d in (*e.positives, *e.negatives, *e.candidates)}):
            doc = self.corpus.get(docid)
            text = doc.contents() if hasattr(doc, "contents") else str(doc)
            digest.update(f"{docid}\t{text}\n".encode("utf-8", "surrogatepass"))
        return digest.hexdigest()[:16]

    def dev_run(self, dev: Sequence[TrainingExample], progress: bool = False) -> "Run":
        """Rerank each dev query's top ``dev_depth`` run documents (+ its positives) with the current module."""
        return self._rank(self.scorer, dev, progress)

    def baseline_run(self, dev: Sequence[TrainingExample], progress: bool = False) -> "Run":
        """The same candidates ranked by zero-shot UPR (the frozen LM without hints)."""
        from ..lm.scoring import QueryLikelihoodScorer

        return self._rank(QueryLikelihoodScorer(self.lm, self.scorer_config, prefix_memo=self.prefix_memo), dev,
                          progress)

    def dev_extra(self, dev: Sequence[TrainingExample], run: "Run") -> dict[str, float]:
        """Dev loss (``qpeft_dev_loss``) and the number of scored pairs."""
        return {"loss": qpeft_dev_loss(run, dev, self.config.margin, self.config.pointwise_weight,
                                       self.config.loss, self.config.temperature),
                "pairs": sum(len(run[ex.qid]) for ex in dev)}

    def save(self, folder: Path, extra: dict[str, Any]) -> None:
        from .checkpoint import save_checkpoint

        extra = dict(extra)
        baseline = extra.pop("dev_baseline", {})
        extra["dev_baseline_upr"] = baseline
        save_checkpoint(folder, self.module, self.qpeft_config, self.lm, self.scorer_config, extra)

    def load(self, folder: Path) -> None:
        from .checkpoint import load_checkpoint

        loaded, config, _, _ = load_checkpoint(folder, self.lm)
        if config.to_dict() != self.qpeft_config.to_dict():
            raise InputError(f"--resume with other module settings than the run in {folder.parent}", str(folder))
        self.module.load_state_dict(loaded.state_dict())


def train_qpeft(lm: "FrozenLM", module, qpeft_config: "QPeftConfig", scorer_config: "ScorerConfig",
                train_examples: Sequence[TrainingExample], dev_examples: Sequence[TrainingExample],
                corpus: Mapping[str, Any], config: QPeftTrainConfig, output_dir: str | os.PathLike,
                resume: bool = False, progress: bool = True, metadata: dict[str, Any] | None = None,
                parallel: "DataParallel | None" = None, prefix_memo: "PrefixMemo | None" = None,
                first_stage: "Run | None" = None, on_finish: "Callable[[Path], None] | None" = None) -> "TrainResult":
    """Train ``module`` (in place) with the shared loop; ``output_dir/best`` is what reranking loads.

    Args:
        lm: the frozen LM (only ``module``'s parameters go to the optimizer).
        module, qpeft_config, scorer_config: the hint module and the settings saved with it.
        train_examples, dev_examples: disjoint (``training.data.split_dev``); a dev set is required.
        corpus: docid -> Document for every docid the examples mention.
        config: hyperparameters.
        output_dir: where ``epoch-N/``, ``best/`` and ``trainer_state.json`` go.
        resume: continue after the last completed epoch in ``output_dir``.
        progress: tqdm bars.
        metadata: extra JSON saved in every checkpoint (e.g. ``{"training": {"command": ...}}``).
        parallel: data-parallel place (``training.parallel``); default one process.
        prefix_memo: dev prefix caches kept between dev evaluations (see :class:`QPeftStep`); pass one memo to
            several trainings of the same LM and dev pairs (a sweep) to share it.
        first_stage: the training queries' first-stage run, for ``config.first_stage_weight`` > 0 (see
            :class:`QPeftStep`).
        on_finish: run on ``best/`` before ``training_done.json`` is written (:func:`~pyserini_qpeft.training.
            trainer.fit`).
    """
    from ..training.trainer import fit

    if not dev_examples:
        raise InputError("no dev examples: checkpoint selection needs a dev set carved from the training queries")
    if qpeft_config.variant == "prompt" and scorer_config.hint_passage_tokens is not None:
        raise ValueError("hint_passage_tokens is for a hint module; the prompt variant's vectors read no passage")
    step = QPeftStep(lm, module, qpeft_config, scorer_config, corpus, config, parallel, prefix_memo, first_stage)
    return fit(step, train_examples, dev_examples, config, output_dir, resume=resume, progress=progress,
               metadata=metadata, on_finish=on_finish)

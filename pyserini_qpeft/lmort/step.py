"""One LMORT training step: InfoNCE of tuner embeddings over cached frozen-LM states, with in-batch and BM25 hard
negatives; plus the dev ranking and checkpoint I/O the shared loop (:func:`pyserini_qpeft.training.trainer.fit`)
needs.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from ..training.config import TrainConfig
from ..training.data import NEGATIVE_POLICIES, TrainingExample
from .cache import DOC_KEY, PSEUDO_KEY, QUERY_KEY, REST_KEY, StateCache, encode_cached
from .pseudo import POSITIVES

if TYPE_CHECKING:
    import torch

    from ..lm.backbone import FrozenLM
    from ..training.parallel import DataParallel
    from ..types import Run
    from .tuner import LMORTConfig

DEV_METRICS = ("mrr@10", "recall@10", "ndcg@10")
DEV_DEPTH = 100  # hits kept per dev query in the dev run (the metrics look at the top 10)


@dataclass(frozen=True)
class LMORTTrainConfig(TrainConfig):
    """LMORT hyperparameters; shared fields as :class:`~pyserini_qpeft.training.config.TrainConfig`, with LMORT's
    defaults (8 epochs, batch 32, lr 5e-4, weight decay 0.01, 10 % warmup then linear decay, seed 13,
    selection on dev MRR@10, no evaluation before training).

    Args:
        hard_negatives: run negatives per query and step (besides in-batch negatives); 3, chosen among 0 / 1 / 3 on
            SciFact dev queries (the ``full`` profile's recipe; 1 until 2026-12-05).
        negative_depth: hard negatives are drawn from this many top-ranked run negatives (20, ``full``'s; 30 until
            2026-12-05).
        cache_batch_size: texts per LM forward while caching layer states.
        negative_policy: which run documents are negatives (``training.data.NEGATIVE_POLICIES``).
        pseudo_queries: pseudo pairs added to every step (:mod:`.pseudo`: a sentence of a corpus document as the
            query, the document as its positive, drawn over the whole corpus; every query of the step sees their
            documents as in-batch negatives); 0 = none (the paper's training).
        pseudo_positive: a pseudo pair's positive (``.pseudo.POSITIVES``): ``document`` (the whole document) or
            ``rest`` (the document without the query's sentence).
        pseudo_epochs: pseudo pairs join the steps of the first this many epochs only (a warm-up on the corpus,
            then the training queries alone); None = every epoch.
    """

    epochs: int = 8
    batch_size: int = 32
    lr: float = 5e-4
    weight_decay: float = 0.01
    lr_schedule: str = "linear"
    warmup_steps: int = 0
    warmup_ratio: float = 0.1
    seed: int = 13
    selection_metric: str = "mrr@10"
    eval_at_start: bool = False
    hard_negatives: int = 3
    negative_depth: int = 20
    cache_batch_size: int = 16
    negative_policy: str = "unjudged"
    pseudo_queries: int = 0
    pseudo_positive: str = "document"
    pseudo_epochs: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        from ..training.config import positive_int

        for name in ("negative_depth", "cache_batch_size"):
            positive_int(name, getattr(self, name))
        for name in ("hard_negatives", "pseudo_queries"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
        if self.selection_metric == "loss":
            raise ValueError("selection_metric 'loss' (dev loss) is Q-PEFT's; LMORT selects on a dev metric or "
                             "'train_loss'")
        if self.pseudo_epochs is not None:
            positive_int("pseudo_epochs", self.pseudo_epochs)
        if self.pseudo_positive not in POSITIVES:
            raise ValueError(f"pseudo_positive must be one of {POSITIVES}, got {self.pseudo_positive!r}")
        if self.negative_policy not in NEGATIVE_POLICIES:
            raise ValueError(f"negative_policy must be one of {NEGATIVE_POLICIES}, got {self.negative_policy!r}")


def info_nce(q: "torch.Tensor", d: "torch.Tensor", targets: "torch.Tensor", invalid: "torch.Tensor",
             temperature: float) -> "torch.Tensor":
    """InfoNCE: ``q`` ``[B, D]`` against all docs ``d`` ``[M, D]``; ``targets`` ``[B]`` index the positive;
    ``invalid`` ``[B, M]`` masks other relevant docs of the same query (false negatives)."""
    import torch

    logits = (q @ d.T) / temperature
    logits = logits.masked_fill(invalid, torch.finfo(logits.dtype).min)
    return torch.nn.functional.cross_entropy(logits, targets)


class LMORTStep:
    """The LMORT tuner over a :class:`~.cache.StateCache` (see :class:`~pyserini_qpeft.training.trainer.TrainingStep`).

    Args:
        lm: the frozen LM (its identity goes into checkpoints; it is not run during training).
        tuner: an ``LMORTTuner`` for ``config``.
        config: the tuner's shape and InfoNCE temperature.
        cache: holds ``q:<qid>`` for every example and ``d:<docid>`` for every document the examples use.
        train_config: sampling settings (hard negatives, negative depth).
        dev_pool: docids the dev queries are ranked against (the dev examples' positives and hard negatives).
        meta: extra JSON for every checkpoint (``lm_model``, dataset, split, negatives run, pool sizes).
        parallel: data-parallel place: this rank runs the tuner on its slice of each batch's queries and documents.
        pseudo_ids: docids with a cached pseudo-query (``p:<docid>``) and positive (``d:<docid>``, or ``r:<docid>``
            for ``pseudo_positive="rest"``), drawn from when ``train_config.pseudo_queries`` > 0.
    """

    dev_metrics = DEV_METRICS

    def __init__(self, lm: "FrozenLM", tuner, config: "LMORTConfig", cache: StateCache,
                 train_config: LMORTTrainConfig, dev_pool: Sequence[str], meta: dict[str, Any] | None = None,
                 parallel: "DataParallel | None" = None, pseudo_ids: Sequence[str] = ()):
        from ..training.parallel import SINGLE

        self.lm, self.tuner, self.config, self.cache = lm, tuner, config, cache
        self.parallel = parallel or SINGLE
        self.train_config, self.dev_pool, self.meta = train_config, list(dev_pool), dict(meta or {})
        self.pseudo_ids = list(pseudo_ids)
        self.epoch = 1
        from ..training.resume import lm_dtype

        self.identity = {"lmort_config": config.to_dict(), "lm_dtype": lm_dtype(lm)}

    def parameters(self) -> list["torch.nn.Parameter"]:
        return list(self.tuner.parameters())

    def train_mode(self, training: bool) -> None:
        self.tuner.train(training)

    def begin_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _pseudo_active(self) -> bool:
        """Whether this epoch's steps draw pseudo pairs (``pseudo_queries`` > 0, within ``pseudo_epochs``)."""
        last = self.train_config.pseudo_epochs
        return bool(self.pseudo_ids and self.train_config.pseudo_queries) and (last is None or self.epoch <= last)

    def step(self, batch: Sequence[TrainingExample], rng: random.Random) -> tuple["torch.Tensor", dict[str, float]]:
        """Per query: a sampled positive + ``hard_negatives`` sampled run negatives, then ``pseudo_queries`` pseudo
        pairs (distinct documents; only in the first ``pseudo_epochs`` epochs when set); every query scores all the
        batch's distinct texts ``[B + P, M]``, other positives of the same query (and a positive's other form, ``d:``
        or ``r:``, of the same document) masked out."""
        import torch

        docs: list[str] = []  # state-cache keys
        targets = []
        for e in batch:
            targets.append(len(docs))
            docs.append(f"{DOC_KEY}{rng.choice(e.positives)}")
            pool_negs = list(e.negatives[:self.train_config.negative_depth])
            if pool_negs and self.train_config.hard_negatives:
                docs.extend(f"{DOC_KEY}{d}" for d in
                            rng.sample(pool_negs, min(self.train_config.hard_negatives, len(pool_negs))))
        pseudo = []
        if self._pseudo_active():
            pseudo = rng.sample(self.pseudo_ids, min(self.train_config.pseudo_queries, len(self.pseudo_ids)))
        prefix = REST_KEY if self.train_config.pseudo_positive == "rest" else DOC_KEY
        for docid in pseudo:
            targets.append(len(docs))
            docs.append(f"{prefix}{docid}")
        # The same doc may appear twice in a batch; keep one copy so it is not its own negative.
        unique = list(dict.fromkeys(docs))
        where = {d: i for i, d in enumerate(unique)}
        target_idx = torch.tensor([where[docs[t]] for t in targets])
        invalid = torch.zeros(len(targets), len(unique), dtype=torch.bool)
        relevant = [e.positives for e in batch] + [(docid,) for docid in pseudo]
        for row, positives in enumerate(relevant):
            for pos in positives:
                for key in (f"{DOC_KEY}{pos}", f"{REST_KEY}{pos}"):
                    if key in where and where[key] != int(target_idx[row]):
                        invalid[row, where[key]] = True
        q = self._embed([f"{QUERY_KEY}{e.qid}" for e in batch] + [f"{PSEUDO_KEY}{d}" for d in pseudo])
        d = self._embed(unique)
        loss = info_nce(q, d, target_idx, invalid, self.config.temperature)
        return loss, {"loss": float(loss.detach())}

    def _embed(self, keys: Sequence[str]) -> "torch.Tensor":
        """Tuner embeddings ``[len(keys), D]``: this rank's slice computed (with gradients), the rest gathered."""
        import torch

        mine = [keys[k] for k in self.parallel.shard(len(keys))]
        if mine:
            local = self.tuner(*self.cache.batch(mine))
        else:
            local = torch.zeros(0, self.config.embedding_dim(self.tuner.hidden_size))
        return self.parallel.gather_rows(local, len(keys))

    def dev_run(self, dev: Sequence[TrainingExample], progress: bool = False) -> "Run":
        """Each dev query's top :data:`DEV_DEPTH` documents of the dev pool by inner product, tuner in eval mode."""
        import torch

        from ..types import Hit, Run

        was_training = self.tuner.training
        self.tuner.eval()
        docs = encode_cached(self.tuner, self.cache, [f"{DOC_KEY}{d}" for d in self.dev_pool])
        queries = encode_cached(self.tuner, self.cache, [f"{QUERY_KEY}{e.qid}" for e in dev])
        self.tuner.train(was_training)
        top = torch.topk(queries @ docs.T, k=min(DEV_DEPTH, len(self.dev_pool)), dim=1)
        return Run({e.qid: [Hit(self.dev_pool[i], float(s)) for s, i in zip(scores, idx)]
                    for e, scores, idx in zip(dev, top.values.tolist(), top.indices.tolist())}, tag="lmort-dev")

    def baseline_run(self, dev: Sequence[TrainingExample], progress: bool = False) -> None:
        return None

    def dev_extra(self, dev: Sequence[TrainingExample], run: "Run") -> dict[str, float]:
        return {}

    def save(self, folder: Path, extra: dict[str, Any]) -> None:
        from .tuner import save_lmort

        save_lmort(folder, self.tuner, self.config, self.lm.identity(), extra={**self.meta, **extra})

    def load(self, folder: Path) -> None:
        from safetensors.torch import load_file

        from .tuner import WEIGHTS_NAME, read_lmort_meta

        read_lmort_meta(folder)
        self.tuner.load_state_dict(load_file(str(Path(folder) / WEIGHTS_NAME)))

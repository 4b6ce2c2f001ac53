"""The optimisation settings every trainer shares, and the learning-rate schedule.

Each method subclasses :class:`TrainConfig` to add its own knobs and to set its defaults
(``qpeft.step.QPeftTrainConfig``, ``lmort.step.LMORTTrainConfig``); the CLI takes its option defaults from those
dataclass fields, so a default lives in exactly one place.
"""
from __future__ import annotations

import math
from dataclasses import MISSING, asdict, dataclass, fields
from typing import Any

from ..errors import InputError

LR_SCHEDULES = ("constant", "linear")
LOWER_IS_BETTER = ("loss", "train_loss")


@dataclass(frozen=True)
class TrainConfig:
    """Shared training hyperparameters.

    Args:
        epochs: passes over the training queries.
        batch_size: queries per optimizer step.
        lr: AdamW peak learning rate.
        weight_decay: AdamW weight decay.
        grad_clip: max global gradient norm (0 = off).
        lr_schedule: after warmup, ``constant`` or ``linear`` decay to 0 at the last planned step.
        warmup_steps: linear warmup over this many steps (used when ``warmup_ratio`` is 0).
        warmup_ratio: warmup over this share of the planned steps instead (then ``warmup_steps`` must be 0).
        seed: seeds the dev split (unless ``dev_seed`` is set), the initialisation, data order, sampling and dropout.
        dev_seed: seeds only the dev split (None = ``seed``), so that runs with different seeds can hold out the
            same dev queries (the seeds of a table row, and the interpolation weights selected on those queries).
        dev_size: dev queries carved from the training queries: a count, a fraction in (0, 1), or 0 (no dev
            set; the best epoch is then the one with the lowest training loss).
        dev_carve: ``training.data.DEV_CARVES``: ``random`` (any training query) or ``unseen`` (only queries whose
            relevant documents are relevant to no other training query, so dev measures what training does to
            documents it never saw as relevant).
        selection_metric: the dev metric that picks ``best/`` (an :mod:`~pyserini_qpeft.evaluation` name such as
            ``ndcg@10``, higher is better), or ``loss`` (dev loss) / ``train_loss`` (lower is better).
        patience: stop after this many epochs without a new best (None = never stop early).
        max_steps: stop after this many optimizer steps in total (None = no cap).
        max_train_queries: use at most this many training queries per epoch (a seeded sample; None = all).
        eval_at_start: evaluate the untrained model (and the method's zero-shot baseline) on dev first.
        eval_every: also evaluate dev every this many optimizer steps inside an epoch (None = at epoch ends only);
            ``best/`` may then be a mid-epoch checkpoint (``epoch-N-step-S/``). The training itself is unchanged:
            only the selection sees more points.
    """

    epochs: int = 2
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    lr_schedule: str = "constant"
    warmup_steps: int = 10
    warmup_ratio: float = 0.0
    seed: int = 0
    dev_seed: int | None = None
    dev_size: int | float = 0.1
    dev_carve: str = "random"
    selection_metric: str = "ndcg@10"
    patience: int | None = None
    max_steps: int | None = None
    max_train_queries: int | None = None
    eval_at_start: bool = True
    eval_every: int | None = None

    def __post_init__(self) -> None:
        from .data import DEV_CARVES, dev_count

        for name in ("epochs", "batch_size"):
            positive_int(name, getattr(self, name))
        for name in ("patience", "max_steps", "max_train_queries", "eval_every"):
            if getattr(self, name) is not None:
                positive_int(name, getattr(self, name), " or None")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr!r}")
        for name in ("weight_decay", "grad_clip"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        if not isinstance(self.warmup_steps, int) or self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be an integer >= 0, got {self.warmup_steps!r}")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio!r}")
        if self.warmup_ratio and self.warmup_steps:
            raise ValueError(f"set warmup_steps ({self.warmup_steps}) or warmup_ratio ({self.warmup_ratio}), "
                             "not both")
        dev_count(10 ** 6, self.dev_size)  # validates the form; the size check needs the examples
        if self.dev_carve not in DEV_CARVES:
            raise ValueError(f"dev_carve must be one of {DEV_CARVES}, got {self.dev_carve!r}")
        if self.selection_metric not in LOWER_IS_BETTER:
            from ..evaluation import parse_metric

            try:
                parse_metric(self.selection_metric)
            except InputError as exc:
                raise ValueError(f"selection_metric {self.selection_metric!r}: {exc}") from None

    @property
    def carve_seed(self) -> int:
        """The seed of the dev split: ``dev_seed`` when set, else ``seed``."""
        return self.seed if self.dev_seed is None else self.dev_seed

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def default(cls, name: str) -> Any:
        """The default of field ``name`` (what the CLI shows and uses)."""
        spec = cls.__dataclass_fields__[name]
        if spec.default is not MISSING:
            return spec.default
        if spec.default_factory is not MISSING:  # pragma: no cover - no field uses a factory today
            return spec.default_factory()
        raise KeyError(f"{cls.__name__}.{name} has no default")

    @classmethod
    def build(cls, **kwargs: Any) -> "TrainConfig":
        """Like ``cls(**kwargs)`` but a bad value is an :class:`InputError` (exit 3), for values from the CLI."""
        known = {f.name for f in fields(cls)}
        try:
            return cls(**{k: v for k, v in kwargs.items() if k in known})
        except ValueError as exc:
            raise InputError(f"bad training setting: {exc}") from None

    def steps_per_epoch(self, num_train: int) -> int:
        """Optimizer steps in one epoch over ``num_train`` queries (before ``max_steps``)."""
        used = num_train if self.max_train_queries is None else min(num_train, self.max_train_queries)
        return max(1, math.ceil(used / self.batch_size))

    def planned_steps(self, num_train: int) -> int:
        """All optimizer steps of the run (the linear schedule decays to 0 there)."""
        total = self.steps_per_epoch(num_train) * self.epochs
        return min(total, self.max_steps) if self.max_steps is not None else total

    def warmup(self, total_steps: int) -> int:
        return int(total_steps * self.warmup_ratio) if self.warmup_ratio else self.warmup_steps

    def lr_at(self, step: int, total_steps: int) -> float:
        """Learning rate of optimizer step ``step`` (0-based): linear warmup, then constant or linear decay."""
        warmup = self.warmup(total_steps)
        if warmup and step < warmup:
            return self.lr * (step + 1) / warmup
        if self.lr_schedule == "linear":
            return self.lr * max(0.0, (total_steps - step) / max(1, total_steps - warmup))
        return self.lr


def positive_int(name: str, value: Any, tail: str = "") -> None:
    """ValueError naming ``name`` unless ``value`` is an int >= 1 (bools refused): the configs' one check."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer{tail}, got {value!r}")

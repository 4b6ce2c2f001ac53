"""The Q-PEFT loss: pairwise hinge on query NLL plus a pointwise NLL term on the positive (weighted 1:1).

``L = mean_pairs [ relu(NLL(q|d+) - NLL(q|d-) + margin) + NLL(q|d+) ]`` with ``NLL = -mean log P(q_t | ...)``
(the negated scorer output).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    from torch import Tensor

    from ..training.data import TrainingExample
    from ..types import Run


def qpeft_loss(nll_pos: "Tensor", nll_neg: "Tensor", margin: float, pointwise_weight: float = 1.0
               ) -> tuple["Tensor", dict[str, float]]:
    """Loss over P pairs.

    Args:
        nll_pos, nll_neg: ``[P]`` NLL of the query given the pair's positive / negative document.
        margin: hinge margin (in nats per query token).
        pointwise_weight: weight of the pointwise term (1.0 = the paper's 1:1).

    Returns:
        ``(loss scalar, {"loss", "hinge", "nll_pos", "pair_acc"})``; pair_acc = share of pairs with
        NLL(q|d+) < NLL(q|d-).
    """
    import torch

    if nll_pos.shape != nll_neg.shape or nll_pos.dim() != 1 or nll_pos.numel() == 0:
        raise ValueError(f"expected two equal non-empty [P] tensors, got {tuple(nll_pos.shape)} and "
                         f"{tuple(nll_neg.shape)}")
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    hinge = torch.relu(nll_pos - nll_neg + margin)
    loss = (hinge + pointwise_weight * nll_pos).mean()
    stats = {"loss": float(loss.detach()), "hinge": float(hinge.detach().mean()),
             "nll_pos": float(nll_pos.detach().mean()),
             "pair_acc": float((nll_pos.detach() < nll_neg.detach()).float().mean())}
    return loss, stats


def qpeft_dev_loss(run: "Run", dev: Sequence["TrainingExample"], margin: float, pointwise_weight: float = 1.0
                   ) -> float:
    """The training loss on dev, from the dev run's scores (mean log-probabilities), so no extra forward passes.

    Per query: its first positive that was scored against its top-ranked run negative that was scored (none: hinge
    0), with the formula of :func:`qpeft_loss`; the mean over the queries with a scored positive (0.0 if none: a
    dev pool of run documents only may miss every positive).
    """
    total, counted = 0.0, 0
    for ex in dev:
        scores = {h.docid: h.score for h in run[ex.qid]}
        pos = next((d for d in ex.positives if d in scores), None)
        if pos is None:
            continue
        neg = next((d for d in ex.negatives if d in scores), None)
        nll_pos = -scores[pos]
        hinge = max(0.0, nll_pos + scores[neg] + margin) if neg is not None else 0.0
        total += hinge + pointwise_weight * nll_pos
        counted += 1
    return total / counted if counted else 0.0

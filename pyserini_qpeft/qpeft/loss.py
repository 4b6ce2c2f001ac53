"""The Q-PEFT losses on query NLL (``NLL = -mean log P(q_t | ...)``, the negated scorer output).

- ``hinge`` (the papers'): pairwise hinge plus a pointwise NLL term on the positive (weighted 1:1 in the paper),
  ``L = mean_pairs [ relu(NLL(q|d+) - NLL(q|d-) + margin) + w NLL(q|d+) ]``; optionally on scores fused with the
  first stage's (``prior``, beyond the papers: :mod:`.first_stage`).
- ``listwise`` (beyond the papers): per query, softmax cross-entropy of its positive against every negative it is
  compared with in the step (hard and in-batch), on logits ``-NLL / temperature``, plus the same pointwise term,
  ``L = mean_queries [ -log softmax(-NLL / T)[d+] + w NLL(q|d+) ]``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    from torch import Tensor

    from ..training.data import TrainingExample
    from ..types import Run


def qpeft_loss(nll_pos: "Tensor", nll_neg: "Tensor", margin: float, pointwise_weight: float = 1.0,
               prior: "Tensor | None" = None) -> tuple["Tensor", dict[str, float]]:
    """Loss over P pairs.

    Args:
        nll_pos, nll_neg: ``[P]`` NLL of the query given the pair's positive / negative document.
        margin: hinge margin (in nats per query token).
        pointwise_weight: weight of the pointwise term (1.0 = the paper's 1:1).
        prior: ``[P]`` how far a fixed score the LM's is added to (the first stage's, :mod:`.first_stage`) already
            prefers the positive, in nats: the hinge compares the fused scores,
            ``relu(NLL(q|d+) - NLL(q|d-) + margin - prior)``; the pointwise term and ``pair_acc`` stay the LM's.

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
    if prior is not None and prior.shape != nll_pos.shape:
        raise ValueError(f"expected a [P] prior like the NLLs, got {tuple(prior.shape)}")
    gap = nll_pos - nll_neg if prior is None else nll_pos - nll_neg - prior
    hinge = torch.relu(gap + margin)
    loss = (hinge + pointwise_weight * nll_pos).mean()
    stats = {"loss": float(loss.detach()), "hinge": float(hinge.detach().mean()),
             "nll_pos": float(nll_pos.detach().mean()),
             "pair_acc": float((nll_pos.detach() < nll_neg.detach()).float().mean())}
    return loss, stats


def qpeft_listwise_loss(nll_pos: "Tensor", nll_neg: "Tensor", mask: "Tensor", temperature: float = 1.0,
                        pointwise_weight: float = 1.0) -> tuple["Tensor", dict[str, float]]:
    """Listwise loss over G queries, each with one positive and up to M negatives.

    Args:
        nll_pos: ``[G]`` NLL of each query given its positive.
        nll_neg: ``[G, M]`` NLL given its negatives (padding anywhere ``mask`` is False).
        mask: ``[G, M]`` bool, True for real negatives (a query without any counts its positive alone: CE 0).
        temperature: logits are ``-NLL / temperature``.
        pointwise_weight: weight of the pointwise NLL(q|d+) term.

    Returns:
        ``(loss scalar, {"loss", "listwise", "nll_pos", "pair_acc"})``; pair_acc over the real (positive,
        negative) pairs, as :func:`qpeft_loss` counts it.
    """
    import torch

    if (nll_pos.dim() != 1 or nll_pos.numel() == 0 or nll_neg.dim() != 2 or nll_neg.shape[0] != nll_pos.shape[0]
            or mask.shape != nll_neg.shape):
        raise ValueError(f"expected [G], [G, M] and a [G, M] mask, got {tuple(nll_pos.shape)}, "
                         f"{tuple(nll_neg.shape)} and {tuple(mask.shape)}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    neg_logits = (-nll_neg / temperature).masked_fill(~mask, float("-inf"))
    logits = torch.cat([(-nll_pos / temperature).unsqueeze(1), neg_logits], dim=1)  # [G, 1 + M]
    listwise = torch.logsumexp(logits, dim=1) - logits[:, 0]
    loss = (listwise + pointwise_weight * nll_pos).mean()
    wins = (nll_pos.detach().unsqueeze(1) < nll_neg.detach()) & mask
    stats = {"loss": float(loss.detach()), "listwise": float(listwise.detach().mean()),
             "nll_pos": float(nll_pos.detach().mean()),
             "pair_acc": float(wins.sum() / mask.sum()) if bool(mask.any()) else 0.0}
    return loss, stats


def qpeft_dev_loss(run: "Run", dev: Sequence["TrainingExample"], margin: float, pointwise_weight: float = 1.0,
                   loss: str = "hinge", temperature: float = 1.0) -> float:
    """The training loss on dev, from the dev run's scores (mean log-probabilities), so no extra forward passes.

    Per query: its first positive that was scored, against (``hinge``) its top-ranked run negative that was scored
    (none: hinge 0) or (``listwise``) every run negative that was scored, through :func:`qpeft_loss` /
    :func:`qpeft_listwise_loss` themselves (in float64); the mean over the queries with a scored positive (0.0 if
    none: a dev pool of run documents only may miss every positive).
    """
    import torch

    pos_scores: list[float] = []
    neg_scores: list[list[float]] = []
    for ex in dev:
        scores = {h.docid: h.score for h in run[ex.qid]}
        pos = next((d for d in ex.positives if d in scores), None)
        if pos is None:
            continue
        pos_scores.append(scores[pos])
        negs = [scores[d] for d in ex.negatives if d in scores]
        neg_scores.append(negs if loss == "listwise" else negs[:1])
    if not pos_scores:
        return 0.0
    nll_pos = -torch.tensor(pos_scores, dtype=torch.float64)
    width = max(1, max(len(n) for n in neg_scores))
    # a query without a scored negative: an infinitely unlikely one (hinge 0) / masked out (listwise CE 0)
    nll_neg = torch.tensor([[-x for x in n] + [float("inf")] * (width - len(n)) for n in neg_scores],
                           dtype=torch.float64)
    if loss == "listwise":
        mask = torch.tensor([[True] * len(n) + [False] * (width - len(n)) for n in neg_scores])
        value, _ = qpeft_listwise_loss(nll_pos, nll_neg, mask, temperature, pointwise_weight)
    else:
        value, _ = qpeft_loss(nll_pos, nll_neg[:, 0], margin, pointwise_weight)
    return float(value)

"""Several LMORT tuners over one frozen-LM pass (beyond the LMORT paper): a seed ensemble for one FAISS index.

Tuners trained on the same layers and token budget read the same frozen-LM states, so the LM runs once per text
and each tuner adds only its own (small) forward. Their vectors are concatenated, each scaled by
``1/sqrt(n)``: the inner product of two ensemble vectors is the mean of the members' inner products (the mean of
their cosines when every member L2-normalises, and the ensemble vector is then unit-norm too).
"""
from __future__ import annotations

import functools
import math
import os
from typing import TYPE_CHECKING, Sequence

from ..errors import ModelError

if TYPE_CHECKING:
    from ..lm.backbone import FrozenLM
    from .tuner import LMORTModel

@functools.lru_cache(maxsize=1)
def _build_ensemble_class():
    import torch
    from torch import nn

    class EnsembleTuner(nn.Module):
        """Input as :class:`~.tuner.LMORTTuner`'s (``unif_states``, ``align_states`` ``[B, T, H]``,
        ``attention_mask`` ``[B, T]``); output ``[B, sum of member dims]``: member vectors times ``1/sqrt(n)``,
        concatenated in member order."""

        def __init__(self, tuners):
            super().__init__()
            self.members = nn.ModuleList(tuners)
            self.scale = 1.0 / math.sqrt(len(tuners))

        def forward(self, unif_states, align_states, attention_mask):
            return torch.cat([m(unif_states, align_states, attention_mask) for m in self.members], dim=-1) * self.scale

    return EnsembleTuner


def EnsembleTuner(tuners):  # noqa: N802  (a lazily built nn.Module class, as LMORTTuner)
    """Build an ``EnsembleTuner`` module over ``tuners`` (the class is created on first use)."""
    return _build_ensemble_class()(tuners)


def load_lmort_ensemble(paths: Sequence[str | os.PathLike], lm: "FrozenLM") -> "LMORTModel":
    """Load several LMORT checkpoints (each as :func:`~.tuner.load_lmort`) as one model whose vectors are the
    members' concatenation (module docstring).

    Raises:
        ModelError: fewer than two checkpoints, or members that differ in layers, token budget or normalisation
            (they could not share one LM pass, or their inner products would not average).
    """
    from .tuner import LMORTModel, load_lmort

    if len(paths) < 2:
        raise ModelError(f"an LMORT ensemble needs at least two checkpoints, got {len(paths)}")
    members = [load_lmort(p, lm) for p in paths]
    first = members[0].config
    for path, member in zip(paths[1:], members[1:]):
        c = member.config
        got, want = (c.layers, c.max_length, c.normalize), (first.layers, first.max_length, first.normalize)
        if got != want:
            raise ModelError(f"{path}: layers / max_length / normalize {got} differ from {paths[0]}'s {want}; an "
                             "LMORT ensemble's members must read the same LM states and all normalise or none")
    tuner = EnsembleTuner([m.tuner for m in members])
    return LMORTModel(lm, tuner, first, dim=sum(m.dim for m in members))

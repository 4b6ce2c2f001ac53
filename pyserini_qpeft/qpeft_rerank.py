"""Registers the Q-PEFT rerankers ``qpeft-retr``, ``qpeft-attn`` and ``prompt-tuning`` in the reranker registry.

Each is built from a trained checkpoint (``--reranker-checkpoint PATH``, a checkpoint folder or a training output
folder whose ``best/`` is used); the variant stored in the checkpoint must match the requested name. Importing
this module is cheap (no torch); the checkpoint is loaded when a reranker is built.
"""
from __future__ import annotations

import dataclasses
import os
from typing import TYPE_CHECKING, Any, Callable

from .errors import InputError
from .rerank import register_reranker

if TYPE_CHECKING:
    from .rerank import LMReranker

NAME_TO_VARIANT = {"qpeft-retr": "retr", "qpeft-attn": "attn", "prompt-tuning": "prompt"}


def build_qpeft_reranker(name: str, lm=None, checkpoint: str | os.PathLike | None = None,
                         scorer_overrides: dict[str, Any] | None = None, **_ignored) -> "LMReranker":
    """An :class:`~pyserini_qpeft.rerank.LMReranker` with the hint module of ``checkpoint``.

    Args:
        name: ``qpeft-retr``, ``qpeft-attn`` or ``prompt-tuning``.
        lm: a ``FrozenLM`` (or what ``LMReranker`` accepts); must be the checkpoint's base model.
        checkpoint: checkpoint folder (required).
        scorer_overrides: ScorerConfig fields to change (e.g. batch_size); the prompt is the checkpoint's.

    Raises:
        InputError: no checkpoint given. ModelError: wrong variant or base model, unreadable checkpoint.
    """
    from .checkpoint import load_checkpoint
    from .qpeft import check_variant
    from .rerank import LMReranker, _load_lm

    if checkpoint is None:
        raise InputError(f"reranker {name!r} needs a trained module: pass --reranker-checkpoint PATH "
                         f"(see `pyserini-qpeft train qpeft`)")
    lm = _load_lm(lm)
    module, qpeft_config, scorer_config, _ = load_checkpoint(checkpoint, lm)
    check_variant(NAME_TO_VARIANT[name], qpeft_config.variant, str(checkpoint))
    if scorer_overrides:
        scorer_config = dataclasses.replace(scorer_config, **scorer_overrides)
    return LMReranker(lm, scorer_config, hint_module=module, name=name)


def _factory(name: str) -> Callable[..., "LMReranker"]:
    def make(**kwargs) -> "LMReranker":
        return build_qpeft_reranker(name, **kwargs)

    make.__name__ = make.__qualname__ = f"make_{name.replace('-', '_')}"
    make.__doc__ = f"Build the {name!r} reranker from ``checkpoint=`` (see :func:`build_qpeft_reranker`)."
    return make


for _name in NAME_TO_VARIANT:
    register_reranker(_name)(_factory(_name))
